"""Images per second of DeiT on a card, measured as tt-metal measures its ViT, beside tt-metal's published figures.

Per model size, untraced and traced (``deit_tt.backends.tracing.SteadyState``: trace + 2 command queues), on one
chip and on all chips of the card:

- **e2e, tt-metal's way** (``run_trace_2cq_model`` in tt-metal's
  ``models/demos/vision/classification/vit/wormhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py``):
  one host input tensor converted once before timing; per iteration CQ1 copies it to the device, CQ0 reshards it
  and replays the trace, the logits are copied to DRAM and a non-blocking read of them is enqueued on CQ1, with
  events ordering the queues; nothing is converted back to torch and nothing is waited for until
  ``synchronize_device`` after the last iteration. 100 warm-up and 1,000 timed iterations, as there. Untraced, the
  same host tensor goes to the device and the forward is dispatched op by op.
- **device**: back-to-back replays of the trace on the staged input, wall time (tt-metal's device figure,
  ``test_vit_device_perf.py``, sums kernel durations with its profiler instead).
- **pipeline**: what a user sees: JPEGs decoded and preprocessed by worker processes, each batch converted to its
  host tensor by a worker thread (``tracing.prefetched``) while the device runs the previous one, logits read back
  and converted (``SteadyState.run``; untraced, ``DeiTPipeline.__call__``). Bound by the host's decoding when
  that is slower than the device.

tt-metal's mock device computes nothing (``mock_device.NO_VALUES``) and stops on the traced path
(``tracing.MOCK_STOPS``): ``mock_run`` runs every part it can and times only the host side of the loop, with the
device calls stubbed out. No timing of mock device work is taken.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
import ttnn

from deit_tt.backends import mock_device, tracing
from deit_tt.backends.runtime import CHIPS, card_present, open_mock, prepare_host, select_runtime
from deit_tt.checkpoints.loading import load_checkpoint
from deit_tt.errors import UserFacingError
from deit_tt.model.conversion import convert_parameters
from deit_tt.pipeline import DeiTPipeline, trace_region_for

WARMUP, ITERATIONS = 100, 1000  # tt-metal's perf test
PIPELINE_BATCHES = 64
LOOP_BATCHES = 50  # batches through the stubbed loop (--mock)
DECODED_BATCHES = 8  # of them decoded from JPEGs
COLUMNS = ["model", "card", "chips", "batch/chip", "trace + 2 CQ", "first batch s", "e2e img/s", "device img/s", "pipeline img/s", "source"]
MEASURED = "measured on this card"

_VIT = "tt-metal models/demos/vision/classification/vit"
# tt-metal's ViT-base (86 M parameters, 197 tokens padded to 224, trace + 2 CQ), one row per published figure.
ANCHORS = pd.DataFrame(
    [
        ("ViT-base", "N150", 1, 8, True, None, 1470, 1560, None,
         f"{_VIT}/wormhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py (e2e, ±4 %); "
         f"{_VIT}/wormhole/tests/test_vit_device_perf.py (device kernel time, ±3 %)"),
        ("ViT-base", "N150", 1, 8, True, None, 1370, None, None, "tt-metal models/README.md (listed today)"),
        ("ViT-base", "N300", 1, 8, True, None, 1323, None, None,
         f"{_VIT}/wormhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py (one chip of an N300: 'problem with eth dispatch')"),
        ("ViT-base", "N300", 2, 8, True, None, 1900, None, None, "tt-metal models/README.md (DP=2, batch 16)"),
        ("ViT-base", "P150", 1, 10, True, None, 3700, 4300, None,
         f"{_VIT}/blackhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py (e2e, ±3 %); "
         f"{_VIT}/blackhole/tests/test_vit_device_perf.py (device kernel time, ±3 %)"),
        ("ViT-base", "T3K", 8, 8, True, None, 7700, None, None, "tt-metal models/README.md (QuietBox, DP=8, batch 64)"),
    ],
    columns=COLUMNS,
)
CARDS = {"n150": "N150", "n300": "N300", "t3k": "T3K", "p150": "P150", "p150-12x10": "P150", "p150-13x10": "P150"}

TARGET = "DeiT-base on an N150 at batch 8: at least 2,000 img/s e2e (tt-metal's way), against ViT-base's 1,470"
EXPECTED_GAINS = (
    ("every intermediate in L1", "e2e, device",
     "the embeddings' concat, to_layout and add wrote [B, 224, 768] to DRAM and read it back; they stay in L1 now "
     "(and a trace no longer has DRAM scratch that a buffer allocated after capture can alias)"),
    ("both heads as one matmul on each image's first tile row", "e2e, device",
     "two classifier matmuls over all 224 token rows become one over 32 rows (tokens 0 and 1 are the ones read): "
     "a seventh of the classifier's multiply-adds, and one program instead of two"),
    ("logits read back as one [B, 32, 2304] tensor", "e2e, pipeline",
     "instead of two [B, 224, 1152] of the same dtype: 7x fewer bytes per batch device to host (tt-metal's timed loop also "
     "enqueues this read every iteration) and one host conversion instead of two"),
    ("pixels converted off the loop thread, rounded to bfloat16 by torch", "pipeline",
     "the loop thread only copies, stages, replays and reads; tt-metal's e2e figure excludes host conversion, so "
     "this moves the user-visible rate, not the e2e column"),
)


def anchor_rate(chip: str, chips: int) -> float:
    """tt-metal's e2e images/s on this card with this many chips (the highest published), else its best per-chip
    figure on the card times ``chips``: the rate a loop must keep up with."""
    rows = ANCHORS[ANCHORS["card"] == CARDS[chip]]
    same = rows[rows["chips"] == chips]
    if len(same):
        return float(same["e2e img/s"].max())
    return chips * float((rows["e2e img/s"] / rows["chips"]).max())


def beside_anchors(measured: pd.DataFrame) -> pd.DataFrame:
    """One table: this card's rows, then tt-metal's published ViT-base figures in the same columns."""
    return pd.concat([measured.reindex(columns=COLUMNS).assign(source=MEASURED), ANCHORS], ignore_index=True)


def format_table(table: pd.DataFrame) -> str:
    """``beside_anchors``' table for a terminal: blanks for what a row does not have, each source a numbered note."""
    notes = list(dict.fromkeys(table["source"]))
    shown = table.map(lambda value: "" if pd.isna(value) else f"{value:,.1f}" if isinstance(value, float) else value)
    shown["source"] = [f"[{notes.index(source) + 1}]" for source in table["source"]]
    return "\n".join([shown.to_string(index=False), *(f"[{number}] {note}" for number, note in enumerate(notes, 1))])


