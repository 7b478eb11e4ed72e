"""One forward on the mock device, recorded op by op: what ttnn accepted, and what its allocator held.

``RecordingExecutor`` wraps the device executor: every op the model issues runs unchanged, and after
it the executor records the op, the memory configs and shard shapes of its inputs and output, and the
L1 the real allocator holds per core (``ttnn.get_memory_view``: the allocator keeps L1 banks in
lockstep, so one bank's figure is every core's). The records are the measured table; the sharding
plan's per-core estimate is set beside each op whose config it derived. Values are never read back:
the mock device computes none.

Circular buffers are not allocator buffers: each program reserves them at the bottom of L1 while it
runs. ttnn's graph capture reports them (``ttnn.graph``, tt-metal ``ttnn/core/graph/graph_processor.cpp``):
before running each op the executor captures the same call once in ``RunMode.NO_DISPATCH`` (ttnn builds
the program but allocates nothing and dispatches nothing; the placeholder output is dropped inside the
capture) and reads ``ttnn.graph.extract_resource_usage_per_core``: the op's new L1 buffers and its
circular/dataflow buffers per core. In ``RunMode.NORMAL`` only the circular buffers a program allocates
when it is first set up are reported (in ttnn 0.81.1 most ops' appear as dataflow buffers, and only in
NO_DISPATCH), so a normal capture undercounts. The op's peak per core is then the L1 the allocator held
when it started plus that figure; fragmentation is not in it (see "largest free").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import ttnn

from deit_tt.backends.executor import DeviceExecutor
from deit_tt.sharding.dims import dtype_name, enum_name, op_name


@dataclass(frozen=True)
class OpRecord:
    index: int
    op: str  # ttnn op name
    config: str  # the plan attribute the op was configured with ("" when it takes no plan config)
    inputs: tuple[str, ...]
    output: str
    l1_allocated: int  # bytes per core held by L1 buffers right after the op
    l1_largest_free: int  # largest contiguous free block per core right after the op
    l1_before: int = 0  # bytes per core held by L1 buffers when the op started
    op_buffers: int = 0  # ttnn.graph: the op's own new L1 buffers per core at their peak
    op_circular_buffers: int = 0  # ttnn.graph: its circular + dataflow buffers per core (tensor-backed ones excluded)
    op_peak: int = 0  # ttnn.graph: both together at their peak, per core

    @property
    def l1_peak(self) -> int:
        """ttnn's peak L1 per core during the op: the buffers held when it started, plus its own buffers and CBs."""
        return self.l1_before + self.op_peak


class RecordingExecutor(DeviceExecutor):
    """A ``DeviceExecutor`` that records every op (see the module docstring)."""

    def __init__(self, device, plan):
        super().__init__(device)
        self.records: list[OpRecord] = []
        self.plan = plan

    def run(self, op, *args, **kwargs):
        before = ttnn.get_memory_view(self.device, ttnn.BufferType.L1).total_bytes_allocated_per_bank
        usage = op_l1_usage(op, args, kwargs)
        output = super().run(op, *args, **kwargs)
        view = ttnn.get_memory_view(self.device, ttnn.BufferType.L1)
        outputs = output if isinstance(output, (list, tuple)) else (output,)
        unique_outputs = dict.fromkeys(describe_placement(t) for t in outputs)
        self.records.append(
            OpRecord(
                index=len(self.records),
                op=op_name(op),
                config=self.plan.config_of(args, kwargs),
                inputs=tuple(describe_placement(t) for t in _tensors(args, kwargs)),
                output=", ".join(unique_outputs),
                l1_allocated=view.total_bytes_allocated_per_bank,
                l1_largest_free=view.largest_contiguous_bytes_free_per_bank,
                l1_before=before,
                op_buffers=usage.peak_l1,
                op_circular_buffers=usage.peak_cb + usage.peak_dataflow_buffer,
                op_peak=usage.peak_total,
            )
        )
        return output


