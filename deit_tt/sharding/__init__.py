"""The sharding plan: program, memory and compute-kernel configs for every encoder op.

Nothing here is a typed-in constant. Every number is derived from the model dimensions, the batch
size and the device compute grid (``compute_with_storage_grid_size``), following the op-by-op design
of tt-metal's sharded ViT (tenstorrent/tt-metal ``models/demos/vision/classification/vit/wormhole/tt/ttnn_optimized_sharded_vit_wh.py``):

- the **encoder grid** (LayerNorm, QKV, self-output, FF1, FF2; block-sharded, ROW_MAJOR) has as many
  rows as divide the M tiles (batch x 7) and as many columns as divide the K/N tiles of every matmul on
  it (hidden, 3 x hidden, intermediate), each the largest the device allows;
- the **attention grid** (split heads, QK^T, softmax, P.V, concatenate heads) has one image per row
  (``create_qkv_heads`` requires batch == grid rows) and a column count dividing the number of heads
  and the QKV width in tiles;
- the **classifier grid** has the encoder rows and a column count dividing hidden and the padded
  class count in tiles.

Per-core block sizes follow from the grids (``per_core_M = Mt / rows``, ``in0_block_w`` = the in0
shard width, ...) and each subblock is the widest one that fits the destination register budget
(``get_dest_reg_count``: 16 tiles, halved without full sync, halved again with fp32 accumulation).

Every invariant the ttnn C++ validators enforce (reference §2.1-§2.7) is a small named rule function;
``ShardingPlan.validate()`` walks the op sequence of one encoder layer plus the head (the model's own forward, run
through an executor that issues nothing) and runs all of them, raising :class:`ShardingRuleError` with the rule, the
op and the numbers.

Modules: ``dims`` (tile constants, :class:`ModelDims`), ``rules`` (rule names, sources and ``check_*``
functions), ``walk`` (the validating op walk and its L1 estimate), ``plan`` (:class:`ShardingPlan`,
:func:`make_plan`), ``mask`` (:func:`attention_mask`), ``published`` (:func:`compare_with_published`), ``core_maps``
(which core holds what: :func:`encoder_shard_map`, :func:`attention_shard_map`, :func:`l1_by_grid`). Everything
public is importable from ``deit_tt.sharding``.

Not checked here, because they are properties of tensors at run time rather than of the plan: operands
on the device and in TILE layout, weights left DRAM-interleaved (the published design; sharded weights
would add the §2.2 in1 rules), and the allocator's real L1 layout (``table()`` gives an estimate).
"""

from deit_tt.sharding.dims import (
    BLOCK,
    CLASS_PAD_MULTIPLE,
    COL_MAJOR,
    DEST_REGISTER_TILES,
    HEIGHT,
    PATCH_CHANNELS,
    ROW_MAJOR,
    TILE,
    TILE_BYTES,
    WIDTH,
    ModelDims,
    dest_register_tiles,
    padding_table,
    round_up,
    tile_bytes,
)
from deit_tt.sharding.rules import (
    ALL_RULES,
    RULE_CONCAT_HEADS,
    RULE_DIMS,
    RULE_DTYPE,
    RULE_GRID,
    RULE_KT,
    RULE_L1,
    RULE_LAYERNORM,
    RULE_MASK,
    RULE_MCAST,
    RULE_REUSE,
    RULE_SHARD,
    RULE_SHARDED_OUTPUT,
    RULE_SOFTMAX,
    RULE_SOURCES,
    RULE_SPLIT_HEADS,
    RULE_SUBBLOCK,
    ShardingRuleError,
    check_attention_rows_fit,
    check_block_shard,
    check_concat_heads,
    check_dtype,
    check_grid_within_device,
    check_kt_divisible,
    check_l1_fits,
    check_layernorm,
    check_mcast_block_divisibility,
    check_mcast_in0_shard,
    check_mcast_num_blocks,
    check_mcast_output,
    check_model_dims,
    check_nonzero_block_dims,
    check_reuse_full_n,
    check_reuse_in0,
    check_reuse_in1,
    check_reuse_m,
    check_reuse_output_blocks,
    check_reuse_output_layout,
    check_reuse_same_sharding,
    check_reuse_subblock_divisibility,
    check_sharded_output_subblock,
    check_softmax,
    check_softmax_mask,
    check_split_heads_batch_rows,
    check_split_heads_cols,
    check_split_heads_input,
    check_split_heads_l1,
    check_split_heads_output,
    check_subblock_fits_dest,
)
from deit_tt.sharding.mask import MASKED_VALUE, attention_mask
from deit_tt.sharding.plan import (
    MATMUL_OPS,
    ShardingPlan,
    core_range,
    largest_divisor_at_most,
    make_plan,
    sharded_memory_config,
    widest_subblock,
    with_matmul_compute,
)
from deit_tt.sharding.published import (
    compare_with_published,
)
from deit_tt.sharding.core_maps import (
    attention_shard_map,
    encoder_shard_map,
    grid_role,
    l1_by_grid,
)