def expectations() -> str:
    """The target and which of issue 20's changes are expected to move it, as printed beside the table."""
    lines = [f"Target: {TARGET}. Expected to move it (reasoned from the sources; nothing has been measured on a card):"]
    lines += [f"  - {change} ({columns}): {why}" for change, columns, why in EXPECTED_GAINS]
    return "\n".join(lines)


# -- on a card --------------------------------------------------------------------------------------------------------


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def random_pixels(images: int) -> torch.Tensor:
    return torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def decoded_batches(images: int, batches: int, workers: int | None = None):
    """``batches`` batches of ``images`` pixels decoded from synthetic ImageNet-like JPEGs and preprocessed (DeiT's
    official recipe) by the evaluation's worker processes, in order."""
    from deit_tt.data.imagenet import make_synthetic_dataset, open_dataset
    from deit_tt.evaluation import Preprocessor, iterate_batches

    with tempfile.TemporaryDirectory(prefix="deit_tt_throughput_") as folder:
        dataset = open_dataset(make_synthetic_dataset(Path(folder) / "val", num_classes=16, images_per_class=4, seed=0))
        samples = dataset.samples
        chunks = [[samples[(batch * images + i) % len(samples)] for i in range(images)] for batch in range(batches)]
        for loaded in iterate_batches(dataset, chunks, Preprocessor("official"), workers):
            yield loaded.pixel_values


