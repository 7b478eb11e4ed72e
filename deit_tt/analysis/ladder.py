"""PCC ladders: every captured stage of several runs side by side, and tt-metal's per-module thresholds.

A ladder is a ``deit_tt.analysis.pcc.pcc_report`` (one row per stage, forward order) or several of them, one per dtype
policy. Notebook 02 shows it pivoted (layers x stages), looks for the first stage under a threshold, and sets
it against the PCCs tt-metal's own ViT unit tests assert per module.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from deit_tt.model.vocabulary import LAYER_STAGES
from deit_tt.analysis.pcc import first_below

HEAD_STAGES = ("final_ln", "cls_logits", "distillation_logits", "logits")

@dataclass(frozen=True)
class Threshold:
    category: str
    tt_metal_test: str
    module: str  # what tt-metal's test runs
    threshold: float
    stages: str  # which of our captured stages the category covers (see ``_stages_for``)
    stage: str | None = None  # the captured stage whose every occurrence the module test stands for


# assert_with_pcc thresholds in tt-metal's sharded ViT unit tests (bfloat8_b everywhere, batch 8,
# google/vit-base-patch16-224). The tests feed each module its own fresh input, so a module's error
# there does not include the error of the modules before it; our ladder runs the whole model and
# every stage carries everything upstream, which makes the comparison conservative for us.
TT_METAL_VIT_PCC_SOURCE = (
    "tenstorrent/tt-metal models/demos/vision/classification/vit/wormhole/tests/"
    "test_ttnn_optimized_sharded_vit_wh.py @ 0bf403cd34e3d0db3184d1c06fbacdb38683cfa1 (same values in the "
    "Blackhole test models/demos/cnns_vits/classification/vit/blackhole/tests/test_ttnn_optimized_sharded_vit_bh.py)"
)
TT_METAL_VIT_PCC_THRESHOLDS = (
    Threshold("embeddings", "test_vit_embeddings", "patch embedding + CLS + position embeddings", 0.999, "embeddings", "embeddings"),
    Threshold("attention", "test_vit_attention", "self-attention (QKV, softmax, context, output projection)", 0.999, "every layer: context", "context"),
    Threshold("intermediate", "test_vit_intermediate", "FF1 + GELU", 0.9984, "every layer: ff1", "ff1"),
    Threshold("output", "test_vit_output", "FF2 + residual", 0.999, "every layer: output", "output"),
    Threshold("one layer", "test_vit_layer", "one encoder layer", 0.985, "layer 0: output"),
    Threshold("encoder", "test_vit_encoder", "all 12 encoder layers", 0.96, "last layer: output"),
    Threshold("model logits", "test_vit", "whole model, 1000 logits", 0.879, "logits", "logits"),
)


def tt_metal_thresholds() -> pd.DataFrame:
    """tt-metal's ViT PCC thresholds as a table (category, test, module, threshold, our stages, source)."""
    table = pd.DataFrame([t.__dict__ for t in TT_METAL_VIT_PCC_THRESHOLDS]).drop(columns="stage")
    table = table.rename(columns={"stages": "our_stages"})
    table["source"] = TT_METAL_VIT_PCC_SOURCE
    return table


def _stages_for(report: pd.DataFrame, category: str) -> pd.DataFrame:
    encoder = report[report["stage"].isin(LAYER_STAGES)]
    last_layer = int(encoder["layer"].max()) if len(encoder) else 0
    if category == "embeddings":
        return report[report["stage"] == "embeddings"]
    if category == "attention":  # the attention block's output; probabilities alone are a stricter test
        return encoder[encoder["stage"] == "context"]
    if category == "intermediate":
        return encoder[encoder["stage"] == "ff1"]
    if category == "output":
        return encoder[encoder["stage"] == "output"]
    if category == "one layer":
        return encoder[(encoder["stage"] == "output") & (encoder["layer"] == 0)]
    if category == "encoder":
        return encoder[(encoder["stage"] == "output") & (encoder["layer"] == last_layer)]
    if category == "model logits":
        return report[report["stage"] == "logits"]
    raise ValueError(category)


