"""The sharding plan: derived grids and configs, every validator rule, the L1 table and the attention mask."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch
import ttnn

from deit_tt import sharding as sh
from deit_tt.checkpoints.loading import random_config
from deit_tt.backends.runtime import CHIPS
from deit_tt.sharding import ModelDims, ShardingRuleError, attention_mask, compare_with_published, make_plan

SIZES = ("tiny", "small", "base")
DIMS = {size: ModelDims.from_config(random_config(size)) for size in SIZES}
WH_L1 = CHIPS["n150"].l1_bytes_per_core

OPS = [
    "layernorm_before",
    "qkv",
    "reshard_qkv",
    "split_heads",
    "query_by_key",
    "softmax",
    "attention_by_value",
    "concatenate_heads",
    "reshard_context",
    "self_output",
    "attention_residual",
    "layernorm_after",
    "ff1",
    "ff2",
    "output",
    "layernorm",
    "slice_prefix_tokens",
    "classifier",
]


def plan_for(size="base", batch=8, chip="n150", **kwargs):
    c = CHIPS[chip]
    return make_plan(DIMS[size], batch, c.grid, c.l1_bytes_per_core, **kwargs)


def grid_str(core_grid) -> str:
    return f"{core_grid.x}x{core_grid.y}"


# -- model dims ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,hidden,heads", [("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)])
def test_model_dims_from_hf_config(size, hidden, heads):
    dims = DIMS[size]
    assert (dims.hidden, dims.heads, dims.layers, dims.intermediate) == (hidden, heads, 12, 4 * hidden)
    assert (dims.head_size, dims.patches, dims.tokens, dims.padded_tokens) == (64, 196, 198, 224)
    assert (dims.num_classes, dims.classes_padded, dims.patch_features) == (1000, 1152, 1024)


# -- every supported combination -------------------------------------------------------------------


def _check_grid(chip: str):
    c = CHIPS[chip]
    rows = c.grid[1]
    for size in SIZES:
        for batch in range(1, rows + 1):
            plan = make_plan(DIMS[size], batch, c.grid, c.l1_bytes_per_core)
            plan.validate()
            # one image per attention row; grids inside the device; rows of block-sharded grids divide M tiles
            assert plan.attention_grid.y == batch
            for g in (plan.encoder_grid, plan.attention_grid, plan.classifier_grid):
                assert g.x <= c.grid[0] and g.y <= c.grid[1]
            assert (batch * 7) % plan.encoder_grid.y == 0
            assert DIMS[size].heads % plan.attention_grid.x == 0
        with pytest.raises(ShardingRuleError, match=r"\[split heads\] op 'split_heads': batch \(%d\)" % (rows + 1)):
            make_plan(DIMS[size], rows + 1, c.grid, c.l1_bytes_per_core)


def test_all_combinations_wormhole_8x8():
    _check_grid("n150")


def test_all_combinations_blackhole_11x10():
    _check_grid("p150")


def test_all_combinations_blackhole_12x10():
    _check_grid("p150-12x10")


@pytest.mark.parametrize(
    "size,chip,encoder,attention,classifier",
    [
        ("tiny", "n150", "6x8", "3x8", "6x8"),
        ("small", "n150", "6x8", "6x8", "6x8"),
        ("base", "n150", "8x8", "6x8", "8x8"),  # classifier columns | gcd(24 hidden, 2 x 36 class tiles) = 24
        ("tiny", "p150", "6x10", "3x10", "6x10"),
        ("small", "p150", "6x10", "6x10", "6x10"),
        ("base", "p150", "8x10", "6x10", "8x10"),
        ("tiny", "p150-12x10", "6x10", "3x10", "6x10"),
        ("small", "p150-12x10", "12x10", "6x10", "12x10"),
        ("base", "p150-12x10", "12x10", "12x10", "12x10"),
    ],
)
def test_grids_at_max_batch(size, chip, encoder, attention, classifier):
    plan = plan_for(size, CHIPS[chip].grid[1], chip)
    assert (grid_str(plan.encoder_grid), grid_str(plan.attention_grid), grid_str(plan.classifier_grid)) == (
        encoder,
        attention,
        classifier,
    )


def test_blackhole_12x10_base_batch10_matches_published_block_sizes():
    """tt-metal's BH ViT (12x10, batch 10, §1.3): same grid and block sizes (its subblocks are narrower)."""
    plan = plan_for("base", 10, "p150-12x10")
    assert (plan.layernorm.block_h, plan.layernorm.block_w) == (7, 2)
    assert (plan.qkv.in0_block_w, plan.qkv.per_core_M, plan.qkv.per_core_N) == (2, 7, 6)
    assert (plan.query_by_key.per_core_M, plan.query_by_key.per_core_N) == (7, 7)
    assert (plan.ff1.per_core_N, plan.ff2.in0_block_w) == (8, 8)  # the classifier differs: both heads in one matmul


