"""deit_tt.anatomy: the PCC tables behind notebook 02."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from deit_tt import anatomy


# -- PCC ladders and thresholds ----------------------------------------------------------------------


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
    table = anatomy.tt_metal_thresholds().set_index("category")
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
    table = anatomy.threshold_comparison({"good": good, "bad": bad}).set_index("category")
    assert table.loc["intermediate", "good_min_pcc"] == pytest.approx(0.9999 - 15 * 0.00002)  # L1 ff1, 15 steps in
    assert table.loc["intermediate", "good_worst"] == "L1 ff1"
    assert table.loc["one layer", "good_worst"] == "L0 output"
    assert table.loc["encoder", "good_worst"] == "L1 output"
    assert table.loc["model logits", "good_worst"] == "logits"
    assert table.loc["output", "good_ok"] and not table.loc["output", "bad_ok"]


def test_pcc_ladder_lines_policies_up_in_forward_order():
    first, second = fake_report(), fake_report(step=0.001)
    ladder = anatomy.pcc_ladder({"a": first, "b": second.sample(frac=1.0, random_state=0)})
    assert list(ladder["label"][:3]) == ["embeddings", "L0 ln1", "L0 qkv"]
    assert ladder["label"].iloc[-1] == "logits"
    assert ladder["step"].tolist() == list(range(len(first)))
    assert ladder["b"].is_monotonic_decreasing and (ladder["a"] > ladder["b"]).iloc[1:].all()


def test_first_below_table_and_worst_stages():
    table = anatomy.first_below_table({"a": fake_report(), "b": fake_report(step=0.001)}, threshold=0.995).set_index("policy")
    assert table.loc["a", "first_stage"] == "" and table.loc["a", "stages_below"] == 0
    assert table.loc["b", "first_stage"] == "L0 attention_residual"  # 0.9999 - 5 * 0.001 < 0.995
    worst = anatomy.worst_stages(fake_report(), 2)
    assert worst["label"].tolist() == ["logits", "distillation_logits"]


def test_stage_pcc_by_layer():
    table = anatomy.stage_pcc_by_layer({"a": fake_report(layers=3)}, "output")
    assert table.index.tolist() == [0, 1, 2]
    assert table["a"].is_monotonic_decreasing


def test_padded_key_mass_measures_what_real_keys_did_not_get():
    probabilities = torch.full((2, 3, 198, 198), 0.9 / 198)
    captures = {"layers.0.attention_probs": probabilities, "layers.1.attention_probs": probabilities * (1 / 0.9)}
    mass = anatomy.padded_key_mass(captures)
    assert mass["layer"].tolist() == [0, 1]
    assert mass.loc[0, "mean_mass"] == pytest.approx(0.1, abs=1e-6)
    assert mass.loc[1, "max_mass"] == pytest.approx(0.0, abs=1e-6)
