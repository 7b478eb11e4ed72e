"""Drive the traced two-queue path (deit_tt.backends.tracing) on a chip's mock device and log every ttnn call it makes.

    python tests/tools/mock_trace.py --chip n150 [--skip-waits | --empty-trace]

Prints one line ``call <name>`` before each ttnn call of the runner and each op of the forward, and ``done`` at
the end, flushed: when tt-metal's mock crashes (a segfault, no Python exception), the last ``call`` line is
where. ``--skip-waits`` makes the cross-queue waits no-ops to see how far the rest gets (a probe only: the queues
are then unordered); ``--empty-trace`` captures an empty trace and replays it. tests/backends/test_steady_state.py drives it.
"""

from __future__ import annotations

import argparse
import sys

import torch
import ttnn

from deit_tt.backends import tracing as steady_state
from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.model.conversion import convert_parameters
from deit_tt.backends.executor import DeviceExecutor
from deit_tt.pipeline import DeiTPipeline, trace_region_for
from deit_tt.model.policy import get_policy
from deit_tt.backends.runtime import CHIPS, open_mock, prepare_host


def log(name: str) -> None:
    print(f"call {name}", flush=True)


class LoggedTtnn:
    """``ttnn`` as the runner sees it, logging each function call before making it."""

    def __getattr__(self, name):
        value = getattr(ttnn, name)
        if not callable(value) or isinstance(value, type):
            return value

        def logged(*args, **kwargs):
            log(f"ttnn.{name}" + (f" cq={args[0]}" if name == "wait_for_event" else ""))
            return value(*args, **kwargs)

        return logged


class LoggedExecutor(DeviceExecutor):
    def run(self, op, *args, **kwargs):
        log(getattr(op, "python_fully_qualified_name", str(op)))
        return super().run(op, *args, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--skip-waits", action="store_true")
    mode.add_argument("--empty-trace", action="store_true")
    args = parser.parse_args()
    prepare_host(args.chip)  # the chip's descriptor before the first conversion (ttnn reads one per process)
    if args.empty_trace:  # a region for one program's commands is plenty
        region = steady_state.trace_region_size(1, max(chip.grid[0] * chip.grid[1] for chip in CHIPS.values()))
        runtime = open_mock(args.chip, trace_region_size=region)
        print(f"opened {runtime.num_devices} chips, trace region {region} B", flush=True)
        trace = LoggedTtnn()
        trace_id = trace.begin_trace_capture(runtime.device, cq_id=0)
        trace.end_trace_capture(runtime.device, trace_id, cq_id=0)
        trace.execute_trace(runtime.device, trace_id, cq_id=0, blocking=False)
        print("done", flush=True)
        return 0
    checkpoint, policy = random_checkpoint("tiny"), get_policy("bf8")
    parameters = convert_parameters(checkpoint, policy)
    region = trace_region_for(checkpoint, parameters, policy, 8, CHIPS[args.chip].arch)
    runtime = open_mock(args.chip, trace_region_size=region)
    print(f"opened {runtime.num_devices} chips, trace region {region} B, L1 bank {runtime.l1_bytes_per_core} B", flush=True)
    pipeline = DeiTPipeline(checkpoint, runtime, policy, 8, parameters=parameters)
    pipeline.model.executor = LoggedExecutor(runtime.device)
    steady_state.ttnn = LoggedTtnn()
    runner = steady_state.SteadyState(pipeline.model)
    if args.skip_waits:
        runner._wait = lambda cq, event: None
    runner.compile()
    runner.capture()
    images = pipeline.images_per_forward
    outputs = list(runner.run(torch.zeros(images, 3, 224, 224) for _ in range(2)))
    print(f"done {len(outputs)} batches", flush=True)
    runner.release()
    pipeline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