def test_small_batch_uses_seven_rows():
    plan = plan_for("base", 1)
    assert grid_str(plan.encoder_grid) == "8x7" and plan.qkv.per_core_M == 1
    assert grid_str(plan.attention_grid) == "6x1"


# -- published Wormhole design ---------------------------------------------------------------------


def test_base_batch8_wormhole_equals_published():
    plan = plan_for("base", 8, "n150")
    assert grid_str(plan.encoder_grid) == "8x8" and grid_str(plan.attention_grid) == "6x8"
    ln = plan.layernorm
    assert (ln.compute_with_storage_grid_size.x, ln.compute_with_storage_grid_size.y) == (8, 8)
    assert (ln.subblock_w, ln.block_h, ln.block_w, ln.inplace) == (3, 7, 3, False)

    def mm(c):
        g = c.compute_with_storage_grid_size
        return ((g.x, g.y), c.in0_block_w, c.out_subblock_h, c.out_subblock_w, c.per_core_M, c.per_core_N)

    assert mm(plan.qkv) == ((8, 8), 3, 1, 3, 7, 9)
    assert mm(plan.query_by_key) == ((6, 8), 2, 1, 7, 14, 7)
    assert mm(plan.attention_by_value) == ((6, 8), 7, 1, 2, 14, 2)
    assert mm(plan.self_output) == ((8, 8), 3, 1, 3, 7, 3)
    assert mm(plan.ff1) == ((8, 8), 3, 1, 6, 7, 12)
    assert mm(plan.ff2) == ((8, 8), 12, 1, 3, 7, 3)
    # Both heads in one matmul on each image's first tile row (published: one head on all 224 tokens, 6x8, 2, 1, 6, 7, 6)
    assert mm(plan.classifier) == ((8, 8), 3, 1, 3, 1, 9)
    assert plan.ff1.fused_activation.op_type == ttnn.UnaryOpType.GELU
    assert plan.qkv.fused_activation is None and not plan.qkv.transpose_mcast
    sm = plan.softmax
    assert (sm.subblock_w, sm.block_h, sm.block_w) == (7, 14, 7)
    k = plan.layernorm_compute
    assert (k.math_fidelity, k.math_approx_mode, k.fp32_dest_acc_en, k.packer_l1_acc) == (ttnn.MathFidelity.HiFi2, True, False, True)
    assert list(plan.encoder_memory_config.shard_spec.shape) == [224, 96]
    assert list(plan.qkv_attention_memory_config.shard_spec.shape) == [224, 384]
    assert list(plan.context_memory_config.shard_spec.shape) == [224, 128]
    assert list(plan.classifier_memory_config.shard_spec.shape) == [32, 96]
    assert plan.heads_memory_config.memory_layout == ttnn.TensorMemoryLayout.HEIGHT_SHARDED
    assert plan.heads_memory_config.shard_spec is None  # each op fills in its own shard spec, as in tt-metal's ViT


def test_compare_with_published():
    table = compare_with_published(plan_for("base", 8, "n150"))
    differing = table[~table["match"]]
    assert set(differing["config"]) | set(differing["field"]) >= {"classifier"}
    assert all("classifier" in config + field for config, field in zip(differing["config"], differing["field"]))
    assert differing["note"].str.contains("tokens 0 and 1").all()
    assert len(table) > 60
    with pytest.raises(ValueError, match="batch 8 on an 8x8 grid"):
        compare_with_published(plan_for("small", 8, "n150"))


# -- rule functions ----------------------------------------------------------------------------------

B, H = sh.BLOCK, sh.HEIGHT