def op_l1_usage(op, args, kwargs):
    """ttnn.graph's per-core L1 of one op call, captured in ``RunMode.NO_DISPATCH`` (see the module docstring)."""
    ttnn.graph.begin_graph_capture(ttnn.graph.RunMode.NO_DISPATCH)
    try:
        op(*args, **kwargs)  # the placeholder output is dropped here, inside the capture, where deallocation is blocked too
    finally:
        graph = ttnn.graph.end_graph_capture()
    return ttnn.graph.extract_resource_usage_per_core(graph)


def describe_placement(tensor) -> str:
    """Where a device tensor lives, compactly: ``L1 block 224x96@8x8 bfloat8_b``, ``DRAM interleaved bfloat16``."""
    config = tensor.memory_config()
    layout = enum_name(config.memory_layout).removesuffix("_SHARDED").lower()
    where = f"{enum_name(config.buffer_type)} {layout}"
    spec = config.shard_spec
    if spec is not None:
        box = spec.grid.bounding_box()
        cols, rows = box.end.x - box.start.x + 1, box.end.y - box.start.y + 1
        cores = f"{cols}x{rows}" if spec.num_cores() == cols * rows else f"{spec.num_cores()} cores"
        where += f" {spec.shape[0]}x{spec.shape[1]}@{cores}"
    return f"{where} {dtype_name(tensor.dtype)}"


def records_table(records: list[OpRecord], plan, l1_bank_bytes: int) -> pd.DataFrame:
    """The measured per-op table, with the plan's estimate beside each op it configured.

    "difference" is the allocator's figure after the op minus the plan's estimate. "ttnn - plan" is ttnn.graph's peak minus the plan's estimate. The plan counts an op's input and output
    shards and its circular buffers, and its circular buffers agree with ttnn.graph's byte for byte (the 2D
    multicast matmuls, LayerNorm, softmax, the head split and the reshards). What it leaves out are the
    tensors alive across the op: the residual (one encoder shard) beside every op of a layer, V beside
    Q.K^T and the softmax, the first head's logits beside the second. So on the encoder and head ops
    ``0 <= ttnn - plan <= encoder shard + max(V shard, logits shard)`` (tests/backends/test_mock_device.py checks it).
    The embedding ops before the encoder grid have no estimate; the move of the embeddings onto the encoder grid
    shares ``encoder_memory_config`` with the reshard after attention and shows that op's estimate (its input
    is DRAM interleaved, not a shard, so the figures differ by a few KB either way).
    """
    estimates = _estimates_by_config(plan)
    rows = []
    for record in records:
        estimate = estimates.get(record.config)
        rows.append(
            {
                "#": record.index,
                "op": record.op,
                "plan config": record.config,
                "inputs": "; ".join(record.inputs),
                "output": record.output,
                "L1 allocated/core": record.l1_allocated,
                "L1 %": round(100.0 * record.l1_allocated / l1_bank_bytes, 1),
                "largest free": record.l1_largest_free,
                "op buffers": record.op_buffers,
                "op CBs": record.op_circular_buffers,
                "ttnn.graph peak": record.l1_peak,
                "peak %": round(100.0 * record.l1_peak / l1_bank_bytes, 1),
                "plan estimate": estimate,
                "difference": None if estimate is None else record.l1_allocated - estimate,
                "ttnn - plan": None if estimate is None else record.l1_peak - estimate,
            }
        )
    table = pd.DataFrame(rows)
    return table.astype({"plan estimate": "Int64", "difference": "Int64", "ttnn - plan": "Int64"})


# ttnn-visualizer's operations table also lists these calls, which the model makes outside ``executor.run``.
REPORT_BOOKKEEPING_OPS = ("ttnn.deallocate", "ttnn.to_torch")


