"""Steady-state inference as tt-metal's ViT perf test runs it (tenstorrent/tt-metal ``models/demos/vision/classification/vit/wormhole/tests/test_demo_vit_ttnn_inference_perf_e2e_2cq_trace.py``).

The model's own ``TtDeiT.forward`` is warmed up once (every program compiled into the program cache), then
captured as a metal trace on command queue 0 and replayed per batch. Command queue 1 writes the next batch
into a persistent DRAM buffer while queue 0 runs, and reads the logits back; events order the two queues:

    CQ1: write batch n+1 ─► event "written"      ... wait "computed" ─► read logits n ─► event "read"
    CQ0: wait "written" ─► reshard DRAM → L1 input ─► event "staged" ─► replay trace ─► wait "read" ─► logits to DRAM ─► event "computed"

The trace bakes in buffer addresses: the L1 input the fold reads is freed by the forward (as in every
forward) and allocated again at the same address right after capture, where each batch is resharded into.

Buffer lifetimes under a live trace. tt-metal's allocator (``Allocator::verify_safe_allocation``,
tt_metal/impl/allocator/allocator.cpp) requires that a buffer allocated while a trace exists is freed before the
trace runs again: the trace's own intermediates were freed at capture, and a new allocation can land on their
addresses (DRAM is handed out bottom-up), to be overwritten by the next replay. So nothing is allocated per batch
here: every intermediate of the forward lives in L1 (tests/backends/test_mock_device.py checks it for every
configuration of the mock matrix), and the logits are copied each batch into one DRAM buffer allocated before capture, with the copy compiled in the warm-up forward.
On a mesh the same trace runs on every chip, each on its own images (``DeviceExecutor``).

tt-metal's mock device stops early on this path: ``ttnn.wait_for_event`` segfaults, as does an op inside
``begin_trace_capture`` and the replay of a trace (tests/backends/test_steady_state.py pins each point).
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass

import torch
import ttnn

from deit_tt.errors import UserFacingError

WRITE_CQ, COMPUTE_CQ = 1, 0
MOCK_STOPS = (
    "tt-metal's mock device (ttnn 0.81.1) segfaults at the traced path's first cross-queue ttnn.wait_for_event "
    "(tests/backends/test_steady_state.py pins where it stops; benchmarks/device_throughput.py --mock runs what it can)"
)

# -- the trace region ---------------------------------------------------------------------------------
# A trace holds each program's dispatch commands: a part of fixed size (launch message, circular-buffer
# and semaphore set-up, the kernel-binary relay, go signal) and runtime arguments for every core it runs
# on. tt-metal's ViT-base reserves 1,753,088 B on Wormhole (8x8 grid, batch 8) and 2,771,968 B on
# Blackhole (12x10 grid, batch 10) for one forward of 205 ops (S1: 9 embedding ops, 1 reshard onto the
# encoder grid, 16 per layer x 12, final LayerNorm + reshard + classifier), from the WH and BH perf tests named above. Solving
# ops x (fixed + per_core x cores) for both gives the two bytes-per-program figures below [inference].
_VIT_OPS = 205
_VIT_REGIONS = ((8 * 8, 1_753_088), (12 * 10, 2_771_968))  # (cores of the grid, trace_region_size)
_PER_CORE = (_VIT_REGIONS[1][1] - _VIT_REGIONS[0][1]) / _VIT_OPS / (_VIT_REGIONS[1][0] - _VIT_REGIONS[0][0])
_FIXED = _VIT_REGIONS[0][1] / _VIT_OPS - _PER_CORE * _VIT_REGIONS[0][0]
# The fit has two points and our op mix differs (fused softmax, two heads): reserve half again. The region
# is carved out of DRAM (12 banks of ~1 GB on a Wormhole), not L1: the margin costs nothing measurable.
TRACE_MARGIN = 1.5
TRACE_ALIGNMENT = 64 * 1024


def bytes_per_program(cores: int) -> float:
    """Trace bytes of one program running on ``cores`` cores (fitted to tt-metal's ViT, see above)."""
    return _FIXED + _PER_CORE * cores


def trace_region_size(ops: int, cores: int) -> int:
    """The trace region for a forward of ``ops`` programs on at most ``cores`` cores, with margin, 64 KiB-aligned."""
    size = ops * bytes_per_program(cores) * TRACE_MARGIN
    return math.ceil(size / TRACE_ALIGNMENT) * TRACE_ALIGNMENT


class OpCounter:
    """An executor that issues nothing and counts the ops a forward would issue (tensors are placeholders)."""

    data_parallel = 1

    def __init__(self):
        self.ops = 0

    def run(self, op, *args, **kwargs):
        self.ops += 1
        return (object(), object(), object()) if op is ttnn.transformer.split_query_key_value_and_split_heads else object()

    def from_torch(self, tensor, **kwargs):
        return object()

    def parameter(self, tensor):
        return object()

    def deallocate(self, tensor) -> None:
        pass


def forward_ops(parameters, plan, layer_norm_eps: float, mask_padded_tokens: bool = True) -> int:
    """How many ops (hence programs) one ``TtDeiT.forward`` issues: counted by running it with ``OpCounter``."""
    from deit_tt.model.deit import TtDeiT

    counter = OpCounter()
    TtDeiT(parameters, plan, counter, layer_norm_eps, mask_padded_tokens).forward(object())
    return counter.ops


def staging_memory_config(plan, device) -> ttnn.MemoryConfig:
    """DRAM height-sharded over every DRAM bank: where CQ 1 writes a batch while CQ 0 computes, as the perf test and vit_test_infra.py stage their input."""
    l1_spec = plan.fold_input_memory_config.shard_spec
    rows, width = l1_spec.shape
    rows_per_chip = rows * l1_spec.num_cores()  # the plan is per chip: so is the staging buffer
    banks = device.dram_grid_size()
    grid = ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(banks.x - 1, banks.y - 1))})
    spec = ttnn.ShardSpec(grid, [math.ceil(rows_per_chip / (banks.x * banks.y)), width], ttnn.ShardOrientation.ROW_MAJOR)
    return ttnn.MemoryConfig(ttnn.TensorMemoryLayout.HEIGHT_SHARDED, ttnn.BufferType.DRAM, spec)


