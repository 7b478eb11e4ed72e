"""Where the plan puts things on the core grid, as tables: which core holds which block of the encoder
activation and which image and heads on the attention grid, and each grid's largest per-core L1 estimate."""

from __future__ import annotations

import pandas as pd

from deit_tt.sharding.dims import TILE, tile_bytes


def encoder_shard_map(plan) -> pd.DataFrame:
    """Which core holds which block of the encoder activation [batch * padded_tokens, hidden].

    The activation is BLOCK_SHARDED, ROW_MAJOR orientation, on ``plan.encoder_grid``: core (x, y) holds rows
    ``y * shard_h ...`` (images / token tiles) and columns ``x * shard_w ...`` (a slice of the hidden size).
    One row per core: x, y, row_start/row_end, image_first/image_last, token_tile_start/token_tile_end (within
    the image), col_start/col_end, shard shape and the shard's bytes in the plan's activation dtype.
    """
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
_CLASSIFIER_OPS = ("slice_prefix_tokens", "classifier")


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
