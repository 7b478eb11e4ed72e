"""DeiT tiny/small/base on a card: first-batch (compile) time, end-to-end and device-only images/s, untraced and
traced (deit_tt.backends.tracing), on one chip and on all chips, beside tt-metal's published ViT-base figures.

    python benchmarks/device_throughput.py [--sizes tiny,small,base] [--batch N] [--iterations 200]
    python benchmarks/device_throughput.py --mock [--chip n150]   # the same code paths on the mock device, no timings

Weights are random-initialised (``random:<size>``): shapes and dtypes, hence timings, are the real checkpoints'.
End-to-end: host pixels in, host logits out. Device-only: back-to-back trace replays on the staged input, wall
time (tt-metal's device figure, test_vit_device_perf.py, sums kernel durations with its profiler instead).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from deit_tt.backends import mock_device
from deit_tt.backends import tracing as steady_state
from deit_tt.checkpoints.loading import load_checkpoint
from deit_tt.model.conversion import convert_parameters
from deit_tt.pipeline import DeiTPipeline, trace_region_for
from deit_tt.model.policy import get_policy
from deit_tt.backends.runtime import CHIPS, card_present, open_mock, prepare_host, select_runtime

# tt-metal models/demos/vision/classification/vit/wormhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py, models/demos/vision/classification/vit/blackhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py and models/README.md: ViT-base (86 M parameters, 197 tokens) with trace + 2 CQ.
PUBLISHED = pd.DataFrame(
    [
        ("ViT-base", "N150", 8, 1470, 1560, "S11 (e2e, ±4 %), S13 (device kernels)"),
        ("ViT-base", "N300, 1 chip", 8, 1323, None, "S11 (e2e; 'problem with eth dispatch')"),
        ("ViT-base", "P150", 10, 3700, 4300, "S12 (e2e, ±3 %), S14 (device kernels)"),
    ],
    columns=["model", "card", "batch", "e2e img/s", "device img/s", "source"],
)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(pipeline: DeiTPipeline, iterations: int, traced: bool) -> dict:
    """One row of the table: compile time, e2e and (traced) device-only images/s."""
    images = pipeline.images_per_forward
    pixels = torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    if not traced:
        first = timed(lambda: pipeline(pixels))
        e2e = timed(lambda: [pipeline(pixels) for _ in range(iterations)])
        return {"first batch s": first, "e2e img/s": iterations * images / e2e, "device img/s": None}
    runner = steady_state.SteadyState(pipeline.model)
    try:
        first = timed(lambda: (runner.compile(), runner.capture()))
        for _ in runner.run(pixels for _ in range(10)):  # warm-up replays
            pass
        e2e = timed(lambda: [None for _ in runner.run(pixels for _ in range(iterations))])
        device = timed(lambda: runner.replay(iterations))
    finally:
        runner.release()
    return {"first batch s": first, "e2e img/s": iterations * images / e2e, "device img/s": iterations * images / device}


def on_card(args, sizes) -> None:
    policy = get_policy(args.policy)
    models = load_models(sizes, policy)
    probe = select_runtime("device")
    total, arch, batch = probe.num_devices, probe.chip.arch, args.batch or probe.grid[1]
    probe.close()
    region = max(trace_region_for(checkpoint, parameters, policy, batch, arch) for checkpoint, parameters in models.values())
    rows = []
    for devices in sorted({1, total}):
        runtime = select_runtime("device", devices=devices, trace_region_size=region)
        try:
            print(runtime.banner(), f"| trace region {region} B per chip", flush=True)
            for size, (checkpoint, parameters) in models.items():
                pipeline = DeiTPipeline(checkpoint, runtime, policy, batch, parameters=parameters)
                try:
                    for traced in (False, True):
                        row = {"model": f"DeiT-{size}", "chips": devices, "batch/chip": batch, "trace + 2 CQ": traced}
                        rows.append(row | measure(pipeline, args.iterations, traced))
                        print(rows[-1], flush=True)
                finally:
                    pipeline.model.release()
        finally:
            runtime.close()
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    print("\ntt-metal's published ViT-base numbers (tt-metal's ViT perf tests and models/README.md):")
    print(PUBLISHED.to_string(index=False))


def load_models(sizes, policy) -> dict:
    """size -> (random-initialised checkpoint, its converted parameters)."""
    checkpoints = {size: load_checkpoint(f"random:{size}") for size in sizes}
    return {size: (checkpoint, convert_parameters(checkpoint, policy)) for size, checkpoint in checkpoints.items()}


def on_mock(args, sizes) -> None:
    """Everything up to the point where tt-metal's mock stops: no timing is taken or printed."""
    policy = get_policy(args.policy)
    prepare_host(args.chip)
    chip = CHIPS[args.chip]
    batch = args.batch or chip.grid[1]
    models = load_models(sizes, policy)
    regions = {size: trace_region_for(c, parameters, policy, batch, chip.arch) for size, (c, parameters) in models.items()}
    print("NO TIMING IS MEANINGFUL ON THE MOCK DEVICE: nothing runs on a chip, so none is taken or printed.")
    for devices in sorted({1, chip.chips}):
        runtime = open_mock(args.chip, devices, trace_region_size=max(regions.values()))
        print(runtime.banner())
        try:
            for size, (checkpoint, parameters) in models.items():
                pipeline = DeiTPipeline(checkpoint, runtime, policy, batch, parameters=parameters)
                try:
                    output = pipeline(torch.zeros(pipeline.images_per_forward, 3, 224, 224))
                    steady_state.SteadyState(pipeline.model).release()
                finally:
                    pipeline.model.release()
                print(
                    f"DeiT-{size}, batch {batch}/chip x {devices} chips: untraced forward accepted by ttnn "
                    f"(logits {tuple(output.logits.shape)}, no values); trace region {regions[size]} B derived; "
                    "persistent DRAM input and CQ0/CQ1 events created"
                )
        finally:
            runtime.close()
    print(f"not run here: the compile, capture and replays of the traced path ({steady_state.MOCK_STOPS}).")
    print("On a card, run without --mock for the table (beside tt-metal's published ViT-base figures).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base")
    parser.add_argument("--batch", type=int, default=None, help="images per chip (default: the grid's rows, 8 on Wormhole)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--policy", default="bf8")
    parser.add_argument("--mock", action="store_true", help="tt-metal's mock device instead of a card")
    parser.add_argument("--chip", default="n150", choices=list(CHIPS), help="the mocked chip (with --mock)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    if args.mock:
        on_mock(args, sizes)
    elif not card_present():
        raise SystemExit(f"no Tenstorrent card here; run with --mock to check the code paths ({mock_device.NO_VALUES})")
    else:
        on_card(args, sizes)


if __name__ == "__main__":
    main()