RULE_CASES = [
    (sh.check_subblock_fits_dest, ("ff1", 2, 6, 8), "matmul subblock", "2x6=12"),
    (sh.check_subblock_fits_dest, ("qk", 1, 7, 4), "matmul subblock", "at most 4"),
    (sh.check_mcast_block_divisibility, ("ff1", 7, 12, 7, 12, 1, 5), "matmul subblock", "out_block_w (12) must be divisible by out_subblock_w (5)"),
    (sh.check_reuse_subblock_divisibility, ("qk", 14, 7, 4, 1), "matmul subblock", "per_core_M (14) must be divisible by out_subblock_h (4)"),
    (sh.check_nonzero_block_dims, ("qkv", 0, 7, 9), "compute grid", "in0_block_w is 0"),
    (sh.check_grid_within_device, ("qkv", (12, 8), (8, 8)), "compute grid", "12x8"),
    (sh.check_kt_divisible, ("ff2", 96, 7), "matmul Kt", "Kt (96) must be divisible by in0_block_w (7)"),
    (sh.check_sharded_output_subblock, ("ff1", 2, 3, 12), "matmul sharded output", "out_subblock_w (3) == per_core_N (12)"),
    (sh.check_mcast_num_blocks, ("qkv", 56, 72, 7, 8, (8, 8)), "matmul 2D mcast", "ceil(72/8)=9"),
    (sh.check_mcast_num_blocks, ("qkv", 56, 72, 6, 9, (8, 8)), "matmul 2D mcast", "ceil(56/6)=10"),
    (sh.check_mcast_in0_shard, ("ff1", B, sh.ROW_MAJOR, False, True, (224, 96), 8, 3), "matmul 2D mcast", "per_core_M (8) must equal shard height / 32 (224/32=7)"),
    (sh.check_mcast_in0_shard, ("ff2", B, sh.ROW_MAJOR, False, True, (224, 384), 7, 5), "matmul 2D mcast", "(384/32=12) must be divisible by in0_block_w (5)"),
    (sh.check_mcast_in0_shard, ("qkv", B, sh.COL_MAJOR, False, True, (224, 96), 7, 3), "matmul 2D mcast", "transpose_mcast=False"),
    (sh.check_mcast_in0_shard, ("qkv", B, sh.ROW_MAJOR, False, False, (224, 96), 7, 3), "matmul 2D mcast", "fuse_batch"),
    (sh.check_mcast_output, ("qkv", H), "matmul 2D mcast", "must be BLOCK_SHARDED"),
    (sh.check_reuse_m, ("qk", 7, 672, 15), "matmul reuse (bmm)", "per_core_M (15) > M (7)"),
    (sh.check_reuse_m, ("qk", 7, 49, 14), "matmul reuse (bmm)", "total M (49) must be divisible by per_core_M (14)"),
    (sh.check_reuse_full_n, ("qk", 7, 6), "matmul reuse (bmm)", "N (7 tiles) must equal per_core_N (6)"),
    (sh.check_reuse_in0, ("qk", H, 2, (448, 64), 1, 14), "matmul reuse (bmm)", "in0_block_w x 32 (1x32=32)"),
    (sh.check_reuse_in0, ("qk", H, 2, (448, 64), 2, 7), "matmul reuse (bmm)", "per_core_M x 32 (7x32=224) must equal in0 shard height (448)"),
    (sh.check_reuse_in1, ("qk", H, 7, 2, 7, (128, 192), 14, 7), "matmul reuse (bmm)", "in1 shard width (192) must equal padded N (224)"),
    (sh.check_reuse_in1, ("pv", H, 7, 7, 2, (400, 64), 14, 2), "matmul reuse (bmm)", "in1 shard height (400) must be a multiple of K (224)"),
    (sh.check_reuse_same_sharding, ("qk", (6, 8), (8, 8), H, H), "matmul reuse (bmm)", "must share layout and grid"),
    (sh.check_reuse_output_blocks, ("qk", 672, 7, 14, 7, 64), "matmul reuse (bmm)", "(672/14 x 7/7 = 48) must be divisible by the shard grid's 64 cores"),
    (sh.check_reuse_output_layout, ("qk", sh.WIDTH), "matmul reuse (bmm)", "WIDTH_SHARDED"),
    (sh.check_split_heads_input, ("split_heads", H), "split heads", "BLOCK_SHARDED"),
    (sh.check_split_heads_output, ("split_heads", B), "split heads", "HEIGHT_SHARDED"),
    (sh.check_split_heads_batch_rows, ("split_heads", 8, 7), "split heads", "batch (8) must equal the attention grid rows (7)"),
    (sh.check_attention_rows_fit, ("split_heads", 9, 8), "split heads", "only 8 rows"),
    (sh.check_split_heads_cols, ("split_heads", 12, 8), "split heads", "heads (12) must be divisible by attention grid cols (8)"),
    (sh.check_split_heads_l1, ("split_heads", 1000, 1088, 1_499_136), "split heads", "2 x 1000 tiles x 1088 B"),
    (sh.check_concat_heads, ("concatenate_heads", H, B, (1120, 64), 224, 12), "concatenate heads", "heads (12) must be divisible by heads per shard (1120/224=5)"),
    (sh.check_concat_heads, ("concatenate_heads", H, H, (448, 64), 224, 12), "concatenate heads", "must not be HEIGHT_SHARDED"),
    (sh.check_block_shard, ("encoder", (1792, 768), (8, 8), (224, 128)), "block sharding", "[1792/8, 768/8] = [224, 96]"),
    (sh.check_block_shard, ("encoder", (1792, 768), (5, 8), (224, 153)), "block sharding", "768/5"),
    (sh.check_dtype, ("softmax", ttnn.bfloat4_b, (ttnn.bfloat16, ttnn.bfloat8_b)), "dtype", "bfloat4_b"),
    (sh.check_l1_fits, ("ff1", 2_000_000, 1_499_136), "L1 budget", "2000000 B per core exceeds the 1499136 B"),
    (sh.check_model_dims, ("model", ModelDims(768, 16, 12, 3072, 1000)), "model dims", "768/16=48"),
]


