"""Numbers behind the tutorial figures that no other module computes.

Notebook 01 (weight conversion) shows:

- the checkpoint's parameters grouped into the families the converter uses (:func:`parameter_table`),
  and what each family occupies once stored in ttnn's tile formats (:func:`storage_table`);
- which head and which of q/k/v owns every column of the fused QKV weight (:func:`qkv_column_owners`),
  and the proof that un-fusing gives back Hugging Face's per-head weights (:func:`qkv_roundtrip`);
- where the sequence and the classifier are padded to whole tiles (:func:`padding_table`);
- one 32x32 tile: its four 16x16 faces, the exponent each 16-value face row shares in the block-float
  formats, and what each format does to it (:func:`tile_faces`, :func:`face_row_exponents`,
  :func:`tile_format_errors`, :func:`tile_bytes_table`);
- which core holds which block of the encoder activation (:func:`encoder_shard_map`, :func:`attention_shard_map`).

(PCC ladders and tt-metal's thresholds live in :mod:`deit_tt.ladder`.) Everything here is plain
PyTorch/pandas on top of the package's own conversion, block-float rounding and sharding plan; nothing
runs a model.
"""

from __future__ import annotations

import re

import pandas as pd
import torch
import ttnn

from deit_tt.blockfloat import BLOCK_SIZE, MANTISSA_BITS, round_to_dtype
from deit_tt.pcc import pcc
from deit_tt.policy import dtype_name

TILE = 32  # ttnn tile edge
FACE = 16  # a tile is four 16x16 faces: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
QKV_PARTS = ("q", "k", "v")
TILE_DTYPES = (ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b, ttnn.bfloat4_b)

# --------------------------------------------------------------------------------------------------
# Checkpoint anatomy

# Converter families (deit_tt.conversion.FAMILIES), matched against Hugging Face parameter names.
_FAMILY_PATTERNS = (
    ("patch_embedding", r"patch_embeddings\."),
    ("embeddings", r"embeddings\.(cls_token|distillation_token|position_embeddings)$"),
    ("qkv", r"attention\.(q_proj|k_proj|v_proj)\."),
    ("attention_output", r"attention\.o_proj\."),
    ("ff1", r"mlp\.fc1\."),
    ("ff2", r"mlp\.fc2\."),
    ("layernorm", r"layernorm(_before|_after)?\."),
    ("classifier", r"classifier\."),
)
FAMILY_ORDER = tuple(family for family, _ in _FAMILY_PATTERNS)


def family_of(name: str) -> str:
    """Converter family of a Hugging Face DeiT parameter name ("other" if none matches)."""
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, name):
            return family
    return "other"


def parameter_listing(checkpoint) -> pd.DataFrame:
    """One row per Hugging Face parameter: name, family, shape, parameters."""
    rows = [
        {"name": name, "family": family_of(name), "shape": tuple(p.shape), "parameters": p.numel()}
        for name, p in checkpoint.model.named_parameters()
    ]
    return pd.DataFrame(rows, columns=["name", "family", "shape", "parameters"])


