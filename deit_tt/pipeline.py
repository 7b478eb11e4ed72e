"""Everything needed to run DeiT through ttnn, assembled: checkpoint, runtime, converted weights,
sharding plan and model. ``build_pipeline()`` is what the CLI, the widget and the notebooks use."""

from __future__ import annotations

import os

import torch

from deit_tt.checkpoint import Checkpoint, load_checkpoint
from deit_tt.conversion import DeiTParameters, convert_parameters
from deit_tt.executor import DeviceExecutor, HostExecutor
from deit_tt.model import DeiTOutput, TtDeiT
from deit_tt.policy import get_policy
from deit_tt.runtime import Runtime, select_runtime
from deit_tt.sharding import ModelDims, ShardingPlan, make_plan

BATCH_ENV = "DEIT_TT_BATCH"
DEFAULT_BATCH = 8


class DeiTPipeline:
    """Callable on pixel values of any batch size; runs the model in fixed-size batches.

    ``batch_size`` is per chip (the sharding plan's); on a mesh of N chips each forward takes N x batch_size images.
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
    ):
        """``parameters``: ``checkpoint`` already converted with ``policy`` (pipelines of several batch sizes can share them)."""
        self.checkpoint = checkpoint
        self.runtime = runtime
        self.policy = policy
        self.batch_size = batch_size
        self.parameters = parameters or convert_parameters(checkpoint, policy, cache_dir=cache_dir)
        self.plan = plan_for(checkpoint.config, policy, batch_size, runtime)
        executor = HostExecutor() if runtime.device is None else DeviceExecutor(runtime.device)
        self.model = TtDeiT(
            self.parameters,
            self.plan,
            executor,
            layer_norm_eps=checkpoint.config.layer_norm_eps,
            mask_padded_tokens=mask_padded_tokens,
        )

    def __call__(self, pixel_values: torch.Tensor, capture: bool = False) -> DeiTOutput:
        if pixel_values.dim() != 4 or pixel_values.shape[0] == 0:
            raise ValueError(f"expected pixel_values [B, 3, H, W] with B >= 1, got {tuple(pixel_values.shape)}")
        outputs = [self._run_batch(chunk, capture) for chunk in pixel_values.split(self.images_per_forward)]
        return _concatenate(outputs)

    @property
    def images_per_forward(self) -> int:
        return self.model.images_per_forward

    def _run_batch(self, pixel_values: torch.Tensor, capture: bool) -> DeiTOutput:
        count = pixel_values.shape[0]
        if count < self.images_per_forward:  # the program configs are derived for one batch size: pad with blank images
            padding = pixel_values.new_zeros(self.images_per_forward - count, *pixel_values.shape[1:])
            pixel_values = torch.cat([pixel_values, padding])
        output = self.model(pixel_values.float(), capture=capture)
        if not self.runtime.computes_values:  # the mock device's outputs are garbage: make them unusable
            output = _combine([output], lambda tensors: torch.full_like(tensors[0], float("nan")))
        return _slice(output, count)

    def banner(self) -> str:
        chips = self.runtime.num_devices
        batch = f"batch {self.batch_size}" + (f" per chip x {chips} chips" if chips > 1 else "")
        return f"{self.runtime.banner()} | {self.checkpoint.describe()} | dtype policy: {self.policy.name} | {batch}"

    def close(self) -> None:
        """Free the model's device tensors, then close the device (closing first would orphan them)."""
        self.model.release()
        self.runtime.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def plan_for(config, policy, batch_size: int, runtime: Runtime) -> ShardingPlan:
    """The sharding plan for a model ``config`` at ``batch_size`` on ``runtime``'s grid and L1, in ``policy``'s dtypes."""
    return make_plan(
        ModelDims.from_config(config),
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
) -> DeiTPipeline:
    """Defaults come from $DEIT_TT_MODEL, $DEIT_TT_EXECUTOR (auto, host, device or mock) and $DEIT_TT_BATCH.

    ``devices``: chips to run on, data parallel (default: all of the machine's; the host is one).
    """
    checkpoint = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    batch_size = batch_size or int(os.environ.get(BATCH_ENV, DEFAULT_BATCH))
    runtime = select_runtime(executor, chip, devices)
    try:
        return DeiTPipeline(checkpoint, runtime, get_policy(dtype_policy), batch_size, cache_dir, mask_padded_tokens)
    except BaseException:
        runtime.close()
        raise


def _slice(output: DeiTOutput, count: int) -> DeiTOutput:
    return _combine([output], lambda tensors: tensors[0][:count])


def _concatenate(outputs: list[DeiTOutput]) -> DeiTOutput:
    return outputs[0] if len(outputs) == 1 else _combine(outputs, torch.cat)


def _combine(outputs: list[DeiTOutput], combine) -> DeiTOutput:
    """Apply ``combine`` to the list of each field's tensors across ``outputs`` (None stays None)."""
    first = outputs[0]
    return DeiTOutput(
        logits=combine([o.logits for o in outputs]),
        cls_logits=combine([o.cls_logits for o in outputs]),
        distillation_logits=None if first.distillation_logits is None else combine([o.distillation_logits for o in outputs]),
        captures={name: combine([o.captures[name] for o in outputs]) for name in first.captures},
    )