def pipeline_rate(outputs, images: int) -> float:
    """Images/s of an iterator of per-batch outputs, from its first output to its last (worker start-up excluded)."""
    next(outputs)
    count, start = 0, time.perf_counter()
    for _ in outputs:
        count += images
    return count / (time.perf_counter() - start)


def untraced_step(model, host):
    """One untraced batch as tt-metal's loop runs it: the pre-built host tensor to the device, the forward
    dispatched op by op, a non-blocking read of the logits (never converted); returns the host tensor being read."""
    pixels = ttnn.to_device(host, model.executor.device, memory_config=model.plan.fold_input_memory_config)
    logits = model.forward(pixels)
    read = ttnn.from_device(logits, blocking=False)
    ttnn.deallocate(logits)
    return read


def tt_metal_loop(runner: tracing.SteadyState, host, iterations: int) -> None:
    """tt-metal's timed loop on the traced path: the same host tensor every iteration, reads enqueued and never
    waited for, one ``synchronize_device`` at the end. The host tensors being read are kept until then, as tt-metal
    keeps its ``outputs`` list (a non-blocking read writes into its tensor after the call returns)."""
    reads = list(runner.pipelined(itertools.repeat(host, iterations)))
    ttnn.synchronize_device(runner.device)
    del reads  # only now complete


def measure_untraced(pipeline: DeiTPipeline, iterations: int, warmup: int, pipeline_batches: int) -> dict:
    model, images = pipeline.model, pipeline.images_per_forward
    pixels = random_pixels(images)
    first = seconds(lambda: pipeline(pixels))
    host = tracing.host_batch(model, pixels)  # converted once, as tt-metal's test does

    def loop(count):
        reads = [untraced_step(model, host) for _ in range(count)]  # kept until the reads are done, as above
        ttnn.synchronize_device(model.executor.device)
        del reads

    loop(warmup)
    e2e = seconds(lambda: loop(iterations))
    batches = decoded_batches(images, pipeline_batches)
    rate = pipeline_rate((pipeline(batch) for batch in batches), images)
    return {"first batch s": first, "e2e img/s": iterations * images / e2e, "device img/s": None, "pipeline img/s": rate}


def measure_traced(pipeline: DeiTPipeline, iterations: int, warmup: int, pipeline_batches: int) -> dict:
    images = pipeline.images_per_forward
    runner = tracing.SteadyState(pipeline.model)
    try:
        first = seconds(lambda: (runner.compile(), runner.capture()))
        host = runner.host_batch(random_pixels(images))  # converted once, as tt-metal's test does
        tt_metal_loop(runner, host, warmup)
        e2e = seconds(lambda: tt_metal_loop(runner, host, iterations))
        runner.replay(warmup)
        device = seconds(lambda: runner.replay(iterations))
        rate = pipeline_rate(runner.run(decoded_batches(images, pipeline_batches)), images)
    finally:
        runner.release()
    return {"first batch s": first, "e2e img/s": iterations * images / e2e, "device img/s": iterations * images / device, "pipeline img/s": rate}


def require_card() -> None:
    if not card_present():
        raise UserFacingError(f"throughput is measured on a card only ({mock_device.NO_VALUES}); without one, "
                              "benchmarks/device_throughput.py --mock runs the code paths and times the loop's host side")


