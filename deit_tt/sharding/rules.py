"""The rules: every invariant a ttnn validator enforces on the plan's configs, one small function each.

Each ``check_*`` function checks one invariant (the validators of tt-metal's matmul, create_qkv_heads, LayerNorm and softmax device operations, named per rule below)
and raises :class:`ShardingRuleError` naming the rule, the op and the numbers:
``[rule] op 'x': detail``. Shapes are in tiles unless a name says otherwise; "shard" arguments are
(height, width) in elements. ``tests/sharding/test_rules_vs_ttnn.py`` breaks each rule on tt-metal's mock device
and shows that ttnn refuses the same configuration.
"""

from __future__ import annotations

import math
from typing import Iterable

import ttnn

from deit_tt.sharding.dims import BLOCK, COL_MAJOR, HEIGHT, ROW_MAJOR, TILE, WIDTH, ModelDims, dtype_name

# ---------------------------------------------------------------------------------------------------
# Rule names (the bracketed prefix of every ShardingRuleError message)

RULE_DIMS = "model dims"
RULE_DTYPE = "dtype"
RULE_SHARD = "block sharding"
RULE_GRID = "compute grid"
RULE_SUBBLOCK = "matmul subblock"
RULE_KT = "matmul Kt"
RULE_SHARDED_OUTPUT = "matmul sharded output"
RULE_MCAST = "matmul 2D mcast"
RULE_REUSE = "matmul reuse (bmm)"
RULE_SPLIT_HEADS = "split heads"
RULE_CONCAT_HEADS = "concatenate heads"
RULE_LAYERNORM = "layernorm sharded"
RULE_SOFTMAX = "softmax sharded"
RULE_MASK = "softmax mask"
RULE_L1 = "L1 budget"

ALL_RULES = (
    RULE_DIMS,
    RULE_DTYPE,
    RULE_SHARD,
    RULE_GRID,
    RULE_SUBBLOCK,
    RULE_KT,
    RULE_SHARDED_OUTPUT,
    RULE_MCAST,
    RULE_REUSE,
    RULE_SPLIT_HEADS,
    RULE_CONCAT_HEADS,
    RULE_LAYERNORM,
    RULE_SOFTMAX,
    RULE_MASK,
    RULE_L1,
)

# Where each rule comes from (tt-metal source files).
RULE_SOURCES = {
    RULE_DIMS: "§2.5 head size a multiple of 32, no tile padding (split_query_key_value_and_split_heads.cpp, concatenate_heads.cpp)",
    RULE_DTYPE: "§2.5-§2.7 fp32 / bf16 / bf8_b inputs (layernorm, softmax, create_qkv_heads, nlp_concat_heads validators)",
    RULE_SHARD: "even, tile-aligned shards on a rectangle from core (0,0) (create_sharded_memory_config semantics)",
    RULE_GRID: "§2.1 grid within the device grid, non-zero block dims (matmul_device_operation.cpp)",
    RULE_SUBBLOCK: "§2.1 subblock <= dest registers, block/subblock divisibility (matmul_device_operation.cpp)",
    RULE_KT: "§2.1 Kt % in0_block_w == 0 (matmul_device_operation.cpp)",
    RULE_SHARDED_OUTPUT: "§2.1 out_subblock_w == per_core_N or out_subblock_h == 1 (matmul_device_operation.cpp)",
    RULE_MCAST: "§2.2 MatmulMultiCoreReuseMultiCastProgramConfig (matmul_device_operation.cpp)",
    RULE_REUSE: "§2.3 MatmulMultiCoreReuseProgramConfig (matmul_device_operation.cpp)",
    RULE_SPLIT_HEADS: "§2.5 create_qkv_heads_device_operation.cpp / _program_factory.cpp",
    RULE_CONCAT_HEADS: "nlp_concat_heads_device_operation.cpp, concatenate_heads.cpp",
    RULE_LAYERNORM: "§2.6 layernorm_device_operation.cpp",
    RULE_SOFTMAX: "§2.7 softmax_device_operation.cpp, softmax_program_factory_attention_optimized_sharded.cpp",
    RULE_MASK: "softmax_device_operation.cpp (mask checks), the sharded softmax reader and compute kernels",
    RULE_L1: "per-core L1 estimate vs the L1 bank the allocator reports (runtime.CHIPS; bank_manager.cpp \"Out of Memory\")",
}