@pytest.mark.parametrize("rule,args,name,fragment", RULE_CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(RULE_CASES)])
def test_rule_functions_fire(rule, args, name, fragment):
    if fragment is None:  # a passing case next to its failing sibling
        rule(*args)
        return
    with pytest.raises(ShardingRuleError) as raised:
        rule(*args)
    message = str(raised.value)
    assert message.startswith(f"[{name}] op '{args[0]}': "), message
    assert fragment in message, message
    assert raised.value.rule == name and raised.value.op == args[0]


def _layernorm_kwargs(**changes):
    kwargs = dict(
        Mt=56, Kt=24, grid=(8, 8), block_h=7, block_w=3, subblock_w=3, shard=(224, 96), layout=B,
        orientation=sh.ROW_MAJOR, shard_grid=(8, 8), dest_tiles=8,
    )
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({}, None),
        ({"block_w": 4, "subblock_w": 4, "shard": (224, 128)}, "block_w (4) must equal ceil(Kt / grid cols) (ceil(24/8)=3)"),
        ({"block_h": 8, "shard": (256, 96)}, "block_h (8) must equal Mt / grid rows (56/8=7)"),
        ({"subblock_w": 2}, "block_w (3) must be divisible by subblock_w (2)"),
        ({"dest_tiles": 2}, "subblock_w (3) must be at most 2"),
        ({"layout": H}, "must not be HEIGHT_SHARDED"),
        ({"shard": (224, 64)}, "block_w x 32 (3x32=96) must equal shard width (64)"),
        ({"shard_grid": (8, 9)}, "shard grid 8x9 must lie within the program grid 8x8"),
    ],
)
def test_layernorm_rule(changes, fragment):
    if fragment is None:
        sh.check_layernorm("layernorm_before", **_layernorm_kwargs())
        return
    with pytest.raises(ShardingRuleError, match=r"^\[layernorm sharded\] op 'layernorm_before'") as raised:
        sh.check_layernorm("layernorm_before", **_layernorm_kwargs(**changes))
    assert fragment in str(raised.value)