def measure_card(
    checkpoints: dict, policy, batch: int | None = None, iterations: int = ITERATIONS, warmup: int = WARMUP,
    pipeline_batches: int = PIPELINE_BATCHES, log=print,
) -> pd.DataFrame:
    """The table for ``checkpoints`` (name -> Checkpoint) on this machine's card: one row per model, chip count and
    path (untraced, traced). ``batch``: images per chip, default the grid's rows (8 on Wormhole)."""
    require_card()
    parameters = {name: convert_parameters(checkpoint, policy) for name, checkpoint in checkpoints.items()}
    probe = select_runtime("device")
    total, chip, batch = probe.num_devices, probe.chip, batch or probe.grid[1]
    probe.close()
    region = max(trace_region_for(checkpoints[name], parameters[name], policy, batch, chip.arch) for name in checkpoints)
    rows = []
    for devices in sorted({1, total}):
        runtime = select_runtime("device", devices=devices, trace_region_size=region)
        try:
            log(f"{runtime.banner()} | trace region {region} B per chip")
            for name, checkpoint in checkpoints.items():
                pipeline = DeiTPipeline(checkpoint, runtime, policy, batch, parameters=parameters[name])
                try:
                    for traced, measure in ((False, measure_untraced), (True, measure_traced)):
                        row = {"model": name, "card": CARDS.get(chip.name, chip.name), "chips": devices, "batch/chip": batch, "trace + 2 CQ": traced}
                        rows.append(row | measure(pipeline, iterations, warmup, pipeline_batches))
                        log(rows[-1])
                finally:
                    pipeline.model.release()
        finally:
            runtime.close()
    return pd.DataFrame(rows, columns=COLUMNS[:-1])


def card_check_table(checkpoint, policy) -> pd.DataFrame:
    """``card-check``'s throughput section: ``checkpoint`` measured on the card beside tt-metal's figures."""
    return beside_anchors(measure_card({checkpoint.name: checkpoint}, policy, log=lambda line: None))


def size_checkpoints(sizes) -> dict:
    """``DeiT-<size>`` -> random-initialised checkpoint: the real checkpoints' shapes and dtypes, hence timings."""
    return {f"DeiT-{size}": load_checkpoint(f"random:{size}") for size in sizes}


# -- on the mock device -------------------------------------------------------------------------------------------------


def best_ms(function, repeats: int = 20) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        best = min(best, seconds(function))
    return 1000 * best


@contextmanager
def device_calls_stubbed(runner: tracing.SteadyState):
    """Every ttnn call of the traced loop replaced by a no-op, the logits read by a host tensor of their layout read
    once before: what the loop still costs is the host's share."""
    host_logits = ttnn.from_device(runner.logits)  # on the mock: the layout, no values
    nothing = lambda *args, **kwargs: None  # noqa: E731
    stubs = {
        "wait_for_event": nothing, "record_event": nothing, "event_synchronize": nothing, "execute_trace": nothing,
        "copy_host_to_device_tensor": nothing, "copy": nothing, "synchronize_device": nothing,
        "reshard": lambda staging, config, output: output, "from_device": lambda *args, **kwargs: host_logits,
    }
    trace_id, runner.trace_id = runner.trace_id, "stubbed"
    try:
        with mock.patch.multiple(ttnn, **stubs):
            yield host_logits
    finally:
        runner.trace_id = trace_id


def host_loop_cost(runner: tracing.SteadyState, batches: int = LOOP_BATCHES) -> dict:
    """Milliseconds per batch of the traced loop's host side, the device calls stubbed: the worker's conversion,
    the loop thread's read-back, ``SteadyState.run`` as a whole after its first batch (worker and loop thread
    overlapping), tt-metal's loop (no conversion either way), and ``SteadyState.run`` fed by JPEG decoding as the
    pipeline rate is (``decoded_batches``)."""
    images = runner.model.images_per_forward
    pixels = [random_pixels(images) + index for index in range(4)]
    cost = {"convert (worker)": best_ms(lambda: runner.host_batch(pixels[0]))}
    with device_calls_stubbed(runner) as host_logits:
        cost["read back (loop)"] = best_ms(lambda: runner._finish(host_logits))
        run = pipeline_rate(runner.run(pixels[index % 4] for index in range(batches)), images)
        host = runner.host_batch(pixels[0])
        tt_metal = seconds(lambda: tt_metal_loop(runner, host, batches))
        decoded = pipeline_rate(runner.run(decoded_batches(images, DECODED_BATCHES)), images)
    cost["SteadyState.run"] = 1000 * images / run
    cost["tt-metal's loop"] = 1000 * tt_metal / batches
    cost["with decoding"] = 1000 * images / decoded
    return cost


