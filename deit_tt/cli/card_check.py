"""``python -m deit_tt card-check``: a card owner's first run, as one Markdown + JSON report to share.

Sections: the device and firmware ttnn sees; one forward's per-stage PCC against Hugging Face on the card beside
the host's ideal and tensix numerics (does the tensix model predict the card better than ideal arithmetic?);
traced against untraced logits; throughput; peak L1 per core with circular buffers (``ttnn.graph``); optionally
ImageNet accuracy per head; how to profile one forward for tt-perf-report.

Without a card every part the host and tt-metal's mock device can run is run (the host PCC for both numerics,
the dry run's L1 peak on the mock) and the rest is marked "needs a card"; the command still exits 0. A bad set-up
(a card without its driver, a card ttnn cannot query or open, a mock variable inherited while a card is present)
is one line that says what to do, before anything heavy loads.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deit_tt.cli.common import add_model_argument, add_policy_argument
from deit_tt.errors import UserFacingError

HELP = "one Markdown + JSON report of what this machine's card shows (without a card: what the host and the mock can show)"
NEEDS_A_CARD = "needs a card"
TENSTORRENT_PCI_VENDOR = "0x1e52"
REPORT_NAME = "card-check"
UNHARVESTED_BLACKHOLE_COLUMNS = 13  # a P150 reports 13x10 unharvested, 11x10 from firmware 19.5.0 on
PROFILE_COMMANDS = (
    "python -m tracy -r -p -v -m deit_tt classify IMAGE.jpg --executor device --model {model}",
    "tt-perf-report generated/profiler/reports/<date>/ops_perf_results_<date>.csv",
)


@dataclass
class Section:
    """One part of the report: where its figures come from ("card", "host", "mock", "needs a card", ...), its
    Markdown body and its figures for the JSON report."""

    title: str
    status: str
    text: str
    data: dict = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deit_tt.backends.runtime import CHIPS, DEFAULT_HOST_CHIP

    add_model_argument(parser)
    add_policy_argument(parser)
    parser.add_argument("--chip", choices=list(CHIPS), default=None, help=f"without a card: the chip the host and the mock emulate (default {DEFAULT_HOST_CHIP})")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="images in the PCC and trace forwards (default 1)")
    parser.add_argument("--out", type=Path, default=Path(REPORT_NAME), metavar="DIR", help=f"where {REPORT_NAME}.md and {REPORT_NAME}.json go (default ./{REPORT_NAME})")
    parser.add_argument("--imagenet", metavar="DIR", default=None, help="also measure top-1/top-5 per head on these ImageNet validation images (on the card)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="with --imagenet: only the first N images")


def run(args: argparse.Namespace) -> int:
    from deit_tt.backends.runtime import DEFAULT_HOST_CHIP

    if args.batch < 1:
        raise UserFacingError(f"--batch must be at least 1, got {args.batch}")
    if args.limit is not None and (args.imagenet is None or args.limit < 1):
        raise UserFacingError("--limit N (N >= 1) goes with --imagenet DIR")
    if args.imagenet is not None and not Path(args.imagenet).is_dir():
        raise UserFacingError(f"--imagenet {args.imagenet}: no such folder")
    card = check_setup()

    from deit_tt.checkpoints.loading import load_checkpoint
    from deit_tt.model.policy import get_policy

    checkpoint, policy = load_checkpoint(args.model), get_policy(args.dtype_policy)
    chip = args.chip or DEFAULT_HOST_CHIP
    sections = {
        "device": device_section(card, chip),
        "l1": l1_section(card, checkpoint, policy, chip),  # before the host runs: the mock opens for the same chip
        "pcc": pcc_section(card, checkpoint, policy, args.batch),
        "trace": trace_section(card, checkpoint, policy, args.batch),
        "throughput": throughput_section(card, checkpoint, policy),
        "accuracy": accuracy_section(card, checkpoint, policy, args.imagenet, args.limit, args.out),
        "profiling": profiling_section(card, checkpoint.name),
    }
    markdown, data = write_report(args.out, card, checkpoint.name, policy.name, sections)
    print(markdown)
    print(f"report written to {markdown_path(args.out)} and {json_path(args.out)}")
    return 0


# -- set-up ---------------------------------------------------------------------------------------------------------


def tenstorrent_pci_devices() -> list[str]:
    """PCIe functions whose vendor is Tenstorrent, whether or not a driver claimed them."""
    found = []
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            if Path(vendor).read_text().strip() == TENSTORRENT_PCI_VENDOR:
                found.append(Path(vendor).parent.name)
        except OSError:
            continue
    return found


def check_setup() -> bool:
    """True with a usable card, False without one; a broken set-up is one line saying what to do."""
    from deit_tt.backends.runtime import MOCK_CLUSTER_ENV, device_nodes, probe_card

    if not device_nodes():
        cards = tenstorrent_pci_devices()
        if cards:
            raise UserFacingError(
                f"a Tenstorrent card is on the PCIe bus ({cards[0]}) but /dev/tenstorrent* is missing: install and load "
                "its kernel driver (tt-kmd), then run card-check again"
            )
        return False
    if MOCK_CLUSTER_ENV in os.environ:
        raise UserFacingError(
            f"{MOCK_CLUSTER_ENV} is set ({os.environ[MOCK_CLUSTER_ENV]}) while a card is present: ttnn would open a mock "
            f"device instead of the card; unset it (and TT_METAL_RUNTIME_ROOT if it points at a deit_tt mock root) and run again"
        )
    return probe_card()  # a device node ttnn cannot query: one line naming the driver and firmware


def _open_error(error: RuntimeError) -> UserFacingError:
    from deit_tt.backends import ttnn_version

    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserFacingError(
        f"ttnn {ttnn_version()} could not open the card ({reason}); check that its firmware is one this ttnn supports "
        "(tt-smi shows it; tt-flash updates it) and that no other process holds the card"
    )


def _card_pipeline(checkpoint, policy, batch: int, **options):
    from deit_tt.pipeline import build_pipeline

    try:
        return build_pipeline(checkpoint, "device", policy.name, batch, **options)
    except RuntimeError as error:
        raise _open_error(error) from None


# -- sections -------------------------------------------------------------------------------------------------------


def device_section(card: bool, chip_name: str) -> Section:
    from deit_tt.backends import ttnn_version
    from deit_tt.backends.runtime import CHIPS, select_runtime

    if not card:
        chip = CHIPS[chip_name]
        return Section(
            "Device and firmware",
            NEEDS_A_CARD,
            f"No card: ttnn {ttnn_version()} emulates the {chip.name} on the host ({chip.arch}, compute grid "
            f"{chip.grid[0]}x{chip.grid[1]}, {chip.l1_bytes_per_core} B L1 bank per core, from the package's cluster descriptor).",
            {"ttnn": ttnn_version(), "emulated chip": chip.name, "arch": chip.arch, "grid": list(chip.grid)},
        )
    try:
        runtime = select_runtime("device")
    except RuntimeError as error:
        raise _open_error(error) from None
    try:
        device = runtime.device
        grid = device.compute_with_storage_grid_size()
        data = {
            "ttnn": ttnn_version(),
            "chips": runtime.num_devices,
            "arch": runtime.chip.arch,  # the package's chip whose arch and grid match what ttnn reports
            "grid": [grid.x, grid.y],
            "matched chip": runtime.chip.name,
            "l1 bank bytes": runtime.l1_bytes_per_core,
        }
    finally:
        runtime.close()
    harvesting = (
        f", {UNHARVESTED_BLACKHOLE_COLUMNS - grid.x} of {UNHARVESTED_BLACKHOLE_COLUMNS} Tensix columns harvested"
        if data["arch"] == "blackhole" else ""
    )
    text = (
        f"ttnn {data['ttnn']} opened {data['chips']} chip(s): {data['arch']}, compute grid {grid.x}x{grid.y}{harvesting}, "
        f"{data['l1 bank bytes']} B L1 bank per core; matched to the package's {data['matched chip']}. "
        "The firmware version is in ttnn's device-open log and in `tt-smi -s`."
    )
    return Section("Device and firmware", "card", text, data)


def l1_section(card: bool, checkpoint, policy, chip_name: str) -> Section:
    """One forward recorded op by op (the dry run): on the card itself, else on the mock device of the chip."""
    from deit_tt.backends.mock_device import MockDeviceError
    from deit_tt.backends.recording import dry_run, graph_peak, peak
    from deit_tt.backends.runtime import CHIPS
    from deit_tt.pipeline import build_pipeline

    batch = CHIPS[chip_name].grid[1]  # the largest batch the plan supports: the production setting
    try:
        pipeline = _card_pipeline(checkpoint, policy, batch) if card else build_pipeline(checkpoint, "mock", policy.name, batch, chip=chip_name)
    except MockDeviceError as reason:
        return Section("Peak L1 per core (ttnn.graph)", "not run", f"The mock device cannot run here: {reason}")
    with pipeline:
        records = dry_run(pipeline)
        bank = pipeline.runtime.l1_bytes_per_core
        chip = pipeline.runtime.chip.name
        batch = pipeline.plan.batch
    held, top = peak(records), graph_peak(records)
    where = "the card" if card else f"the {chip} mock device (ttnn's host side: validation, programs, allocator; no kernel ran)"
    data = {
        "where": "card" if card else "mock",
        "chip": chip,
        "batch": batch,
        "ops": len(records),
        "bank bytes": bank,
        "peak held by buffers": held.l1_allocated,
        "peak with circular buffers": top.l1_peak,
        "peak op": f"#{top.index} {top.op}",
        "margin bytes": bank - top.l1_peak,
    }
    text = (
        f"One forward of {checkpoint.name} at batch {batch} on {where}: {len(records)} ops. Peak per core with circular "
        f"buffers {top.l1_peak} B during op #{top.index} {top.op} ({100 * top.l1_peak / bank:.1f} % of the {bank} B bank, "
        f"margin {bank - top.l1_peak} B); buffers alone peak at {held.l1_allocated} B. "
        f"Per-op table: `python -m deit_tt plan --dry-run --model {checkpoint.name} --chip {chip}`."
    )
    return Section("Peak L1 per core (ttnn.graph)", data["where"], text, data)


def pcc_section(card: bool, checkpoint, policy, batch: int) -> Section:
    """Per-stage PCC against Hugging Face fp32 on the same pixels: the card beside the host's two numerics models."""
    import pandas as pd

    from deit_tt.analysis.numerics_lab import random_pixels
    from deit_tt.analysis.reference import compare_in_lockstep
    from deit_tt.backends.tensix_numerics import NUMERICS
    from deit_tt.pipeline import build_pipeline

    pixels = random_pixels(batch)
    columns = {}
    for numerics in NUMERICS:
        with build_pipeline(checkpoint, "host", policy.name, batch, numerics=numerics) as pipeline:
            report, _ = compare_in_lockstep(pipeline, checkpoint.model, pixels)
        columns[f"host {numerics}"] = report.set_index(["layer", "stage"])["pcc"]
    if card:
        with _card_pipeline(checkpoint, policy, batch) as pipeline:
            report, _ = compare_in_lockstep(pipeline, checkpoint.model, pixels)
        columns["card"] = report.set_index(["layer", "stage"])["pcc"]
    table = pd.DataFrame(columns).reset_index()
    shown = table.assign(card=table["card"] if card else NEEDS_A_CARD)[["layer", "stage", "card", *(f"host {n}" for n in NUMERICS)]]
    data = {"table": shown.to_dict(orient="records")}
    if card:
        distance = {n: float((table["card"] - table[f"host {n}"]).abs().mean()) for n in NUMERICS}
        closer = min(distance, key=distance.get)
        data["mean |card - host| per numerics"] = distance
        verdict = "Mean |PCC(card) - PCC(host)| over the stages: " + ", ".join(f"{n} {d:.2e}" for n, d in distance.items()) + f": **{closer}** predicts the card better."
    else:
        verdict = (
            "The card column needs a card. The host's tensix numerics is a model of Tensix arithmetic built from tt-metal's "
            "sources and not yet compared with a card: this report, run on one, is that comparison."
        )
    text = f"{checkpoint.name}, policy {policy.name}, {batch} random image(s) (seed 0).\n\n{verdict}\n\n" + _markdown_table(shown)
    return Section("Per-stage PCC against Hugging Face", "card and host" if card else "host", text, data)