@dataclass
class _Events:
    staged: object  # CQ0 has consumed the staging buffer: CQ1 may overwrite it
    written: object | None = None  # CQ1 finished writing a batch
    computed: object | None = None  # CQ0 moved the logits to DRAM
    read: object | None = None  # CQ1 finished reading the logits


class SteadyState:
    """``model``'s forward as a trace, fed through two command queues (see the module docstring).

    Construction allocates the persistent buffers; ``compile()`` warms the program cache and ``capture()``
    records the trace. ``run(batches)`` then yields one ``TtDeiTOutput`` per batch of ``model.images_per_forward``.
    """

    def __init__(self, model):
        self.model = model
        self.device = model.executor.device
        self.staging_config = staging_memory_config(model.plan, self.device)
        dims = model.dims
        self._blank = torch.zeros(model.images_per_forward, 3, dims.image_size, dims.image_size)
        self.staging = ttnn.to_device(self.host_batch(self._blank), self.device, memory_config=self.staging_config)
        self.events = _Events(staged=ttnn.record_event(self.device, COMPUTE_CQ))
        self.events.read = ttnn.record_event(self.device, WRITE_CQ)
        self.input = None  # the L1 tensor the fold reads (the trace's input)
        self.outputs = None  # the trace's padded logits, in L1
        self.logits = None  # where each batch's logits are copied for CQ1 to read: DRAM, allocated once
        self.trace_id = None

    # -- the two queues ------------------------------------------------------------------------------

    def _wait(self, cq: int, event) -> None:
        ttnn.wait_for_event(cq, event)

    def write(self, host) -> None:
        """CQ1: copy a batch, already converted on the host (``host_batch``), into the staging buffer once
        CQ0 has consumed the previous one."""
        self._wait(WRITE_CQ, self.events.staged)
        ttnn.copy_host_to_device_tensor(host, self.staging, cq_id=WRITE_CQ)
        self.events.written = ttnn.record_event(self.device, WRITE_CQ)

    def stage(self) -> None:
        """CQ0: move the written batch into the L1 input (a new tensor before capture, the trace's one after)."""
        self._wait(COMPUTE_CQ, self.events.written)
        config = self.model.plan.fold_input_memory_config
        if self.trace_id is None:
            self.input = ttnn.to_memory_config(self.staging, config)
        else:
            self.input = ttnn.reshard(self.staging, config, self.input)
        self.events.staged = ttnn.record_event(self.device, COMPUTE_CQ)

    # -- compile, capture, replay --------------------------------------------------------------------

    def compile(self) -> None:
        """One untraced forward on a blank batch: every program is built and cached (the first-batch time)."""
        self.write(self.host_batch(self._blank))
        self.stage()
        self._release_outputs()
        self.outputs = self.model.forward(self.input)
        spec = ttnn.TensorSpec(self.outputs.shape, self.outputs.dtype, self.outputs.layout, buffer_type=ttnn.BufferType.DRAM)
        self.logits = ttnn.allocate_tensor_on_device(spec, self.device)
        ttnn.copy(self.outputs, self.logits)  # compiles the copy before any trace exists

    def capture(self) -> None:
        """Record the forward as a trace on CQ0; afterwards its input is allocated again at the address it baked in."""
        self.write(self.host_batch(self._blank))
        self.stage()
        spec, address = self.input.spec, self.input.buffer_address()
        self._release_outputs()
        self.trace_id = ttnn.begin_trace_capture(self.device, cq_id=COMPUTE_CQ)
        self.outputs = self.model.forward(self.input)
        self.input = ttnn.allocate_tensor_on_device(spec, self.device)
        try:
            ttnn.end_trace_capture(self.device, self.trace_id, cq_id=COMPUTE_CQ)
        except RuntimeError as error:
            raise trace_region_too_small(error) or error
        if self.input.buffer_address() != address:
            raise RuntimeError(f"the trace input moved from {address} to {self.input.buffer_address()}: replays would read garbage")

    def replay(self, count: int) -> None:
        """Replay the trace ``count`` times back to back on the last staged input, then wait: device time only."""
        for _ in range(count):
            ttnn.execute_trace(self.device, self.trace_id, cq_id=COMPUTE_CQ, blocking=False)
        ttnn.synchronize_device(self.device)

    def host_batch(self, pixels: torch.Tensor):
        return host_batch(self.model, pixels)

    def run(self, batches):
        """Yield a ``TtDeiTOutput`` per batch; a worker thread converts batch n+1 while the loop copies, stages,
        replays and reads batch n."""
        for host_logits in self.pipelined(prefetched(batches, self.host_batch)):
            yield self._finish(host_logits)

    def pipelined(self, hosts):
        """The two-queue loop over batches already converted (``host_batch``): batch n+1 is written while batch n
        computes, and each batch's logits are yielded as the host tensor of a read enqueued on CQ1, complete once
        ``events.read`` fires (``_finish`` waits for it; tt-metal's perf loop never waits inside the timed region)."""
        batch = next(hosts, None)
        if batch is None:
            return
        self.write(batch)
        pending = None
        while batch is not None:
            self.stage()
            ttnn.execute_trace(self.device, self.trace_id, cq_id=COMPUTE_CQ, blocking=False)
            self._wait(COMPUTE_CQ, self.events.read)
            ttnn.copy(self.outputs, self.logits)
            self.events.computed = ttnn.record_event(self.device, COMPUTE_CQ)
            batch = next(hosts, None)
            if batch is not None:
                self.write(batch)
            if pending is not None:
                yield pending
            self._wait(WRITE_CQ, self.events.computed)
            pending = ttnn.from_device(self.logits, blocking=False, cq_id=WRITE_CQ)
            self.events.read = ttnn.record_event(self.device, WRITE_CQ)
        yield pending

    def _finish(self, host_logits):
        ttnn.event_synchronize(self.events.read)
        return self.model.logits(self.model.executor.to_torch(host_logits))

    def _release_outputs(self) -> None:
        if self.outputs is not None:
            ttnn.deallocate(self.outputs)
        self.outputs = None

    def release(self) -> None:
        """Release the trace and the persistent buffers (before the model's tensors and the device)."""
        if self.trace_id is not None:
            ttnn.release_trace(self.device, self.trace_id)
            self.trace_id = None
        self._release_outputs()
        for tensor in (self.input, self.staging, self.logits):
            if tensor is not None:
                ttnn.deallocate(tensor)
        self.input = self.staging = self.logits = None


