"""Pearson correlation (PCC) and per-stage agreement reports, the yardstick tt-metal uses for ports."""

from __future__ import annotations

import pandas as pd
import torch


CHUNK = 1 << 20  # values per float64 pass


def pcc(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson correlation of two tensors' values (1.0 for identical, also for two identical constants).

    Two passes in float64 (the means, then the centred sums) over chunks of ``CHUNK`` values, so a stage of
    DeiT-base at batch 8 (5 M values) needs a few float64 chunks rather than four float64 copies of itself.
    """
    a = actual.detach().flatten()
    b = expected.detach().flatten()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare tensors of {a.numel()} and {b.numel()} values")
    identical, sum_a, sum_b = True, 0.0, 0.0
    for x, y in _float64_chunks(a, b):
        identical, sum_a, sum_b = identical and torch.equal(x, y), sum_a + x.sum(), sum_b + y.sum()
    if identical:
        return 1.0
    mean_a, mean_b = sum_a / a.numel(), sum_b / b.numel()
    cross = squares_a = squares_b = 0.0
    for x, y in _float64_chunks(a, b):
        x, y = x - mean_a, y - mean_b
        cross, squares_a, squares_b = cross + x @ y, squares_a + x @ x, squares_b + y @ y
    denominator = (squares_a * squares_b).sqrt()
    if denominator == 0:
        return 0.0
    return float(cross / denominator)


def _float64_chunks(a: torch.Tensor, b: torch.Tensor):
    for start in range(0, a.numel(), CHUNK):
        yield a[start : start + CHUNK].double(), b[start : start + CHUNK].double()


def pcc_report(captures: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per stage present in both: layer (-1 for embeddings, num_layers for the head), stage, PCC, max-abs error."""
    return pcc_report_from_rows([pcc_row(name, value, reference[name]) for name, value in captures.items() if name in reference])


def pcc_row(name: str, value: torch.Tensor, expected: torch.Tensor) -> dict:
    """The report row of capture ``name``: its layer and stage, PCC and max-abs error against ``expected``."""
    if value.shape != expected.shape:
        raise ValueError(f"stage {name}: shape {tuple(value.shape)} vs reference {tuple(expected.shape)}")
    layer, stage = split_stage_name(name)
    return {"layer": layer, "stage": stage, "pcc": pcc(value, expected), "max_abs_error": float((value.float() - expected.float()).abs().max())}


def pcc_report_from_rows(rows: list[dict]) -> pd.DataFrame:
    """The report of ``pcc_row`` rows, in forward order, the head's stages numbered after the last layer."""
    report = pd.DataFrame(rows, columns=["layer", "stage", "pcc", "max_abs_error"])
    encoder = report.loc[report["layer"] != _HEAD_LAYER, "layer"]
    report.loc[report["layer"] == _HEAD_LAYER, "layer"] = int(encoder.max()) + 1 if len(encoder) else 0
    return report


_HEAD_LAYER = 10**6  # placeholder for stages after the encoder, replaced by num_layers


def split_stage_name(name: str) -> tuple[int, str]:
    """``layers.3.qkv`` -> (3, "qkv"); ``embeddings`` -> (-1, ...); a head stage -> (placeholder layer, name)."""
    if name.startswith("layers."):
        _, index, stage = name.split(".", 2)
        return int(index), stage
    return (-1, name) if name == "embeddings" else (_HEAD_LAYER, name)


def first_below(report: pd.DataFrame, threshold: float) -> pd.Series | None:
    """The first stage (in forward order) whose PCC falls under ``threshold``, or None."""
    below = report[report["pcc"] < threshold]
    return None if below.empty else below.iloc[0]