class ShardingRuleError(ValueError):
    """A config breaks an invariant a ttnn validator enforces; the message names the rule, the op and the numbers."""

    def __init__(self, rule: str, op: str | None = None, detail: str | None = None):
        self.rule = rule
        self.op = op
        super().__init__(rule if op is None else f"[{rule}] op '{op}': {detail}")


def fail(rule: str, op: str, detail: str) -> None:
    raise ShardingRuleError(rule, op, detail)


# ---------------------------------------------------------------------------------------------------
# Rule functions


def check_model_dims(op: str, dims: ModelDims) -> None:
    """Head size must be a whole number of tiles with no padding (split heads / concatenate heads, §2.5);
    every matmul dimension must be tile aligned."""
    if dims.hidden % dims.heads:
        fail(RULE_DIMS, op, f"hidden ({dims.hidden}) must be divisible by heads ({dims.heads})")
    if dims.head_size % TILE:
        fail(RULE_DIMS, op, f"head size ({dims.hidden}/{dims.heads}={dims.head_size}) must be a multiple of {TILE}")
    if dims.hidden % TILE or dims.intermediate % TILE:
        fail(RULE_DIMS, op, f"hidden ({dims.hidden}) and intermediate ({dims.intermediate}) must be multiples of {TILE}")
    if dims.image_size % dims.patch_size:
        fail(RULE_DIMS, op, f"image size ({dims.image_size}) must be divisible by patch size ({dims.patch_size})")


def check_dtype(op: str, dtype, allowed: Iterable) -> None:
    """Sharded LayerNorm, softmax, create_qkv_heads and concatenate_heads take fp32 / bf16 / bf8_b only."""
    allowed = tuple(allowed)
    if dtype not in allowed:
        names = ", ".join(dtype_name(d) for d in allowed)
        fail(RULE_DTYPE, op, f"dtype {dtype_name(dtype)} is not supported here; use one of {names}")


def check_grid_within_device(op: str, grid: tuple[int, int], device_grid: tuple[int, int]) -> None:
    """``compute_with_storage_grid_size`` <= device grid in x and y (§2.1); sharded operands inside it (§2.2)."""
    if grid[0] < 1 or grid[1] < 1:
        fail(RULE_GRID, op, f"grid {grid[0]}x{grid[1]} must be non-empty")
    if grid[0] > device_grid[0] or grid[1] > device_grid[1]:
        fail(
            RULE_GRID,
            op,
            f"grid {grid[0]}x{grid[1]} (x=cols, y=rows) must fit within the device compute grid "
            f"{device_grid[0]}x{device_grid[1]}",
        )