def host_batch(model, pixels: torch.Tensor):
    """A batch as CQ1 copies it: the fold's input as a row-major bfloat16 host tensor (split per chip on a mesh).
    Rounded to bfloat16 by torch first: the same bits as ttnn's own rounding of float32 (to nearest even,
    tests/backends/test_throughput.py) in a fraction of the time (``benchmarks/device_throughput.py --mock`` prints both)."""
    return model.host_pixels(pixels.to(torch.bfloat16))


def trace_region_too_small(error: RuntimeError) -> UserFacingError | None:
    """ttnn's own report of the trace's size when it does not fit the region reserved at device open, as one line."""
    line = next((line for line in str(error).splitlines() if "Creating trace buffers of size" in line), None)
    if line is None:
        return None
    return UserFacingError(f"the trace does not fit the trace region reserved at device open: {line.strip()} "
                           "(pass trace_region_size= to build_pipeline, at least the size ttnn reports)")


def prefetched(items, convert, depth: int = 2):
    """``convert(item)`` for each item, in order, computed by a worker thread up to ``depth`` items ahead: the
    host-side conversion of batch n+1 (``host_batch``: 1.5 ms for 8 images on 2 cores) overlaps the loop's work on batch n.
    An error in the worker is raised where its item would have been."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                results.put((convert(item), None))
        except BaseException as error:  # handed to the consumer, raised there
            results.put((None, error))
        results.put((done, None))

    worker = threading.Thread(target=work, daemon=True, name="deit-tt-prefetch")
    worker.start()
    try:
        while True:
            value, error = results.get()
            if error is not None:
                raise error
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while worker.is_alive():  # unblock a worker waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(0.01)