def _softmax_kwargs(**changes):
    kwargs = dict(
        M=8 * 12 * 224, K=224, last_dim=224, grid=(6, 8), block_h=14, block_w=7, subblock_w=7,
        shard=(448, 224), shard_grid=(6, 8), dest_tiles=8,
    )
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({}, None),
        ({"block_h": 7}, "number of shards (M*K/(block_w*block_h*1024) = 21504*224/(7*7*1024) = 96) must equal number of cores (6x8=48)"),
        ({"block_w": 6, "subblock_w": 6}, "block_w x 32 (6x32=192) must equal input shape[3] (224)"),
        ({"subblock_w": 2}, "block_w (7) must be divisible by subblock_w (2)"),
        ({"dest_tiles": 4}, "subblock_w (7) must be at most 4"),
        ({"inplace": False}, "only runs in place"),
        ({"shard_grid": (8, 6)}, "shard grid 8x6 must be the program grid 6x8"),
    ],
)
def test_softmax_rule(changes, fragment):
    if fragment is None:
        sh.check_softmax("softmax", **_softmax_kwargs())
        return
    with pytest.raises(ShardingRuleError, match=r"^\[softmax sharded\] op 'softmax'") as raised:
        sh.check_softmax("softmax", **_softmax_kwargs(**changes))
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "shape,layout,sharded,fragment",
    [
        ((8, 1, 1, 224), ttnn.TILE_LAYOUT, False, None),
        ((8, 1, 32, 224), ttnn.TILE_LAYOUT, False, None),
        ((8, 1, 7, 32), ttnn.ROW_MAJOR_LAYOUT, False, None),
        ((1, 1, 1, 224), ttnn.TILE_LAYOUT, False, "mask batch (1) must equal the scores' batch (8)"),
        ((8, 12, 1, 224), ttnn.TILE_LAYOUT, False, "intermediate dimensions must be 1, got 12"),
        ((8, 1, 1, 198), ttnn.TILE_LAYOUT, False, "mask width (198) must equal the scores' key dimension (224)"),
        ((8, 1, 1, 224), ttnn.ROW_MAJOR_LAYOUT, False, "row-major mask shape [8, 1, 1, 224] must be [8, 1, 7, 32]"),
        ((8, 1, 1, 224), ttnn.TILE_LAYOUT, True, "sharded mask must be TILE with the input's shape"),
    ],
)
def test_softmax_mask_rule(shape, layout, sharded, fragment):
    if fragment is None:
        sh.check_softmax_mask("softmax", shape, layout, sharded, (8, 12, 224, 224))
        return
    with pytest.raises(ShardingRuleError, match=r"^\[softmax mask\] op 'softmax'") as raised:
        sh.check_softmax_mask("softmax", shape, layout, sharded, (8, 12, 224, 224))
    assert fragment in str(raised.value)


# -- broken plans: validate() runs the rules on the real ttnn objects -------------------------------


def _mcast(plan, name, **changes):
    c = getattr(plan, name)
    g = c.compute_with_storage_grid_size
    fields = dict(
        compute_with_storage_grid_size=(g.x, g.y), in0_block_w=c.in0_block_w, out_subblock_h=c.out_subblock_h,
        out_subblock_w=c.out_subblock_w, per_core_M=c.per_core_M, per_core_N=c.per_core_N,
        transpose_mcast=c.transpose_mcast, fused_activation=(ttnn.UnaryOpType.GELU, True) if c.fused_activation else None,
    )
    fields.update(changes)
    return ttnn.MatmulMultiCoreReuseMultiCastProgramConfig(**fields)


def _reuse(plan, name, **changes):
    c = getattr(plan, name)
    g = c.compute_with_storage_grid_size
    fields = dict(
        compute_with_storage_grid_size=(g.x, g.y), in0_block_w=c.in0_block_w, out_subblock_h=c.out_subblock_h,
        out_subblock_w=c.out_subblock_w, per_core_M=c.per_core_M, per_core_N=c.per_core_N,
    )
    fields.update(changes)
    return ttnn.MatmulMultiCoreReuseProgramConfig(**fields)