def trace_section(card: bool, checkpoint, policy, batch: int) -> Section:
    import torch

    from deit_tt.analysis.numerics_lab import random_pixels

    title = "Traced vs untraced logits"
    if not card:
        return Section(title, NEEDS_A_CARD, "A trace replays the recorded commands on the card: there is nothing to compare without one.")
    pixels = random_pixels(batch)
    logits = {}
    for traced in (False, True):
        with _card_pipeline(checkpoint, policy, batch, trace=traced) as pipeline:
            logits[traced] = pipeline(pixels).logits
    equal = torch.equal(logits[False], logits[True])
    largest = float((logits[False] - logits[True]).abs().max())
    text = f"Same {batch} image(s), one forward each: logits {'identical' if equal else 'DIFFER'} (largest difference {largest:g})."
    return Section(title, "card", text, {"equal": equal, "largest difference": largest})


def throughput_section(card: bool, checkpoint, policy) -> Section:
    """On a card, images/s measured as tt-metal measures its ViT, beside its figures (``deit_tt.backends.throughput``)."""
    title = "Throughput"
    if not card:
        return Section(
            title, NEEDS_A_CARD,
            "Images per second are measured on a card only (the mock device runs no kernel). Without one, "
            "`python benchmarks/device_throughput.py --mock` runs the code paths and times the loop's host side.",
        )
    from deit_tt.backends import throughput

    table = throughput.card_check_table(checkpoint, policy)
    text = _markdown_table(table) + "\n\n" + throughput.expectations()
    return Section(title, "card", text, {"table": table.to_dict(orient="records")})


