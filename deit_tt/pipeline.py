"""Everything needed to run DeiT through ttnn, assembled: checkpoint, runtime, converted weights,
sharding plan and model. ``build_pipeline()`` is what the CLI, the widget and the notebooks use."""

from __future__ import annotations

from collections.abc import Collection

import torch
import ttnn

from deit_tt import settings
from deit_tt.backends import tracing as steady_state
from deit_tt.checkpoints.loading import Checkpoint, load_checkpoint
from deit_tt.model.conversion import DeiTParameters, convert_parameters
from deit_tt.backends.executor import DeviceExecutor, HostExecutor
from deit_tt.model.deit import StageCallback, TtDeiT, TtDeiTOutput
from deit_tt.model.policy import get_policy
from deit_tt.model.vocabulary import heads_of
from deit_tt.errors import UserFacingError
from deit_tt.backends.runtime import CHIPS, DEFAULT_HOST_CHIP, Runtime, card_present, prepare_host, resolve_executor, select_runtime
from deit_tt.sharding import ModelDims, ShardingPlan, make_plan
from deit_tt.backends.tensix_numerics import resolve_numerics



class DeiTPipeline:
    """Callable on pixel values of any batch size; runs the model in fixed-size batches.

    ``batch_size`` is per chip (the sharding plan's); on a mesh of N chips each forward takes N x batch_size images.
    ``traced``: run as ``deit_tt.backends.tracing`` does (compiled and captured here; the device needs a trace region).
    ``numerics``: the host executor's arithmetic, "ideal" or "tensix" (``deit_tt.backends.tensix_numerics``); None on a
    device or the mock, where the card (or nothing) computes.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        runtime: Runtime,
        policy,
        batch_size: int,
        cache_dir=None,
        mask_padded_tokens=True,
        parameters: DeiTParameters | None = None,
        traced: bool = False,
        numerics: str | None = None,
    ):
        """``parameters``: ``checkpoint`` already converted with ``policy`` (pipelines of several batch sizes can share them)."""
        if traced and runtime.executor != "device":
            raise UserFacingError(
                f"tracing needs a card: {'the host has no device' if runtime.device is None else steady_state.MOCK_STOPS}"
            )
        self.checkpoint = checkpoint
        self.runtime = runtime
        self.policy = policy
        self.batch_size = batch_size
        self.parameters = parameters or convert_parameters(checkpoint, policy, cache_dir=cache_dir)
        self.plan = plan_for(checkpoint.config, policy, batch_size, runtime, len(heads_of(checkpoint.distilled)))
        executor = HostExecutor(numerics=numerics) if runtime.device is None else DeviceExecutor(runtime.device)
        self.numerics = getattr(executor, "numerics", None)
        self.model = TtDeiT(
            self.parameters,
            self.plan,
            executor,
            layer_norm_eps=checkpoint.config.layer_norm_eps,
            mask_padded_tokens=mask_padded_tokens,
        )
        self.steady_state = self._steady_state() if traced else None

    def _steady_state(self) -> steady_state.SteadyState:
        runner = steady_state.SteadyState(self.model)
        runner.compile()
        runner.capture()
        return runner

    def __call__(
        self, pixel_values: torch.Tensor, stages: Collection[str] = (), on_stage: StageCallback | None = None
    ) -> TtDeiTOutput:
        """Logits (and the ``stages`` asked for: see ``TtDeiT.__call__``) of any number of images; with ``on_stage``,
        exactly one forward's images (the callback sees the stages as the model computes them)."""
        if pixel_values.dim() != 4 or pixel_values.shape[0] == 0:
            raise ValueError(f"expected pixel_values [B, 3, H, W] with B >= 1, got {tuple(pixel_values.shape)}")
        if on_stage is not None:
            if pixel_values.shape[0] != self.images_per_forward:
                raise ValueError(f"on_stage sees one forward: pass {self.images_per_forward} images, not {pixel_values.shape[0]}")
            if not self.runtime.computes_values:
                raise UserFacingError(f"the {self.runtime.executor} executor computes no values: there are no stages to hand over")
        chunks = pixel_values.split(self.images_per_forward)
        if self.steady_state is not None and not stages:
            outputs = self.steady_state.run(self._padded(chunk) for chunk in chunks)
            return _concatenate([_slice(output, chunk.shape[0]) for output, chunk in zip(outputs, chunks)])
        return _concatenate([self._run_batch(chunk, stages, on_stage) for chunk in chunks])

    @property
    def images_per_forward(self) -> int:
        return self.model.images_per_forward

    def _padded(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The program configs are derived for one batch size: a short batch is padded with blank images."""
        count = pixel_values.shape[0]
        if count < self.images_per_forward:
            padding = pixel_values.new_zeros(self.images_per_forward - count, *pixel_values.shape[1:])
            pixel_values = torch.cat([pixel_values, padding])
        return pixel_values.float()

    def _run_batch(self, pixel_values: torch.Tensor, stages: Collection[str], on_stage: StageCallback | None) -> TtDeiTOutput:
        output = self.model(self._padded(pixel_values), stages, on_stage)
        if not self.runtime.computes_values:  # the mock device's outputs are garbage: make them unusable
            output = _combine([output], lambda tensors: torch.full_like(tensors[0], float("nan")))
        return _slice(output, pixel_values.shape[0])

    def banner(self) -> str:
        chips = self.runtime.num_devices
        batch = f"batch {self.batch_size}" + (f" per chip x {chips} chips" if chips > 1 else "")
        numerics = f" | numerics: {self.numerics}" if self.numerics else ""
        return f"{self.runtime.banner()}{numerics} | {self.checkpoint.describe()} | dtype policy: {self.policy.name} | {batch}"

    def close(self) -> None:
        """Free the trace and the model's device tensors, then close the device (closing first would orphan them)."""
        if self.steady_state is not None:
            self.steady_state.release()
        self.model.release()
        self.runtime.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def plan_for(config, policy, batch_size: int, runtime: Runtime, classifier_heads: int = 2) -> ShardingPlan:
    """The sharding plan for a model ``config`` with ``classifier_heads`` heads (2: distilled) at ``batch_size`` on
    ``runtime``'s grid and L1, in ``policy``'s dtypes."""
    return make_plan(
        ModelDims.from_config(config, classifier_heads),
        batch_size,
        runtime.grid,
        runtime.l1_bytes_per_core,
        policy.activations,
        weight_dtype=policy.matmul_weights,
    )


def build_pipeline(
    model: str | Checkpoint | None = None,
    executor: str | None = None,
    dtype_policy=None,
    batch_size: int | None = None,
    cache_dir=None,
    chip: str | None = None,
    mask_padded_tokens: bool = True,
    devices: int | None = None,
    trace: bool = False,
    trace_region_size: int | None = None,
    numerics: str | None = None,
) -> DeiTPipeline:
    """Defaults come from ``settings.MODEL``, ``settings.EXECUTOR`` (auto, host, device or mock) and ``settings.BATCH``.

    ``devices``: chips to run on, data parallel (default: all of the machine's; the host is one).
    ``trace``: traced steady-state inference on two command queues (``deit_tt.backends.tracing``), the device opened
    with the trace region ``trace_region_for`` derives (or ``trace_region_size`` bytes).
    ``numerics``: "ideal" or "tensix" for the host executor (default: ``settings.NUMERICS``, then tensix); a device
    or the mock refuses an explicit value, since there the card computes (or nothing does).
    """
    checkpoint = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    batch_size = settings.BATCH.integer(batch_size)
    policy = get_policy(dtype_policy)
    prepare_host(chip or DEFAULT_HOST_CHIP)  # without a card, conversion must see the chip the mock will open
    parameters = convert_parameters(checkpoint, policy, cache_dir=cache_dir)
    region = 0
    if trace:
        region = trace_region_size or trace_region_for(checkpoint, parameters, policy, batch_size, _arch(executor, chip), mask_padded_tokens)
    target = resolve_executor(executor)
    on_host = target == "host" or (target == "auto" and not card_present())
    if numerics is not None and not on_host:
        raise UserFacingError(f"--numerics / numerics= applies to the host executor only, not {target}: drop it there")
    numerics = resolve_numerics(numerics) if on_host else None
    runtime = select_runtime(executor, chip, devices, trace_region_size=region)
    try:
        return DeiTPipeline(checkpoint, runtime, policy, batch_size, cache_dir, mask_padded_tokens, parameters, traced=trace, numerics=numerics)
    except BaseException:
        runtime.close()
        raise


def trace_region_for(checkpoint, parameters, policy, batch_size: int, arch: str, mask_padded_tokens: bool = True) -> int:
    """The trace region for one forward on ``arch``, sized before the device opens: the forward's op count (counted
    on the plan for the arch's first chip; the op sequence does not depend on the grid) x the trace bytes of a
    program on the arch's largest grid (``deit_tt.backends.tracing``)."""
    chips = [chip for chip in CHIPS.values() if chip.arch == arch]
    plan = plan_for(checkpoint.config, policy, batch_size, Runtime("host", chips[0]), len(heads_of(checkpoint.distilled)))
    ops = steady_state.forward_ops(parameters, plan, checkpoint.config.layer_norm_eps, mask_padded_tokens)
    return steady_state.trace_region_size(ops, max(chip.grid[0] * chip.grid[1] for chip in chips))


def _arch(executor: str | None, chip: str | None) -> str:
    """The architecture the pipeline will run on, known before its device opens."""
    if chip:
        return CHIPS[chip].arch
    if resolve_executor(executor) in ("auto", "device") and card_present():
        return str(ttnn.get_arch_name())
    return CHIPS["n150"].arch


def _slice(output: TtDeiTOutput, count: int) -> TtDeiTOutput:
    return _combine([output], lambda tensors: tensors[0][:count])


def _concatenate(outputs: list[TtDeiTOutput]) -> TtDeiTOutput:
    return outputs[0] if len(outputs) == 1 else _combine(outputs, torch.cat)


def _combine(outputs: list[TtDeiTOutput], combine) -> TtDeiTOutput:
    """Apply ``combine`` to the list of each field's tensors across ``outputs`` (None stays None)."""
    first = outputs[0]
    return TtDeiTOutput(
        logits=combine([o.logits for o in outputs]),
        cls_logits=combine([o.cls_logits for o in outputs]),
        distillation_logits=None if first.distillation_logits is None else combine([o.distillation_logits for o in outputs]),
        stages={name: combine([o.stages[name] for o in outputs]) for name in first.stages},
    )