BROKEN_PLANS = [
    ("ff1", lambda p: {"ff1": _mcast(p, "ff1", per_core_M=8, out_subblock_w=6)}, "matmul 2D mcast", "per_core_M (8) must equal shard height / 32 (224/32=7)"),
    ("ff1", lambda p: {"ff1": _mcast(p, "ff1", out_subblock_h=7, out_subblock_w=12)}, "matmul subblock", "7x12=84"),
    ("ff1", lambda p: {"ff1": _mcast(p, "ff1", fused_activation=None)}, "matmul 2D mcast", "GELU"),
    ("ff2", lambda p: {"ff2": _mcast(p, "ff2", in0_block_w=5)}, "matmul Kt", "Kt (96) must be divisible by in0_block_w (5)"),
    ("qkv", lambda p: {"qkv": _mcast(p, "qkv", compute_with_storage_grid_size=(9, 8))}, "compute grid", "9x8"),
    ("qkv", lambda p: {"qkv": _mcast(p, "qkv", per_core_N=8, out_subblock_w=4)}, "matmul 2D mcast", "ceil(72/8)=9"),
    ("classifier", lambda p: {"classifier": _mcast(p, "classifier", in0_block_w=2)}, "matmul 2D mcast", "shard width / 32 (96/32=3) must be divisible by in0_block_w (2)"),
    ("query_by_key", lambda p: {"query_by_key": _reuse(p, "query_by_key", per_core_N=6, out_subblock_w=6)}, "matmul reuse (bmm)", "N (7 tiles) must equal per_core_N (6)"),
    ("attention_by_value", lambda p: {"attention_by_value": _reuse(p, "attention_by_value", in0_block_w=1)}, "matmul reuse (bmm)", "in0 shard width (224) must equal in0_block_w x 32 (1x32=32)"),
    (
        "softmax",
        lambda p: {"softmax": ttnn.SoftmaxShardedMultiCoreProgramConfig(compute_with_storage_grid_size=(6, 8), subblock_w=7, block_h=7, block_w=7)},
        "softmax sharded",
        "must equal number of cores (6x8=48)",
    ),
    (
        "layernorm_before",
        lambda p: {"layernorm": ttnn.LayerNormShardedMultiCoreProgramConfig(compute_with_storage_grid_size=(8, 8), subblock_w=4, block_h=7, block_w=4, inplace=False)},
        "layernorm sharded",
        "block_w (4) must equal ceil(Kt / grid cols) (ceil(24/8)=3)",
    ),
    (
        "layernorm_before",
        lambda p: {"layernorm_compute": ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, fp32_dest_acc_en=True)},
        "layernorm sharded",
        None,  # 3-tile subblock still fits the 4 fp32 tiles
    ),
    (
        "split_heads",
        lambda p: {"qkv_attention_memory_config": sh.sharded_memory_config(sh.BLOCK, (8, 8), (224, 288)), "attention_grid": ttnn.CoreGrid(y=8, x=8)},
        "split heads",
        "heads (12) must be divisible by attention grid cols (8)",
    ),
    (
        "split_heads",
        lambda p: {"heads_memory_config": ttnn.L1_BLOCK_SHARDED_MEMORY_CONFIG},
        "split heads",
        "HEIGHT_SHARDED",
    ),
    (
        "concatenate_heads",
        lambda p: {"context_memory_config": sh.sharded_memory_config(sh.BLOCK, (6, 8), (224, 64))},
        "concatenate heads",
        "output is [224, 128] shards",
    ),
    (
        "encoder_memory_config",
        lambda p: {"encoder_memory_config": sh.sharded_memory_config(sh.BLOCK, (8, 8), (224, 128))},
        "block sharding",
        "[1792/8, 768/8] = [224, 96]",
    ),
]


@pytest.mark.parametrize("op,change,rule,fragment", BROKEN_PLANS, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(BROKEN_PLANS)])
def test_broken_plan_is_rejected(op, change, rule, fragment):
    plan = plan_for("base", 8, "n150")
    broken = dataclasses.replace(plan, **change(plan))
    if fragment is None:
        broken.validate()
        return
    with pytest.raises(ShardingRuleError) as raised:
        broken.validate()
    message = str(raised.value)
    assert message.startswith(f"[{rule}] op '{op}': "), message
    assert fragment in message, message


def test_l1_budget_rule_in_make_plan():
    with pytest.raises(ShardingRuleError, match=r"^\[L1 budget\] op 'layernorm_before': about \d+ B per core exceeds the 200000 B"):
        make_plan(DIMS["base"], 8, (8, 8), 200_000)


def test_every_rule_name_is_exercised():
    exercised = {case[2] for case in RULE_CASES} | {case[2] for case in BROKEN_PLANS}
    exercised |= {"layernorm sharded", "softmax sharded", "softmax mask", "L1 budget"}
    assert set(sh.ALL_RULES) <= exercised
    assert set(sh.RULE_SOURCES) == set(sh.ALL_RULES)


# -- dtypes and destination registers -------------------------------------------------------------


def test_dest_register_budget():
    assert sh.dest_register_tiles() == 8
    assert sh.dest_register_tiles(fp32_dest_acc=True) == 4
    assert sh.dest_register_tiles(dst_full_sync=True) == 16


def test_fp32_activations_shrink_subblocks_to_four_tiles():
    plan = plan_for("base", 8, "n150", activation_dtype=ttnn.float32)
    assert plan.matmul_dest_tiles == 4
    for c in (plan.qkv, plan.query_by_key, plan.attention_by_value, plan.self_output, plan.ff1, plan.ff2, plan.classifier):
        assert c.out_subblock_h * c.out_subblock_w <= 4 and c.per_core_N % c.out_subblock_w == 0
    assert plan.query_by_key.out_subblock_w == 1 and plan.ff1.out_subblock_w == 4 and plan.softmax.subblock_w == 1


def test_unsupported_activation_dtype_names_rule():
    with pytest.raises(ShardingRuleError, match=r"^\[dtype\] op 'activations': dtype bfloat4_b"):
        plan_for("base", 8, "n150", activation_dtype=ttnn.bfloat4_b)