def accuracy_section(card: bool, checkpoint, policy, imagenet: str | None, limit: int | None, out: Path) -> Section:
    title = "ImageNet accuracy per head"
    if imagenet is None:
        return Section(title, "not asked", "Add `--imagenet DIR [--limit N]` to measure top-1/top-5 per head.")
    if not card:
        return Section(
            title, NEEDS_A_CARD,
            f"On the host the same figures come from `python -m deit_tt evaluate --executor host --data {imagenet}`"
            + (f" --limit {limit}" if limit else "") + ".",
        )
    from deit_tt.data.datasets import open_evaluation_dataset
    from deit_tt.evaluation import evaluate, format_summary

    dataset = open_evaluation_dataset(imagenet, checkpoint, "auto", None)
    with _card_pipeline(checkpoint, policy, 8) as pipeline:
        result = evaluate(pipeline, dataset, out / "imagenet.jsonl", limit=limit, restart=True, log=None)
    return Section(title, "card", "```\n" + format_summary(result.summary) + "\n```", {"summary": result.summary})


def profiling_section(card: bool, model: str) -> Section:
    commands = [command.format(model=model) for command in PROFILE_COMMANDS]
    text = (
        "On the card, profile one forward with tt-metal's tracy wrapper (device kernel durations per op), then read "
        "the ops CSV it writes with tt-perf-report (PyPI `tt-perf-report`):\n\n```\n" + "\n".join(commands) + "\n```"
    )
    return Section("Profiling one forward for tt-perf-report", "instructions" if card else NEEDS_A_CARD, text, {"commands": commands})


