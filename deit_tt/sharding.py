"""The sharding plan: program, memory and compute-kernel configs for every encoder op.

Nothing here is a typed-in constant. Every number is derived from the model dimensions, the batch
size and the device compute grid (``compute_with_storage_grid_size``), following the op-by-op design
of tt-metal's sharded ViT (see the project brief ``shared/reference/ttnn-vit-sharding.md`` §1):

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

Every invariant the ttnn C++ validators enforce (reference §2.1-§2.7) is a small named rule function
below; ``ShardingPlan.validate()`` walks the op sequence of one encoder layer plus the head and runs
all of them, raising :class:`ShardingRuleError` with the rule, the op and the numbers.

Not checked here, because they are properties of tensors at run time rather than of the plan: operands
on the device and in TILE layout, weights left DRAM-interleaved (the published design; sharded weights
would add the §2.2 in1 rules), and the allocator's real L1 layout (``table()`` gives an estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
import torch
import ttnn

TILE = 32
CLASS_PAD_MULTIPLE = TILE * 12  # 384: every column count that divides 12 divides the padded class tiles
PATCH_CHANNELS = 4  # RGB padded 3 -> 4 so that one patch row is 16 pixels x 4 channels = 64 values
DEST_REGISTER_TILES = 16  # (64 x 16 x 16) / (32 x 32): the destination register file in tiles

# Bytes of one 32x32 tile per data type (tt-metalium constants: bfloat8_b / bfloat4_b carry 64 exponent bytes).
TILE_BYTES = {
    ttnn.float32: 4096,
    ttnn.bfloat16: 2048,
    ttnn.bfloat8_b: 1024 + 64,
    ttnn.bfloat4_b: 512 + 64,
}

# The additive value that hides padded key columns (see ``attention_mask``).
MASKED_VALUE = -1.0e4

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
RULE_RESIDUAL = "residual add"
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
    RULE_RESIDUAL,
    RULE_L1,
)

# Where each rule comes from (brief shared/reference/ttnn-vit-sharding.md; tt-metal source files).
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
    RULE_RESIDUAL: "sharded eltwise binary: both operands on one shard spec",
    RULE_L1: "per-core L1 estimate vs the core's L1 (soc descriptor)",
}

BLOCK = ttnn.TensorMemoryLayout.BLOCK_SHARDED
HEIGHT = ttnn.TensorMemoryLayout.HEIGHT_SHARDED
WIDTH = ttnn.TensorMemoryLayout.WIDTH_SHARDED
ROW_MAJOR = ttnn.ShardOrientation.ROW_MAJOR
COL_MAJOR = ttnn.ShardOrientation.COL_MAJOR


class ShardingRuleError(ValueError):
    """A config breaks an invariant a ttnn validator enforces; the message names the rule, the op and the numbers."""

    def __init__(self, rule: str, op: str | None = None, detail: str | None = None):
        self.rule = rule
        self.op = op
        super().__init__(rule if op is None else f"[{rule}] op '{op}': {detail}")


def _fail(rule: str, op: str, detail: str) -> None:
    raise ShardingRuleError(rule, op, detail)


def _dtype_name(dtype) -> str:
    return str(dtype).split(".")[-1].lower()


def tile_bytes(dtype) -> int:
    """Bytes of one 32x32 tile of ``dtype`` as ttnn stores it in L1."""
    if dtype not in TILE_BYTES:
        raise ValueError(f"no tile size known for {dtype}")
    return TILE_BYTES[dtype]


def dest_register_tiles(fp32_dest_acc: bool = False, dst_full_sync: bool = False) -> int:
    """``get_dest_reg_count``: 16 tiles, halved unless full sync, halved again with fp32 accumulation.

    8 by default, 4 with fp32 destination accumulation (reference §2.1, tt-metal compute_kernel_config.cpp).
    """
    tiles = DEST_REGISTER_TILES
    if not dst_full_sync:
        tiles //= 2
    if fp32_dest_acc:
        tiles //= 2
    return tiles


# ---------------------------------------------------------------------------------------------------
# Model dimensions


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class ModelDims:
    """The numbers of a DeiT config that shape the sharding plan."""

    hidden: int
    heads: int
    layers: int
    intermediate: int
    num_classes: int
    image_size: int = 224
    patch_size: int = 16

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """CLS + distillation token + patches (198 at 224/16)."""
        return self.patches + 2

    @property
    def padded_tokens(self) -> int:
        """Tokens rounded up to whole tiles (224): the sequence the model runs with."""
        return round_up(self.tokens, TILE)

    @property
    def classes_padded(self) -> int:
        """Classes rounded up to a multiple of 384 = 32 x 12, so every supported grid column count divides the tiles."""
        return round_up(self.num_classes, CLASS_PAD_MULTIPLE)

    @property
    def patch_features(self) -> int:
        """Values per patch row of the patch-embedding matmul: 16 x 16 pixels x 4 channels (RGB padded to 4)."""
        return self.patch_size * self.patch_size * PATCH_CHANNELS

    @classmethod
    def from_config(cls, config) -> "ModelDims":
        """From a Hugging Face ``DeiTConfig``."""
        return cls(
            hidden=config.hidden_size,
            heads=config.num_attention_heads,
            layers=config.num_hidden_layers,
            intermediate=config.intermediate_size,
            num_classes=config.num_labels,
            image_size=config.image_size,
            patch_size=config.patch_size,
        )

    def describe(self) -> str:
        return (
            f"hidden {self.hidden}, {self.heads} heads of {self.head_size}, {self.layers} layers, "
            f"MLP {self.intermediate}, {self.num_classes} classes (padded {self.classes_padded}), "
            f"{self.tokens} tokens (padded {self.padded_tokens})"
        )


# ---------------------------------------------------------------------------------------------------
# Rule functions. Each checks one invariant of a ttnn validator (reference §2) and raises
# ShardingRuleError naming the rule, the op and the numbers. Shapes in tiles unless a name says
# otherwise; "shard" arguments are (height, width) in elements.


def check_model_dims(op: str, dims: ModelDims) -> None:
    """Head size must be a whole number of tiles with no padding (split heads / concatenate heads, §2.5);
    every matmul dimension must be tile aligned."""
    if dims.hidden % dims.heads:
        _fail(RULE_DIMS, op, f"hidden ({dims.hidden}) must be divisible by heads ({dims.heads})")
    if dims.head_size % TILE:
        _fail(RULE_DIMS, op, f"head size ({dims.hidden}/{dims.heads}={dims.head_size}) must be a multiple of {TILE}")
    if dims.hidden % TILE or dims.intermediate % TILE:
        _fail(RULE_DIMS, op, f"hidden ({dims.hidden}) and intermediate ({dims.intermediate}) must be multiples of {TILE}")
    if dims.image_size % dims.patch_size:
        _fail(RULE_DIMS, op, f"image size ({dims.image_size}) must be divisible by patch size ({dims.patch_size})")


def check_dtype(op: str, dtype, allowed: Iterable) -> None:
    """Sharded LayerNorm, softmax, create_qkv_heads and concatenate_heads take fp32 / bf16 / bf8_b only."""
    allowed = tuple(allowed)
    if dtype not in allowed:
        names = ", ".join(_dtype_name(d) for d in allowed)
        _fail(RULE_DTYPE, op, f"dtype {_dtype_name(dtype)} is not supported here; use one of {names}")


def check_grid_within_device(op: str, grid: tuple[int, int], device_grid: tuple[int, int]) -> None:
    """``compute_with_storage_grid_size`` <= device grid in x and y (§2.1); sharded operands inside it (§2.2)."""
    if grid[0] < 1 or grid[1] < 1:
        _fail(RULE_GRID, op, f"grid {grid[0]}x{grid[1]} must be non-empty")
    if grid[0] > device_grid[0] or grid[1] > device_grid[1]:
        _fail(
            RULE_GRID,
            op,
            f"grid {grid[0]}x{grid[1]} (x=cols, y=rows) must fit within the device compute grid "
            f"{device_grid[0]}x{device_grid[1]}",
        )


def check_block_shard(op: str, shape: tuple[int, int], grid: tuple[int, int], shard: tuple[int, int]) -> None:
    """A block-sharded [H, W] tensor on a cols x rows grid: shard = (H/rows, W/cols), whole tiles, no remainder."""
    height, width = shape
    cols, rows = grid
    if height % rows or width % cols:
        _fail(
            RULE_SHARD,
            op,
            f"tensor [{height}, {width}] does not split evenly over {rows} rows x {cols} cols "
            f"({height}/{rows}, {width}/{cols})",
        )
    expected = (height // rows, width // cols)
    if tuple(shard) != expected:
        _fail(
            RULE_SHARD,
            op,
            f"shard shape {list(shard)} must equal [tensor height / rows, width / cols] = "
            f"[{height}/{rows}, {width}/{cols}] = {list(expected)}",
        )
    if shard[0] % TILE or shard[1] % TILE:
        _fail(RULE_SHARD, op, f"shard shape {list(shard)} must be whole {TILE}x{TILE} tiles")


def check_height_shard(op: str, rows_total: int, width: int, num_cores: int, shard: tuple[int, int]) -> None:
    """A height-sharded [R, W] tensor on N cores: shard = (R/N, W), whole tiles."""
    if rows_total % num_cores:
        _fail(RULE_SHARD, op, f"height {rows_total} does not split evenly over {num_cores} cores")
    expected = (rows_total // num_cores, width)
    if tuple(shard) != expected:
        _fail(RULE_SHARD, op, f"shard shape {list(shard)} must equal [{rows_total}/{num_cores}, {width}] = {list(expected)}")
    if shard[0] % TILE or shard[1] % TILE:
        _fail(RULE_SHARD, op, f"shard shape {list(shard)} must be whole {TILE}x{TILE} tiles")


def check_subblock_fits_dest(op: str, out_subblock_h: int, out_subblock_w: int, dest_tiles: int) -> None:
    """§2.1: ``out_subblock_h * out_subblock_w <= get_dest_reg_count`` (8 default, 4 with fp32 accumulation)."""
    if out_subblock_h <= 0 or out_subblock_w <= 0:
        _fail(RULE_SUBBLOCK, op, f"out_subblock_h ({out_subblock_h}) and out_subblock_w ({out_subblock_w}) must be non-zero")
    if out_subblock_h * out_subblock_w > dest_tiles:
        _fail(
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
        _fail(RULE_SUBBLOCK, op, f"out_block_h ({out_block_h}) and out_block_w ({out_block_w}) must be non-zero")
    if out_block_h % out_subblock_h:
        _fail(RULE_SUBBLOCK, op, f"out_block_h ({out_block_h}) must be divisible by out_subblock_h ({out_subblock_h})")
    if out_block_w % out_subblock_w:
        _fail(RULE_SUBBLOCK, op, f"out_block_w ({out_block_w}) must be divisible by out_subblock_w ({out_subblock_w})")
    if per_core_M % out_block_h:
        _fail(RULE_SUBBLOCK, op, f"per_core_M ({per_core_M}) must be divisible by out_block_h ({out_block_h})")
    if per_core_N % out_block_w:
        _fail(RULE_SUBBLOCK, op, f"per_core_N ({per_core_N}) must be divisible by out_block_w ({out_block_w})")


def check_reuse_subblock_divisibility(op: str, per_core_M: int, per_core_N: int, out_subblock_h: int, out_subblock_w: int) -> None:
    """§2.1 (Reuse/bmm config): per_core_M % out_subblock_h == 0 and per_core_N % out_subblock_w == 0."""
    if per_core_M % out_subblock_h:
        _fail(RULE_SUBBLOCK, op, f"per_core_M ({per_core_M}) must be divisible by out_subblock_h ({out_subblock_h})")
    if per_core_N % out_subblock_w:
        _fail(RULE_SUBBLOCK, op, f"per_core_N ({per_core_N}) must be divisible by out_subblock_w ({out_subblock_w})")


def check_nonzero_block_dims(op: str, in0_block_w: int, per_core_M: int, per_core_N: int) -> None:
    """§2.1: in0_block_w, per_core_M, per_core_N != 0."""
    for name, value in (("in0_block_w", in0_block_w), ("per_core_M", per_core_M), ("per_core_N", per_core_N)):
        if value <= 0:
            _fail(RULE_GRID, op, f"{name} is {value}, which is not valid")


def check_kt_divisible(op: str, Kt: int, in0_block_w: int) -> None:
    """§2.1: ``Kt % in0_block_w == 0`` with Kt = padded K / 32."""
    if Kt % in0_block_w:
        _fail(RULE_KT, op, f"Kt ({Kt}) must be divisible by in0_block_w ({in0_block_w})")


def check_sharded_output_subblock(op: str, out_subblock_h: int, out_subblock_w: int, per_core_N: int) -> None:
    """§2.1: with a sharded output, ``out_subblock_w == per_core_N or out_subblock_h == 1``."""
    if out_subblock_w != per_core_N and out_subblock_h != 1:
        _fail(
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
        _fail(RULE_MCAST, op, f"num output blocks along y (ceil({Mt}/{per_core_M})={blocks_y}) must be <= grid rows ({rows})")
    if blocks_x > cols:
        _fail(RULE_MCAST, op, f"num output blocks along x (ceil({Nt}/{per_core_N})={blocks_x}) must be <= grid cols ({cols})")


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
        _fail(RULE_MCAST, op, "a sharded in0 needs fuse_batch=True")
    if layout not in (BLOCK, HEIGHT):
        _fail(RULE_MCAST, op, f"in0 must be BLOCK or HEIGHT sharded, got {layout}")
    if layout == BLOCK:
        wanted = COL_MAJOR if transpose_mcast else ROW_MAJOR
        if orientation != wanted:
            _fail(RULE_MCAST, op, f"block-sharded in0 with transpose_mcast={transpose_mcast} needs {wanted}, got {orientation}")
    if shard[0] % TILE or shard[0] // TILE != per_core_M:
        _fail(RULE_MCAST, op, f"per_core_M ({per_core_M}) must equal shard height / 32 ({shard[0]}/32={shard[0] / TILE:g})")
    shard_wt = shard[1] // TILE
    if shard_wt % in0_block_w:
        _fail(
            RULE_MCAST,
            op,
            f"shard width / 32 ({shard[1]}/32={shard_wt}) must be divisible by in0_block_w ({in0_block_w})",
        )
    if layout == HEIGHT:
        if transpose_mcast:
            _fail(RULE_MCAST, op, "height-sharded in0 does not support transpose_mcast")
        if in0_block_w != shard_wt:
            _fail(RULE_MCAST, op, f"height-sharded in0 needs in0_block_w ({in0_block_w}) == shard width / 32 ({shard_wt})")


def check_mcast_in0_grid(op: str, in0_grid: tuple[int, int], config_grid: tuple[int, int]) -> None:
    """2D mcast with block-sharded in0: the in0 shard grid is the program grid (each row multicasts its K slices
    along the row). [inference from the 2D mcast factory and from every published ViT config]"""
    if tuple(in0_grid) != tuple(config_grid):
        _fail(
            RULE_MCAST,
            op,
            f"block-sharded in0 lives on a {in0_grid[0]}x{in0_grid[1]} grid but the program grid is "
            f"{config_grid[0]}x{config_grid[1]}; reshard in0 onto the program grid",
        )


def check_mcast_output(op: str, layout, in0_layout=None) -> None:
    """§2.2: a sharded 2D mcast output must be BLOCK_SHARDED (same layout as block-sharded in0)."""
    if layout != BLOCK:
        _fail(RULE_MCAST, op, f"sharded output must be BLOCK_SHARDED, got {layout}")
    if in0_layout is not None and in0_layout != layout:
        _fail(RULE_MCAST, op, f"output layout {layout} must match in0 layout {in0_layout}")


def check_reuse_m(op: str, M: int, total_M: int, per_core_M: int) -> None:
    """§2.3: per_core_M > M ⇒ per_core_M % M == 0 and total_M % per_core_M == 0; else M % per_core_M == 0."""
    if per_core_M > M:
        if per_core_M % M:
            _fail(RULE_REUSE, op, f"per_core_M ({per_core_M}) > M ({M}) must be a multiple of M")
        if total_M % per_core_M:
            _fail(RULE_REUSE, op, f"total M ({total_M}) must be divisible by per_core_M ({per_core_M})")
    elif M % per_core_M:
        _fail(RULE_REUSE, op, f"M ({M}) must be divisible by per_core_M ({per_core_M})")


def check_reuse_full_n(op: str, Nt: int, per_core_N: int) -> None:
    """§2.3: the bmm config computes the whole N per core: N == per_core_N."""
    if Nt != per_core_N:
        _fail(RULE_REUSE, op, f"N ({Nt} tiles) must equal per_core_N ({per_core_N})")


def check_reuse_in0(op: str, layout, Kt: int, shard: tuple[int, int], in0_block_w: int, per_core_M: int) -> None:
    """§2.3 in0 sharded (not WIDTH): K == shard width == in0_block_w x 32, per_core_M x 32 == shard height."""
    if layout == WIDTH:
        _fail(RULE_REUSE, op, "in0 must not be WIDTH_SHARDED")
    if shard[1] != Kt * TILE:
        _fail(RULE_REUSE, op, f"in0 shard width ({shard[1]}) must equal K ({Kt * TILE})")
    if shard[1] != in0_block_w * TILE:
        _fail(RULE_REUSE, op, f"in0 shard width ({shard[1]}) must equal in0_block_w x 32 ({in0_block_w}x32={in0_block_w * TILE})")
    if shard[0] != per_core_M * TILE:
        _fail(RULE_REUSE, op, f"per_core_M x 32 ({per_core_M}x32={per_core_M * TILE}) must equal in0 shard height ({shard[0]})")


def check_reuse_in1(
    op: str, layout, Mt: int, Kt: int, Nt: int, shard: tuple[int, int], per_core_M: int, per_core_N: int
) -> None:
    """§2.3 in1 sharded: not WIDTH, per_core_M % M == 0, shard width == N == per_core_N x 32, shard height % K == 0."""
    if layout == WIDTH:
        _fail(RULE_REUSE, op, "in1 must not be WIDTH_SHARDED")
    if per_core_M % Mt:
        _fail(RULE_REUSE, op, f"with sharded in1, per_core_M ({per_core_M}) must be a multiple of M ({Mt})")
    if shard[1] != Nt * TILE:
        _fail(RULE_REUSE, op, f"in1 shard width ({shard[1]}) must equal padded N ({Nt * TILE})")
    if shard[1] != per_core_N * TILE:
        _fail(RULE_REUSE, op, f"per_core_N x 32 ({per_core_N}x32={per_core_N * TILE}) must equal in1 shard width ({shard[1]})")
    if shard[0] % (Kt * TILE):
        _fail(RULE_REUSE, op, f"in1 shard height ({shard[0]}) must be a multiple of K ({Kt * TILE})")


def check_reuse_same_sharding(op: str, in0_grid, in1_grid, in0_layout, in1_layout) -> None:
    """§2.3: both inputs sharded ⇒ same buffer type, layout, grid and orientation."""
    if tuple(in0_grid) != tuple(in1_grid) or in0_layout != in1_layout:
        _fail(
            RULE_REUSE,
            op,
            f"in0 ({in0_layout}, {in0_grid[0]}x{in0_grid[1]}) and in1 ({in1_layout}, {in1_grid[0]}x{in1_grid[1]}) "
            "must share layout and grid",
        )


def check_reuse_output_blocks(op: str, total_Mt: int, Nt: int, per_core_M: int, per_core_N: int, num_cores: int) -> None:
    """§2.3: (total_Mt/per_core_M) x (Nt/per_core_N) output blocks must be divisible by the input shard's core count."""
    blocks = (total_Mt // per_core_M) * (Nt // per_core_N)
    if blocks % num_cores:
        _fail(
            RULE_REUSE,
            op,
            f"output blocks ({total_Mt}/{per_core_M} x {Nt}/{per_core_N} = {blocks}) must be divisible by "
            f"the shard grid's {num_cores} cores",
        )


def check_reuse_output_layout(op: str, layout) -> None:
    """§2.3: a sharded bmm output must not be WIDTH_SHARDED."""
    if layout == WIDTH:
        _fail(RULE_REUSE, op, "sharded output must not be WIDTH_SHARDED")


def check_split_heads_input(op: str, layout, input_dim1: int = 1) -> None:
    """§2.5 create_qkv_heads: input BLOCK_SHARDED, [B, 1, S, 3H]."""
    if layout != BLOCK:
        _fail(RULE_SPLIT_HEADS, op, f"input must be BLOCK_SHARDED, got {layout}")
    if input_dim1 != 1:
        _fail(RULE_SPLIT_HEADS, op, f"input must be [B, 1, S, 3H], got dim 1 = {input_dim1}")


def check_split_heads_output(op: str, layout) -> None:
    """§2.5: the split-heads output memory config must be HEIGHT_SHARDED."""
    if layout != HEIGHT:
        _fail(RULE_SPLIT_HEADS, op, f"output memory layout must be HEIGHT_SHARDED, got {layout}")


def check_split_heads_batch_rows(op: str, batch: int, grid_rows: int) -> None:
    """§2.5: ``batch == number of grid rows`` (ROW_MAJOR): one image per row of the attention grid."""
    if batch != grid_rows:
        _fail(
            RULE_SPLIT_HEADS,
            op,
            f"batch ({batch}) must equal the attention grid rows ({grid_rows}): one image per grid row",
        )


def check_attention_rows_fit(op: str, batch: int, device_rows: int) -> None:
    """§2.5 seen from the device: one image per attention-grid row, so batch <= device grid rows."""
    if batch > device_rows:
        _fail(
            RULE_SPLIT_HEADS,
            op,
            f"batch ({batch}) must equal the attention grid rows, but the device grid has only {device_rows} rows; "
            f"use batch <= {device_rows}",
        )


def check_split_heads_width(op: str, qkv_width: int, grid_cols: int) -> None:
    """§2.5: flattened QKV width % (grid cols x 32) == 0."""
    if qkv_width % (grid_cols * TILE):
        _fail(
            RULE_SPLIT_HEADS,
            op,
            f"QKV width ({qkv_width}) must be a multiple of grid cols x 32 ({grid_cols}x32={grid_cols * TILE})",
        )


def check_split_heads_cols(op: str, heads: int, grid_cols: int) -> None:
    """§2.5: ``num_kv_heads % grid_cols == 0`` (whole heads per core)."""
    if heads % grid_cols:
        _fail(RULE_SPLIT_HEADS, op, f"heads ({heads}) must be divisible by attention grid cols ({grid_cols})")


def check_split_heads_rows(op: str, total_rows_t: int, grid_rows: int, seq_t: int) -> None:
    """§2.5: (B·S)/32 % grid rows == 0, and a core's rows stay inside one batch item."""
    if total_rows_t % grid_rows:
        _fail(RULE_SPLIT_HEADS, op, f"(B*S)/32 ({total_rows_t}) must be divisible by grid rows ({grid_rows})")
    per_core = total_rows_t // grid_rows
    if per_core % seq_t and seq_t % per_core:
        _fail(
            RULE_SPLIT_HEADS,
            op,
            f"rows per core ({per_core} tiles) must stay inside one image of {seq_t} tiles",
        )


def check_split_heads_l1(op: str, shard_tiles: int, tile_size: int, l1_bytes: int) -> None:
    """§2.5: 2 x per-core tiles x tile size <= L1."""
    need = 2 * shard_tiles * tile_size
    if need > l1_bytes:
        _fail(RULE_SPLIT_HEADS, op, f"2 x {shard_tiles} tiles x {tile_size} B = {need} B exceeds L1 ({l1_bytes} B)")


def check_concat_heads(op: str, in_layout, out_layout, shard: tuple[int, int], seq: int, head_size: int, heads: int) -> None:
    """nlp_concat_heads: input not WIDTH, shard width == head size, shard height % S == 0,
    heads % (shard height / S) == 0, output not HEIGHT_SHARDED (tt-metal nlp_concat_heads_device_operation.cpp)."""
    if in_layout == WIDTH:
        _fail(RULE_CONCAT_HEADS, op, "input must not be WIDTH_SHARDED")
    if shard[1] != head_size:
        _fail(RULE_CONCAT_HEADS, op, f"input shard width ({shard[1]}) must equal the head size ({head_size})")
    if shard[0] % seq:
        _fail(RULE_CONCAT_HEADS, op, f"input shard height ({shard[0]}) must be divisible by the sequence ({seq})")
    if heads % (shard[0] // seq):
        _fail(RULE_CONCAT_HEADS, op, f"heads ({heads}) must be divisible by heads per shard ({shard[0]}/{seq}={shard[0] // seq})")
    if out_layout == HEIGHT:
        _fail(RULE_CONCAT_HEADS, op, "output memory layout must not be HEIGHT_SHARDED")


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
        _fail(RULE_LAYERNORM, op, "sharded input must not be HEIGHT_SHARDED")
    if subblock_w <= 0 or block_w % subblock_w:
        _fail(RULE_LAYERNORM, op, f"block_w ({block_w}) must be divisible by subblock_w ({subblock_w})")
    if subblock_w > dest_tiles:
        _fail(RULE_LAYERNORM, op, f"subblock_w ({subblock_w}) must be at most {dest_tiles} destination register tiles")
    if shard_grid[0] > grid[0] or shard_grid[1] > grid[1]:
        _fail(
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
            _fail(RULE_LAYERNORM, op, f"block_h ({block_h}) must equal Mt / grid rows ({Mt}/{rows}={Mt / rows:g})")
    if block_w != want_w:
        _fail(RULE_LAYERNORM, op, f"block_w ({block_w}) must equal ceil(Kt / grid cols) (ceil({Kt}/{cols})={want_w})")
    if block_h * TILE != shard[0]:
        _fail(RULE_LAYERNORM, op, f"block_h x 32 ({block_h}x32={block_h * TILE}) must equal shard height ({shard[0]})")
    if block_w * TILE != shard[1]:
        _fail(RULE_LAYERNORM, op, f"block_w x 32 ({block_w}x32={block_w * TILE}) must equal shard width ({shard[1]})")


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
    """
    if M % TILE or K % TILE:
        _fail(RULE_SOFTMAX, op, f"M ({M}) and K ({K}) must be divisible by {TILE}")
    if subblock_w <= 0 or block_w % subblock_w:
        _fail(RULE_SOFTMAX, op, f"block_w ({block_w}) must be divisible by subblock_w ({subblock_w})")
    if subblock_w > dest_tiles:
        _fail(RULE_SOFTMAX, op, f"subblock_w ({subblock_w}) must be at most {dest_tiles} destination register tiles")
    if block_w * TILE != last_dim:
        _fail(RULE_SOFTMAX, op, f"block_w x 32 ({block_w}x32={block_w * TILE}) must equal input shape[3] ({last_dim})")
    if not inplace:
        _fail(RULE_SOFTMAX, op, "the sharded program config only runs in place")
    cores = grid[0] * grid[1]
    shards = (M * K) // (block_w * block_h * TILE * TILE)
    if shards != cores:
        _fail(
            RULE_SOFTMAX,
            op,
            f"number of shards (M*K/(block_w*block_h*1024) = {M}*{K}/({block_w}*{block_h}*1024) = {shards}) "
            f"must equal number of cores ({grid[0]}x{grid[1]}={cores})",
        )
    if tuple(shard_grid) != tuple(grid):
        _fail(RULE_SOFTMAX, op, f"shard grid {shard_grid[0]}x{shard_grid[1]} must be the program grid {grid[0]}x{grid[1]}")
    if shard != (block_h * TILE, block_w * TILE):
        _fail(
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
    """
    batch, _heads, _rows, keys = input_shape
    if len(mask_shape) != 4:
        _fail(RULE_MASK, op, f"mask must be rank 4, got shape {list(mask_shape)}")
    if mask_sharded:
        if mask_layout != ttnn.TILE_LAYOUT or tuple(mask_shape) != tuple(input_shape):
            _fail(RULE_MASK, op, f"a sharded mask must be TILE with the input's shape {list(input_shape)}")
        return
    if mask_layout == ttnn.ROW_MAJOR_LAYOUT:
        expected = (batch, 1, keys // TILE, TILE)
        if tuple(mask_shape) != expected:
            _fail(RULE_MASK, op, f"row-major mask shape {list(mask_shape)} must be {list(expected)}")
        return
    if mask_shape[1] != 1:
        _fail(RULE_MASK, op, f"non-sharded mask intermediate dimensions must be 1, got {mask_shape[1]} at dimension 1")
    if mask_shape[0] != batch:
        _fail(
            RULE_MASK,
            op,
            f"mask batch ({mask_shape[0]}) must equal the scores' batch ({batch}): the sharded reader reads one "
            "mask tile row per image",
        )
    if mask_shape[3] != keys:
        _fail(RULE_MASK, op, f"mask width ({mask_shape[3]}) must equal the scores' key dimension ({keys})")
    if mask_shape[2] not in (1, TILE):
        _fail(RULE_MASK, op, f"mask height ({mask_shape[2]}) must be 1 (tile-padded to 32) or 32; only row 0 is read")


def check_residual_add(op: str, a: "_Sharded", b: "_Sharded") -> None:
    """A sharded eltwise add needs both operands on the identical shard spec (grid, shard shape, layout)."""
    if (a.layout, a.grid, a.shard) != (b.layout, b.grid, b.shard):
        _fail(
            RULE_RESIDUAL,
            op,
            f"{a.name} ({a.grid[0]}x{a.grid[1]}, shard {list(a.shard)}) and {b.name} "
            f"({b.grid[0]}x{b.grid[1]}, shard {list(b.shard)}) must share one shard spec",
        )


def check_l1_fits(op: str, bytes_per_core: int, l1_bytes_per_core: int) -> None:
    """Per-core L1 estimate (shards + circular buffers, see ``ShardingPlan.table``) within the core's L1."""
    if bytes_per_core > l1_bytes_per_core:
        _fail(RULE_L1, op, f"about {bytes_per_core} B per core exceeds the {l1_bytes_per_core} B of L1 per core")


# ---------------------------------------------------------------------------------------------------
# Derivation helpers


def largest_divisor_at_most(limit: int, *numbers: int) -> int:
    """The largest d <= limit dividing every number (1 always qualifies)."""
    for candidate in range(min(limit, *numbers), 0, -1):
        if all(n % candidate == 0 for n in numbers):
            return candidate
    return 1


def widest_subblock(per_core_N: int, dest_tiles: int) -> int:
    """Widest out_subblock_w dividing per_core_N that fits the destination registers with out_subblock_h = 1."""
    return largest_divisor_at_most(dest_tiles, per_core_N)


def core_range(grid: tuple[int, int]) -> ttnn.CoreRangeSet:
    return ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(grid[0] - 1, grid[1] - 1))})


def sharded_memory_config(layout, grid: tuple[int, int], shard: tuple[int, int]) -> ttnn.MemoryConfig:
    """An L1 sharded memory config with an explicit ROW_MAJOR shard spec on (0,0)..(x-1, y-1)."""
    spec = ttnn.ShardSpec(core_range(grid), list(shard), ROW_MAJOR)
    return ttnn.MemoryConfig(layout, ttnn.BufferType.L1, spec)


@dataclass(frozen=True)
class _Sharded:
    """A sharded tensor as the validator sees it (2-D view: rows = everything but the last dim)."""

    name: str
    layout: object
    grid: tuple[int, int]
    shard: tuple[int, int]
    dtype: object
    orientation: object = ROW_MAJOR

    @property
    def shard_tiles(self) -> int:
        return (self.shard[0] // TILE) * (self.shard[1] // TILE)

    @property
    def shard_bytes(self) -> int:
        return self.shard_tiles * tile_bytes(self.dtype)


def _from_memory_config(name: str, memory_config: ttnn.MemoryConfig, dtype) -> _Sharded:
    if not memory_config.is_sharded() or memory_config.shard_spec is None:
        _fail(RULE_SHARD, name, f"memory config must be sharded with a shard spec, got {memory_config.memory_layout}")
    if memory_config.buffer_type != ttnn.BufferType.L1:
        _fail(RULE_SHARD, name, f"sharded activations live in L1, got {memory_config.buffer_type}")
    spec = memory_config.shard_spec
    box = spec.grid.bounding_box()
    if (box.start.x, box.start.y) != (0, 0) or spec.num_cores() != (box.end.x + 1) * (box.end.y + 1):
        _fail(RULE_SHARD, name, f"shard grid {spec.grid} must be one rectangle starting at core (0,0)")
    grid = (box.end.x + 1, box.end.y + 1)
    return _Sharded(name, memory_config.memory_layout, grid, tuple(spec.shape), dtype, spec.orientation)


def _grid_of(config) -> tuple[int, int]:
    g = config.compute_with_storage_grid_size
    return (g.x, g.y)


def _fmt_grid(grid: tuple[int, int]) -> str:
    return f"{grid[0]}x{grid[1]}"


def _fmt_shard(shard: tuple[int, int]) -> str:
    return f"{shard[0]}x{shard[1]}"


def _layout_name(layout) -> str:
    return str(layout).split(".")[-1]


@dataclass
class _Step:
    """One op of the walk: what ``table()`` prints and what the L1 rule checks."""

    op: str
    config: str
    grid: tuple[int, int]
    layout: object
    out: _Sharded | None
    inputs: list
    l1: dict  # component -> bytes per core

    @property
    def l1_total(self) -> int:
        return sum(self.l1.values())


# ---------------------------------------------------------------------------------------------------
# The plan


@dataclass
class ShardingPlan:
    """Program, memory and compute-kernel configs for one (model, batch, device grid).

    Grids are (x = columns, y = rows), as ``compute_with_storage_grid_size`` reports them.
    ``attention_mask_shape`` / ``attention_mask_layout`` / ``attention_mask_memory_config`` describe the
    additive mask ``ttnn.scale_mask_softmax_in_place`` expects with ``plan.softmax`` (see ``attention_mask``).
    """

    dims: ModelDims
    batch: int
    grid: tuple[int, int]
    l1_bytes_per_core: int
    encoder_grid: ttnn.CoreGrid
    attention_grid: ttnn.CoreGrid
    classifier_grid: ttnn.CoreGrid
    encoder_memory_config: ttnn.MemoryConfig
    qkv_attention_memory_config: ttnn.MemoryConfig
    heads_memory_config: ttnn.MemoryConfig
    context_memory_config: ttnn.MemoryConfig
    classifier_memory_config: ttnn.MemoryConfig
    layernorm: ttnn.LayerNormShardedMultiCoreProgramConfig
    layernorm_compute: ttnn.WormholeComputeKernelConfig
    matmul_compute: ttnn.WormholeComputeKernelConfig
    softmax_compute: ttnn.WormholeComputeKernelConfig
    qkv: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    query_by_key: ttnn.MatmulMultiCoreReuseProgramConfig
    softmax: ttnn.SoftmaxShardedMultiCoreProgramConfig
    attention_by_value: ttnn.MatmulMultiCoreReuseProgramConfig
    self_output: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    ff1: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    ff2: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    classifier: ttnn.MatmulMultiCoreReuseMultiCastProgramConfig
    activation_dtype: object = ttnn.bfloat8_b
    weight_dtype: object = ttnn.bfloat8_b
    # Matmul outputs: L1 block sharded; the matmul computes the shard spec itself from its program config
    # ([per_core_M*32, per_core_N*32] on (num_blocks_x, num_blocks_y)), as tt-metal's ViT passes it.
    matmul_output_memory_config: ttnn.MemoryConfig = field(default_factory=lambda: ttnn.L1_BLOCK_SHARDED_MEMORY_CONFIG)
    attention_mask_layout: object = ttnn.TILE_LAYOUT
    attention_mask_memory_config: ttnn.MemoryConfig = field(default_factory=lambda: ttnn.DRAM_MEMORY_CONFIG)

    # -- derived facts ------------------------------------------------------------------------

    @property
    def matmul_dest_tiles(self) -> int:
        """Destination-register budget the matmul subblocks are sized for (get_dest_reg_count)."""
        return _compute_config_dest_tiles(self.matmul_compute)

    @property
    def softmax_dest_tiles(self) -> int:
        return _compute_config_dest_tiles(self.softmax_compute)

    @property
    def seq_tiles(self) -> int:
        return self.dims.padded_tokens // TILE

    @property
    def m_tiles(self) -> int:
        """M of every encoder matmul in tiles: batch x padded tokens / 32."""
        return self.batch * self.seq_tiles

    @property
    def heads_per_core(self) -> int:
        return self.dims.heads // self.attention_grid.x

    @property
    def fold_input_memory_config(self) -> ttnn.MemoryConfig:
        """L1 HEIGHT_SHARDED input of ``ttnn.fold``: the (B, 224, 14, 64) row-major pixels on 2 x batch cores,
        224 x 14 / 2 = 1568 rows of 64 values per core, as tt-metal's sharded ViT stages its input."""
        dims = self.dims
        rows = dims.image_size * (dims.image_size // dims.patch_size)  # 224 x 14 rows of 64 per image
        cores = 2 * self.batch
        grid = ttnn.num_cores_to_corerangeset(cores, ttnn.CoreCoord(*self.grid), True)
        spec = ttnn.ShardSpec(grid, [self.batch * rows // cores, dims.patch_size * PATCH_CHANNELS], ROW_MAJOR)
        return ttnn.MemoryConfig(ttnn.TensorMemoryLayout.HEIGHT_SHARDED, ttnn.BufferType.L1, spec)

    @property
    def fold_output_memory_config(self) -> ttnn.MemoryConfig:
        """Where the fold's output moves before ``to_layout(TILE)``: interleaved L1, as tt-metal's ViT does.

        ``fold`` keeps the input's height sharding and rescales its shard to 1568 / 16 = 98 rows, which is
        not a tile multiple; ``to_layout`` refuses it ("Physical shard shape (98, 1024) must be tile {32, 32}
        sized!", tensor_layout.cpp), so the patches are un-sharded first."""
        return ttnn.L1_MEMORY_CONFIG

    @property
    def attention_mask_shape(self) -> tuple[int, int, int, int]:
        """Logical shape of the additive attention mask: ``(batch, 1, 1, padded_tokens)``.

        ttnn 0.81.1, ``scale_mask_softmax_in_place`` (what ``attention_softmax_`` calls) with a
        ``SoftmaxShardedMultiCoreProgramConfig`` (non-causal):

        - TILE layout, interleaved (DRAM or L1), bfloat16 (fp32 also accepted); tile-padded on the device to
          ``[B, 1, 32, S]``. Only row 0 of each mask tile is read: the compute kernel adds it with a row
          broadcast (``BroadcastDim::Row``) to every row of every head on the core.
        - One mask row per image, no broadcast over the batch: the reader reads ``block_w`` tiles starting at
          tile ``b * S/32`` for the cores of image ``b`` (``mask_start_tile_id`` advances by ``padded_shape[-1]/32``
          after each image's cores). Dimension 1 must be 1 ("Non-sharded mask intermediate dimensions must be 1").
        - The same shape broadcasts against the [B, heads, S, S] scores in the host golden function.
        - Alternatives the validator accepts: ROW_MAJOR ``[B, 1, S/32, 32]``, or a TILE mask sharded exactly like
          the scores (then its padded shape must equal the scores').
        """
        return (self.batch, 1, 1, self.dims.padded_tokens)

    # -- validation --------------------------------------------------------------------------

    def validate(self) -> None:
        """Run every rule (reference §2.1-§2.7) for every op of an encoder layer and the head, and the L1 budget."""
        for step in self._walk():
            check_l1_fits(step.op, step.l1_total, self.l1_bytes_per_core)

    def _mcast(
        self, op: str, config_name: str, cfg, in0: _Sharded, Kt: int, Nt: int, out_name: str, fused_gelu: bool | None = None
    ) -> _Step:
        """§2.1 + §2.2 for one 2D multicast linear whose in0 is block sharded; returns the step with the output spec."""
        grid = _grid_of(cfg)
        check_grid_within_device(op, grid, self.grid)
        check_nonzero_block_dims(op, cfg.in0_block_w, cfg.per_core_M, cfg.per_core_N)
        check_subblock_fits_dest(op, cfg.out_subblock_h, cfg.out_subblock_w, self.matmul_dest_tiles)
        check_mcast_block_divisibility(
            op, cfg.per_core_M, cfg.per_core_N, cfg.out_block_h, cfg.out_block_w, cfg.out_subblock_h, cfg.out_subblock_w
        )
        check_kt_divisible(op, Kt, cfg.in0_block_w)
        check_sharded_output_subblock(op, cfg.out_subblock_h, cfg.out_subblock_w, cfg.per_core_N)
        check_mcast_num_blocks(op, self.m_tiles, Nt, cfg.per_core_M, cfg.per_core_N, grid, cfg.transpose_mcast)
        check_mcast_in0_shard(
            op, in0.layout, in0.orientation, cfg.transpose_mcast, cfg.fuse_batch, in0.shard, cfg.per_core_M, cfg.in0_block_w
        )
        check_mcast_in0_grid(op, in0.grid, grid)
        out_grid = (math.ceil(Nt / cfg.per_core_N), math.ceil(self.m_tiles / cfg.per_core_M))
        check_mcast_output(op, self.matmul_output_memory_config.memory_layout, in0.layout)
        if fused_gelu is not None:
            activation = cfg.fused_activation
            has_gelu = activation is not None and activation.op_type == ttnn.UnaryOpType.GELU
            if fused_gelu and not has_gelu:
                _fail(RULE_MCAST, op, f"FF1 must fuse GELU into the matmul (fused_activation=(GELU, True)), got {activation}")
            if not fused_gelu and activation is not None:
                _fail(RULE_MCAST, op, f"no activation belongs here, got {activation}")
        out = _Sharded(out_name, BLOCK, out_grid, (cfg.per_core_M * TILE, cfg.per_core_N * TILE), self.activation_dtype)
        act, wgt = tile_bytes(self.activation_dtype), tile_bytes(self.weight_dtype)
        k_blocks = Kt // cfg.in0_block_w
        l1 = {
            "in0 shard": in0.shard_bytes,
            "in0 mcast CB (x2)": 2 * cfg.per_core_M * cfg.in0_block_w * act,
            "weights CB (x2)": 2 * cfg.in0_block_w * cfg.per_core_N * wgt,
            "bias CB": cfg.per_core_N * wgt,
            "output shard": out.shard_bytes,
            "partials CB": (cfg.per_core_M * cfg.per_core_N * tile_bytes(ttnn.bfloat16)) if k_blocks > 1 else 0,
        }
        return _Step(op, config_name, grid, BLOCK, out, [in0], l1)

    def _walk(self) -> list[_Step]:
        """The op sequence of one encoder layer + head, with every rule applied; returns the steps for ``table()``."""
        dims, act = self.dims, self.activation_dtype
        check_model_dims("model", dims)
        check_dtype("activations", act, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b))
        S, H, B = dims.padded_tokens, dims.hidden, self.batch
        St, Ht, It, Ct = S // TILE, H // TILE, dims.intermediate // TILE, dims.classes_padded // TILE
        hs, hst = dims.head_size, dims.head_size // TILE
        Mt = self.m_tiles
        act_tile, bf16_tile = tile_bytes(act), tile_bytes(ttnn.bfloat16)
        steps: list[_Step] = []

        # Encoder activation [B*S, H], block sharded on the encoder grid.
        hidden = _from_memory_config("encoder_memory_config", self.encoder_memory_config, act)
        encoder_grid = (self.encoder_grid.x, self.encoder_grid.y)
        if hidden.grid != encoder_grid:
            _fail(RULE_SHARD, "encoder_memory_config", f"shard grid {_fmt_grid(hidden.grid)} must be the encoder grid {_fmt_grid(encoder_grid)}")
        check_grid_within_device("encoder_memory_config", hidden.grid, self.grid)
        if hidden.layout != BLOCK:
            _fail(RULE_SHARD, "encoder_memory_config", f"must be BLOCK_SHARDED, got {hidden.layout}")
        check_block_shard("encoder_memory_config", (B * S, H), hidden.grid, hidden.shard)

        def layernorm_step(op: str, x: _Sharded, with_compute: bool) -> _Step:
            cfg = self.layernorm
            grid = _grid_of(cfg)
            check_grid_within_device(op, grid, self.grid)
            fp32_acc = bool(self.layernorm_compute.fp32_dest_acc_en) if with_compute else False
            full_sync = bool(self.layernorm_compute.dst_full_sync_en) if with_compute else False
            check_layernorm(
                op,
                Mt=Mt,
                Kt=Ht,
                grid=grid,
                block_h=cfg.block_h,
                block_w=cfg.block_w,
                subblock_w=cfg.subblock_w,
                shard=x.shard,
                layout=x.layout,
                orientation=x.orientation,
                shard_grid=x.grid,
                dest_tiles=dest_register_tiles(fp32_acc, full_sync),
            )
            if cfg.inplace:
                _fail(RULE_LAYERNORM, op, "the plan keeps the LayerNorm input (residual) alive: inplace must be False")
            out = _Sharded(op + " output", x.layout, x.grid, x.shard, act)
            l1 = {
                "input shard": x.shard_bytes,
                "output shard": out.shard_bytes,
                "gamma+beta CBs": 2 * cfg.block_w * bf16_tile,
                "x-mean CB": cfg.block_h * cfg.block_w * bf16_tile,
                "stats CBs": (4 * cfg.block_h + 2) * bf16_tile,
            }
            return _Step(op, "layernorm" + (" + layernorm_compute" if with_compute else ""), grid, x.layout, out, [x], l1)

        def reshard_step(op: str, x: _Sharded, target: _Sharded) -> _Step:
            check_grid_within_device(op, target.grid, self.grid)
            l1 = {"input shard": x.shard_bytes, "output shard": target.shard_bytes}
            return _Step(op, target.name, target.grid, target.layout, target, [x], l1)

        def add_step(op: str, a: _Sharded, b: _Sharded) -> _Step:
            check_residual_add(op, a, b)
            out = _Sharded(op + " output", a.layout, a.grid, a.shard, act)
            l1 = {"input shards": a.shard_bytes + b.shard_bytes, "output shard": out.shard_bytes}
            return _Step(op, "matmul_output_memory_config", a.grid, a.layout, out, [a, b], l1)

        # 1. LayerNorm before attention
        ln1 = layernorm_step("layernorm_before", hidden, True)
        steps.append(ln1)

        # 2. QKV linear
        qkv = self._mcast("qkv", "qkv", self.qkv, ln1.out, Ht, 3 * Ht, "qkv output")
        steps.append(qkv)

        # 3. reshard QKV onto the attention grid
        qkv_att = _from_memory_config("qkv_attention_memory_config", self.qkv_attention_memory_config, act)
        attention_grid = (self.attention_grid.x, self.attention_grid.y)
        if qkv_att.grid != attention_grid:
            _fail(RULE_SHARD, "qkv_attention_memory_config", f"shard grid {_fmt_grid(qkv_att.grid)} must be the attention grid {_fmt_grid(attention_grid)}")
        check_block_shard("qkv_attention_memory_config", (B * S, 3 * H), qkv_att.grid, qkv_att.shard)
        steps.append(reshard_step("reshard_qkv", qkv.out, qkv_att))

        # 4. split heads (create_qkv_heads)
        op = "split_heads"
        check_dtype(op, act, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b))
        check_split_heads_input(op, qkv_att.layout)
        check_split_heads_output(op, self.heads_memory_config.memory_layout)
        if self.heads_memory_config.buffer_type != ttnn.BufferType.L1:
            _fail(RULE_SPLIT_HEADS, op, f"heads live in L1, got {self.heads_memory_config.buffer_type}")
        cols, rows = qkv_att.grid
        check_split_heads_batch_rows(op, B, rows)
        check_split_heads_width(op, 3 * H, cols)
        check_split_heads_cols(op, dims.heads, cols)
        check_split_heads_rows(op, B * St, rows, St)
        check_split_heads_l1(op, qkv_att.shard_tiles, act_tile, self.l1_bytes_per_core)
        cores = cols * rows
        q = _Sharded("query", HEIGHT, qkv_att.grid, (B * dims.heads * S // cores, hs), act)
        k_t = _Sharded("key (transposed)", HEIGHT, qkv_att.grid, (B * dims.heads * hs // cores, S), act)
        v = _Sharded("value", HEIGHT, qkv_att.grid, (B * dims.heads * S // cores, hs), act)
        for t, width in ((q, hs), (k_t, S), (v, hs)):
            check_height_shard(op, B * dims.heads * (S if t is not k_t else hs), width, cores, t.shard)
        steps.append(
            _Step(
                op,
                "heads_memory_config",
                qkv_att.grid,
                HEIGHT,
                q,
                [qkv_att],
                {"input shard": qkv_att.shard_bytes, "Q+K^T+V shards": q.shard_bytes + k_t.shard_bytes + v.shard_bytes},
            )
        )

        def reuse_step(op: str, config_name: str, cfg, in0: _Sharded, in1: _Sharded, Mt_: int, Kt_: int, Nt_: int, out_name: str):
            grid = _grid_of(cfg)
            total_Mt = B * dims.heads * Mt_
            check_grid_within_device(op, grid, self.grid)
            check_grid_within_device(op, in0.grid, self.grid)
            check_nonzero_block_dims(op, cfg.in0_block_w, cfg.per_core_M, cfg.per_core_N)
            check_subblock_fits_dest(op, cfg.out_subblock_h, cfg.out_subblock_w, self.matmul_dest_tiles)
            check_reuse_subblock_divisibility(op, cfg.per_core_M, cfg.per_core_N, cfg.out_subblock_h, cfg.out_subblock_w)
            check_kt_divisible(op, Kt_, cfg.in0_block_w)
            out_layout = self.heads_memory_config.memory_layout
            check_sharded_output_subblock(op, cfg.out_subblock_h, cfg.out_subblock_w, cfg.per_core_N)
            check_reuse_m(op, Mt_, total_Mt, cfg.per_core_M)
            check_reuse_full_n(op, Nt_, cfg.per_core_N)
            check_reuse_in0(op, in0.layout, Kt_, in0.shard, cfg.in0_block_w, cfg.per_core_M)
            check_reuse_in1(op, in1.layout, Mt_, Kt_, Nt_, in1.shard, cfg.per_core_M, cfg.per_core_N)
            check_reuse_same_sharding(op, in0.grid, in1.grid, in0.layout, in1.layout)
            check_reuse_output_blocks(op, total_Mt, Nt_, cfg.per_core_M, cfg.per_core_N, in0.grid[0] * in0.grid[1])
            check_reuse_output_layout(op, out_layout)
            if grid != in0.grid:
                _fail(RULE_REUSE, op, f"program grid {_fmt_grid(grid)} must be the heads' shard grid {_fmt_grid(in0.grid)}")
            out = _Sharded(out_name, out_layout, in0.grid, (cfg.per_core_M * TILE, cfg.per_core_N * TILE), act)
            k_blocks = Kt_ // cfg.in0_block_w
            l1 = {
                "in0 shard": in0.shard_bytes,
                "in1 shard": in1.shard_bytes,
                "output shard": out.shard_bytes,
                "partials CB": (cfg.per_core_M * cfg.per_core_N * bf16_tile) if k_blocks > 1 else 0,
            }
            return _Step(op, config_name, grid, out_layout, out, [in0, in1], l1)

        # 5. Q K^T -> scores [B, heads, S, S]
        scores_step = reuse_step("query_by_key", "query_by_key", self.query_by_key, q, k_t, St, hst, St, "scores")
        steps.append(scores_step)
        scores = scores_step.out

        # 6. scale + mask + softmax, in place
        op = "softmax"
        cfg = self.softmax
        grid = _grid_of(cfg)
        check_grid_within_device(op, grid, self.grid)
        check_dtype(op, act, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b))
        check_softmax(
            op,
            M=B * dims.heads * S,
            K=S,
            last_dim=S,
            grid=grid,
            block_h=cfg.block_h,
            block_w=cfg.block_w,
            subblock_w=cfg.subblock_w,
            shard=scores.shard,
            shard_grid=scores.grid,
            dest_tiles=self.softmax_dest_tiles,
        )
        mask_sharded = self.attention_mask_memory_config.is_sharded()
        check_softmax_mask(op, self.attention_mask_shape, self.attention_mask_layout, mask_sharded, (B, dims.heads, S, S))
        l1 = {
            "scores shard (in place)": scores.shard_bytes,
            "mask CB": cfg.block_w * bf16_tile,
            "scaled+masked CB": cfg.block_w * bf16_tile,
            "exp CBs": 2 * cfg.block_w * bf16_tile,
            "scalar CBs": 4 * bf16_tile,
        }
        steps.append(_Step(op, "softmax", grid, scores.layout, scores, [scores], l1))

        # 7. P V -> context heads [B, heads, S, head_size]
        context_heads_step = reuse_step("attention_by_value", "attention_by_value", self.attention_by_value, scores, v, St, St, hst, "context heads")
        steps.append(context_heads_step)
        context_heads = context_heads_step.out

        # 8. concatenate heads -> [B, S, H] block sharded on the attention grid
        op = "concatenate_heads"
        context = _from_memory_config("context_memory_config", self.context_memory_config, act)
        check_concat_heads(op, context_heads.layout, context.layout, context_heads.shard, S, hs, dims.heads)
        heads_per_shard = context_heads.shard[0] // S
        expected = (context_heads.shard[0] // heads_per_shard, context_heads.shard[1] * heads_per_shard)
        if context.grid != context_heads.grid or context.shard != expected:
            _fail(
                RULE_CONCAT_HEADS,
                op,
                f"output is [{expected[0]}, {expected[1]}] shards on the input's {_fmt_grid(context_heads.grid)} grid; "
                f"context_memory_config says {list(context.shard)} on {_fmt_grid(context.grid)}",
            )
        check_block_shard("context_memory_config", (B * S, H), context.grid, context.shard)
        steps.append(
            _Step(op, "context_memory_config", context.grid, context.layout, context, [context_heads],
                  {"input shard": context_heads.shard_bytes, "output shard": context.shard_bytes})
        )

        # 9. back to the encoder grid
        steps.append(reshard_step("reshard_context", context, hidden))

        # 10. self output + residual
        self_out = self._mcast("self_output", "self_output", self.self_output, hidden, Ht, Ht, "self output")
        steps.append(self_out)
        steps.append(add_step("residual_add_attention", self_out.out, hidden))

        # 11. LayerNorm after, FF1 (GELU), FF2 + residual
        ln2 = layernorm_step("layernorm_after", hidden, True)
        steps.append(ln2)
        ff1 = self._mcast("ff1", "ff1", self.ff1, ln2.out, Ht, It, "ff1 output", fused_gelu=True)
        steps.append(ff1)
        ff2 = self._mcast("ff2", "ff2", self.ff2, ff1.out, It, Ht, "ff2 output", fused_gelu=False)
        steps.append(ff2)
        steps.append(add_step("residual_add_mlp", ff2.out, hidden))

        # 12. head: final LayerNorm, reshard, the two classifier linears
        final_ln = layernorm_step("final_layernorm", hidden, False)
        steps.append(final_ln)
        cls_in = _from_memory_config("classifier_memory_config", self.classifier_memory_config, act)
        classifier_grid = (self.classifier_grid.x, self.classifier_grid.y)
        if cls_in.grid != classifier_grid:
            _fail(RULE_SHARD, "classifier_memory_config", f"shard grid {_fmt_grid(cls_in.grid)} must be the classifier grid {_fmt_grid(classifier_grid)}")
        check_block_shard("classifier_memory_config", (B * S, H), cls_in.grid, cls_in.shard)
        steps.append(reshard_step("reshard_classifier", final_ln.out, cls_in))
        for name in ("cls_classifier", "distillation_classifier"):
            steps.append(self._mcast(name, "classifier", self.classifier, cls_in, Ht, Ct, name + " output", fused_gelu=False))
        return steps

    # -- reporting ---------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """One row per op of an encoder layer and the head, with a per-core L1 estimate.

        Counted per core, in each tensor's dtype (activations ``activation_dtype``, weights ``weight_dtype``,
        LayerNorm/softmax intermediates bf16): the input shard(s) and the output shard (both resident while the op
        runs; in-place softmax counted once), plus the op's main circular buffers — for a 2D mcast linear the
        double-buffered in0 multicast block (2 x per_core_M x in0_block_w), the double-buffered weight block
        (2 x in0_block_w x per_core_N), one bias row and a bf16 partials block when K is split into several blocks;
        for LayerNorm gamma/beta, the x-mean block and the statistics tiles; for softmax the mask row, the scaled,
        exp and scalar tiles. Not counted: tensors kept alive across the op (the residual, ~one encoder shard),
        tt-metal's reserved L1 region and ``l1_small_size``; so "fits L1" is a necessary, not sufficient, check.
        """
        rows = []
        for step in self._walk():
            total = step.l1_total
            rows.append(
                {
                    "op": step.op,
                    "config": step.config,
                    "grid": _fmt_grid(step.grid),
                    "cores": step.grid[0] * step.grid[1],
                    "memory layout": _layout_name(step.layout),
                    "shard shape": _fmt_shard(step.out.shard) if step.out is not None else "",
                    "input shards": ", ".join(_fmt_shard(x.shard) for x in step.inputs),
                    "L1 bytes/core": total,
                    "L1 %": round(100.0 * total / self.l1_bytes_per_core, 1),
                    "fits L1": total <= self.l1_bytes_per_core,
                }
            )
        return pd.DataFrame(rows)

    def configs(self) -> dict[str, object]:
        """The program / compute configs by plan attribute name (for printing)."""
        return {
            name: getattr(self, name)
            for name in (
                "layernorm",
                "layernorm_compute",
                "matmul_compute",
                "softmax_compute",
                "qkv",
                "query_by_key",
                "softmax",
                "attention_by_value",
                "self_output",
                "ff1",
                "ff2",
                "classifier",
            )
        }

    def memory_configs(self) -> dict[str, ttnn.MemoryConfig]:
        return {
            name: getattr(self, name)
            for name in (
                "encoder_memory_config",
                "qkv_attention_memory_config",
                "heads_memory_config",
                "context_memory_config",
                "classifier_memory_config",
                "matmul_output_memory_config",
                "attention_mask_memory_config",
            )
        }

    def summary(self) -> str:
        e, a, c = self.encoder_grid, self.attention_grid, self.classifier_grid
        return (
            f"{self.dims.describe()} | batch {self.batch} | device grid {_fmt_grid(self.grid)} | "
            f"encoder {e.x}x{e.y}, attention {a.x}x{a.y} ({self.heads_per_core} heads/core), classifier {c.x}x{c.y} | "
            f"activations {_dtype_name(self.activation_dtype)}, weights {_dtype_name(self.weight_dtype)}"
        )


def _compute_config_dest_tiles(config: ttnn.WormholeComputeKernelConfig) -> int:
    return dest_register_tiles(bool(config.fp32_dest_acc_en), bool(config.dst_full_sync_en))


def make_plan(
    dims: ModelDims,
    batch: int,
    grid: tuple[int, int],
    l1_bytes_per_core: int,
    activation_dtype=ttnn.bfloat8_b,
    *,
    weight_dtype=ttnn.bfloat8_b,
    layernorm_fp32_dest_acc: bool = False,
) -> ShardingPlan:
    """Derive and validate the plan for ``dims`` at ``batch`` on a device compute grid ``grid`` = (x, y).

    Raises :class:`ShardingRuleError` naming the rule when no valid plan exists (e.g. batch > grid rows).
    """
    grid = (int(grid[0]), int(grid[1]))
    if batch < 1:
        raise ShardingRuleError(RULE_GRID, "plan", f"batch ({batch}) must be at least 1")
    check_model_dims("model", dims)
    check_dtype("activations", activation_dtype, (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b))
    check_dtype("weights", weight_dtype, tuple(TILE_BYTES))

    S, St = dims.padded_tokens, dims.padded_tokens // TILE
    Ht, It, Ct = dims.hidden // TILE, dims.intermediate // TILE, dims.classes_padded // TILE
    hst = dims.head_size // TILE
    Mt = batch * St
    grid_x, grid_y = grid

    # Compute kernel configs, passed to every op explicitly. They keep the values ttnn 0.81.1 picks when it is
    # given none (shared/reference/device-numerics.md §1): matmuls with a program config run LoFi, no approx,
    # fp32 accumulation only for fp32 outputs, packer L1 accumulation on (create_matmul_attributes); the fused
    # scale-mask-softmax runs HiFi4 with the approximate exp (softmax_device_operation.cpp). LayerNorm takes
    # tt-metal's ViT encoder config (HiFi2, approx, packer L1 accumulation; ln_compute_config).
    fp32_activations = activation_dtype == ttnn.float32
    matmul_compute = ttnn.WormholeComputeKernelConfig(
        math_fidelity=ttnn.MathFidelity.LoFi,
        math_approx_mode=False,
        fp32_dest_acc_en=fp32_activations,
        packer_l1_acc=True,
    )
    softmax_compute = ttnn.WormholeComputeKernelConfig(
        math_fidelity=ttnn.MathFidelity.HiFi4,
        math_approx_mode=True,
        fp32_dest_acc_en=fp32_activations,
        packer_l1_acc=False,
    )
    layernorm_compute = ttnn.WormholeComputeKernelConfig(
        math_fidelity=ttnn.MathFidelity.HiFi2,
        math_approx_mode=True,
        fp32_dest_acc_en=layernorm_fp32_dest_acc,
        packer_l1_acc=True,
    )
    matmul_dest = _compute_config_dest_tiles(matmul_compute)
    softmax_dest = _compute_config_dest_tiles(softmax_compute)
    layernorm_dest = _compute_config_dest_tiles(layernorm_compute)

    # Grids. Encoder: rows | Mt, cols | every K/N tile count on it (hidden, 3*hidden, intermediate).
    encoder_rows = largest_divisor_at_most(grid_y, Mt)
    encoder_cols = largest_divisor_at_most(grid_x, Ht, 3 * Ht, It)
    # Attention: one image per row; cols | heads and | QKV width tiles.
    check_attention_rows_fit("split_heads", batch, grid_y)
    attention_rows = batch
    attention_cols = largest_divisor_at_most(grid_x, dims.heads, 3 * Ht)
    # Classifier: the encoder rows; cols | hidden tiles and | padded class tiles.
    classifier_rows = encoder_rows
    classifier_cols = largest_divisor_at_most(grid_x, Ht, Ct)

    encoder_grid = ttnn.CoreGrid(y=encoder_rows, x=encoder_cols)
    attention_grid = ttnn.CoreGrid(y=attention_rows, x=attention_cols)
    classifier_grid = ttnn.CoreGrid(y=classifier_rows, x=classifier_cols)
    enc, att, cls = (encoder_cols, encoder_rows), (attention_cols, attention_rows), (classifier_cols, classifier_rows)

    per_core_M = Mt // encoder_rows
    hidden_shard = (per_core_M * TILE, dims.hidden // encoder_cols)
    encoder_memory_config = sharded_memory_config(BLOCK, enc, hidden_shard)
    qkv_attention_memory_config = sharded_memory_config(BLOCK, att, (S, 3 * dims.hidden // attention_cols))
    heads_per_core = dims.heads // attention_cols
    context_memory_config = sharded_memory_config(BLOCK, att, (S, heads_per_core * dims.head_size))
    classifier_memory_config = sharded_memory_config(BLOCK, cls, (Mt // classifier_rows * TILE, dims.hidden // classifier_cols))
    # One HEIGHT_SHARDED L1 config for Q, K^T, V, scores and context heads: each op fills in its own shard spec.
    heads_memory_config = ttnn.MemoryConfig(HEIGHT, ttnn.BufferType.L1)

    layernorm_block_w = Ht // encoder_cols
    layernorm = ttnn.LayerNormShardedMultiCoreProgramConfig(
        compute_with_storage_grid_size=enc,
        subblock_w=largest_divisor_at_most(layernorm_dest, layernorm_block_w),
        block_h=per_core_M,
        block_w=layernorm_block_w,
        inplace=False,
    )

    def mcast(cols_rows: tuple[int, int], Kt: int, Nt: int, fused_activation=None):
        cols, rows = cols_rows
        per_core_N = Nt // cols
        return ttnn.MatmulMultiCoreReuseMultiCastProgramConfig(
            compute_with_storage_grid_size=cols_rows,
            in0_block_w=Kt // cols,  # the whole in0 shard width: one K block per multicast step
            out_subblock_h=1,
            out_subblock_w=widest_subblock(per_core_N, matmul_dest),
            per_core_M=Mt // rows,
            per_core_N=per_core_N,
            transpose_mcast=False,
            fused_activation=fused_activation,
        )

    def reuse(Kt: int, Nt: int):
        return ttnn.MatmulMultiCoreReuseProgramConfig(
            compute_with_storage_grid_size=att,
            in0_block_w=Kt,  # the whole K per core
            out_subblock_h=1,
            out_subblock_w=widest_subblock(Nt, matmul_dest),
            per_core_M=heads_per_core * St,
            per_core_N=Nt,
        )

    plan = ShardingPlan(
        dims=dims,
        batch=batch,
        grid=grid,
        l1_bytes_per_core=l1_bytes_per_core,
        encoder_grid=encoder_grid,
        attention_grid=attention_grid,
        classifier_grid=classifier_grid,
        encoder_memory_config=encoder_memory_config,
        qkv_attention_memory_config=qkv_attention_memory_config,
        heads_memory_config=heads_memory_config,
        context_memory_config=context_memory_config,
        classifier_memory_config=classifier_memory_config,
        layernorm=layernorm,
        layernorm_compute=layernorm_compute,
        matmul_compute=matmul_compute,
        softmax_compute=softmax_compute,
        qkv=mcast(enc, Ht, 3 * Ht),
        query_by_key=reuse(hst, St),
        softmax=ttnn.SoftmaxShardedMultiCoreProgramConfig(
            compute_with_storage_grid_size=att,
            subblock_w=largest_divisor_at_most(softmax_dest, St),
            block_h=heads_per_core * St,
            block_w=St,
        ),
        attention_by_value=reuse(St, hst),
        self_output=mcast(enc, Ht, Ht),
        ff1=mcast(enc, Ht, It, fused_activation=(ttnn.UnaryOpType.GELU, True)),
        ff2=mcast(enc, It, Ht),
        classifier=mcast(cls, Ht, Ct),
        activation_dtype=activation_dtype,
        weight_dtype=weight_dtype,
    )
    plan.validate()
    return plan


# ---------------------------------------------------------------------------------------------------
# Attention mask


def attention_mask(plan: ShardingPlan, dtype=torch.bfloat16, masked_value: float = MASKED_VALUE) -> torch.Tensor:
    """The additive key-padding mask for ``ttnn.scale_mask_softmax_in_place`` in ``plan.attention_mask_shape``.

    0 for key columns < ``dims.tokens`` (198), ``masked_value`` for the padded columns 198..223. Convert with
    ``ttnn.from_torch(mask, dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT, device=..., memory_config=plan.attention_mask_memory_config)``.

    Why these choices (ttnn 0.81.1; sources in tenstorrent/tt-metal):
    - ``ttnn/cpp/ttnn/operations/transformer/attention_softmax/attention_softmax.cpp``: ``attention_softmax_``
      requires a mask and calls ``scale_mask_softmax_in_place(scale = 1/sqrt(head_size), mask, program_config)``
      (non-causal); the mask is added after scaling.
    - ``ttnn/cpp/ttnn/operations/normalization/softmax/device/softmax_device_operation.cpp`` (validate): a
      non-sharded mask needs dims 1..rank-3 == 1; a ROW_MAJOR one must be [B, 1, S/32, 32]; a sharded one must
      be TILE with the input's shape. No batch-equality check for the sharded config.
    - ``.../softmax_program_factory_attention_optimized_sharded.cpp``: the reader reads ``block_w`` mask tiles
      from ``mask_start_tile_id``, which advances by ``padded_shape[-1]/32`` after each image's cores, so the
      mask needs one tile row per image ([B, ...], no batch broadcast).
    - ``.../kernels/attention/compute/softmax_sharded.cpp`` (shipped in the 0.81.1 wheel): the non-causal mask is
      added with ``BroadcastDim::Row`` — only row 0 of each mask tile is used — and reused for every row of the block.
    - tt-metal's own sharded test (``run_softmax_sharded_stable``) uses ``[B, 1, 1, W]`` bfloat16 TILE masks in
      DRAM with ``-inf``. We use a finite ``-1e4`` instead: exp() of it is exactly 0 in bf16/fp32, it needs no
      inf arithmetic in the approximate exp, and it survives a bfloat8_b conversion (an inf exponent would be
      shared by the 16 values of its block).
    """
    dtype = _torch_dtype(dtype)
    mask = torch.zeros(plan.attention_mask_shape, dtype=torch.float32)
    mask[..., plan.dims.tokens :] = masked_value
    return mask.to(dtype)


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    mapping = {ttnn.bfloat16: torch.bfloat16, ttnn.float32: torch.float32}
    if dtype in mapping:
        return mapping[dtype]
    raise ValueError(f"attention masks are bfloat16 or float32 (block-float masks are not used), got {dtype}")


# ---------------------------------------------------------------------------------------------------
# Published tt-metal Wormhole ViT-base values (batch 8, 8x8), reference §1.2, from
# models/demos/vision/classification/vit/wormhole/tt/ttnn_optimized_sharded_vit_wh.py @ 03019beb.
# These are the comparison data, not inputs to any derivation above.

_PUBLISHED_WH_VIT_BASE_B8: list[tuple[str, str, object]] = [
    ("grids", "encoder_grid", "8x8"),
    ("grids", "attention_grid", "6x8"),
    ("grids", "classifier_grid", "6x8"),
    ("shards", "encoder_memory_config", "224x96"),
    ("shards", "qkv output", "224x288"),
    ("shards", "qkv_attention_memory_config", "224x384"),
    ("shards", "query / value heads", "448x64"),
    ("shards", "key heads (transposed)", "128x224"),
    ("shards", "scores", "448x224"),
    ("shards", "context_memory_config", "224x128"),
    ("shards", "classifier_memory_config", "224x128"),
    ("shards", "classifier output", "224x192"),
    ("layernorm", "grid", "8x8"),
    ("layernorm", "subblock_w", 3),
    ("layernorm", "block_h", 7),
    ("layernorm", "block_w", 3),
    ("layernorm", "inplace", False),
    ("layernorm_compute", "math_fidelity", "HiFi2"),
    ("layernorm_compute", "math_approx_mode", True),
    ("layernorm_compute", "fp32_dest_acc_en", False),
    ("layernorm_compute", "packer_l1_acc", True),
]
_MATMUL_FIELDS = ("grid", "in0_block_w", "out_subblock_h", "out_subblock_w", "per_core_M", "per_core_N")
_MCAST_FIELDS = _MATMUL_FIELDS + ("transpose_mcast", "fused_activation")
_PUBLISHED_WH_VIT_BASE_B8 += [
    (key, name, value)
    for key, fields, values in (
        ("qkv", _MCAST_FIELDS, ("8x8", 3, 1, 3, 7, 9, False, None)),
        ("query_by_key", _MATMUL_FIELDS, ("6x8", 2, 1, 7, 14, 7)),
        ("attention_by_value", _MATMUL_FIELDS, ("6x8", 7, 1, 2, 14, 2)),
        ("self_output", _MCAST_FIELDS, ("8x8", 3, 1, 3, 7, 3, False, None)),
        ("ff1", _MCAST_FIELDS, ("8x8", 3, 1, 6, 7, 12, False, "GELU")),
        ("ff2", _MCAST_FIELDS, ("8x8", 12, 1, 3, 7, 3, False, None)),
        ("classifier", _MCAST_FIELDS, ("6x8", 2, 1, 6, 7, 6, False, None)),
        ("softmax", ("grid", "subblock_w", "block_h", "block_w"), ("6x8", 7, 14, 7)),
    )
    for name, value in zip(fields, values)
]

_PUBLISHED_NOTES = {
    ("classifier", "in0_block_w"): (
        "published 2 (= 4//2; its code comment says 1); any divisor of the 4-tile in0 shard width is valid — "
        "we take the whole shard width (one K block, no partial-sum pass), L1 still fits"
    ),
    ("softmax", "grid"): (
        "same numbers; published scales with mul_ and runs softmax_in_place without a mask, "
        "we run scale_mask_softmax_in_place (scale + key-padding mask + softmax) with this config"
    ),
    ("grids", "classifier_grid"): "published reshards to its batch grid; we derive cols | gcd(hidden tiles, class tiles)",
    ("layernorm_compute", "math_fidelity"): "policy choice copied from the published design (final LN: published passes none)",
}


def _published_comparable(plan: ShardingPlan) -> bool:
    d = plan.dims
    shape = (d.hidden, d.heads, d.intermediate, d.padded_tokens, d.classes_padded, plan.batch, plan.grid)
    return shape == (768, 12, 3072, 224, 1152, 8, (8, 8))


def _derived_value(plan: ShardingPlan, key: str, fld: str, steps: dict):
    if key == "grids":
        g = getattr(plan, fld)
        return f"{g.x}x{g.y}"
    if key == "shards":
        split = steps["split_heads"]
        by_name = {
            "encoder_memory_config": plan.encoder_memory_config.shard_spec.shape,
            "qkv output": steps["qkv"].out.shard,
            "qkv_attention_memory_config": plan.qkv_attention_memory_config.shard_spec.shape,
            "query / value heads": split.out.shard,
            "key heads (transposed)": (plan.dims.heads // plan.attention_grid.x * plan.dims.head_size, plan.dims.padded_tokens),
            "scores": steps["query_by_key"].out.shard,
            "context_memory_config": plan.context_memory_config.shard_spec.shape,
            "classifier_memory_config": plan.classifier_memory_config.shard_spec.shape,
            "classifier output": steps["cls_classifier"].out.shard,
        }
        shard = by_name[fld]
        return f"{shard[0]}x{shard[1]}"
    obj = getattr(plan, key)
    if fld == "grid":
        return _fmt_grid(_grid_of(obj))
    value = getattr(obj, fld)
    if fld == "fused_activation":
        return None if value is None else str(value.op_type).split(".")[-1]
    if fld == "math_fidelity":
        return str(value).split(".")[-1]
    return value


def compare_with_published(plan: ShardingPlan) -> pd.DataFrame:
    """Derived vs published tt-metal Wormhole ViT-base values (batch 8, 8x8 grid, reference §1.2), one row per field.

    DeiT-base has the same padded shapes as ViT-base (198 and 197 tokens both pad to 224), so the published
    numbers apply; only the two classifier heads differ (both use ``plan.classifier``).
    """
    if not _published_comparable(plan):
        raise ValueError(
            "published values exist for a base model (hidden 768, 12 heads) at batch 8 on an 8x8 grid; "
            f"this plan is {plan.summary()}"
        )
    steps = {step.op: step for step in plan._walk()}
    rows = []
    for key, fld, published in _PUBLISHED_WH_VIT_BASE_B8:
        derived = _derived_value(plan, key, fld, steps)
        match = derived == published
        note = _PUBLISHED_NOTES.get((key, fld), "" if match else "differs")
        rows.append({"config": key, "field": fld, "derived": derived, "published": published, "match": match, "note": note})
    return pd.DataFrame(rows)