# -- the L1 table ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,chip", [("base", "n150"), ("small", "p150"), ("base", "p150-12x10"), ("tiny", "n150")])
def test_table_has_one_row_per_op_and_fits(size, chip):
    plan = plan_for(size, CHIPS[chip].grid[1], chip)
    table = plan.table()
    assert list(table["op"]) == OPS
    assert {"op", "grid", "memory layout", "shard shape", "L1 bytes/core", "fits L1"} <= set(table.columns)
    assert table["fits L1"].all()
    assert (table["L1 bytes/core"] > 0).all() and (table["L1 bytes/core"] < plan.l1_bytes_per_core).all()


def test_table_numbers_base_wormhole():
    table = plan_for("base", 8, "n150").table().set_index("op")
    assert table.loc["qkv", "grid"] == "8x8" and table.loc["qkv", "shard shape"] == "224x288"
    assert table.loc["query_by_key", "shard shape"] == "448x224"
    assert table.loc["split_heads", "memory layout"] == "HEIGHT_SHARDED"
    # the heads read tokens 0 and 1: one tile row per image, 8 images on 8 rows; 2 x 1152 classes on 8 columns
    assert table.loc["classifier", "shard shape"] == "32x288" and table.loc["classifier", "grid"] == "8x8"
    # FF1: in0 shard 7x3 + 2x(7x3) mcast + 2x(3x12) weights + 12 bias + 7x12 out (bf8_b) + 7x12 bf16 partials
    expected = (21 + 42 + 72 + 12 + 84) * 1088 + 84 * 2048
    assert table.loc["ff1", "L1 bytes/core"] == expected


# -- attention mask ----------------------------------------------------------------------------------


def test_attention_mask_shape_and_values():
    plan = plan_for("base", 8, "n150")
    assert plan.attention_mask_shape == (8, 1, 1, 224)
    assert plan.attention_mask_layout == ttnn.TILE_LAYOUT
    mask = attention_mask(plan, torch.bfloat16)
    assert mask.shape == (8, 1, 1, 224) and mask.dtype == torch.bfloat16
    assert torch.all(mask[..., :198] == 0)
    assert torch.all(mask[..., 198:] <= -9000)
    assert attention_mask(plan, ttnn.float32).dtype == torch.float32
    with pytest.raises(ValueError):
        attention_mask(plan, ttnn.bfloat8_b)


def test_attention_mask_hides_padded_keys_in_the_golden_softmax():
    plan = plan_for("small", 2, "n150")
    heads, seq, real = plan.dims.heads, plan.dims.padded_tokens, plan.dims.tokens
    scores = torch.randn(2, heads, seq, seq) * 4
    golden = ttnn.get_golden_function(ttnn.scale_mask_softmax_in_place)
    probs = golden(scores, 1 / math.sqrt(plan.dims.head_size), attention_mask(plan, torch.float32))
    assert torch.all(probs[..., real:] == 0)
    expected = torch.softmax(scores[..., :real] / math.sqrt(plan.dims.head_size), dim=-1)
    torch.testing.assert_close(probs[..., :real], expected)


def test_attention_mask_converts_to_tile_layout():
    plan = plan_for("tiny", 3, "n150")
    tensor = ttnn.from_torch(attention_mask(plan), dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)
    assert list(tensor.shape) == [3, 1, 1, 224]
    assert list(tensor.padded_shape) == [3, 1, 32, 224]


# -- the plan command --------------------------------------------------------------------------------


def _run_plan(capsys, *argv):
    from deit_tt.cli import plan as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code = command.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr().out


def test_plan_command_prints_table_and_comparison(capsys):
    code, out = _run_plan(capsys, "--model", "random:base", "--chip", "n150", "--batch", "8", "--compare-published")
    assert code == 0
    assert "encoder 8x8, attention 6x8" in out
    for op in OPS:
        assert op in out
    assert "ff1: MatmulMultiCoreReuseMultiCastProgramConfig" in out
    assert "matmul_compute: WormholeComputeKernelConfig(math_fidelity=LoFi, math_approx_mode=False" in out
    assert " object at 0x" not in out  # every config printed with its fields
    assert "attention mask: shape [8, 1, 1, 224]" in out
    assert "69 of 77 fields match the published design" in out


def test_plan_command_errors_are_user_facing(capsys):
    from deit_tt.errors import UserFacingError

    with pytest.raises(UserFacingError, match=r"\[split heads\]"):
        _run_plan(capsys, "--model", "random:tiny", "--chip", "p150", "--batch", "11")
    with pytest.raises(UserFacingError, match="compare-published"):
        _run_plan(capsys, "--model", "random:small", "--compare-published")
    code, out = _run_plan(capsys, "--model", "random:small", "--chip", "p150")
    assert code == 0 and "batch 10" in out and "encoder 6x10" in out