# -- the report -----------------------------------------------------------------------------------------------------


def markdown_path(out: Path) -> Path:
    return Path(out) / f"{REPORT_NAME}.md"


def json_path(out: Path) -> Path:
    return Path(out) / f"{REPORT_NAME}.json"


def write_report(out: Path, card: bool, model: str, policy: str, sections: dict[str, Section]) -> tuple[str, dict]:
    from deit_tt.backends import ttnn_version

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# deit-tt card check",
        "",
        f"`python -m deit_tt card-check`, {when}: ttnn {ttnn_version()}, model {model}, policy {policy}, "
        + ("with a card." if card else f"**no card**: every part marked \"{NEEDS_A_CARD}\" runs only on one."),
        "",
    ]
    for section in sections.values():
        lines += [f"## {section.title}", "", f"_{section.status}_", "", section.text, ""]
    markdown = "\n".join(lines)
    data = {
        "date": when,
        "ttnn": ttnn_version(),
        "model": model,
        "policy": policy,
        "card": card,
        "sections": {key: asdict(section) for key, section in sections.items()},
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    markdown_path(out).write_text(markdown)
    json_path(out).write_text(json.dumps(data, indent=1, default=str))
    return markdown, data


def _markdown_table(table) -> str:
    def cell(value) -> str:
        return f"{value:.6f}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
