"""Tile constants, the model dimensions that shape the plan (and where they are padded to whole tiles), and small
formatting helpers."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
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

BLOCK = ttnn.TensorMemoryLayout.BLOCK_SHARDED
HEIGHT = ttnn.TensorMemoryLayout.HEIGHT_SHARDED
WIDTH = ttnn.TensorMemoryLayout.WIDTH_SHARDED
ROW_MAJOR = ttnn.ShardOrientation.ROW_MAJOR
COL_MAJOR = ttnn.ShardOrientation.COL_MAJOR


def enum_name(value) -> str:
    """A ttnn enum member's name: ``BLOCK_SHARDED`` for ``ttnn.TensorMemoryLayout.BLOCK_SHARDED``."""
    return str(value).split(".")[-1]


def dtype_name(dtype) -> str:
    return enum_name(dtype).lower()


def describe_compute_config(config) -> str:
    """A compute kernel config with its fields: ttnn's own repr of one is its address."""
    return (
        f"WormholeComputeKernelConfig(math_fidelity={enum_name(config.math_fidelity)}, "
        f"math_approx_mode={config.math_approx_mode}, fp32_dest_acc_en={config.fp32_dest_acc_en}, "
        f"packer_l1_acc={config.packer_l1_acc})"
    )


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


def compute_config_dest_tiles(config: ttnn.WormholeComputeKernelConfig) -> int:
    """``dest_register_tiles`` for the settings of a compute kernel config."""
    return dest_register_tiles(bool(config.fp32_dest_acc_en), bool(config.dst_full_sync_en))


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
    classifier_heads: int = 2  # distilled: CLS + distillation; a plain DeiTForImageClassification has one

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
    def classifier_outputs(self) -> int:
        """Columns of the one classifier matmul: every head's padded classes side by side."""
        return self.classifier_heads * self.classes_padded

    @property
    def patch_features(self) -> int:
        """Values per patch row of the patch-embedding matmul: 16 x 16 pixels x 4 channels (RGB padded to 4)."""
        return self.patch_size * self.patch_size * PATCH_CHANNELS

    @classmethod
    def from_config(cls, config, classifier_heads: int = 2) -> "ModelDims":
        """From a Hugging Face ``DeiTConfig`` (which does not say how many heads the checkpoint has)."""
        return cls(
            hidden=config.hidden_size,
            heads=config.num_attention_heads,
            layers=config.num_hidden_layers,
            intermediate=config.intermediate_size,
            num_classes=config.num_labels,
            image_size=config.image_size,
            patch_size=config.patch_size,
            classifier_heads=classifier_heads,
        )

    def describe(self) -> str:
        return (
            f"hidden {self.hidden}, {self.heads} heads of {self.head_size}, {self.layers} layers, "
            f"MLP {self.intermediate}, {self.num_classes} classes (padded {self.classes_padded}), "
            f"{self.tokens} tokens (padded {self.padded_tokens})"
        )


def padding_table(dims: ModelDims) -> pd.DataFrame:
    """Where the model pads to whole tiles: tokens (198 -> 224) and classifier outputs (1000 -> 1152).

    One row per padded quantity: what it is, real and padded size, tiles, padding share.
    """
    rows = [
        ("sequence (tokens)", "CLS + distillation + 14x14 patches", dims.tokens, dims.padded_tokens),
        ("classifier outputs", "ImageNet-1k classes", dims.num_classes, dims.classes_padded),
        ("hidden size", "columns of every activation", dims.hidden, round_up(dims.hidden, TILE)),
        ("patch features", "16x16 pixels x 4 channels (RGB + a zero channel)", 16 * 16 * 3, dims.patch_features),
    ]
    table = pd.DataFrame(rows, columns=["quantity", "what", "real", "padded"])
    table["tiles"] = table["padded"] // TILE
    table["padding_percent"] = 100.0 * (table["padded"] - table["real"]) / table["padded"]
    return table


# ---------------------------------------------------------------------------------------------------
# Formatting


def grid_of(config) -> tuple[int, int]:
    g = config.compute_with_storage_grid_size
    return (g.x, g.y)


def fmt_grid(grid: tuple[int, int]) -> str:
    return f"{grid[0]}x{grid[1]}"


def fmt_shard(shard: tuple[int, int]) -> str:
    return f"{shard[0]}x{shard[1]}"


def op_name(op) -> str:
    """``ttnn.linear``: a ttnn op's full name, as ttnn's reports print it."""
    return getattr(op, "python_fully_qualified_name", None) or getattr(op, "__name__", str(op))


def layout_name(layout) -> str:
    return enum_name(layout)