def test_plan_command_reads_a_saved_config_directory(capsys, tmp_path):
    random_config("small").save_pretrained(tmp_path)
    code, out = _run_plan(capsys, "--model", str(tmp_path), "--chip", "p150-12x10", "--batch", "4")
    assert code == 0 and "encoder 12x7, attention 6x4" in out


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fold_input_is_height_sharded_on_two_cores_per_image(batch):
    memory_config = plan_for("base", batch=batch).fold_input_memory_config
    assert memory_config.memory_layout == ttnn.TensorMemoryLayout.HEIGHT_SHARDED
    assert memory_config.shard_spec.grid.num_cores() == 2 * batch
    # B x 224 x 14 rows of 64 pixel values split evenly: tt-metal stages [1568, 64] per core at batch 8
    assert list(memory_config.shard_spec.shape) == [1568, 64]


# -- padding and core maps (notebooks 01 and 01a) -------------------------------------------------


def test_padding_table():
    table = sh.padding_table(ModelDims.from_config(random_config("base"))).set_index("quantity")
    assert tuple(table.loc["sequence (tokens)", ["real", "padded", "tiles"]]) == (198, 224, 7)
    assert tuple(table.loc["classifier outputs", ["real", "padded", "tiles"]]) == (1000, 1152, 36)
    assert tuple(table.loc["patch features", ["real", "padded"]]) == (768, 1024)
    assert (table["padded"] % sh.TILE == 0).all()


def test_encoder_shard_map_covers_the_activation_exactly_once():
    plan = plan_for()
    cores = sh.encoder_shard_map(plan)
    assert len(cores) == plan.encoder_grid.x * plan.encoder_grid.y == 64
    covered = torch.zeros(plan.batch * 224, 768, dtype=torch.int32)
    for r in cores.itertuples():
        covered[r.row_start : r.row_end, r.col_start : r.col_end] += 1
    assert torch.equal(covered, torch.ones_like(covered))
    core = cores[(cores["x"] == 3) & (cores["y"] == 5)].iloc[0]
    assert (core.image_first, core.image_last, core.col_start, core.col_end) == (5, 5, 288, 384)
    assert (core.token_tile_start, core.token_tile_end) == (0, 7)
    assert core.shard_bytes == 7 * 3 * 1088  # 224x96 bfloat8_b


def test_encoder_shard_map_splits_one_image_by_token_tiles():
    plan = plan_for("tiny", 1)
    cores = sh.encoder_shard_map(plan)
    assert plan.encoder_grid.y == 7  # 7 token tiles of one image, one per core row
    assert set(cores["image_first"]) == set(cores["image_last"]) == {0}
    assert sorted(set(zip(cores["token_tile_start"], cores["token_tile_end"]))) == [(t, t + 1) for t in range(7)]


def test_attention_shard_map_gives_each_image_every_head_once():
    plan = plan_for()
    cores = sh.attention_shard_map(plan)
    assert len(cores) == plan.attention_grid.x * plan.batch
    for _, image_cores in cores.groupby("image"):
        heads = sorted(h for r in image_cores.itertuples() for h in range(r.head_first, r.head_last + 1))
        assert heads == list(range(12))
    assert cores["qkv_shard_shape"].iloc[0] == "224x384" and cores["scores_shard_shape"].iloc[0] == "448x224"


def test_l1_by_grid_reports_the_peak_of_each_grid():
    plan = plan_for()
    summary = sh.l1_by_grid(plan).set_index("grid role")
    assert list(summary.index) == ["encoder", "attention", "classifier"]
    table = plan.table()
    encoder_ops = table[[sh.grid_role(op) == "encoder" for op in table["op"]]]
    assert summary.loc["encoder", "L1 bytes/core"] == encoder_ops["L1 bytes/core"].max()
    assert summary.loc["attention", "grid"] == "6x8"
    assert summary["ops"].sum() == len(table)


def test_plan_command_knows_the_built_in_models(capsys):
    from deit_tt.errors import UserFacingError

    code, out = _run_plan(capsys, "--model", "shapes:tiny", "--chip", "n150", "--batch", "8")
    assert code == 0 and "model: shapes:tiny" in out and "10 classes (padded 384)" in out
    with pytest.raises(UserFacingError, match="no built-in model 'shapes:huge'"):
        _run_plan(capsys, "--model", "shapes:huge")
