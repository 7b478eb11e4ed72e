"""The throughput measurement (deit_tt.backends.throughput): tt-metal's anchors in one table, the target and the
expected gains stated, timing refused without a card, the mock part run in process with only the loop's host
side timed (device calls stubbed), and the batch conversion's bfloat16 rounding identical to ttnn's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import ttnn

from deit_tt.backends import runtime, throughput, tracing
from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.errors import UserFacingError
from deit_tt.model.policy import get_policy
from test_mock_device import needs_mock

ROOT = Path(__file__).resolve().parents[2]


def test_torch_rounds_pixels_to_bfloat16_bit_for_bit_as_ttnn_does():
    runtime.prepare_host()
    values = torch.randn(4, 224, 14, 64, generator=torch.Generator().manual_seed(0)) * 3
    halfway = (torch.arange(1 << 16, dtype=torch.int32) << 16 | 0x8000).view(torch.float32)  # every tie, both signs
    halfway = halfway[torch.isfinite(halfway)][: 65280].reshape(-1, 64)
    for tensor in (values, halfway):
        by_ttnn = ttnn.to_torch(ttnn.from_torch(tensor, dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT))
        by_torch = ttnn.to_torch(ttnn.from_torch(tensor.to(torch.bfloat16), dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT))
        assert torch.equal(by_ttnn.view(torch.int16), by_torch.view(torch.int16))


def test_the_table_puts_this_card_s_rows_beside_tt_metal_s_published_figures():
    measured = pd.DataFrame([{"model": "DeiT-base", "card": "N150", "chips": 1, "batch/chip": 8, "trace + 2 CQ": True, "e2e img/s": 1.0}])
    table = throughput.beside_anchors(measured)
    assert list(table.columns) == throughput.COLUMNS == [
        "model", "card", "chips", "batch/chip", "trace + 2 CQ", "first batch s", "e2e img/s", "device img/s", "pipeline img/s", "source",
    ]
    assert table.loc[0, "source"] == throughput.MEASURED and table.loc[0, "model"] == "DeiT-base"
    anchors = table.iloc[1:]
    columns = [anchors[name] for name in ("card", "chips", "batch/chip", "e2e img/s", "device img/s")]
    published = {(card, chips, batch, e2e, None if pd.isna(device) else device) for card, chips, batch, e2e, device in zip(*columns)}
    assert published == {
        ("N150", 1, 8, 1470, 1560), ("N150", 1, 8, 1370, None), ("N300", 1, 8, 1323, None),
        ("N300", 2, 8, 1900, None), ("P150", 1, 10, 3700, 4300), ("T3K", 8, 8, 7700, None),
    }
    assert all(source.startswith("tt-metal models/") for source in anchors["source"])
    assert anchors["trace + 2 CQ"].all() and set(anchors["model"]) == {"ViT-base"}
    printed = throughput.format_table(table).splitlines()  # what the benchmark prints: sources as numbered notes
    assert printed[1].split() == ["DeiT-base", "N150", "1", "8", "True", "1.0", "[1]"]
    assert printed[2].split() == ["ViT-base", "N150", "1", "8", "True", "1,470.0", "1,560.0", "[2]"]
    assert printed[8:] == [f"[{number}] {source}" for number, source in enumerate([throughput.MEASURED, *anchors["source"]], 1)]


def test_the_loop_budget_is_tt_metal_s_rate_for_the_card_and_chip_count():
    assert 1000 * 8 / throughput.anchor_rate("n150", 1) == pytest.approx(5.44, abs=0.01)  # the 5.4 ms per batch of 8
    assert throughput.anchor_rate("t3k", 8) == 7700 and throughput.anchor_rate("n300", 2) == 1900
    assert throughput.anchor_rate("t3k", 1) == 7700 / 8  # no one-chip T3K figure: its per-chip rate
    assert throughput.anchor_rate("p150-13x10", 1) == 3700


def test_the_target_and_what_should_move_it_are_stated_with_nothing_claimed_as_measured():
    text = throughput.expectations()
    assert "DeiT-base on an N150 at batch 8: at least 2,000 img/s e2e" in text
    assert "nothing has been measured on a card" in text
    for change, columns, _ in throughput.EXPECTED_GAINS:
        assert f"  - {change} ({columns}): " in text
    assert [change for change, _, _ in throughput.EXPECTED_GAINS] == [
        "every intermediate in L1", "both heads as one matmul on each image's first tile row",
        "logits read back as one [B, 32, 2304] tensor", "pixels converted off the loop thread, rounded to bfloat16 by torch",
    ]


def test_timing_without_a_card_is_refused_in_one_line():
    assert not runtime.card_present()
    with pytest.raises(UserFacingError, match=r"^throughput is measured on a card only \(mock device: .*--mock runs the code paths"):
        throughput.measure_card({"DeiT-tiny": random_checkpoint("tiny")}, get_policy("bf8"))
    environment = {name: value for name, value in os.environ.items() if name != runtime.MOCK_CLUSTER_ENV} | {"PYTHONPATH": str(ROOT)}
    finished = subprocess.run(
        [sys.executable, "benchmarks/device_throughput.py", "--sizes", "tiny"], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300
    )
    assert finished.returncode == 1 and finished.stdout == ""
    assert finished.stderr.startswith("error: throughput is measured on a card only") and finished.stderr.count("\n") == 1


@needs_mock
def test_the_mock_part_runs_and_only_the_loop_s_host_side_is_timed():
    lines = []
    throughput.mock_run("n150", ["tiny"], get_policy("bf8"), loop_batches=8, log=lines.append)
    assert lines[0] == (
        "NO TIMING IS MEANINGFUL ON THE MOCK DEVICE (mock device: ops validated and allocated by ttnn, no values computed): "
        "no device work is timed, only the traced loop's host side, with the device calls stubbed out."
    )
    assert lines[2] == (
        "DeiT-tiny, batch 8/chip x 1 chips: untraced forward and tt-metal's untraced step accepted by ttnn (no values); "
        "trace region 2490368 B derived; persistent DRAM input and logits (8, 32, 2304) per chip, CQ0/CQ1 events and "
        "the forward from the staged input run"
    )
    figures = re.fullmatch(
        r"host side per batch of 8, device calls stubbed \(ms\): convert \(worker\) ([\d.]+), "
        r"read back \(loop\) ([\d.]+), SteadyState.run ([\d.]+), tt-metal's loop ([\d.]+), with decoding ([\d.]+) \| budget 5.44 ms at tt-metal's "
        r"1,470 img/s \(N150, 1 chip\(s\)\); host figures of this machine, no device time",
        lines[3],
    )
    assert figures and all(float(value) > 0 for value in figures.groups())
    assert lines[4] == f"not run here: the capture and replays of the traced path ({tracing.MOCK_STOPS})."
    assert lines[6] == throughput.expectations() and len(lines) == 7
    assert not any("img/s" in line for line in lines[:6] if line is not lines[3])  # tt-metal's rate as the budget only


@pytest.mark.device
def test_on_a_card_every_configuration_gets_a_row_with_its_rates():
    table = throughput.measure_card({"DeiT-tiny": random_checkpoint("tiny")}, get_policy("bf8"), iterations=20, warmup=5, pipeline_batches=4)
    chips = sorted(set(table["chips"]))
    assert len(table) == 2 * len(chips) and list(table["trace + 2 CQ"]) == [False, True] * len(chips)
    assert (table["e2e img/s"] > 0).all() and (table["pipeline img/s"] > 0).all()
    assert table["device img/s"].isna().tolist() == [True, False] * len(chips)