def parameter_table(checkpoint) -> pd.DataFrame:
    """Parameters grouped by converter family, largest share first, with a total row.

    Columns: family, tensors, parameters, share_percent, fp32_mib, example (one member's name and shape).
    """
    listing = parameter_listing(checkpoint)
    total = int(listing["parameters"].sum())
    rows = []
    for family, members in listing.groupby("family", sort=False):
        first = members.iloc[0]
        count = int(members["parameters"].sum())
        rows.append(
            {
                "family": family,
                "tensors": len(members),
                "parameters": count,
                "share_percent": 100.0 * count / total,
                "fp32_mib": count * 4 / 2**20,
                "example": f"{first['name']} {tuple(first['shape'])}",
            }
        )
    table = pd.DataFrame(rows).sort_values("parameters", ascending=False, ignore_index=True)
    summary = {
        "family": "total",
        "tensors": len(listing),
        "parameters": total,
        "share_percent": 100.0,
        "fp32_mib": total * 4 / 2**20,
        "example": "",
    }
    return pd.concat([table, pd.DataFrame([summary])], ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Tiles and data formats


def bytes_per_tile(dtype) -> int:
    """Bytes one 32x32 tile takes in ``dtype``, as ttnn itself reports it (``ttnn.Tile.get_tile_size``).

    Needs a chip description: on a machine without a card, call ``deit_tt.runtime.prepare_host()`` first.
    """
    from deit_tt.runtime import prepare_host

    prepare_host()
    return int(ttnn.Tile((TILE, TILE)).get_tile_size(dtype))


def tile_bytes_table() -> pd.DataFrame:
    """Per format: bytes per tile (from ttnn), how they split into values and shared exponents, bits per value."""
    rows = []
    values = TILE * TILE
    for dtype in TILE_DTYPES:
        total = bytes_per_tile(dtype)
        exponents = TILE * TILE // BLOCK_SIZE if dtype in MANTISSA_BITS else 0  # one byte per 16-value face row
        rows.append(
            {
                "dtype": dtype_name(dtype),
                "bytes_per_tile": total,
                "value_bytes": total - exponents,
                "exponent_bytes": exponents,
                "bits_per_value": 8 * total / values,
                "vs_bfloat16": total / bytes_per_tile(ttnn.bfloat16),
            }
        )
    return pd.DataFrame(rows)


def stored_bytes(tensor: ttnn.Tensor) -> int:
    """Bytes a converted ttnn tensor occupies: whole tiles in TILE layout, element bytes in ROW_MAJOR."""
    shape = list(tensor.padded_shape)
    if tensor.layout == ttnn.TILE_LAYOUT:
        rows = 1
        for size in shape[:-1]:
            rows *= size
        tiles = (-(-rows // TILE)) * (-(-shape[-1] // TILE))
        return tiles * bytes_per_tile(tensor.dtype)
    count = 1
    for size in shape:
        count *= size
    return count * int(tensor.element_size())


def storage_table(parameters_by_policy: dict) -> pd.DataFrame:
    """MiB stored per converter family for each converted parameter set (``{policy name: DeiTParameters}``).

    Counts tile padding (e.g. the classifier's 1000 -> 1152 outputs) and the block-float exponent bytes.
    """
    from deit_tt.conversion import FAMILIES

    columns = {}
    for policy_name, parameters in parameters_by_policy.items():
        per_family = dict.fromkeys(FAMILIES, 0)
        for name, tensor in parameters.named_tensors().items():
            per_family[_converted_family(name)] += stored_bytes(tensor)
        columns[f"{policy_name}_mib"] = {family: size / 2**20 for family, size in per_family.items()}
    table = pd.DataFrame(columns)
    table = table[(table != 0).any(axis=1)]
    table.loc["total"] = table.sum()
    table.index.name = "family"
    return table.reset_index()


def _converted_family(name: str) -> str:
    if name.startswith("patch_embedding"):
        return "patch_embedding"
    if name in ("cls_token", "distillation_token", "position_embeddings"):
        return "embeddings"
    if name.startswith("heads."):
        return "classifier"
    if name.startswith("layernorm"):
        return "layernorm"
    part = name.split(".")[2]  # layers.<i>.<part>.<weight|bias>
    return "layernorm" if part.startswith("layernorm") else part


def tile_of(tensor, tile_row: int = 0, tile_col: int = 0) -> torch.Tensor:
    """Tile (``tile_row``, ``tile_col``) of a 2-D tensor (torch, or a ttnn host tensor) as float32 [32, 32]."""
    if isinstance(tensor, ttnn.Tensor):
        tensor = ttnn.to_torch(tensor)
    matrix = tensor.reshape(-1, tensor.shape[-1]).float()
    rows, cols = matrix.shape
    if (tile_row + 1) * TILE > rows or (tile_col + 1) * TILE > cols:
        raise ValueError(f"tile ({tile_row}, {tile_col}) is outside a {rows}x{cols} matrix")
    return matrix[tile_row * TILE : (tile_row + 1) * TILE, tile_col * TILE : (tile_col + 1) * TILE].clone()


def face_index_map() -> torch.Tensor:
    """[32, 32] int: the face (0..3) each element of a tile lives in."""
    rows = torch.arange(TILE).div(FACE, rounding_mode="floor").reshape(-1, 1)
    cols = torch.arange(TILE).div(FACE, rounding_mode="floor").reshape(1, -1)
    return (2 * rows + cols).to(torch.int64)


def tile_faces(tile: torch.Tensor) -> list[torch.Tensor]:
    """The four 16x16 faces of a 32x32 tile, in the order ttnn stores them (row-major over faces)."""
    _check_tile(tile)
    return [tile[r : r + FACE, c : c + FACE] for r in (0, FACE) for c in (0, FACE)]


def face_row_exponents(tile: torch.Tensor) -> torch.Tensor:
    """[32, 2] int: the shared exponent (unbiased, i.e. floor(log2 |x|) of the row's largest value) of
    every 16-value face row. Column 0 covers tile columns 0-15 (faces 0 and 2), column 1 columns 16-31.

    These are the 64 exponent bytes a bfloat8_b or bfloat4_b tile stores next to its values. A row of
    zeros has no exponent (reported as the most negative int32).
    """
    _check_tile(tile)
    largest = tile.float().abs().reshape(TILE, TILE // BLOCK_SIZE, BLOCK_SIZE).amax(dim=-1)
    field = (largest.view(torch.int32) >> 23) & 0xFF
    exponent = field - 127
    return torch.where(field == 0, torch.iinfo(torch.int32).min, exponent)


def tile_format_errors(tile: torch.Tensor) -> pd.DataFrame:
    """What storing one fp32 tile in bfloat16, bfloat8_b and bfloat4_b does to it (via ``round_to_dtype``).

    Columns: dtype, bytes_per_tile, pcc, max_abs_error, mean_abs_error, relative_error (Frobenius norm of
    the error over the tile's), flushed_to_zero (non-zero values stored as 0), distinct_values.
    """
    _check_tile(tile)
    tile = tile.float()
    rows = []
    for dtype in (ttnn.bfloat16, ttnn.bfloat8_b, ttnn.bfloat4_b):
        stored = round_to_dtype(tile, dtype).float()
        error = stored - tile
        rows.append(
            {
                "dtype": dtype_name(dtype),
                "bytes_per_tile": bytes_per_tile(dtype),
                "pcc": pcc(stored, tile),
                "max_abs_error": float(error.abs().max()),
                "mean_abs_error": float(error.abs().mean()),
                "relative_error": float(error.norm() / tile.norm()) if tile.norm() > 0 else 0.0,
                "flushed_to_zero": int(((stored == 0) & (tile != 0)).sum()),
                "distinct_values": int(stored.unique().numel()),
            }
        )
    return pd.DataFrame(rows)


def widest_range_tile(tensor) -> tuple[int, int]:
    """(tile_row, tile_col) of the tile whose face rows span the most exponents: the most instructive one
    for block floats, because small values sharing a row with a large one lose the most bits."""
    if isinstance(tensor, ttnn.Tensor):
        tensor = ttnn.to_torch(tensor)
    matrix = tensor.reshape(-1, tensor.shape[-1]).float()
    rows, cols = (matrix.shape[0] // TILE) * TILE, (matrix.shape[1] // TILE) * TILE
    blocks = matrix[:rows, :cols].abs().reshape(rows // TILE, TILE, cols // TILE, TILE // BLOCK_SIZE, BLOCK_SIZE)
    largest = blocks.amax(dim=-1)
    smallest = blocks.clamp_min(torch.finfo(torch.float32).tiny).amin(dim=-1)
    spread = torch.log2(largest / smallest).amax(dim=(1, 3))  # [tile rows, tile cols]
    index = int(spread.argmax())
    return divmod(index, spread.shape[1])


def _check_tile(tile: torch.Tensor) -> None:
    if tuple(tile.shape) != (TILE, TILE):
        raise ValueError(f"expected one {TILE}x{TILE} tile, got shape {tuple(tile.shape)}")


# --------------------------------------------------------------------------------------------------
# Fused QKV


def qkv_column_owners(hidden: int, heads: int, layout: str = "fused") -> pd.DataFrame:
    """Who owns each output column of the QKV projection.

    ``layout="fused"``: the converted weight [H, 3H] with columns q_h0 k_h0 v_h0 | q_h1 k_h1 v_h1 | ...
    (what ``ttnn.transformer.split_query_key_value_and_split_heads`` reads on a sharded tensor);
    ``layout="hf"``: Hugging Face's three projections side by side, [Q | K | V].
    Columns: column, head, part ("q"/"k"/"v"), part_index (0/1/2), offset (position inside the head).
    """
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    head_size = hidden // heads
    column = torch.arange(3 * hidden)
    if layout == "fused":
        head = column // (3 * head_size)
        part = (column % (3 * head_size)) // head_size
    elif layout == "hf":
        part = column // hidden
        head = (column % hidden) // head_size
    else:
        raise ValueError(f"layout must be 'fused' or 'hf', not {layout!r}")
    offset = column % head_size
    return pd.DataFrame(
        {
            "column": column.numpy(),
            "head": head.numpy(),
            "part": [QKV_PARTS[i] for i in part.tolist()],
            "part_index": part.numpy(),
            "offset": offset.numpy(),
        }
    )


def qkv_roundtrip(checkpoint, parameters, layer: int = 0) -> pd.DataFrame:
    """Un-fuse layer ``layer``'s converted QKV weight and bias with ``split_fused_qkv`` and compare every
    head's q/k/v block with Hugging Face's ``q_proj``/``k_proj``/``v_proj``.

    One row per (tensor, head, part): the fused columns it came from, the HF rows it matches,
    ``exact`` (the un-fused block equals HF's rows rounded to the stored dtype, element for element;
    only defined for bfloat16/float32 storage, where rounding is per element), pcc and max_abs_error
    against the fp32 HF values.
    """
    from deit_tt.conversion import split_fused_qkv

    config = checkpoint.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    head_size = hidden // heads
    attention = checkpoint.model.deit.layers[layer].attention
    stored = parameters.layers[layer]
    rows = []
    for kind, fused in (("weight", stored.qkv_weight), ("bias", stored.qkv_bias)):
        elementwise = fused.dtype in (ttnn.bfloat16, ttnn.float32)
        unfused = split_fused_qkv(fused, heads)
        for part_index, (part, projection) in enumerate(zip(QKV_PARTS, ("q_proj", "k_proj", "v_proj"))):
            expected_all = getattr(getattr(attention, projection), kind).detach().float()
            actual_all = unfused[part_index].float()
            for head in range(heads):
                block = slice(head * head_size, (head + 1) * head_size)
                expected, actual = expected_all[block], actual_all[block]
                first_column = head * 3 * head_size + part_index * head_size
                rows.append(
                    {
                        "tensor": kind,
                        "head": head,
                        "part": part,
                        "fused_columns": f"{first_column}-{first_column + head_size - 1}",
                        "hf_rows": f"{block.start}-{block.stop - 1}",
                        "exact": bool(torch.equal(actual, round_to_dtype(expected, fused.dtype).float()))
                        if elementwise
                        else None,
                        "pcc": pcc(actual, expected),
                        "max_abs_error": float((actual - expected).abs().max()),
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Padding to tiles


def padding_table(dims, num_labels: int = 1000, padded_labels: int | None = None) -> pd.DataFrame:
    """Where the model pads to whole tiles: tokens (198 -> 224) and classifier outputs (1000 -> 1152).

    ``dims`` is a ``deit_tt.sharding.ModelDims``; the padded class count defaults to ``dims.classes_padded``.
    """
    padded_labels = padded_labels or dims.classes_padded
    rows = [
        ("sequence (tokens)", "CLS + distillation + 14x14 patches", dims.tokens, dims.padded_tokens),
        ("classifier outputs", "ImageNet-1k classes", num_labels, padded_labels),
        ("hidden size", "columns of every activation", dims.hidden, -(-dims.hidden // TILE) * TILE),
        ("patch features", "16x16 pixels x 4 channels (RGB + a zero channel)", 16 * 16 * 3, dims.patch_features),
    ]
    table = pd.DataFrame(rows, columns=["quantity", "what", "real", "padded"])
    table["tiles"] = table["padded"] // TILE
    table["padding_percent"] = 100.0 * (table["padded"] - table["real"]) / table["padded"]
    return table


# --------------------------------------------------------------------------------------------------
# Sharding on the core grid


def encoder_shard_map(plan) -> pd.DataFrame:
    """Which core holds which block of the encoder activation [batch * padded_tokens, hidden].

    The activation is BLOCK_SHARDED, ROW_MAJOR orientation, on ``plan.encoder_grid``: core (x, y) holds rows
    ``y * shard_h ...`` (images / token tiles) and columns ``x * shard_w ...`` (a slice of the hidden size).
    One row per core: x, y, row_start/row_end, image_first/image_last, token_tile_start/token_tile_end (within
    the image), col_start/col_end, shard shape and the shard's bytes in the plan's activation dtype.
    """
    from deit_tt.sharding import tile_bytes

    shard_h, shard_w = plan.encoder_memory_config.shard_spec.shape
    tokens = plan.dims.padded_tokens
    grid = plan.encoder_grid
    shard_bytes = (shard_h // TILE) * (shard_w // TILE) * tile_bytes(plan.activation_dtype)
    rows = []
    for y in range(grid.y):
        for x in range(grid.x):
            row_start, col_start = y * shard_h, x * shard_w
            row_end, col_end = row_start + shard_h, col_start + shard_w
            rows.append(
                {
                    "x": x,
                    "y": y,
                    "row_start": row_start,
                    "row_end": row_end,
                    "image_first": row_start // tokens,
                    "image_last": (row_end - 1) // tokens,
                    "token_tile_start": (row_start % tokens) // TILE,
                    "token_tile_end": ((row_end - 1) % tokens) // TILE + 1,
                    "col_start": col_start,
                    "col_end": col_end,
                    "shard_shape": f"{shard_h}x{shard_w}",
                    "shard_bytes": shard_bytes,
                }
            )
    return pd.DataFrame(rows)


def attention_shard_map(plan) -> pd.DataFrame:
    """Which core holds which image and heads on ``plan.attention_grid`` (one image per grid row).

    One row per core: x, y, image, head_first/head_last, the QKV shard it receives (``qkv_attention_memory_config``)
    and the query/scores shard heights it works on (heads_per_core x padded_tokens rows).
    """
    grid = plan.attention_grid
    per_core = plan.heads_per_core
    qkv_h, qkv_w = plan.qkv_attention_memory_config.shard_spec.shape
    tokens = plan.dims.padded_tokens
    rows = []
    for y in range(grid.y):
        for x in range(grid.x):
            rows.append(
                {
                    "x": x,
                    "y": y,
                    "image": y,
                    "head_first": x * per_core,
                    "head_last": (x + 1) * per_core - 1,
                    "qkv_shard_shape": f"{qkv_h}x{qkv_w}",
                    "scores_shard_shape": f"{per_core * tokens}x{tokens}",
                }
            )
    return pd.DataFrame(rows)


_ATTENTION_OPS = ("reshard_qkv", "split_heads", "query_by_key", "softmax", "attention_by_value", "concatenate_heads")
_CLASSIFIER_OPS = ("reshard_classifier", "cls_classifier", "distillation_classifier")


def grid_role(op: str) -> str:
    """Which of the plan's three grids an op of ``plan.table()`` runs on: encoder, attention or classifier."""
    if op in _ATTENTION_OPS:
        return "attention"
    if op in _CLASSIFIER_OPS:
        return "classifier"
    return "encoder"


def l1_by_grid(plan) -> pd.DataFrame:
    """``plan.table()`` grouped by grid role: the op with the largest per-core L1 estimate on each grid and its share of L1."""
    table = plan.table()
    table["role"] = [grid_role(op) for op in table["op"]]
    rows = []
    for role, ops in table.groupby("role", sort=False):
        worst = ops.loc[ops["L1 bytes/core"].idxmax()]
        rows.append(
            {
                "grid role": role,
                "grid": worst["grid"],
                "ops": len(ops),
                "largest op": worst["op"],
                "L1 bytes/core": int(worst["L1 bytes/core"]),
                "L1 %": float(worst["L1 %"]),
                "fits L1": bool(ops["fits L1"].all()),
            }
        )
    return pd.DataFrame(rows)