def graph_report(pipeline, directory: Path) -> Path:
    """One forward captured by ``ttnn.graph`` and imported into a ttnn-visualizer database: ``directory/db.sqlite``.

    The capture runs in ``RunMode.NORMAL``, so buffers carry their real addresses, and it is written with
    ``ttnn.graph.end_graph_capture_to_file`` (beside it, ``graph.python_io.json``); ``ttnn.graph.import_report``
    (what ``python -m ttnn.graph_report`` runs) builds the database and saves the chip's cluster descriptor.
    ttnn 0.81.1 records in this mode only the circular buffers of programs built with the classic CB API (the
    adds, the head split); the per-op CB figures of the dry-run table come from NO_DISPATCH captures.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    capture = directory / "graph.json"
    model, dims = pipeline.model, pipeline.plan.dims
    pipeline.runtime.device.clear_program_cache()  # a cached program reports no circular buffers when it runs again
    with ttnn.manage_config("enable_fast_runtime_mode", False):
        ttnn.graph.begin_graph_capture(ttnn.graph.RunMode.NORMAL)
        try:
            model(torch.zeros(model.images_per_forward, 3, dims.image_size, dims.image_size))
        finally:
            ttnn.graph.end_graph_capture_to_file(str(capture))
    return ttnn.graph.import_report(capture, directory)


def dry_run(pipeline) -> list[OpRecord]:
    """One forward of ``pipeline``'s model on its (mock) device with a recording executor; returns the records."""
    recorder = RecordingExecutor(pipeline.runtime.device, pipeline.plan)
    model, dims = pipeline.model.with_executor(recorder), pipeline.plan.dims
    with ttnn.manage_config("enable_fast_runtime_mode", False):  # graph capture records per-op detail only without it
        model(torch.zeros(model.images_per_forward, 3, dims.image_size, dims.image_size))
    return recorder.records


def peak(records: list[OpRecord]) -> OpRecord:
    """The first op after which the allocator held the most L1."""
    return max(records, key=lambda record: (record.l1_allocated, -record.index))


def graph_peak(records: list[OpRecord]) -> OpRecord:
    """The first op during which ttnn.graph counts the most L1: buffers held, the op's own buffers and its CBs."""
    return max(records, key=lambda record: (record.l1_peak, -record.index))


def _estimates_by_config(plan) -> dict[str, int]:
    """The plan's per-core L1 estimate for each config name (the largest where several ops share one)."""
    estimates: dict[str, int] = {}
    table = plan.table()
    for config, estimate in zip(table["config"], table["L1 bytes/core"]):
        estimates[config] = max(estimates.get(config, 0), int(estimate))
    return estimates


def _tensors(args, kwargs):
    for value in (*args, *kwargs.values()):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, ttnn.Tensor):
                yield item


@dataclass
class L1Report:
    """Per-op L1 of one forward: measured by ttnn's allocator where a device (or the mock) can run, else estimated."""

    measured: bool
    source: str  # one line saying where the figures come from
    table: pd.DataFrame  # records_table(...) when measured, plan.table() when estimated
    peak_bytes: int
    bank_bytes: int


def l1_report(checkpoint, policy, batch: int, runtime) -> L1Report:
    """The forward's per-core L1 on ``runtime``'s device, on the mock device of its chip, or the plan's estimate.

    On the host the mock device is opened in this process, which works when ttnn was set up for the same chip
    and the stub toolchain can be built; otherwise the reason is given and the plan's estimate is returned.
    """
    from deit_tt.backends.mock_device import MockDeviceError
    from deit_tt.model.vocabulary import heads_of
    from deit_tt.pipeline import DeiTPipeline, plan_for
    from deit_tt.backends.runtime import open_mock

    device_runtime, opened = runtime, False
    if runtime.device is None:
        try:
            device_runtime, opened = open_mock(runtime.chip.name), True
        except MockDeviceError as reason:
            table = plan_for(checkpoint.config, policy, batch, runtime, len(heads_of(checkpoint.distilled))).table()
            return L1Report(
                False, f"estimated by the sharding plan (the mock device cannot run here: {reason})", table,
                int(table["L1 bytes/core"].max()), runtime.l1_bytes_per_core,
            )
    try:
        pipeline = DeiTPipeline(checkpoint, device_runtime, policy, batch)
        try:
            records = dry_run(pipeline)
        finally:
            pipeline.model.release()
        bank = device_runtime.l1_bytes_per_core
        where = "the mock device" if device_runtime.executor == "mock" else "the card"
        return L1Report(
            True, f"measured by ttnn's allocator on {where} ({device_runtime.chip.name}), one forward",
            records_table(records, pipeline.plan, bank), peak(records).l1_allocated, bank,
        )
    finally:
        if opened:
            device_runtime.close()

