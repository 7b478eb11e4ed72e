"""How much each converted tensor lost to its ttnn dtype: one row per tensor, then per family.

Every converted tensor is read back with ``ttnn.to_torch`` and compared with the fp32 original in the
same (fused, transposed, padded) layout. Metrics cover the real entries only: zero padding (classifier
columns beyond num_labels, position rows 198..223, the patch weight's 4th input channel) is excluded,
because zeros on both sides would only flatter the numbers. Whether the padding read back as exact
zeros is reported separately (``padding_zero``). ``storage_table`` gives what each family occupies once stored
(whole tiles and block-float exponent bytes included).
"""

from __future__ import annotations

import pandas as pd
import torch
import ttnn

from deit_tt.model.conversion import FAMILIES, DeiTParameters, converted_tensors
from deit_tt.backends.blockfloat import TILE, bytes_per_tile
from deit_tt.analysis.pcc import pcc
from deit_tt.model.policy import dtype_name
from deit_tt.sharding.dims import enum_name

REPORT_COLUMNS = ["name", "family", "shape", "dtype", "layout", "pcc", "max_abs_error", "relative_error", "padding_zero"]


def tensor_metrics(converted: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
    """PCC, max |a - b| and ||a - b|| / ||b|| in float64 (``converted`` = a, ``original`` = b)."""
    a = converted.detach().to(torch.float64).flatten()
    b = original.detach().to(torch.float64).flatten()
    difference = a - b
    norm = torch.linalg.vector_norm(b).item()
    error_norm = torch.linalg.vector_norm(difference).item()
    return {
        "pcc": pcc(a, b),
        "max_abs_error": difference.abs().max().item() if difference.numel() else 0.0,
        "relative_error": error_norm / norm if norm > 0 else (0.0 if error_norm == 0 else float("inf")),
    }


def quantization_report(checkpoint, parameters: DeiTParameters) -> pd.DataFrame:
    """One row per converted tensor: name, family, shape, dtype, layout, pcc, max_abs_error,
    relative_error (padding excluded), padding_zero (True/False; None when the tensor has no padding)."""
    rows = []
    for item in converted_tensors(checkpoint, parameters):
        readback = ttnn.to_torch(item.tensor).to(torch.float32)
        if tuple(readback.shape) != tuple(item.original.shape):
            raise ValueError(f"{item.name}: read back {tuple(readback.shape)}, expected {tuple(item.original.shape)}")
        if item.valid is None:
            metrics = tensor_metrics(readback, item.original)
            padding_zero = None
        else:
            metrics = tensor_metrics(readback[item.valid], item.original[item.valid])
            padding_zero = bool((readback[~item.valid] == 0).all())
        rows.append(
            {
                "name": item.name,
                "family": item.family,
                "shape": "x".join(str(n) for n in item.tensor.shape),
                "dtype": dtype_name(item.tensor.dtype),
                "layout": enum_name(item.tensor.layout).lower(),
                **metrics,
                "padding_zero": padding_zero,
            }
        )
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def summarize(report: pd.DataFrame) -> pd.DataFrame:
    """Per family: tensor count, dtypes, minimum PCC, worst max-abs and relative errors."""
    rows = []
    for family in [f for f in FAMILIES if f in set(report["family"])]:
        group = report[report["family"] == family]
        padding = group["padding_zero"].dropna()
        rows.append(
            {
                "family": family,
                "tensors": len(group),
                "dtypes": ", ".join(sorted(set(group["dtype"]))),
                "min_pcc": group["pcc"].min(),
                "max_abs_error": group["max_abs_error"].max(),
                "max_relative_error": group["relative_error"].max(),
                "padding_zero": bool(padding.all()) if len(padding) else None,
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


def storage_table(checkpoint, parameters_by_policy: dict) -> pd.DataFrame:
    """MiB stored per converter family for each conversion of ``checkpoint`` (``{policy name: DeiTParameters}``).

    Counts tile padding (e.g. the classifier's 1000 -> 1152 outputs) and the block-float exponent bytes.
    """
    columns = {}
    for policy_name, parameters in parameters_by_policy.items():
        per_family = dict.fromkeys(FAMILIES, 0)
        for item in converted_tensors(checkpoint, parameters):
            per_family[item.family] += stored_bytes(item.tensor)
        columns[f"{policy_name}_mib"] = {family: size / 2**20 for family, size in per_family.items()}
    table = pd.DataFrame(columns)
    table = table[(table != 0).any(axis=1)]
    table.loc["total"] = table.sum()
    table.index.name = "family"
    return table.reset_index()