def threshold_comparison(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """For each tt-metal category: its threshold, and per policy our minimum PCC over the stages it covers
    (``<policy>_min_pcc``), where that minimum is (``<policy>_worst``) and whether it clears it (``<policy>_ok``)."""
    rows = []
    for threshold in TT_METAL_VIT_PCC_THRESHOLDS:
        row = {"category": threshold.category, "tt_metal_threshold": threshold.threshold, "our_stages": threshold.stages}
        for policy_name, report in reports.items():
            selected = _stages_for(report, threshold.category)
            if selected.empty:
                row[f"{policy_name}_min_pcc"], row[f"{policy_name}_worst"], row[f"{policy_name}_ok"] = float("nan"), "", None
                continue
            worst = selected.loc[selected["pcc"].idxmin()]
            row[f"{policy_name}_min_pcc"] = float(worst["pcc"])
            row[f"{policy_name}_worst"] = stage_label(worst["layer"], worst["stage"])
            row[f"{policy_name}_ok"] = bool(worst["pcc"] >= threshold.threshold)
        rows.append(row)
    return pd.DataFrame(rows)


def stage_label(layer: int, stage: str) -> str:
    """'L3 ff1' for encoder stages, the bare stage name for embeddings and heads."""
    if stage == "embeddings" or stage in HEAD_STAGES:
        return stage
    return f"L{int(layer)} {stage}"


def pcc_ladder(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Several ``pcc_report`` outputs (``{policy: report}``, same model) side by side, in forward order.

    Columns: step (0, 1, ...), label, layer, stage, then ``<policy>`` PCC and ``<policy>_max_abs_error``.
    """
    merged = None
    for policy_name, report in reports.items():
        part = report[["layer", "stage", "pcc", "max_abs_error"]].rename(
            columns={"pcc": policy_name, "max_abs_error": f"{policy_name}_max_abs_error"}
        )
        merged = part if merged is None else merged.merge(part, on=["layer", "stage"], how="outer", sort=False)
    if merged is None:
        raise ValueError("no reports given")
    first = next(iter(reports.values()))
    order = {(layer, stage): i for i, (layer, stage) in enumerate(zip(first["layer"], first["stage"]))}
    merged["step"] = [order.get(key, len(order)) for key in zip(merged["layer"], merged["stage"])]
    merged = merged.sort_values("step", kind="stable", ignore_index=True)
    merged["step"] = range(len(merged))
    merged.insert(1, "label", [stage_label(layer, stage) for layer, stage in zip(merged["layer"], merged["stage"])])
    columns = ["step", "label", "layer", "stage"] + list(reports) + [f"{p}_max_abs_error" for p in reports]
    return merged[columns]


def stage_pcc_by_layer(reports: dict[str, pd.DataFrame], stage: str) -> pd.DataFrame:
    """PCC of one encoder stage per layer for several reports (e.g. masked vs unmasked): index layer, one column each."""
    columns = {}
    for name, report in reports.items():
        selected = report[report["stage"] == stage]
        columns[name] = pd.Series(selected["pcc"].to_numpy(), index=selected["layer"].astype(int).to_numpy())
    table = pd.DataFrame(columns)
    table.index.name = "layer"
    return table


def worst_stages(report: pd.DataFrame, count: int = 5) -> pd.DataFrame:
    """The ``count`` stages with the lowest PCC, labelled, lowest first."""
    worst = report.nsmallest(count, "pcc").copy()
    worst.insert(0, "label", [stage_label(layer, stage) for layer, stage in zip(worst["layer"], worst["stage"])])
    return worst.reset_index(drop=True)


def stage_thresholds(report: pd.DataFrame) -> pd.Series:
    """Per row of ``report``: the PCC tt-metal's module test asserts for that stage, NaN where no test covers it.

    Embeddings 0.999, every layer's ``context`` 0.999 (attention), ``ff1`` 0.9984 (intermediate), ``output`` 0.999
    (FF2 + residual), logits 0.879. tt-metal feeds each module a fresh input, so on our whole-model ladder these
    are strict: a stage here carries all the error upstream of it.
    """
    by_stage = {t.stage: t.threshold for t in TT_METAL_VIT_PCC_THRESHOLDS if t.stage}
    return report["stage"].map(by_stage).astype(float)


def ladder_pivot(report: pd.DataFrame, value: str = "pcc") -> pd.DataFrame:
    """The encoder part of one report as a layers x stages table (stages in forward order) of ``value``."""
    encoder = report[report["stage"].isin(LAYER_STAGES)]
    table = encoder.pivot(index="layer", columns="stage", values=value)[list(LAYER_STAGES)]
    table.index = table.index.astype(int)
    table.columns.name = None
    return table


def outer_stages(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The stages outside the encoder layers (embeddings, final LN, the heads): index stage, one PCC column per report."""
    columns = {}
    for name, report in reports.items():
        outer = report[~report["stage"].isin(LAYER_STAGES)]
        columns[name] = pd.Series(outer["pcc"].to_numpy(), index=outer["stage"].to_numpy())
    table = pd.DataFrame(columns)
    table.index.name = "stage"
    return table


def pcc_rises(report: pd.DataFrame) -> pd.DataFrame:
    """The stages whose PCC is *higher* than the stage before them in forward order (the ladder is not monotone).

    Columns: label, pcc, previous (the label of the stage before), previous_pcc.
    """
    labels = [stage_label(layer, stage) for layer, stage in zip(report["layer"], report["stage"])]
    values = report["pcc"].to_numpy()
    rows = [
        {"label": labels[i], "pcc": float(values[i]), "previous": labels[i - 1], "previous_pcc": float(values[i - 1])}
        for i in range(1, len(values))
        if values[i] > values[i - 1]
    ]
    return pd.DataFrame(rows, columns=["label", "pcc", "previous", "previous_pcc"])


def first_below_table(reports: dict[str, pd.DataFrame], threshold: float | None = None) -> pd.DataFrame:
    """Per report (``{policy: pcc_report}``): the first stage in forward order under ``threshold`` (``pcc.first_below``),
    its PCC, and how many stages fall under it in total. ``first_stage`` is "" when none does.

    ``threshold=None`` uses tt-metal's per-module thresholds (:func:`stage_thresholds`) and looks only at the
    stages they cover; ``threshold`` in the table is then the one of the first failing stage (NaN if none fails).
    """
    rows = []
    for name, report in reports.items():
        if threshold is None:
            limits = stage_thresholds(report)
            failing = report[limits.notna() & (report["pcc"] < limits)]
            first = None if failing.empty else failing.iloc[0]
            limit = float("nan") if first is None else float(limits[first.name])
        else:
            failing = report[report["pcc"] < threshold]
            first, limit = first_below(report, threshold), threshold
        rows.append(
            {
                "policy": name,
                "threshold": limit,
                "first_stage": "" if first is None else stage_label(first["layer"], first["stage"]),
                "pcc": float("nan") if first is None else float(first["pcc"]),
                "stages_below": len(failing),
                "stages": len(report),
            }
        )
    return pd.DataFrame(rows)