def check_block_shard(op: str, shape: tuple[int, int], grid: tuple[int, int], shard: tuple[int, int]) -> None:
    """A block-sharded [H, W] tensor on a cols x rows grid: shard = (H/rows, W/cols), whole tiles, no remainder.

    ttnn refuses shards that are not whole tiles ("Physical shard shape ... must be tile {32, 32} sized!") and
    shards too small for the grid, but accepts uneven shards (a padded last row or column of shards). This rule
    also refuses those because the plan's program configs are derived from even shards (per_core_M = Mt/rows,
    in0_block_w and LayerNorm block_w = shard width): an uneven shard would be a plan whose memory and program
    configs disagree, which the ops then refuse one by one with less direct messages."""
    height, width = shape
    cols, rows = grid
    if height % rows or width % cols:
        fail(
            RULE_SHARD,
            op,
            f"tensor [{height}, {width}] does not split evenly over {rows} rows x {cols} cols "
            f"({height}/{rows}, {width}/{cols})",
        )
    expected = (height // rows, width // cols)
    if tuple(shard) != expected:
        fail(
            RULE_SHARD,
            op,
            f"shard shape {list(shard)} must equal [tensor height / rows, width / cols] = "
            f"[{height}/{rows}, {width}/{cols}] = {list(expected)}",
        )
    if shard[0] % TILE or shard[1] % TILE:
        fail(RULE_SHARD, op, f"shard shape {list(shard)} must be whole {TILE}x{TILE} tiles")


def check_subblock_fits_dest(op: str, out_subblock_h: int, out_subblock_w: int, dest_tiles: int) -> None:
    """§2.1: ``out_subblock_h * out_subblock_w <= get_dest_reg_count`` (8 default, 4 with fp32 accumulation)."""
    if out_subblock_h <= 0 or out_subblock_w <= 0:
        fail(RULE_SUBBLOCK, op, f"out_subblock_h ({out_subblock_h}) and out_subblock_w ({out_subblock_w}) must be non-zero")
    if out_subblock_h * out_subblock_w > dest_tiles:
        fail(
            RULE_SUBBLOCK,
            op,
            f"out_subblock_h x out_subblock_w ({out_subblock_h}x{out_subblock_w}={out_subblock_h * out_subblock_w}) "
            f"must be at most {dest_tiles} destination register tiles",
        )


def check_mcast_block_divisibility(
    op: str, per_core_M: int, per_core_N: int, out_block_h: int, out_block_w: int, out_subblock_h: int, out_subblock_w: int
) -> None:
    """§2.1 (2D/1D configs): out_block h/w non-zero, out_block % out_subblock == 0, per_core % out_block == 0."""
    if out_block_h <= 0 or out_block_w <= 0:
        fail(RULE_SUBBLOCK, op, f"out_block_h ({out_block_h}) and out_block_w ({out_block_w}) must be non-zero")
    if out_block_h % out_subblock_h:
        fail(RULE_SUBBLOCK, op, f"out_block_h ({out_block_h}) must be divisible by out_subblock_h ({out_subblock_h})")
    if out_block_w % out_subblock_w:
        fail(RULE_SUBBLOCK, op, f"out_block_w ({out_block_w}) must be divisible by out_subblock_w ({out_subblock_w})")
    if per_core_M % out_block_h:
        fail(RULE_SUBBLOCK, op, f"per_core_M ({per_core_M}) must be divisible by out_block_h ({out_block_h})")
    if per_core_N % out_block_w:
        fail(RULE_SUBBLOCK, op, f"per_core_N ({per_core_N}) must be divisible by out_block_w ({out_block_w})")


def check_reuse_subblock_divisibility(op: str, per_core_M: int, per_core_N: int, out_subblock_h: int, out_subblock_w: int) -> None:
    """§2.1 (Reuse/bmm config): per_core_M % out_subblock_h == 0 and per_core_N % out_subblock_w == 0."""
    if per_core_M % out_subblock_h:
        fail(RULE_SUBBLOCK, op, f"per_core_M ({per_core_M}) must be divisible by out_subblock_h ({out_subblock_h})")
    if per_core_N % out_subblock_w:
        fail(RULE_SUBBLOCK, op, f"per_core_N ({per_core_N}) must be divisible by out_subblock_w ({out_subblock_w})")


def check_nonzero_block_dims(op: str, in0_block_w: int, per_core_M: int, per_core_N: int) -> None:
    """§2.1: in0_block_w, per_core_M, per_core_N != 0.

    ttnn refuses ``in0_block_w == 0`` in its validator, but a zero per_core_N reaches the matmul's
    ``compute_output_specs`` first, which divides by it: the process dies with SIGFPE instead of raising."""
    for name, value in (("in0_block_w", in0_block_w), ("per_core_M", per_core_M), ("per_core_N", per_core_N)):
        if value <= 0:
            fail(RULE_GRID, op, f"{name} is {value}, which is not valid")


def check_kt_divisible(op: str, Kt: int, in0_block_w: int) -> None:
    """§2.1: ``Kt % in0_block_w == 0`` with Kt = padded K / 32."""
    if Kt % in0_block_w:
        fail(RULE_KT, op, f"Kt ({Kt}) must be divisible by in0_block_w ({in0_block_w})")


def check_sharded_output_subblock(op: str, out_subblock_h: int, out_subblock_w: int, per_core_N: int) -> None:
    """§2.1: with a sharded output, ``out_subblock_w == per_core_N or out_subblock_h == 1``."""
    if out_subblock_w != per_core_N and out_subblock_h != 1:
        fail(
            RULE_SHARDED_OUTPUT,
            op,
            f"sharded output needs out_subblock_w ({out_subblock_w}) == per_core_N ({per_core_N}) "
            f"or out_subblock_h ({out_subblock_h}) == 1",
        )


def check_mcast_num_blocks(
    op: str, Mt: int, Nt: int, per_core_M: int, per_core_N: int, grid: tuple[int, int], transpose_mcast: bool = False
) -> None:
    """§2.2: ceil(Mt/per_core_M) <= grid rows and ceil(Nt/per_core_N) <= grid cols (swapped when transpose_mcast)."""
    cols, rows = (grid[1], grid[0]) if transpose_mcast else grid
    blocks_y, blocks_x = math.ceil(Mt / per_core_M), math.ceil(Nt / per_core_N)
    if blocks_y > rows:
        fail(RULE_MCAST, op, f"num output blocks along y (ceil({Mt}/{per_core_M})={blocks_y}) must be <= grid rows ({rows})")
    if blocks_x > cols:
        fail(RULE_MCAST, op, f"num output blocks along x (ceil({Nt}/{per_core_N})={blocks_x}) must be <= grid cols ({cols})")


def check_mcast_in0_shard(
    op: str,
    layout,
    orientation,
    transpose_mcast: bool,
    fuse_batch: bool,
    shard: tuple[int, int],
    per_core_M: int,
    in0_block_w: int,
) -> None:
    """§2.2: sharded in0 of a 2D mcast matmul.

    BLOCK (ROW_MAJOR unless transpose_mcast) or HEIGHT; ``fuse_batch``; ``per_core_M == shard height / 32``;
    ``(shard width / 32) % in0_block_w == 0``; HEIGHT additionally needs no transpose and in0_block_w == shard width.
    """
    if not fuse_batch:
        fail(RULE_MCAST, op, "a sharded in0 needs fuse_batch=True")
    if layout not in (BLOCK, HEIGHT):
        fail(RULE_MCAST, op, f"in0 must be BLOCK or HEIGHT sharded, got {layout}")
    if layout == BLOCK:
        wanted = COL_MAJOR if transpose_mcast else ROW_MAJOR
        if orientation != wanted:
            fail(RULE_MCAST, op, f"block-sharded in0 with transpose_mcast={transpose_mcast} needs {wanted}, got {orientation}")
    if shard[0] % TILE or shard[0] // TILE != per_core_M:
        fail(RULE_MCAST, op, f"per_core_M ({per_core_M}) must equal shard height / 32 ({shard[0]}/32={shard[0] / TILE:g})")
    shard_wt = shard[1] // TILE
    if shard_wt % in0_block_w:
        fail(
            RULE_MCAST,
            op,
            f"shard width / 32 ({shard[1]}/32={shard_wt}) must be divisible by in0_block_w ({in0_block_w})",
        )
    if layout == HEIGHT:
        if transpose_mcast:
            fail(RULE_MCAST, op, "height-sharded in0 does not support transpose_mcast")
        if in0_block_w != shard_wt:
            fail(RULE_MCAST, op, f"height-sharded in0 needs in0_block_w ({in0_block_w}) == shard width / 32 ({shard_wt})")


def check_mcast_output(op: str, layout, in0_layout=None) -> None:
    """§2.2: a sharded 2D mcast output must be BLOCK_SHARDED (same layout as block-sharded in0)."""
    if layout != BLOCK:
        fail(RULE_MCAST, op, f"sharded output must be BLOCK_SHARDED, got {layout}")
    if in0_layout is not None and in0_layout != layout:
        fail(RULE_MCAST, op, f"output layout {layout} must match in0 layout {in0_layout}")


def check_reuse_m(op: str, M: int, total_M: int, per_core_M: int) -> None:
    """§2.3: per_core_M > M ⇒ per_core_M % M == 0 and total_M % per_core_M == 0; else M % per_core_M == 0."""
    if per_core_M > M:
        if per_core_M % M:
            fail(RULE_REUSE, op, f"per_core_M ({per_core_M}) > M ({M}) must be a multiple of M")
        if total_M % per_core_M:
            fail(RULE_REUSE, op, f"total M ({total_M}) must be divisible by per_core_M ({per_core_M})")
    elif M % per_core_M:
        fail(RULE_REUSE, op, f"M ({M}) must be divisible by per_core_M ({per_core_M})")


def check_reuse_full_n(op: str, Nt: int, per_core_N: int) -> None:
    """§2.3: the bmm config computes the whole N per core: N == per_core_N."""
    if Nt != per_core_N:
        fail(RULE_REUSE, op, f"N ({Nt} tiles) must equal per_core_N ({per_core_N})")


def check_reuse_in0(op: str, layout, Kt: int, shard: tuple[int, int], in0_block_w: int, per_core_M: int) -> None:
    """§2.3 in0 sharded (not WIDTH): K == shard width == in0_block_w x 32, per_core_M x 32 == shard height."""
    if layout == WIDTH:
        fail(RULE_REUSE, op, "in0 must not be WIDTH_SHARDED")
    if shard[1] != Kt * TILE:
        fail(RULE_REUSE, op, f"in0 shard width ({shard[1]}) must equal K ({Kt * TILE})")
    if shard[1] != in0_block_w * TILE:
        fail(RULE_REUSE, op, f"in0 shard width ({shard[1]}) must equal in0_block_w x 32 ({in0_block_w}x32={in0_block_w * TILE})")
    if shard[0] != per_core_M * TILE:
        fail(RULE_REUSE, op, f"per_core_M x 32 ({per_core_M}x32={per_core_M * TILE}) must equal in0 shard height ({shard[0]})")


def check_reuse_in1(
    op: str, layout, Mt: int, Kt: int, Nt: int, shard: tuple[int, int], per_core_M: int, per_core_N: int
) -> None:
    """§2.3 in1 sharded: not WIDTH, per_core_M % M == 0, shard width == N == per_core_N x 32, shard height % K == 0."""
    if layout == WIDTH:
        fail(RULE_REUSE, op, "in1 must not be WIDTH_SHARDED")
    if per_core_M % Mt:
        fail(RULE_REUSE, op, f"with sharded in1, per_core_M ({per_core_M}) must be a multiple of M ({Mt})")
    if shard[1] != Nt * TILE:
        fail(RULE_REUSE, op, f"in1 shard width ({shard[1]}) must equal padded N ({Nt * TILE})")
    if shard[1] != per_core_N * TILE:
        fail(RULE_REUSE, op, f"per_core_N x 32 ({per_core_N}x32={per_core_N * TILE}) must equal in1 shard width ({shard[1]})")
    if shard[0] % (Kt * TILE):
        fail(RULE_REUSE, op, f"in1 shard height ({shard[0]}) must be a multiple of K ({Kt * TILE})")


def check_reuse_same_sharding(op: str, in0_grid, in1_grid, in0_layout, in1_layout) -> None:
    """§2.3: both inputs sharded ⇒ same buffer type, layout, grid and orientation."""
    if tuple(in0_grid) != tuple(in1_grid) or in0_layout != in1_layout:
        fail(
            RULE_REUSE,
            op,
            f"in0 ({in0_layout}, {in0_grid[0]}x{in0_grid[1]}) and in1 ({in1_layout}, {in1_grid[0]}x{in1_grid[1]}) "
            "must share layout and grid",
        )


def check_reuse_output_blocks(op: str, total_Mt: int, Nt: int, per_core_M: int, per_core_N: int, num_cores: int) -> None:
    """§2.3: (total_Mt/per_core_M) x (Nt/per_core_N) output blocks must be divisible by the input shard's core count."""
    blocks = (total_Mt // per_core_M) * (Nt // per_core_N)
    if blocks % num_cores:
        fail(
            RULE_REUSE,
            op,
            f"output blocks ({total_Mt}/{per_core_M} x {Nt}/{per_core_N} = {blocks}) must be divisible by "
            f"the shard grid's {num_cores} cores",
        )


def check_reuse_output_layout(op: str, layout) -> None:
    """§2.3: a sharded bmm output must not be WIDTH_SHARDED."""
    if layout == WIDTH:
        fail(RULE_REUSE, op, "sharded output must not be WIDTH_SHARDED")


def check_split_heads_input(op: str, layout, input_dim1: int = 1) -> None:
    """§2.5 create_qkv_heads: input BLOCK_SHARDED, [B, 1, S, 3H]."""
    if layout != BLOCK:
        fail(RULE_SPLIT_HEADS, op, f"input must be BLOCK_SHARDED, got {layout}")
    if input_dim1 != 1:
        fail(RULE_SPLIT_HEADS, op, f"input must be [B, 1, S, 3H], got dim 1 = {input_dim1}")


def check_split_heads_output(op: str, layout) -> None:
    """§2.5: the split-heads output memory config must be HEIGHT_SHARDED."""
    if layout != HEIGHT:
        fail(RULE_SPLIT_HEADS, op, f"output memory layout must be HEIGHT_SHARDED, got {layout}")


def check_split_heads_batch_rows(op: str, batch: int, grid_rows: int) -> None:
    """§2.5: ``batch == number of grid rows`` (ROW_MAJOR): one image per row of the attention grid."""
    if batch != grid_rows:
        fail(
            RULE_SPLIT_HEADS,
            op,
            f"batch ({batch}) must equal the attention grid rows ({grid_rows}): one image per grid row",
        )


def check_attention_rows_fit(op: str, batch: int, device_rows: int) -> None:
    """§2.5 seen from the device: one image per attention-grid row, so batch <= device grid rows."""
    if batch > device_rows:
        fail(
            RULE_SPLIT_HEADS,
            op,
            f"batch ({batch}) must equal the attention grid rows, but the device grid has only {device_rows} rows; "
            f"use batch <= {device_rows}",
        )


def check_split_heads_cols(op: str, heads: int, grid_cols: int) -> None:
    """§2.5: ``num_kv_heads % grid_cols == 0`` (whole heads per core)."""
    if heads % grid_cols:
        fail(RULE_SPLIT_HEADS, op, f"heads ({heads}) must be divisible by attention grid cols ({grid_cols})")


def check_split_heads_l1(op: str, shard_tiles: int, tile_size: int, l1_bytes: int) -> None:
    """§2.5: 2 x per-core tiles x tile size <= L1."""
    need = 2 * shard_tiles * tile_size
    if need > l1_bytes:
        fail(RULE_SPLIT_HEADS, op, f"2 x {shard_tiles} tiles x {tile_size} B = {need} B exceeds L1 ({l1_bytes} B)")


def check_concat_heads(op: str, in_layout, out_layout, shard: tuple[int, int], seq: int, heads: int) -> None:
    """nlp_concat_heads: input not WIDTH, shard height % S == 0, heads % (shard height / S) == 0, output not
    HEIGHT_SHARDED (tt-metal nlp_concat_heads_device_operation.cpp).

    ttnn 0.81.1 does not check the shard height against S itself: a shard shorter than S makes its
    ``compute_output_specs`` divide by zero (heads per shard = 0) and the process dies with SIGFPE, so this
    rule stays to turn that crash into an error."""
    if in_layout == WIDTH:
        fail(RULE_CONCAT_HEADS, op, "input must not be WIDTH_SHARDED")
    if shard[0] % seq:
        fail(RULE_CONCAT_HEADS, op, f"input shard height ({shard[0]}) must be divisible by the sequence ({seq})")
    if heads % (shard[0] // seq):
        fail(RULE_CONCAT_HEADS, op, f"heads ({heads}) must be divisible by heads per shard ({shard[0]}/{seq}={shard[0] // seq})")
    if out_layout == HEIGHT:
        fail(RULE_CONCAT_HEADS, op, "output memory layout must not be HEIGHT_SHARDED")


def check_layernorm(
    op: str,
    *,
    Mt: int,
    Kt: int,
    grid: tuple[int, int],
    block_h: int,
    block_w: int,
    subblock_w: int,
    shard: tuple[int, int],
    layout,
    orientation,
    shard_grid: tuple[int, int],
    dest_tiles: int,
) -> None:
    """§2.6 LayerNormShardedMultiCoreProgramConfig on a block-sharded input."""
    if layout == HEIGHT:
        fail(RULE_LAYERNORM, op, "sharded input must not be HEIGHT_SHARDED")
    if subblock_w <= 0 or block_w % subblock_w:
        fail(RULE_LAYERNORM, op, f"block_w ({block_w}) must be divisible by subblock_w ({subblock_w})")
    if subblock_w > dest_tiles:
        fail(RULE_LAYERNORM, op, f"subblock_w ({subblock_w}) must be at most {dest_tiles} destination register tiles")
    if shard_grid[0] > grid[0] or shard_grid[1] > grid[1]:
        fail(
            RULE_LAYERNORM,
            op,
            f"shard grid {shard_grid[0]}x{shard_grid[1]} must lie within the program grid {grid[0]}x{grid[1]}",
        )
    cols, rows = (grid[1], grid[0]) if orientation == COL_MAJOR else grid
    if Mt == block_h:  # 1-D sharding: all K split over every core
        want_w = math.ceil(Kt / (cols * rows))
    else:
        want_w = math.ceil(Kt / cols)
        if Mt % rows or block_h != Mt // rows:
            fail(RULE_LAYERNORM, op, f"block_h ({block_h}) must equal Mt / grid rows ({Mt}/{rows}={Mt / rows:g})")
    if block_w != want_w:
        fail(RULE_LAYERNORM, op, f"block_w ({block_w}) must equal ceil(Kt / grid cols) (ceil({Kt}/{cols})={want_w})")
    if block_h * TILE != shard[0]:
        fail(RULE_LAYERNORM, op, f"block_h x 32 ({block_h}x32={block_h * TILE}) must equal shard height ({shard[0]})")
    if block_w * TILE != shard[1]:
        fail(RULE_LAYERNORM, op, f"block_w x 32 ({block_w}x32={block_w * TILE}) must equal shard width ({shard[1]})")


def check_softmax(
    op: str,
    *,
    M: int,
    K: int,
    last_dim: int,
    grid: tuple[int, int],
    block_h: int,
    block_w: int,
    subblock_w: int,
    shard: tuple[int, int],
    shard_grid: tuple[int, int],
    dest_tiles: int,
    inplace: bool = True,
) -> None:
    """§2.7 SoftmaxShardedMultiCoreProgramConfig (M = volume / last dim, K = last dim, elements).

    The factory runs on the rectangle (0,0)..(grid_x-1, grid_y-1), so that rectangle is the shard grid;
    each row of the block is processed ``subblock_w`` tiles at a time in the destination registers.

    ``subblock_w <= dest_tiles`` is not checked by ttnn 0.81.1's host validator (it accepts subblock_w 9):
    the compute kernel ``kernels/attention/compute/softmax_sharded.cpp`` (shipped in the wheel) walks each
    row in chunks of ``subblock_w`` tiles held in the destination registers
    (``IterationShape::tiles(block_w).block_size(subblock_w)``), so a wider chunk overruns them (LayerNorm's
    factory refuses the same thing: "subblock width must less than 8 tiles"). Whether the real kernel build
    catches it cannot be seen with the mock's stub compiler, so the rule stays.
    """
    if M % TILE or K % TILE:
        fail(RULE_SOFTMAX, op, f"M ({M}) and K ({K}) must be divisible by {TILE}")
    if subblock_w <= 0 or block_w % subblock_w:
        fail(RULE_SOFTMAX, op, f"block_w ({block_w}) must be divisible by subblock_w ({subblock_w})")
    if subblock_w > dest_tiles:
        fail(RULE_SOFTMAX, op, f"subblock_w ({subblock_w}) must be at most {dest_tiles} destination register tiles")
    if block_w * TILE != last_dim:
        fail(RULE_SOFTMAX, op, f"block_w x 32 ({block_w}x32={block_w * TILE}) must equal input shape[3] ({last_dim})")
    if not inplace:
        fail(RULE_SOFTMAX, op, "the sharded program config only runs in place")
    cores = grid[0] * grid[1]
    shards = (M * K) // (block_w * block_h * TILE * TILE)
    if shards != cores:
        fail(
            RULE_SOFTMAX,
            op,
            f"number of shards (M*K/(block_w*block_h*1024) = {M}*{K}/({block_w}*{block_h}*1024) = {shards}) "
            f"must equal number of cores ({grid[0]}x{grid[1]}={cores})",
        )
    if tuple(shard_grid) != tuple(grid):
        fail(RULE_SOFTMAX, op, f"shard grid {shard_grid[0]}x{shard_grid[1]} must be the program grid {grid[0]}x{grid[1]}")
    if shard != (block_h * TILE, block_w * TILE):
        fail(
            RULE_SOFTMAX,
            op,
            f"shard shape {list(shard)} must equal [block_h x 32, block_w x 32] = [{block_h * TILE}, {block_w * TILE}]",
        )


def check_softmax_mask(
    op: str, mask_shape: tuple[int, ...], mask_layout, mask_sharded: bool, input_shape: tuple[int, int, int, int]
) -> None:
    """The additive mask of the sharded scale-mask softmax (see ``attention_mask`` for the sources).

    Interleaved TILE mask: rank 4, dims 1..rank-3 == 1 (one mask for all heads), last dim == the scores'
    last dim, one mask per image (the reader advances one tile row per image). ROW_MAJOR mask:
    [B, 1, S/32, 32]. A sharded mask must have the input's shape.

    ttnn 0.81.1 checks the rank/intermediate dims, the ROW_MAJOR shape and the sharded shape, but accepts a
    TILE mask of the wrong width, batch or height. Those clauses stay because the reader
    (``kernels/attention/dataflow/reader_unary_sharded_sm.cpp``) reads ``block_w`` mask tiles from page
    ``mask_start_tile_id`` and the factory advances that id by ``padded_shape[-1] / 32`` per image: a narrower
    mask is read past its end, a mask with fewer images than the scores is read past its end, and a mask more
    than one tile high is read from the wrong tile rows for every image after the first — wrong values, no error.
    """
    batch, _heads, _rows, keys = input_shape
    if len(mask_shape) != 4:
        fail(RULE_MASK, op, f"mask must be rank 4, got shape {list(mask_shape)}")
    if mask_sharded:
        if mask_layout != ttnn.TILE_LAYOUT or tuple(mask_shape) != tuple(input_shape):
            fail(RULE_MASK, op, f"a sharded mask must be TILE with the input's shape {list(input_shape)}")
        return
    if mask_layout == ttnn.ROW_MAJOR_LAYOUT:
        expected = (batch, 1, keys // TILE, TILE)
        if tuple(mask_shape) != expected:
            fail(RULE_MASK, op, f"row-major mask shape {list(mask_shape)} must be {list(expected)}")
        return
    if mask_shape[1] != 1:
        fail(RULE_MASK, op, f"non-sharded mask intermediate dimensions must be 1, got {mask_shape[1]} at dimension 1")
    if mask_shape[0] != batch:
        fail(
            RULE_MASK,
            op,
            f"mask batch ({mask_shape[0]}) must equal the scores' batch ({batch}): the sharded reader reads one "
            "mask tile row per image",
        )
    if mask_shape[3] != keys:
        fail(RULE_MASK, op, f"mask width ({mask_shape[3]}) must equal the scores' key dimension ({keys})")
    if mask_shape[2] not in (1, TILE):
        fail(RULE_MASK, op, f"mask height ({mask_shape[2]}) must be 1 (tile-padded to 32) or 32; only row 0 is read")


def check_l1_fits(op: str, bytes_per_core: int, l1_bytes_per_core: int) -> None:
    """Per-core L1 estimate (shards + circular buffers, see ``ShardingPlan.table``) within the core's L1."""
    if bytes_per_core > l1_bytes_per_core:
        fail(RULE_L1, op, f"about {bytes_per_core} B per core exceeds the {l1_bytes_per_core} B of L1 per core")
