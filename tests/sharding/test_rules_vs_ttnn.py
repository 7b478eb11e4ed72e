"""Every sharding rule, broken on purpose: our check refuses it, and so does ttnn itself on the n150 mock device.

Each case builds the smallest real ttnn call that breaks one invariant (device tensors on the mock, a
deliberately wrong program or memory config), asserts ttnn's ``TT_FATAL`` text, and asserts that our
``check_*`` function refuses the same numbers. Where ttnn accepts what a rule refuses, a test shows the
acceptance and the rule's docstring says why it stays (or the rule was dropped).

Rule function -> what ttnn 0.81.1 says (mock n150, host-side validators, factories and allocator):

2D mcast linear (MatmulMultiCoreReuseMultiCastProgramConfig)
- check_grid_within_device: "compute_with_storage_grid_size (9, 2) must fit within device grid (8, 8)"
- check_nonzero_block_dims: "in0_block_w is 0, which is not valid"; kept for per_core_N/M = 0: ttnn divides by it
  in compute_output_specs and the process dies with SIGFPE (not tested in-process)
- check_subblock_fits_dest: "out_subblock_w 3 times out_subblock_h 3 needs to be at most 8 to fit in hardware"
- check_mcast_block_divisibility: "per_core_M (3) must be divisible by out_block_h (2)",
  "out_block_w (2) must be divisible by out_subblock_w (3)"
- check_kt_divisible: "Kt (3) must be divisible by in0_block_w (2)" (interleaved in0; with a block-sharded in0 the
  shard-width clause of check_mcast_in0_shard fires first)
- check_sharded_output_subblock: "out_subblock_w (1) must equal per_core_N (3) or out_subblock_h (3) must be 1"
- check_mcast_num_blocks: "Num output blocks along x (6) must be smaller than or equal to the number of columns in
  compute grid (2)!" (and along y)
- check_mcast_in0_shard: "Input tensor A must have ROW_MAJOR shard orientation for non-transpose MCAST",
  "Batch fusion is required when input A is sharded", "Unsupported memory layout TensorMemoryLayout::WIDTH_SHARDED",
  "per_core_M (6) must equal shard_shape[0] / in0_tile.get_height() (3)",
  "shard_shape[1] / in0_tile.get_width() (3) must be divisible by in0_block_w (2)"
- check_mcast_output: "Shard width 96 must match physical width 192 for height sharded" (tensor_spec.cpp, when the
  matmul builds its output spec)
- check_mcast_in0_grid: dropped (ttnn accepts an in0 shard grid narrower than the program grid)

Batched matmul (MatmulMultiCoreReuseProgramConfig)
- check_reuse_subblock_divisibility: "per_core_M (3) must be divisible by out_subblock_h (2)",
  "per_core_N (3) must be divisible by out_subblock_w (2)"
- check_reuse_m: "per_core_M, 2, must divide M, 3, if per_core_M < M!", "per_core_M, 4, must be a multiple of M, 3
  if per_core_M > M!"
- check_reuse_full_n: "Target number of cores 6 is greater than total number of available cores 2" (work_split.cpp)
- check_reuse_in0: "input A memory layout must not be WIDTH_SHARDED", "in0 shard_shape[1] (64) must equal
  in0_block_w (1) * in0_tile width (32)"
- check_reuse_in1: "per_core_M (1) must be a multiple of M (2) when input B is sharded"
- check_reuse_same_sharding: "input A and B must have matching shard grids", "Input tensors A and B must have
  matching memory layouts"
- check_reuse_output_blocks: "num_output_blocks (1) must be evenly divisible by the number of cores in the input
  shard grid (2)"
- check_reuse_output_layout: "Shard height 96 must match physical height 192 for width sharded" (tensor_spec.cpp)

split_query_key_value_and_split_heads (create_qkv_heads)
- check_model_dims: "Invalid head size: 48. The head size must be a multiple of the tile width (32)" (the other
  clauses — hidden % heads, tile-aligned hidden/intermediate, image % patch — guard our own derivation)
- check_dtype: "Unsupported data format" (create_qkv_heads), "Input tensor must be FLOAT32, BFLOAT16, or BFLOAT8_B,
  got: DataType::BFLOAT4_B" (layer_norm)
- check_split_heads_input: "Input tensor memory layout must be BLOCK_SHARDED but got TensorMemoryLayout::HEIGHT_SHARDED",
  "Invalid input tensor: expected 3 dimensions, but found 4."
- check_split_heads_output: "Number of shards along height 2 must not exceed number of rows 1" (tensor_spec.cpp)
- check_split_heads_batch_rows: "Batch size 2 must be equal to num cores 1"
- check_attention_rows_fit: "Batch size 16 must be equal to num cores 8" (the same check, seen from the device grid)
- check_split_heads_cols: "number of groups 3 must be a multiple of the number of width cores 2"
- check_split_heads_l1: the allocator, "Out of Memory: Not enough space to allocate 229376 B L1 buffer"
- check_split_heads_width, check_split_heads_rows: dropped (implied by check_block_shard and
  check_split_heads_batch_rows; they could never fire)

concatenate_heads (nlp_concat_heads)
- check_concat_heads: "Input tensor memory layout must not be WIDTH_SHARDED", "Input tensor padded height (3) must be
  divisible by shard height / padded height (64 / 32)", "Shard width 32 must match physical width 64 for height
  sharded" (HEIGHT output); kept for shard height < S: ttnn divides by zero (SIGFPE); its shard-width == head-size
  clause was dropped (ttnn accepts)

layer_norm (LayerNormShardedMultiCoreProgramConfig)
- check_layernorm: "Height sharded inputs are not supported.", "block_w must be divisible by subblock_w.",
  "subblock width must less than 8 tiles" / "less than 4 tiles in fp32 mode", "shard_spec.grid size 2x2 does not fit
  within program_config grid 1x2", "block_h (1) must equal ceil(Mt / num_cores_r) (2)", "block_w (1) must equal to
  K (in tiles) / num_cores_c (2)"

scale_mask_softmax_in_place (SoftmaxShardedMultiCoreProgramConfig)
- check_softmax: "block_w must be divisible by subblock_w.", "shard width must equal to input tensor shape[3]!",
  "number of shards must equal to number of cores", "shard_spec.grid size 2x1 does not fit within program_config
  grid 1x2"; kept for subblock_w > dest registers: ttnn accepts subblock_w 9 (the compute kernel would overrun the
  destination registers; only a real kernel build could tell)
- check_softmax_mask: "Non-sharded mask intermediate dimensions must be 1", "Non-sharded mask shape must match
  expected shape" (ROW_MAJOR), "Sharded mask shape must match input tensor shape"; kept for a TILE mask of the wrong
  width, batch or height: ttnn accepts them, the reader then reads the wrong mask tiles

Tensors and the budget
- check_block_shard: "Physical shard shape (32, 48) must be tile {32, 32} sized!", "Number of shards along width 3
  must not exceed number of columns 2"; kept for uneven shards, which ttnn accepts (see its docstring)
- check_l1_fits: "Out of Memory: ... but bank size is 1360544 B" — the budget is the allocator's bank
- check_residual_add, check_height_shard: dropped (ttnn accepts operands on different shard specs / uneven height
  shards, and the height-shard check could never fire)

Rules the walk applies inline (not ``check_*`` functions) are not covered here: the encoder/attention/classifier
grid equalities, FF1's fused GELU, LayerNorm ``inplace=False``, heads in L1, the concat output shard and the bmm
program grid == heads' shard grid (ttnn accepts a larger bmm program grid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import ttnn

from deit_tt.backends import runtime
from deit_tt import sharding as sh
from deit_tt.sharding import BLOCK, COL_MAJOR, HEIGHT, ROW_MAJOR, WIDTH, ShardingRuleError, sharded_memory_config

from test_mock_device import needs_mock

pytestmark = needs_mock

BANK = runtime.CHIPS["n150"].l1_bytes_per_core
HS, BS, WS = ttnn.L1_HEIGHT_SHARDED_MEMORY_CONFIG, ttnn.L1_BLOCK_SHARDED_MEMORY_CONFIG, ttnn.L1_WIDTH_SHARDED_MEMORY_CONFIG


@pytest.fixture(scope="module")
def device():
    selected = runtime.open_mock("n150")
    yield selected.device
    selected.close()


def tensor(device, shape, memory_config=ttnn.DRAM_MEMORY_CONFIG, dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT):
    return ttnn.from_torch(torch.zeros(shape), dtype=dtype, layout=layout, device=device, memory_config=memory_config)


def shards(layout, grid, shard, orientation=ROW_MAJOR):
    if orientation == ROW_MAJOR:
        return sharded_memory_config(layout, grid, shard)
    spec = ttnn.ShardSpec(sh.core_range(grid), list(shard), orientation)
    return ttnn.MemoryConfig(layout, ttnn.BufferType.L1, spec)


def run(op, *args, **kwargs):
    """Run one ttnn op and free what it returned (the mock computes nothing; only acceptance matters)."""
    out = op(*args, **kwargs)
    for t in out if isinstance(out, (list, tuple)) else [out]:
        if t is not None:
            ttnn.deallocate(t)


# -- the ops, each with a baseline ttnn accepts ------------------------------------------------------
# 2D mcast linear: in0 [192, 64] block sharded on 2x2 (shard 96x32), weight [64, 192] in DRAM:
# Mt 6, Kt 2, Nt 6 -> per_core_M 3, per_core_N 3, in0_block_w 1.


def mcast(**changes):
    config = dict(
        compute_with_storage_grid_size=(2, 2), in0_block_w=1, out_subblock_h=1, out_subblock_w=3,
        per_core_M=3, per_core_N=3, transpose_mcast=False, fused_activation=None,
    )
    return ttnn.MatmulMultiCoreReuseMultiCastProgramConfig(**{**config, **changes})


def linear(device, config, in0=shards(BLOCK, (2, 2), (96, 32)), out=BS, shape=(192, 64), n=192):
    x, w = tensor(device, (1, 1, *shape), in0), tensor(device, (1, 1, shape[1], n))
    run(ttnn.linear, x, w, program_config=config, memory_config=out)


# Batched matmul of heads: in0 [1, 2, 96, 64] and in1 [1, 2, 64, 96] height sharded on 2 cores:
# per head M 3, K 2, N 3 tiles -> per_core_M 3 (one head per core), per_core_N 3, in0_block_w 2.


def reuse(**changes):
    config = dict(compute_with_storage_grid_size=(2, 1), in0_block_w=2, out_subblock_h=1, out_subblock_w=3, per_core_M=3, per_core_N=3)
    return ttnn.MatmulMultiCoreReuseProgramConfig(**{**config, **changes})


def bmm(device, config, in0=shards(HEIGHT, (2, 1), (96, 64)), in1=shards(HEIGHT, (2, 1), (64, 96)), out=HS, a=(1, 2, 96, 64), b=(1, 2, 64, 96)):
    run(ttnn.matmul, tensor(device, a, in0), tensor(device, b, in1), program_config=config, memory_config=out)


# Split heads: QKV [1, 64, 192] (2 heads of 32) block sharded on 2x1.


def split(device, shape=(1, 64, 192), memory_config=shards(BLOCK, (2, 1), (64, 96)), heads=2, out=HS, dtype=ttnn.bfloat16):
    qkv = tensor(device, shape, memory_config, dtype)
    run(ttnn.transformer.split_query_key_value_and_split_heads, qkv, num_heads=heads, memory_config=out)


def concat(device, shape, memory_config, out):
    run(ttnn.transformer.concatenate_heads, tensor(device, shape, memory_config), memory_config=out)


# LayerNorm: x [64, 128] block sharded on 2x2 (shard 32x64): block_h 1, block_w 2.


def layernorm_config(**changes):
    config = dict(compute_with_storage_grid_size=(2, 2), subblock_w=2, block_h=1, block_w=2, inplace=False)
    return ttnn.LayerNormShardedMultiCoreProgramConfig(**{**config, **changes})


def layernorm(device, config, shape=(64, 128), memory_config=shards(BLOCK, (2, 2), (32, 64)), out=BS, dtype=ttnn.bfloat16, fp32_acc=False):
    x, gamma = tensor(device, (1, 1, *shape), memory_config, dtype), tensor(device, (1, shape[1]))
    compute = ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, fp32_dest_acc_en=fp32_acc)
    run(ttnn.layer_norm, x, weight=gamma, bias=gamma, program_config=config, memory_config=out, compute_kernel_config=compute)


# Softmax: scores [1, 2, 64, 64] height sharded on 2 cores (one head each), mask [1, 1, 1, 64] in DRAM.


def softmax_config(**changes):
    config = dict(compute_with_storage_grid_size=(2, 1), subblock_w=2, block_h=2, block_w=2)
    return ttnn.SoftmaxShardedMultiCoreProgramConfig(**{**config, **changes})


def softmax(device, config, shape=(1, 2, 64, 64), memory_config=shards(HEIGHT, (2, 1), (64, 64)), mask=(1, 1, 1, 64),
            mask_memory_config=ttnn.DRAM_MEMORY_CONFIG, mask_layout=ttnn.TILE_LAYOUT):
    scores, mask = tensor(device, shape, memory_config), tensor(device, mask, mask_memory_config, layout=mask_layout)
    ttnn.scale_mask_softmax_in_place(scores, 0.125, mask, program_config=config, numeric_stable=True)


def test_every_baseline_is_accepted_by_ttnn(device):
    linear(device, mcast())
    bmm(device, reuse())
    split(device)
    concat(device, (1, 2, 64, 32), shards(HEIGHT, (2, 1), (64, 32)), shards(BLOCK, (2, 1), (64, 32)))
    layernorm(device, layernorm_config())
    softmax(device, softmax_config())


# -- broken configurations: our rule and ttnn both refuse -------------------------------------------


@dataclass
class Case:
    id: str  # the rule function's name without "check_", then "-" and the clause
    ours: Callable[[], None]  # our rule function on the same numbers
    ttnn: Callable[[object], None]  # the ttnn call on the mock device
    message: str  # ttnn's TT_FATAL text (matched literally)


CASES = [
    # 2D mcast linear
    Case("grid_within_device", lambda: sh.check_grid_within_device("qkv", (9, 2), (8, 8)),
         lambda d: linear(d, mcast(compute_with_storage_grid_size=(9, 2))),
         "compute_with_storage_grid_size (9, 2) must fit within device grid (8, 8)"),
    Case("nonzero_block_dims", lambda: sh.check_nonzero_block_dims("qkv", 0, 3, 3),
         lambda d: linear(d, mcast(in0_block_w=0)), "in0_block_w is 0, which is not valid"),
    Case("subblock_fits_dest-mcast", lambda: sh.check_subblock_fits_dest("qkv", 3, 3, 8),
         lambda d: linear(d, mcast(out_subblock_h=3, out_subblock_w=3)),
         "out_subblock_w 3 times out_subblock_h 3 needs to be at most 8 to fit in hardware"),
    Case("mcast_block_divisibility-per_core_M", lambda: sh.check_mcast_block_divisibility("qkv", 3, 3, 2, 3, 1, 3),
         lambda d: linear(d, mcast(out_block_h=2)), "per_core_M (3) must be divisible by out_block_h (2)"),
    Case("mcast_block_divisibility-out_block_w", lambda: sh.check_mcast_block_divisibility("qkv", 3, 3, 3, 2, 1, 3),
         lambda d: linear(d, mcast(out_block_w=2)), "out_block_w (2) must be divisible by out_subblock_w (3)"),
    Case("kt_divisible", lambda: sh.check_kt_divisible("qkv", 3, 2),
         lambda d: linear(d, mcast(in0_block_w=2), in0=ttnn.L1_MEMORY_CONFIG, shape=(192, 96), out=ttnn.L1_MEMORY_CONFIG),
         "Kt (3) must be divisible by in0_block_w (2)"),
    Case("sharded_output_subblock-mcast", lambda: sh.check_sharded_output_subblock("qkv", 3, 1, 3),
         lambda d: linear(d, mcast(out_subblock_h=3, out_subblock_w=1)),
         "out_subblock_w (1) must equal per_core_N (3) or out_subblock_h (3) must be 1"),
    Case("mcast_num_blocks-x", lambda: sh.check_mcast_num_blocks("qkv", 6, 6, 3, 1, (2, 2)),
         lambda d: linear(d, mcast(per_core_N=1, out_subblock_w=1)),
         "Num output blocks along x (6) must be smaller than or equal to the number of columns in compute grid (2)!"),
    Case("mcast_num_blocks-y", lambda: sh.check_mcast_num_blocks("qkv", 6, 6, 1, 3, (2, 2)),
         lambda d: linear(d, mcast(per_core_M=1)),
         "Num output blocks along y (6) must be smaller than or equal to the number of rows in compute grid (2)!"),
    Case("mcast_in0_shard-orientation", lambda: sh.check_mcast_in0_shard("qkv", BLOCK, COL_MAJOR, False, True, (96, 32), 3, 1),
         lambda d: linear(d, mcast(), in0=shards(BLOCK, (2, 2), (96, 32), COL_MAJOR)),
         "Input tensor A must have ROW_MAJOR shard orientation for non-transpose MCAST"),
    Case("mcast_in0_shard-fuse_batch", lambda: sh.check_mcast_in0_shard("qkv", BLOCK, ROW_MAJOR, False, False, (96, 32), 3, 1),
         lambda d: linear(d, mcast(fuse_batch=False)), "Batch fusion is required when input A is sharded"),
    Case("mcast_in0_shard-width_sharded", lambda: sh.check_mcast_in0_shard("qkv", WIDTH, ROW_MAJOR, False, True, (192, 32), 3, 1),
         lambda d: linear(d, mcast(), in0=shards(WIDTH, (2, 1), (192, 32))),
         "Unsupported memory layout TensorMemoryLayout::WIDTH_SHARDED"),
    Case("mcast_in0_shard-per_core_M", lambda: sh.check_mcast_in0_shard("qkv", BLOCK, ROW_MAJOR, False, True, (96, 32), 6, 1),
         lambda d: linear(d, mcast(per_core_M=6)), "per_core_M (6) must equal shard_shape[0] / in0_tile.get_height() (3)"),
    Case("mcast_in0_shard-in0_block_w", lambda: sh.check_mcast_in0_shard("qkv", BLOCK, ROW_MAJOR, False, True, (96, 96), 3, 2),
         lambda d: linear(d, mcast(in0_block_w=2), in0=shards(BLOCK, (2, 2), (96, 96)), shape=(192, 192)),
         "shard_shape[1] / in0_tile.get_width() (3) must be divisible by in0_block_w (2)"),
    Case("mcast_output", lambda: sh.check_mcast_output("qkv", HEIGHT, BLOCK),
         lambda d: linear(d, mcast(), out=HS), "Shard width 96 must match physical width 192 for height sharded"),
    # batched matmul
    Case("subblock_fits_dest-bmm", lambda: sh.check_subblock_fits_dest("query_by_key", 3, 3, 8),
         lambda d: bmm(d, reuse(out_subblock_h=3)), "out_subblock_w 3 times out_subblock_h 3 needs to be at most 8 to fit in hardware"),
    Case("reuse_subblock_divisibility-M", lambda: sh.check_reuse_subblock_divisibility("query_by_key", 3, 3, 2, 3),
         lambda d: bmm(d, reuse(out_subblock_h=2)), "per_core_M (3) must be divisible by out_subblock_h (2)"),
    Case("reuse_subblock_divisibility-N", lambda: sh.check_reuse_subblock_divisibility("query_by_key", 3, 3, 1, 2),
         lambda d: bmm(d, reuse(out_subblock_w=2)), "per_core_N (3) must be divisible by out_subblock_w (2)"),
    Case("sharded_output_subblock-bmm", lambda: sh.check_sharded_output_subblock("query_by_key", 3, 1, 3),
         lambda d: bmm(d, reuse(out_subblock_h=3, out_subblock_w=1)),
         "Either out_subblock_w (1) must equal per_core_N (3) or out_subblock_h (3) must be 1"),
    Case("reuse_m-divide", lambda: sh.check_reuse_m("query_by_key", 3, 6, 2),
         lambda d: bmm(d, reuse(per_core_M=2, compute_with_storage_grid_size=(3, 1)), in0=shards(HEIGHT, (3, 1), (64, 64)), in1=ttnn.DRAM_MEMORY_CONFIG),
         "per_core_M, 2, must divide M, 3, if per_core_M < M!"),
    Case("reuse_m-multiple", lambda: sh.check_reuse_m("query_by_key", 3, 6, 4),
         lambda d: bmm(d, reuse(per_core_M=4), in0=ttnn.L1_MEMORY_CONFIG, in1=ttnn.DRAM_MEMORY_CONFIG, out=ttnn.L1_MEMORY_CONFIG),
         "per_core_M, 4, must be a multiple of M, 3 if per_core_M > M!"),
    Case("reuse_full_n", lambda: sh.check_reuse_full_n("query_by_key", 3, 1),
         lambda d: bmm(d, reuse(per_core_N=1, out_subblock_w=1)), "Target number of cores 6 is greater than total number of available cores 2"),
    Case("reuse_in0-width_sharded", lambda: sh.check_reuse_in0("query_by_key", WIDTH, 2, (192, 32), 2, 3),
         lambda d: bmm(d, reuse(), in0=shards(WIDTH, (2, 1), (192, 32))), "input A memory layout must not be WIDTH_SHARDED"),
    Case("reuse_in0-in0_block_w", lambda: sh.check_reuse_in0("query_by_key", HEIGHT, 2, (96, 64), 1, 3),
         lambda d: bmm(d, reuse(in0_block_w=1)), "in0 shard_shape[1] (64) must equal in0_block_w (1) * in0_tile width (32)"),
    Case("reuse_in1", lambda: sh.check_reuse_in1("query_by_key", HEIGHT, 2, 2, 2, (32, 64), 1, 2),
         lambda d: bmm(d, reuse(per_core_M=1, per_core_N=2, out_subblock_w=2, compute_with_storage_grid_size=(4, 1)),
                       in0=shards(HEIGHT, (4, 1), (32, 64)), in1=shards(HEIGHT, (4, 1), (32, 64)), a=(1, 2, 64, 64), b=(1, 2, 64, 64)),
         "per_core_M (1) must be a multiple of M (2) when input B is sharded"),
    Case("reuse_same_sharding-grid", lambda: sh.check_reuse_same_sharding("query_by_key", (2, 1), (1, 2), HEIGHT, HEIGHT),
         lambda d: bmm(d, reuse(), in1=shards(HEIGHT, (1, 2), (64, 96))), "input A and B must have matching shard grids"),
    Case("reuse_same_sharding-layout", lambda: sh.check_reuse_same_sharding("query_by_key", (2, 1), (2, 1), HEIGHT, BLOCK),
         lambda d: bmm(d, reuse(), in1=shards(BLOCK, (1, 2), (64, 96))), "Input tensors A and B must have matching memory layouts"),
    Case("reuse_output_blocks", lambda: sh.check_reuse_output_blocks("query_by_key", 6, 3, 6, 3, 2),
         lambda d: bmm(d, reuse(per_core_M=6)),
         "num_output_blocks (1) must be evenly divisible by the number of cores in the input shard grid (2)"),
    Case("reuse_output_layout", lambda: sh.check_reuse_output_layout("query_by_key", WIDTH),
         lambda d: bmm(d, reuse(), out=WS), "Shard height 96 must match physical height 192 for width sharded"),
    # split heads
    Case("model_dims", lambda: sh.check_model_dims("model", sh.ModelDims(96, 2, 1, 384, 1000)),
         lambda d: split(d, (1, 64, 288), shards(BLOCK, (1, 1), (64, 288))), "Invalid head size: 48. The head size must be a multiple of the tile width (32)"),
    Case("dtype-split_heads", lambda: sh.check_dtype("split_heads", ttnn.bfloat4_b, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b)),
         lambda d: split(d, dtype=ttnn.bfloat4_b), "Unsupported data format"),
    Case("split_heads_input-layout", lambda: sh.check_split_heads_input("split_heads", HEIGHT),
         lambda d: split(d, memory_config=shards(HEIGHT, (2, 1), (32, 192))),
         "Input tensor memory layout must be BLOCK_SHARDED but got TensorMemoryLayout::HEIGHT_SHARDED"),
    Case("split_heads_input-rank", lambda: sh.check_split_heads_input("split_heads", BLOCK, 2),
         lambda d: split(d, (1, 2, 64, 192), shards(BLOCK, (2, 1), (128, 96))), "Invalid input tensor: expected 3 dimensions, but found 4."),
    Case("split_heads_output", lambda: sh.check_split_heads_output("split_heads", BLOCK),
         lambda d: split(d, out=BS), "Number of shards along height 2 must not exceed number of rows 1"),
    Case("split_heads_batch_rows", lambda: sh.check_split_heads_batch_rows("split_heads", 2, 1),
         lambda d: split(d, (2, 64, 192), shards(BLOCK, (2, 1), (128, 96))), "Batch size 2 must be equal to num cores 1"),
    Case("attention_rows_fit", lambda: sh.check_attention_rows_fit("split_heads", 16, 8),
         lambda d: split(d, (16, 64, 192), shards(BLOCK, (2, 8), (128, 96))), "Batch size 16 must be equal to num cores 8"),
    Case("split_heads_cols", lambda: sh.check_split_heads_cols("split_heads", 3, 2),
         lambda d: split(d, (1, 64, 576), shards(BLOCK, (2, 1), (64, 288)), heads=3),
         "number of groups 3 must be a multiple of the number of width cores 2"),
    Case("split_heads_l1", lambda: sh.check_split_heads_l1("split_heads", 7 * 48, 2048, BANK),
         lambda d: split(d, (1, 224, 1536), shards(BLOCK, (1, 1), (224, 1536)), heads=8),
         "Out of Memory: Not enough space to allocate 229376 B L1 buffer across 1 banks"),
    # concatenate heads
    Case("concat_heads-input_layout", lambda: sh.check_concat_heads("concatenate_heads", WIDTH, BLOCK, (128, 32), 64, 2),
         lambda d: concat(d, (1, 2, 64, 32), shards(WIDTH, (1, 1), (128, 32)), shards(BLOCK, (2, 1), (64, 32))),
         "Input tensor memory layout must not be WIDTH_SHARDED"),
    Case("concat_heads-heads_per_shard", lambda: sh.check_concat_heads("concatenate_heads", HEIGHT, BLOCK, (64, 32), 32, 3),
         lambda d: concat(d, (1, 3, 32, 32), shards(HEIGHT, (2, 1), (64, 32)), shards(BLOCK, (2, 1), (32, 48))),
         "Input tensor padded height (3) must be divisible by shard height / padded height (64 / 32)"),
    Case("concat_heads-output_layout", lambda: sh.check_concat_heads("concatenate_heads", HEIGHT, HEIGHT, (64, 32), 64, 2),
         lambda d: concat(d, (1, 2, 64, 32), shards(HEIGHT, (2, 1), (64, 32)), HS), "Shard width 32 must match physical width 64 for height sharded"),
    # layer norm
    Case("dtype-layernorm", lambda: sh.check_dtype("layernorm_before", ttnn.bfloat4_b, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b)),
         lambda d: layernorm(d, layernorm_config(), dtype=ttnn.bfloat4_b), "Input tensor must be FLOAT32, BFLOAT16, or BFLOAT8_B, got: DataType::BFLOAT4_B"),
]


def layernorm_case(id, message, ttnn_call, **ours):
    numbers = dict(Mt=2, Kt=4, grid=(2, 2), block_h=1, block_w=2, subblock_w=2, shard=(32, 64), layout=BLOCK,
                   orientation=ROW_MAJOR, shard_grid=(2, 2), dest_tiles=8)
    return Case(id, lambda: sh.check_layernorm("layernorm_before", **{**numbers, **ours}), ttnn_call, message)


def softmax_case(id, message, ttnn_call, **ours):
    numbers = dict(M=128, K=64, last_dim=64, grid=(2, 1), block_h=2, block_w=2, subblock_w=2, shard=(64, 64), shard_grid=(2, 1), dest_tiles=8)
    return Case(id, lambda: sh.check_softmax("softmax", **{**numbers, **ours}), ttnn_call, message)


CASES += [
    layernorm_case("layernorm-height_sharded", "Height sharded inputs are not supported.",
                   lambda d: layernorm(d, layernorm_config(block_w=4, subblock_w=4), (128, 128), shards(HEIGHT, (2, 2), (32, 128)), out=HS),
                   layout=HEIGHT, Mt=4, block_w=4, subblock_w=4, shard=(32, 128)),
    layernorm_case("layernorm-subblock_divides", "block_w must be divisible by subblock_w.",
                   lambda d: layernorm(d, layernorm_config(block_w=3), (64, 192), shards(BLOCK, (2, 2), (32, 96))),
                   Kt=6, block_w=3, shard=(32, 96)),
    layernorm_case("layernorm-subblock_dest", "subblock_wt=9, but subblock width must less than 8 tiles",
                   lambda d: layernorm(d, layernorm_config(block_w=9, subblock_w=9), (64, 576), shards(BLOCK, (2, 2), (32, 288))),
                   Kt=18, block_w=9, subblock_w=9, shard=(32, 288)),
    layernorm_case("layernorm-subblock_dest_fp32", "subblock_wt=8, but subblock width must less than 4 tiles in fp32 mode",
                   lambda d: layernorm(d, layernorm_config(block_w=8, subblock_w=8), (64, 512), shards(BLOCK, (2, 2), (32, 256)), fp32_acc=True),
                   Kt=16, block_w=8, subblock_w=8, shard=(32, 256), dest_tiles=4),
    layernorm_case("layernorm-shard_grid", "shard_spec.grid size 2x2 does not fit within program_config grid 1x2",
                   lambda d: layernorm(d, layernorm_config(compute_with_storage_grid_size=(1, 2))), grid=(1, 2)),
    layernorm_case("layernorm-block_h", "block_h (1) must equal ceil(Mt / num_cores_r) (2)",
                   lambda d: layernorm(d, layernorm_config(block_h=1), (128, 128), shards(BLOCK, (2, 2), (64, 64))), Mt=4, shard=(64, 64)),
    layernorm_case("layernorm-block_w", "block_w (1) must equal to K (in tiles) / num_cores_c (2)",
                   lambda d: layernorm(d, layernorm_config(block_w=1, subblock_w=1)), block_w=1, subblock_w=1),
    softmax_case("softmax-subblock_divides", "block_w must be divisible by subblock_w.",
                 lambda d: softmax(d, softmax_config(block_w=3), (1, 2, 64, 96), shards(HEIGHT, (2, 1), (64, 96)), mask=(1, 1, 1, 96)),
                 K=96, last_dim=96, block_w=3, shard=(64, 96)),
    softmax_case("softmax-block_w", "shard width must equal to input tensor shape[3]!",
                 lambda d: softmax(d, softmax_config(block_w=1, subblock_w=1)), block_w=1, subblock_w=1),
    softmax_case("softmax-shards_per_core", "number of shards must equal to number of cores. M = 128, K = 64, block_w = 2, block_h = 1, num_cores = 2",
                 lambda d: softmax(d, softmax_config(block_h=1)), block_h=1),
    softmax_case("softmax-shard_grid", "shard_spec.grid size 2x1 does not fit within program_config grid 1x2",
                 lambda d: softmax(d, softmax_config(compute_with_storage_grid_size=(1, 2))), grid=(1, 2)),
    Case("softmax_mask-intermediate_dims", lambda: sh.check_softmax_mask("softmax", (1, 2, 1, 64), ttnn.TILE_LAYOUT, False, (1, 2, 64, 64)),
         lambda d: softmax(d, softmax_config(), mask=(1, 2, 1, 64)), "Non-sharded mask intermediate dimensions must be 1, got 2 at dimension 1"),
    Case("softmax_mask-row_major", lambda: sh.check_softmax_mask("softmax", (1, 1, 1, 64), ttnn.ROW_MAJOR_LAYOUT, False, (1, 2, 64, 64)),
         lambda d: softmax(d, softmax_config(), mask_layout=ttnn.ROW_MAJOR_LAYOUT), "Non-sharded mask shape must match expected shape"),
    Case("softmax_mask-sharded", lambda: sh.check_softmax_mask("softmax", (1, 1, 32, 64), ttnn.TILE_LAYOUT, True, (1, 2, 64, 64)),
         lambda d: softmax(d, softmax_config(), mask=(1, 1, 32, 64), mask_memory_config=shards(HEIGHT, (1, 1), (32, 64))),
         "Sharded mask shape must match input tensor shape"),
    # tensors and the budget
    Case("block_shard-tiles", lambda: sh.check_block_shard("encoder_memory_config", (64, 96), (2, 2), (32, 48)),
         lambda d: tensor(d, (1, 1, 64, 96), shards(BLOCK, (2, 2), (32, 48))), "Physical shard shape (32, 48) must be tile {32, 32} sized!"),
    Case("block_shard-too_small", lambda: sh.check_block_shard("encoder_memory_config", (64, 96), (2, 2), (32, 32)),
         lambda d: tensor(d, (1, 1, 64, 96), shards(BLOCK, (2, 2), (32, 32))), "Number of shards along width 3 must not exceed number of columns 2"),
    Case("l1_fits", lambda: sh.check_l1_fits("qkv", 1024 * 1024 * 2, BANK),
         lambda d: tensor(d, (1, 1, 1024, 1024), shards(BLOCK, (1, 1), (1024, 1024))),
         f"Out of Memory: Not enough space to allocate 2097152 B L1 buffer across 1 banks, where each bank needs to store 2097152 B, but bank size is {BANK} B"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_ttnn_refuses_what_our_rule_refuses(device, case):
    with pytest.raises(ShardingRuleError, match=r"^\[[^\]]+\] op '[^']+': "):
        case.ours()
    with pytest.raises(RuntimeError, match=re.escape(case.message)):
        case.ttnn(device)


def test_every_rule_function_is_broken_against_ttnn_here():
    """Each ``check_*`` of the rules module has a case (ids start with the function's name without ``check_``)."""
    rules = {name for name in dir(sh.rules) if name.startswith("check_")}
    assert rules == {"check_" + case.id.split("-")[0] for case in CASES}


# -- what ttnn accepts: the rules dropped, and the clauses kept with a reason ---------------------


def test_ttnn_accepts_what_the_dropped_rules_refused(device):
    # check_mcast_in0_grid: in0 sharded on 2x2, output on 3 columns of a 3x2 program grid
    linear(device, mcast(compute_with_storage_grid_size=(3, 2)), n=288)
    # check_residual_add: operands on different shard grids and layouts
    a = tensor(device, (1, 1, 64, 128), shards(BLOCK, (2, 2), (32, 64)))
    for other in (shards(BLOCK, (4, 2), (32, 32)), shards(HEIGHT, (2, 1), (32, 128))):
        run(ttnn.add, a, tensor(device, (1, 1, 64, 128), other), memory_config=BS)
    # check_height_shard: an uneven height shard (96 rows as 64 + 32)
    tensor(device, (1, 1, 96, 32), shards(HEIGHT, (2, 1), (64, 32)))
    # concatenate_heads' shard-width clause: a block-sharded input narrower than a head
    concat(device, (1, 2, 64, 64), shards(BLOCK, (2, 1), (128, 32)), ttnn.L1_MEMORY_CONFIG)


def test_ttnn_accepts_what_the_kept_clauses_refuse(device):
    # check_block_shard: an uneven block shard (width 96 as 64 + 32) — kept, see its docstring
    with pytest.raises(ShardingRuleError):
        sh.check_block_shard("encoder_memory_config", (64, 96), (2, 2), (32, 64))
    tensor(device, (1, 1, 64, 96), shards(BLOCK, (2, 2), (32, 64)))
    # check_softmax: subblock_w 9 > 8 destination tiles — kept, see its docstring
    with pytest.raises(ShardingRuleError, match="at most 8 destination register tiles"):
        sh.check_softmax("softmax", M=64, K=288, last_dim=288, grid=(2, 1), block_h=1, block_w=9, subblock_w=9,
                         shard=(32, 288), shard_grid=(2, 1), dest_tiles=8)
    softmax(device, softmax_config(block_w=9, subblock_w=9, block_h=1), (1, 1, 64, 288), shards(HEIGHT, (2, 1), (32, 288)), mask=(1, 1, 1, 288))
    # check_softmax_mask: a TILE mask of the wrong width, height or batch — kept, see its docstring
    for mask in ((1, 1, 1, 32), (1, 1, 64, 64), (2, 1, 1, 64)):
        with pytest.raises(ShardingRuleError):
            sh.check_softmax_mask("softmax", mask, ttnn.TILE_LAYOUT, False, (1, 2, 64, 64))
        softmax(device, softmax_config(), mask=mask)
