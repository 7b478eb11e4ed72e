"""``python -m deit_tt card-check`` without a card: the host and mock parts run, every card-only part is marked,
the report is Markdown + JSON; a broken set-up is one line before anything loads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import ttnn

from deit_tt.backends import mock_device, runtime, throughput, ttnn_version
from deit_tt.cli import card_check, main

TITLES = [
    "Device and firmware",
    "Peak L1 per core (ttnn.graph)",
    "Per-stage PCC against Hugging Face",
    "Traced vs untraced logits",
    "Throughput",
    "ImageNet accuracy per head",
    "Profiling one forward for tt-perf-report",
]


@pytest.fixture(scope="module")
def no_card_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("card-check")
    assert not runtime.card_present()
    assert main(["card-check", "--model", "random:tiny", "--out", str(out)]) == 0
    return (out / "card-check.md").read_text(), json.loads((out / "card-check.json").read_text())


def test_without_a_card_every_card_only_part_says_so_and_the_rest_ran(no_card_report):
    markdown, report = no_card_report
    sections = report["sections"]
    assert report["card"] is False and report["ttnn"] == ttnn_version() and report["model"] == "random:tiny"
    statuses = {key: section["status"] for key, section in sections.items()}
    assert statuses == {
        "device": "needs a card",
        "l1": "mock" if mock_device.can_build() else "not run",
        "pcc": "host",
        "trace": "needs a card",
        "throughput": "needs a card",
        "accuracy": "not asked",
        "profiling": "needs a card",
    }
    assert sections["device"]["data"]["grid"] == [8, 8] and sections["device"]["data"]["emulated chip"] == "n150"


def test_the_host_pcc_has_both_numerics_per_stage_and_leaves_the_card_column_to_a_card(no_card_report):
    rows = no_card_report[1]["sections"]["pcc"]["data"]["table"]
    assert len(rows) == 1 + 12 * 8 + 4  # embeddings, 12 layers x 8 stages, final LayerNorm and three logits
    assert {row["card"] for row in rows} == {"needs a card"}
    for row in rows:
        assert 0.95 < row["host tensix"] <= 1 and 0.95 < row["host ideal"] <= 1, row
    logits = next(row for row in rows if row["stage"] == "logits")
    assert logits["host ideal"] != logits["host tensix"]  # two arithmetic models, two figures


@pytest.mark.skipif(not mock_device.can_build(), reason=f"the mock device needs Debian's {mock_device.BINUTILS_PACKAGE}")
def test_the_mock_dry_run_reports_the_peak_with_circular_buffers_within_the_bank(no_card_report):
    l1 = no_card_report[1]["sections"]["l1"]["data"]
    assert l1["chip"] == "n150" and l1["batch"] == 8 and l1["ops"] == 193
    assert l1["peak held by buffers"] <= l1["peak with circular buffers"] <= l1["bank bytes"] == 1_360_544
    assert l1["margin bytes"] == l1["bank bytes"] - l1["peak with circular buffers"]


def test_the_markdown_has_one_heading_per_section_each_with_its_status(no_card_report):
    markdown, report = no_card_report
    lines = markdown.splitlines()
    assert lines[0] == "# deit-tt card check"
    assert '**no card**: every part marked "needs a card" runs only on one.' in lines[2]
    headings = [line.removeprefix("## ") for line in lines if line.startswith("## ")]
    assert headings == TITLES
    for key, section in report["sections"].items():
        at = lines.index(f"## {section['title']}")
        assert lines[at + 2] == f"_{section['status']}_", key
    assert "| layer | stage | card | host ideal | host tensix |" in lines
    assert "python -m tracy -r -p -v -m deit_tt classify IMAGE.jpg --executor device --model random:tiny" in lines


def test_throughput_needs_a_card_and_on_one_is_the_table_beside_tt_metal_s(monkeypatch):
    without = card_check.throughput_section(False, None, None)
    assert without.status == "needs a card" and without.text.startswith("Images per second are measured on a card only")
    assert "`python benchmarks/device_throughput.py --mock`" in without.text
    measured = pd.DataFrame([{"model": "random:tiny", "card": "N150", "chips": 1, "batch/chip": 8, "trace + 2 CQ": True, "e2e img/s": 1.5}])
    asked = []
    monkeypatch.setattr(throughput, "card_check_table", lambda checkpoint, policy: asked.append((checkpoint, policy)) or throughput.beside_anchors(measured))
    with_card = card_check.throughput_section(True, "checkpoint", "policy")
    assert asked == [("checkpoint", "policy")] and with_card.status == "card"
    lines = with_card.text.splitlines()
    assert lines[0] == "| " + " | ".join(throughput.COLUMNS) + " |" and len(lines) == 2 + 1 + len(throughput.ANCHORS) + 1 + 1 + 4
    assert lines[2].startswith("| random:tiny | N150 | 1 | 8 | True | nan | 1.500000 |") and throughput.MEASURED in lines[2]
    assert lines[-5].startswith("Target: DeiT-base on an N150 at batch 8: at least 2,000 img/s e2e")
    assert with_card.data["table"][0]["e2e img/s"] == 1.5 and len(with_card.data["table"]) == 1 + len(throughput.ANCHORS)


def _one_line_error(capsys, argv) -> str:
    assert main(["card-check", "--model", "random:tiny", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    return error.strip()


def test_an_inherited_mock_variable_with_a_card_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(runtime, "device_nodes", lambda: ["/dev/tenstorrent/0"])
    monkeypatch.setenv(runtime.MOCK_CLUSTER_ENV, "/tmp/n150.yaml")
    error = _one_line_error(capsys, ["--out", str(tmp_path)])
    assert error.startswith(f"error: {runtime.MOCK_CLUSTER_ENV} is set (/tmp/n150.yaml) while a card is present") and "unset it" in error
    assert not (tmp_path / "card-check.md").exists()


def test_a_card_without_its_driver_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(runtime, "device_nodes", lambda: [])
    monkeypatch.setattr(card_check, "tenstorrent_pci_devices", lambda: ["0000:01:00.0"])
    error = _one_line_error(capsys, ["--out", str(tmp_path)])
    assert error == (
        "error: a Tenstorrent card is on the PCIe bus (0000:01:00.0) but /dev/tenstorrent* is missing: "
        "install and load its kernel driver (tt-kmd), then run card-check again"
    )


def test_a_card_ttnn_cannot_query_is_one_line_naming_driver_and_firmware(monkeypatch, capsys, tmp_path):
    def refuse():
        raise RuntimeError("Firmware version 18.2.0 is older than the minimum supported 18.6.0\nmore detail")

    monkeypatch.setattr(runtime, "device_nodes", lambda: ["/dev/tenstorrent/0"])
    monkeypatch.delenv(runtime.MOCK_CLUSTER_ENV, raising=False)
    monkeypatch.setattr(ttnn, "GetNumAvailableDevices", refuse)
    error = _one_line_error(capsys, ["--out", str(tmp_path)])
    assert error.startswith("error: /dev/tenstorrent/0 exists but ttnn cannot query it (Firmware version 18.2.0 is older")
    assert "check the driver and firmware (tt-smi)" in error


def test_limit_without_imagenet_is_one_line(capsys, tmp_path):
    assert _one_line_error(capsys, ["--limit", "5", "--out", str(tmp_path)]) == "error: --limit N (N >= 1) goes with --imagenet DIR"
