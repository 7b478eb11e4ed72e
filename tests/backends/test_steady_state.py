"""Traced two-queue steady state (deit_tt.backends.tracing) on tt-metal's mock device, as far as the mock goes.

In process (the n150 mock): the device opened with the derived trace region and two command queues, the
persistent staging buffer, the copy on CQ 1, events, the forward from the staged input, and the trace input
re-created at its address. In subprocesses (the mock segfaults): exactly where it stops, so that a ttnn whose
mock gets further makes these tests fail and tells us. No value from the mock is ever looked at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import ttnn

from deit_tt.backends import runtime
from deit_tt.backends import tracing as steady_state
from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.model.conversion import convert_parameters
from deit_tt.errors import UserFacingError
from deit_tt.pipeline import DeiTPipeline, build_pipeline, plan_for, trace_region_for
from deit_tt.model.policy import get_policy
from test_mock_device import needs_mock

ROOT = Path(__file__).resolve().parents[2]
BATCH = 8
# (mock_trace.py arguments) -> (the last call it starts, frames of the segfault's stack, innermost first).
# The real order stops at the first wait on one chip as on the N300 mesh (same code, same frames); the mesh is
# the run kept, for time. --skip-waits and --empty-trace show what would fail next.
MOCK_STOPS = {
    ("n300",): ("ttnn.wait_for_event cq=1", ("add_dispatch_wait", "issue_wait_for_event_commands", "enqueue_wait_for_event")),
    ("n150", "--skip-waits"): ("ttnn.fold", ("Buffer7address", "assemble_device_commands", "generate_trace_dispatch_commands")),
    ("n150", "--empty-trace"): ("ttnn.execute_trace", ("add_notify_dispatch_s_go_signal_cmd", "issue_trace_commands", "submit_replay_buffer", "enqueue_trace")),
}


@pytest.fixture(scope="module")
def mock_runs():
    """Each mode of tests/tools/mock_trace.py in its own process, two at a time."""

    # Not the descriptor conftest handed this process: each child hands ttnn its own chip's.
    environment = {name: value for name, value in os.environ.items() if name != runtime.MOCK_CLUSTER_ENV} | {"PYTHONPATH": str(ROOT)}

    def run(arguments):
        command = [sys.executable, "tests/tools/mock_trace.py", "--chip", *arguments]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=environment)

    def benchmark():
        command = [sys.executable, "benchmarks/device_throughput.py", "--mock", "--sizes", "tiny"]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=environment)

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {arguments: pool.submit(run, arguments) for arguments in MOCK_STOPS}
        runs["benchmark"] = pool.submit(benchmark)
        yield runs


@pytest.fixture(scope="module")
def tiny():
    checkpoint, policy = random_checkpoint("tiny"), get_policy("bf8")
    return checkpoint, policy, convert_parameters(checkpoint, policy)


@pytest.fixture(scope="module")
def traced_n150(tiny):
    checkpoint, policy, parameters = tiny
    region = trace_region_for(checkpoint, parameters, policy, BATCH, "wormhole_b0")
    opened = runtime.open_mock("n150", trace_region_size=region)
    yield opened, region
    opened.close()


@pytest.fixture
def runner(traced_n150, tiny):
    checkpoint, policy, parameters = tiny
    pipeline = DeiTPipeline(checkpoint, traced_n150[0], policy, BATCH, parameters=parameters)
    steady = steady_state.SteadyState(pipeline.model)
    yield steady
    steady.release()
    pipeline.model.release()


# -- the trace region --------------------------------------------------------------------------------


def test_the_fit_reproduces_tt_metal_s_vit_regions_and_the_margin_covers_them():
    for cores, published in ((64, 1_753_088), (120, 2_771_968)):  # ViT-base WH 8x8 [S11], BH 12x10 [S12]
        assert round(205 * steady_state.bytes_per_program(cores)) == published
        assert steady_state.trace_region_size(205, cores) >= 1.5 * published
    assert steady_state.trace_region_size(193, 64) % steady_state.TRACE_ALIGNMENT == 0


def test_the_region_is_sized_from_the_forward_s_own_op_count(tiny):
    checkpoint, policy, parameters = tiny
    region = trace_region_for(checkpoint, parameters, policy, BATCH, "wormhole_b0")
    assert region == steady_state.trace_region_size(193, 8 * 8) == 2_490_368  # 193 ops, as the mock dry run counts
    blackhole = trace_region_for(checkpoint, parameters, policy, 10, "blackhole")
    assert blackhole == steady_state.trace_region_size(193, 13 * 10)  # the largest Blackhole grid
    plan = plan_for(checkpoint.config, policy, BATCH, runtime.Runtime("host", runtime.CHIPS["n150"]))
    assert steady_state.forward_ops(parameters, plan, checkpoint.config.layer_norm_eps) == 193


def test_ttnn_s_report_of_a_too_small_region_becomes_one_line():
    message = "TT_FATAL @ mesh_trace.cpp:78: x\nCreating trace buffers of size 3145728B on MeshDevice 0, but only 2490368B is allocated for trace region.\nbacktrace"
    error = steady_state.trace_region_too_small(RuntimeError(message))
    assert isinstance(error, UserFacingError) and "size 3145728B" in str(error) and "\n" not in str(error)
    assert steady_state.trace_region_too_small(RuntimeError("Out of Memory: L1")) is None


# -- on the n150 mock, in process ---------------------------------------------------------------------


@needs_mock
def test_the_traced_device_keeps_the_l1_the_plan_uses_and_has_a_second_queue(traced_n150):
    opened, region = traced_n150
    assert opened.l1_bytes_per_core == runtime.CHIPS["n150"].l1_bytes_per_core  # the trace region is DRAM
    event = ttnn.record_event(opened.device, steady_state.WRITE_CQ)
    assert "mesh_cq_id=1" in repr(event)


@needs_mock
def test_batches_are_written_on_cq1_into_a_persistent_dram_buffer(runner):
    staging = runner.staging
    address = staging.buffer_address()
    config = staging.memory_config()
    assert config.buffer_type == ttnn.BufferType.DRAM and config.memory_layout == ttnn.TensorMemoryLayout.HEIGHT_SHARDED
    assert list(config.shard_spec.shape) == [2091, 64]  # 8 x 224 x 14 rows over the 12 DRAM banks
    runner._wait = lambda cq, event: None  # the mock segfaults in wait_for_event (see test_where_the_mock_stops)
    runner.write(runner.model.host_pixels(torch.zeros(BATCH, 3, 224, 224)))
    assert "mesh_cq_id=1" in repr(runner.events.written)
    ttnn.event_synchronize(runner.events.written)
    assert runner.staging.buffer_address() == address  # written in place: a trace can read it every batch
    back = ttnn.from_device(runner.staging, blocking=False, cq_id=steady_state.WRITE_CQ)
    ttnn.event_synchronize(ttnn.record_event(runner.device, steady_state.WRITE_CQ))
    assert tuple(back.shape) == (BATCH, 224, 14, 64)


@needs_mock
def test_the_forward_runs_from_the_staged_input_which_can_be_recreated_at_its_address(runner):
    runner._wait = lambda cq, event: None  # as above; the queues are in order here anyway (one host thread)
    runner.compile()
    assert tuple(runner.outputs.shape) == (BATCH, 32, 2 * 1152)  # both heads' logits on each image's first tile row
    assert runner.logits.memory_config().buffer_type == ttnn.BufferType.DRAM  # allocated before any trace
    assert runner.input.is_allocated() is False  # the fold freed it, as in every forward
    runner.write(runner.model.host_pixels(torch.zeros(BATCH, 3, 224, 224)))
    runner.stage()
    assert runner.input.memory_config() == runner.model.plan.fold_input_memory_config
    spec, address = runner.input.spec, runner.input.buffer_address()
    runner._release_outputs()
    runner.outputs = runner.model.forward(runner.input)  # what capture() records
    again = ttnn.allocate_tensor_on_device(spec, runner.device)
    assert again.buffer_address() == address  # what capture() relies on: replays read the address baked in
    runner.input = again
    runner.trace_id = "captured"  # stage() now reshards into the persistent input, as between replays
    runner.stage()
    runner.trace_id = None
    assert runner.input.buffer_address() == address


@needs_mock
def test_a_traced_pipeline_is_refused_on_the_mock_and_the_host_with_the_reason(traced_n150, tiny):
    checkpoint, policy, parameters = tiny
    with pytest.raises(UserFacingError, match="tracing needs a card: tt-metal's mock device .* segfaults"):
        DeiTPipeline(checkpoint, traced_n150[0], policy, BATCH, parameters=parameters, traced=True)
    with pytest.raises(UserFacingError, match="tracing needs a card: the host has no device"):
        build_pipeline(checkpoint, executor="host", batch_size=1, trace=True)


# -- where the mock stops, in subprocesses ------------------------------------------------------------


@needs_mock
@pytest.mark.parametrize("arguments", list(MOCK_STOPS), ids=" ".join)
def test_where_the_mock_stops(mock_runs, arguments):
    finished = mock_runs[arguments].result()
    calls = [line.removeprefix("call ") for line in finished.stdout.splitlines() if line.startswith("call ")]
    last_call, frames = MOCK_STOPS[arguments]
    assert finished.returncode == -11, (
        f"the mock no longer segfaults at {last_call} (exit {finished.returncode}, last call {calls[-1:]}): "
        f"extend the mock tests past it\n{finished.stdout[-2000:]}{finished.stderr[-2000:]}"
    )
    assert calls[-1] == last_call
    stack = [line for line in finished.stderr.splitlines() if "libtt_metal.so(" in line]
    for frame, line in zip(frames, stack):
        assert frame in line
    chips = 2 if arguments[0] == "n300" else 1
    region = "65536 B" if "--empty-trace" in arguments else "2490368 B, L1 bank 1360544 B"
    assert f"opened {chips} chips, trace region {region}" in finished.stdout
    if arguments == ("n150", "--skip-waits"):  # everything before the capture ran: compile, staging, events
        assert calls.count("ttnn.fold") == 2 and calls.index("ttnn.begin_trace_capture") == len(calls) - 2
        assert "ttnn.copy_host_to_device_tensor" in calls and calls.count("ttnn.linear") == 1 + 4 * 12 + 1  # the compile forward's


@needs_mock
def test_the_throughput_benchmark_runs_on_the_mock_and_times_no_device_work(mock_runs):
    finished = mock_runs["benchmark"].result()
    assert finished.returncode == 0 and "Traceback" not in finished.stderr, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("NO TIMING IS MEANINGFUL ON THE MOCK DEVICE")  # notebook 06 checks it
    assert lines[2].startswith("DeiT-tiny, batch 8/chip x 1 chips: untraced forward and tt-metal's untraced step accepted by ttnn")
    assert lines[3].startswith("host side per batch of 8, device calls stubbed (ms): ") and "budget 5.44 ms" in lines[3]
    measured = lines[: lines.index("On a card, run without --mock for the table beside tt-metal's published ViT-base figures.")]
    assert [line for line in measured if "img/s" in line] == [lines[3]]  # tt-metal's rate, as the budget; no rate of ours
    assert "Target: DeiT-base on an N150 at batch 8: at least 2,000 img/s e2e" in finished.stdout


# -- on a card ------------------------------------------------------------------------------------------


@pytest.mark.device
def test_on_a_card_traced_logits_are_the_untraced_ones_batch_after_batch(tiny):
    checkpoint = tiny[0]
    pipeline = build_pipeline(checkpoint, executor="device", batch_size=BATCH, trace=True)
    try:
        images = 3 * pipeline.images_per_forward + 3  # three full batches, then one padded: the queues overlap
        pixels = torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        traced = pipeline(pixels)
        for start in range(0, images, pipeline.images_per_forward):
            chunk = pipeline._padded(pixels[start : start + pipeline.images_per_forward])
            untraced = pipeline.model(chunk)  # the same programs, dispatched one by one
            count = min(pipeline.images_per_forward, images - start)
            assert torch.equal(traced.logits[start : start + count], untraced.logits[:count])
    finally:
        pipeline.close()


def test_batches_are_converted_ahead_by_a_worker_in_order_and_its_errors_reach_the_loop():
    converted_by = []

    def convert(value):
        converted_by.append(threading.current_thread().name)
        return value * 10

    assert list(steady_state.prefetched(iter(range(5)), convert)) == [0, 10, 20, 30, 40]
    assert set(converted_by) == {"deit-tt-prefetch"}  # never on the loop's thread

    def failing(value):
        if value == 2:
            raise ValueError("bad batch 2")
        return value

    results = steady_state.prefetched(iter(range(5)), failing)
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(ValueError, match="bad batch 2"):
        next(results)


def test_stopping_early_leaves_no_worker_behind():
    results = steady_state.prefetched(iter(range(100)), lambda value: value, depth=2)
    assert next(results) == 0
    results.close()
    assert not any(thread.name == "deit-tt-prefetch" for thread in threading.enumerate())
