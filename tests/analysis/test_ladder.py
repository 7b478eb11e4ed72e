"""deit_tt.analysis.ladder: PCC ladders side by side, pivoted, and against tt-metal's per-module thresholds."""

from __future__ import annotations

import pandas as pd
import pytest

from deit_tt.analysis import ladder
from deit_tt.model.vocabulary import LAYER_STAGES


def fake_report(layers: int = 2, base: float = 0.9999, step: float = 0.0001) -> pd.DataFrame:
    rows = [{"layer": -1, "stage": "embeddings", "pcc": base, "max_abs_error": 0.1}]
    value = base
    for layer in range(layers):
        for stage in ("ln1", "qkv", "attention_probs", "context", "attention_residual", "ln2", "ff1", "output"):
            value -= step
            rows.append({"layer": layer, "stage": stage, "pcc": value, "max_abs_error": 0.1})
    for stage in ("final_ln", "cls_logits", "distillation_logits", "logits"):
        value -= step
        rows.append({"layer": layers, "stage": stage, "pcc": value, "max_abs_error": 0.1})
    return pd.DataFrame(rows)


def test_tt_metal_thresholds_are_the_published_values():
    table = ladder.tt_metal_thresholds().set_index("category")
    assert table["threshold"].to_dict() == {
        "embeddings": 0.999,
        "attention": 0.999,
        "intermediate": 0.9984,
        "output": 0.999,
        "one layer": 0.985,
        "encoder": 0.96,
        "model logits": 0.879,
    }
    assert table["source"].str.contains("test_ttnn_optimized_sharded_vit_wh.py").all()


def test_threshold_comparison_takes_the_minimum_over_each_category():
    good, bad = fake_report(step=0.00002), fake_report(step=0.0004)
    table = ladder.threshold_comparison({"good": good, "bad": bad}).set_index("category")
    assert table.loc["intermediate", "good_min_pcc"] == pytest.approx(0.9999 - 15 * 0.00002)  # L1 ff1, 15 steps in
    assert table.loc["intermediate", "good_worst"] == "L1 ff1"
    assert table.loc["one layer", "good_worst"] == "L0 output"
    assert table.loc["encoder", "good_worst"] == "L1 output"
    assert table.loc["model logits", "good_worst"] == "logits"
    assert table.loc["output", "good_ok"] and not table.loc["output", "bad_ok"]


def test_pcc_ladder_lines_policies_up_in_forward_order():
    first, second = fake_report(), fake_report(step=0.001)
    table = ladder.pcc_ladder({"a": first, "b": second.sample(frac=1.0, random_state=0)})
    assert list(table["label"][:3]) == ["embeddings", "L0 ln1", "L0 qkv"]
    assert table["label"].iloc[-1] == "logits"
    assert table["step"].tolist() == list(range(len(first)))
    assert table["b"].is_monotonic_decreasing and (table["a"] > table["b"]).iloc[1:].all()


def test_first_below_table_and_worst_stages():
    table = ladder.first_below_table({"a": fake_report(), "b": fake_report(step=0.001)}, threshold=0.995).set_index("policy")
    assert table.loc["a", "first_stage"] == "" and table.loc["a", "stages_below"] == 0
    assert table.loc["b", "first_stage"] == "L0 attention_residual"  # 0.9999 - 5 * 0.001 < 0.995
    worst = ladder.worst_stages(fake_report(), 2)
    assert worst["label"].tolist() == ["logits", "distillation_logits"]


def test_stage_pcc_by_layer():
    table = ladder.stage_pcc_by_layer({"a": fake_report(layers=3)}, "output")
    assert table.index.tolist() == [0, 1, 2]
    assert table["a"].is_monotonic_decreasing


def test_stage_thresholds_follow_the_module_tests():
    report = fake_report()
    limits = ladder.stage_thresholds(report)
    by_stage = dict(zip(report["stage"], limits))
    assert by_stage["embeddings"] == 0.999 and by_stage["context"] == 0.999 and by_stage["ff1"] == 0.9984
    assert by_stage["output"] == 0.999 and by_stage["logits"] == 0.879
    assert pd.isna(by_stage["attention_probs"]) and pd.isna(by_stage["ln1"])  # no tt-metal test covers them


def test_first_below_table_with_per_module_thresholds_skips_uncovered_stages():
    report = fake_report(step=0.00002)
    report.loc[report["stage"] == "attention_probs", "pcc"] = 0.5  # uncovered: must not count
    report.loc[(report["layer"] == 1) & (report["stage"] == "ff1"), "pcc"] = 0.998  # under 0.9984
    table = ladder.first_below_table({"a": report}).set_index("policy")
    assert table.loc["a", "first_stage"] == "L1 ff1" and table.loc["a", "threshold"] == 0.9984
    assert table.loc["a", "stages_below"] == 1


def test_ladder_pivot_is_layers_by_stages_in_forward_order():
    report = fake_report(layers=3)
    pivot = ladder.ladder_pivot(report)
    assert pivot.index.tolist() == [0, 1, 2] and pivot.columns.tolist() == list(LAYER_STAGES)
    row = report[(report["layer"] == 2) & (report["stage"] == "ff1")]
    assert pivot.loc[2, "ff1"] == row["pcc"].item()
    outer = ladder.outer_stages({"a": report})
    assert outer.index.tolist() == ["embeddings", "final_ln", "cls_logits", "distillation_logits", "logits"]


def test_pcc_rises_lists_every_stage_better_than_its_predecessor():
    report = fake_report()
    assert ladder.pcc_rises(report).empty  # the fake ladder only falls
    report.loc[(report["layer"] == 0) & (report["stage"] == "context"), "pcc"] = 1.0
    rises = ladder.pcc_rises(report)
    assert rises["label"].tolist() == ["L0 context"] and rises["previous"].tolist() == ["L0 attention_probs"]