def check_on_mock(pipeline: DeiTPipeline) -> tracing.SteadyState:
    """The parts of both paths the mock runs: the untraced forward (compiled), tt-metal's untraced step from a
    pre-built host tensor, and the traced path up to the trace (persistent DRAM input and logits, events, the
    forward from the staged input, the copy into the logits buffer). Returns the compiled runner."""
    model = pipeline.model
    pipeline(torch.zeros(pipeline.images_per_forward, 3, 224, 224))
    read = untraced_step(model, tracing.host_batch(model, torch.zeros(pipeline.images_per_forward, 3, 224, 224)))
    ttnn.synchronize_device(model.executor.device)
    del read
    runner = tracing.SteadyState(model)
    runner._wait = lambda cq, event: None  # the mock segfaults in wait_for_event; one host thread keeps the order
    runner.compile()
    return runner


def mock_run(chip_name: str, sizes, policy, batch: int | None = None, loop_batches: int = LOOP_BATCHES, log=print) -> None:
    """``--mock``: everything up to where the mock stops, and the loop's host cost per batch; no device timing."""
    prepare_host(chip_name)
    chip = CHIPS[chip_name]
    batch = batch or chip.grid[1]
    checkpoints = size_checkpoints(sizes)
    parameters = {name: convert_parameters(checkpoint, policy) for name, checkpoint in checkpoints.items()}
    regions = {name: trace_region_for(checkpoints[name], parameters[name], policy, batch, chip.arch) for name in checkpoints}
    log(f"NO TIMING IS MEANINGFUL ON THE MOCK DEVICE ({mock_device.NO_VALUES}): no device work is timed, only the traced "
        "loop's host side, with the device calls stubbed out.")
    for devices in sorted({1, chip.chips}):
        runtime = open_mock(chip_name, devices, trace_region_size=max(regions.values()))
        log(runtime.banner())
        try:
            cost = None
            for name, checkpoint in checkpoints.items():
                pipeline = DeiTPipeline(checkpoint, runtime, policy, batch, parameters=parameters[name])
                runner = check_on_mock(pipeline)
                try:
                    log(
                        f"{name}, batch {batch}/chip x {devices} chips: untraced forward and tt-metal's untraced step "
                        f"accepted by ttnn (no values); trace region {regions[name]} B derived; persistent DRAM input and "
                        f"logits {tuple(runner.logits.shape)} per chip, CQ0/CQ1 events and the forward from the staged input run"
                    )
                    if cost is None:  # the same for every size: pixels in, [B, 32, 2304] logits out
                        cost = host_loop_cost(runner, loop_batches)
                finally:
                    runner.release()
                    pipeline.model.release()
            log(format_loop_cost(cost, batch * devices, anchor_rate(chip_name, devices), f"{CARDS[chip_name]}, {devices} chip(s)"))
        finally:
            runtime.close()
    log(f"not run here: the capture and replays of the traced path ({tracing.MOCK_STOPS}).")
    log("On a card, run without --mock for the table beside tt-metal's published ViT-base figures.")
    log(expectations())


def format_loop_cost(cost: dict, images: int, rate: float, card: str) -> str:
    budget = 1000 * images / rate
    figures = ", ".join(f"{name} {value:.3f}" for name, value in cost.items())
    return (
        f"host side per batch of {images}, device calls stubbed (ms): {figures} | budget {budget:.2f} ms "
        f"at tt-metal's {rate:,.0f} img/s ({card}); host figures of this machine, no device time"
    )
