"""The DeiT forward pass, written once against the ttnn 0.81 API.

The design follows tt-metal's sharded ViT for Wormhole: the patch embedding is a fold + matmul,
the encoder activations stay block-sharded in L1 for LayerNorm, QKV, self-output and the MLP, and
attention runs on a grid with one image per row and height-sharded heads. DeiT-specific parts:
two prefix tokens (CLS at 0, distillation at 1), a 198-row position table, two classifier heads
read from tokens 0 and 1 and averaged as Hugging Face does. The heads run as one matmul (their weights side by
side) on the first tile row of each image only, the rows that hold tokens 0 and 1.

The sequence is padded explicitly from 198 to 224 tokens (7 tiles) so that every shape is a tile
multiple. The padded rows are not zero after the first LayerNorm (they become its beta), so as keys
they would leak into every real token's softmax; an additive mask hides key columns 198..223.

Every op goes through ``executor.run``: the same sequence runs on a card or, through ttnn's
golden functions, on the host (see ``deit_tt.backends.executor``), and the sharding plan checks its configs
by running it on shard descriptions (``deit_tt.sharding.walk.PlanningExecutor``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import ttnn

from deit_tt.backends.executor import Executor
from deit_tt.model.conversion import DeiTParameters, deinterleave_qkv, fold_pixels, fused_classifier
from deit_tt.model.vocabulary import ALL_STAGES, DISTILLATION_HEAD, EMBEDDINGS, FINAL_LAYERNORM, Head, layer_stage
from deit_tt.sharding.dims import TILE
from deit_tt.sharding.mask import attention_mask

if TYPE_CHECKING:
    from deit_tt.sharding.plan import ShardingPlan

# Receives a stage as it is computed: (name, host tensor), as ``TtDeiTOutput.stages`` would hold it.
StageCallback = Callable[[str, torch.Tensor], None]


@dataclass
class TtDeiTOutput:
    """Logits of the real classes (padding removed), float32 on the host, and the stages asked for by name
    (``"layers.3.attention_probs"``), cut back to the real tokens."""

    logits: torch.Tensor
    cls_logits: torch.Tensor
    distillation_logits: torch.Tensor | None
    stages: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class PlacedTensors:
    """Every tensor a ``TtDeiT`` keeps where its executor placed it, from one forward to the next."""

    parameters: DeiTParameters  # every converted tensor but the heads' (those are fused below)
    heads: tuple[Head, ...]  # the heads the classifier matmul computes, in the order of its columns
    classifier_weight: object  # [H, heads x padded classes]: every head's weights side by side
    classifier_bias: object
    prefix_tokens: object  # [B, 2, H]: the CLS and distillation tokens of every image, row major
    padding_tokens: object  # [B, padded tokens - tokens, H] zeros, row major
    position_embeddings: object  # [B, padded tokens, H]
    mask: object | None  # the additive key-padding mask, None when padded keys are not masked

    def release(self, executor) -> None:
        """Deallocate every tensor (on a device: its DRAM and L1 buffers)."""
        _map_tensors(self, executor.tensor_type, executor.deallocate)


def place_tensors(parameters: DeiTParameters, plan: ShardingPlan, executor: Executor, mask_padded_tokens: bool = True) -> PlacedTensors:
    """``parameters`` placed by ``executor`` (device DRAM, or host torch) the way the forward for ``plan`` reads them."""
    heads, weight, bias = fused_classifier(parameters)
    batch, hidden, policy = plan.batch, plan.dims.hidden, parameters.policy
    tokens = torch.cat([ttnn.to_torch(parameters.cls_token).float(), ttnn.to_torch(parameters.distillation_token).float()], dim=1)
    padding = torch.zeros(batch, plan.dims.padded_tokens - plan.dims.tokens, hidden)
    mask = attention_mask(plan, torch.bfloat16)
    return PlacedTensors(
        parameters=_place(dataclasses.replace(parameters, heads={}), executor),
        heads=heads,
        classifier_weight=executor.parameter(weight),
        classifier_bias=executor.parameter(bias),
        prefix_tokens=executor.from_torch(tokens.expand(batch, 2, hidden), dtype=policy.embeddings, layout=ttnn.ROW_MAJOR_LAYOUT),
        padding_tokens=executor.from_torch(padding, dtype=policy.embeddings, layout=ttnn.ROW_MAJOR_LAYOUT),
        position_embeddings=executor.from_torch(
            ttnn.to_torch(parameters.position_embeddings).float().expand(batch, -1, -1), dtype=policy.embeddings, layout=ttnn.TILE_LAYOUT
        ),
        mask=executor.from_torch(
            mask, dtype=ttnn.bfloat16, layout=plan.attention_mask_layout, memory_config=plan.attention_mask_memory_config
        )
        if mask_padded_tokens
        else None,
    )


class TtDeiT:
    """DeiT for one fixed batch size: tensors placed by an executor, the forward of one sharding plan, run through
    that executor (or, ``with_executor``, another one on the same tensors).

    The plan is per chip; on a mesh of N chips (``executor.data_parallel``) a forward takes N x plan.batch images.
    """

    def __init__(self, placed: PlacedTensors, plan: ShardingPlan, executor: Executor, layer_norm_eps: float):
        self.placed = placed
        self.plan = plan
        self.layer_norm_eps = layer_norm_eps
        self.dims = plan.dims
        self.executor = executor
        self.params = placed.parameters
        self.policy = placed.parameters.policy
        self.num_labels = placed.parameters.num_labels
        self.heads = placed.heads
        self.classifier_weight, self.classifier_bias = placed.classifier_weight, placed.classifier_bias
        self.prefix_tokens, self.padding_tokens = placed.prefix_tokens, placed.padding_tokens
        self.position_embeddings, self.mask = placed.position_embeddings, placed.mask
        self.images_per_forward = plan.batch * executor.data_parallel

    @classmethod
    def from_parameters(
        cls, parameters: DeiTParameters, plan: ShardingPlan, executor: Executor, layer_norm_eps: float, mask_padded_tokens: bool = True
    ) -> TtDeiT:
        """The model with ``parameters`` placed by ``executor`` (see ``place_tensors``)."""
        return cls(place_tensors(parameters, plan, executor, mask_padded_tokens), plan, executor, layer_norm_eps)

    def with_executor(self, executor: Executor) -> TtDeiT:
        """The same model, its ops issued through ``executor`` (e.g. one that records them), on the same placed tensors."""
        return TtDeiT(self.placed, self.plan, executor, self.layer_norm_eps)

    def __call__(
        self, pixel_values: torch.Tensor, stages: Collection[str] = (), on_stage: StageCallback | None = None
    ) -> TtDeiTOutput:
        """``stages``: the kinds of stage to read back (``{"attention_probs", "output"}``, or ``ALL_STAGES``), every
        layer's; they are kept in the output or, given ``on_stage``, handed to it as ``on_stage(name, tensor)`` as they
        are computed and not kept (``deit_tt.analysis.reference.compare_in_lockstep``)."""
        expected = (self.images_per_forward, 3, self.dims.image_size, self.dims.image_size)
        if pixel_values.shape != expected:
            raise ValueError(f"expected pixel_values of shape {expected}, got {tuple(pixel_values.shape)}")
        wanted = _stage_kinds(stages, on_stage)
        kept: dict[str, torch.Tensor] = {}
        keep = _selecting(wanted, on_stage or kept.__setitem__) if wanted else None
        padded_logits = self.forward(self.pixel_input(pixel_values), self._recorder(keep) if keep else None)
        output = self.logits(self.executor.to_torch(padded_logits), keep)
        self.executor.deallocate(padded_logits)
        return dataclasses.replace(output, stages=kept)

    def pixel_input(self, pixel_values: torch.Tensor):
        """The pixels as the fold reads them: height-sharded in L1 (on a mesh, each chip gets its own images)."""
        return self.executor.from_torch(
            _folded(pixel_values), **_PIXELS, memory_config=self.plan.fold_input_memory_config, batch_sharded=True
        )

    def host_pixels(self, pixel_values: torch.Tensor):
        """The same pixels converted (and split over the mesh) on the host, for a copy into a persistent input buffer."""
        return self.executor.host_tensor(_folded(pixel_values), **_PIXELS, batch_sharded=True)

    def forward(self, pixels, record=None):
        """Every op of one batch, from the fold of ``pixels`` (freed after it) to the heads' padded logits, which stay
        where the executor put them: nothing is read back, so a trace can capture exactly this. Every intermediate
        lives in L1 (tests/backends/test_mock_device.py checks it for every configuration of the mock matrix), so a trace allocates no DRAM scratch."""
        stage = record or _unrecorded
        hidden = stage(EMBEDDINGS, self.embeddings(pixels))
        for index, layer in enumerate(self.params.layers):
            hidden = self.encoder_layer(hidden, layer, functools.partial(_layer_stage, stage, index))
        return self.head(hidden, stage)

    # -- embeddings -------------------------------------------------------------------------------

    def embeddings(self, pixels):
        """Patch embedding (fold + matmul, as tt-metal's ViT), then [CLS, distillation, patches, padding] + positions."""
        plan, dims = self.plan, self.dims
        folded = self._consume(ttnn.fold, pixels, dims.patch_size, 1, collapse_output=True)
        folded = self._consume(ttnn.to_memory_config, folded, plan.fold_output_memory_config)
        patches = self._consume(ttnn.to_layout, folded, ttnn.TILE_LAYOUT, dtype=self.policy.activations)
        patches = self._consume(
            ttnn.linear,
            patches,
            self.params.patch_embedding_weight,
            bias=self.params.patch_embedding_bias,
            memory_config=ttnn.L1_MEMORY_CONFIG,
            dtype=ttnn.bfloat16,
            core_grid=plan.encoder_grid,
            compute_kernel_config=plan.matmul_compute_for("patch_embedding"),
        )
        patches = self._consume(ttnn.to_layout, patches, ttnn.ROW_MAJOR_LAYOUT, memory_config=ttnn.L1_MEMORY_CONFIG)
        patches = self._run(ttnn.reshape, patches, (plan.batch, dims.patches, dims.hidden))
        # ttnn.concat and ttnn.add put their output in DRAM unless told otherwise (ConcatOperation::invoke): in a
        # trace that would be DRAM scratch, which a buffer allocated after capture can alias. tt-metal's ViT passes
        # L1 here too (vit_embeddings in ttnn_optimized_sharded_vit_wh.py).
        tokens = self._consume(
            ttnn.concat, [self.prefix_tokens, patches, self.padding_tokens], dim=1, memory_config=ttnn.L1_MEMORY_CONFIG, inputs=[patches]
        )
        tokens = self._consume(ttnn.to_layout, tokens, ttnn.TILE_LAYOUT, memory_config=ttnn.L1_MEMORY_CONFIG)
        embeddings = self._consume(
            ttnn.add, tokens, self.position_embeddings, dtype=self.policy.activations, memory_config=ttnn.L1_MEMORY_CONFIG, inputs=[tokens]
        )
        return self._consume(ttnn.to_memory_config, embeddings, plan.encoder_memory_config, dtype=self.policy.activations)

    # -- encoder ----------------------------------------------------------------------------------

    def encoder_layer(self, hidden, layer, stage=None):
        """Pre-norm transformer layer, as Hugging Face's DeiTLayer: two residual blocks."""
        stage = stage or _unrecorded
        normed = stage("ln1", self._layer_norm(hidden, layer.layernorm_before_weight, layer.layernorm_before_bias))
        residual = stage("attention_residual", self._add(self.attention(normed, layer, stage), hidden))
        normed = stage("ln2", self._layer_norm(residual, layer.layernorm_after_weight, layer.layernorm_after_bias))
        return stage("output", self._add(self.mlp(normed, layer, stage), residual))

    def attention(self, normed, layer, stage):
        """Self-attention on the attention grid (one image per grid row, heads height-sharded), back on the encoder grid."""
        plan, act = self.plan, self.policy.activations
        qkv = stage("qkv", self._linear(normed, layer.qkv_weight, layer.qkv_bias, "qkv"))
        qkv = self._consume(ttnn.to_memory_config, qkv, plan.qkv_attention_memory_config, dtype=act)
        query, key, value = self._consume(
            ttnn.transformer.split_query_key_value_and_split_heads, qkv, num_heads=self.dims.heads, memory_config=plan.heads_memory_config
        )
        probabilities = stage("attention_probs", self._softmax(self._attention_matmul(query, key, "query_by_key")))
        context = self._attention_matmul(probabilities, value, "attention_by_value")
        context = self._consume(ttnn.transformer.concatenate_heads, context, memory_config=plan.context_memory_config)
        context = stage("context", self._consume(ttnn.to_memory_config, context, plan.encoder_memory_config, dtype=act))
        return self._linear(context, layer.attention_output_weight, layer.attention_output_bias, "self_output")

    def mlp(self, normed, layer, stage):
        intermediate = stage("ff1", self._linear(normed, layer.ff1_weight, layer.ff1_bias, "ff1"))  # GELU fused in the config
        return self._linear(intermediate, layer.ff2_weight, layer.ff2_bias, "ff2")

    # -- ops, each freeing the inputs it consumes ------------------------------------------------------

    def _run(self, op, *args, **kwargs):
        return self.executor.run(op, *args, **kwargs)

    def _consume(self, op, *args, inputs=None, **kwargs):
        """Run ``op`` and free its inputs (default: the first argument; or ``inputs``) once it has produced its output."""
        output = self.executor.run(op, *args, **kwargs)
        outputs = output if isinstance(output, tuple) else (output,)
        for tensor in args[:1] if inputs is None else inputs:
            if not any(_same_storage(tensor, produced) for produced in outputs):  # a placement op may return its input
                self.executor.deallocate(tensor)
        return output

    def _linear(self, tensor, weight, bias, op: str, memory_config=None):
        """A block-sharded matmul that consumes its input; weights stream from DRAM. ``op`` names its program
        config in the plan (and its compute config, ``plan.matmul_compute_for``)."""
        return self._consume(
            ttnn.linear,
            tensor,
            weight,
            bias=bias,
            memory_config=memory_config or self.plan.matmul_output_memory_config,
            program_config=getattr(self.plan, op),
            dtype=self.policy.activations,
            compute_kernel_config=self.plan.matmul_compute_for(op),
        )

    def _attention_matmul(self, a, b, op: str):
        """A batched matmul on the attention grid that consumes both inputs: per core, its images' heads in L1."""
        return self._consume(
            ttnn.matmul,
            a,
            b,
            program_config=getattr(self.plan, op),
            memory_config=self.plan.heads_memory_config,
            dtype=self.policy.activations,
            compute_kernel_config=self.plan.matmul_compute_for(op),
            inputs=[a, b],
        )

    def _layer_norm(self, tensor, weight, bias):
        """LayerNorm on the encoder grid; its input stays (it is the residual)."""
        return self._run(
            ttnn.layer_norm,
            tensor,
            weight=weight,
            bias=bias,
            epsilon=self.layer_norm_eps,
            memory_config=self.plan.matmul_output_memory_config,
            program_config=self.plan.layernorm,
            compute_kernel_config=self.plan.layernorm_compute,
        )

    def _add(self, branch, residual):
        """``residual + branch``, consuming both."""
        return self._consume(
            ttnn.add, branch, residual, memory_config=self.plan.matmul_output_memory_config, dtype=self.policy.activations, inputs=[branch, residual]
        )

    def _softmax(self, scores):
        """Scale, hide padded keys, softmax: one fused in-place op on the height-sharded scores.

        ``attention_softmax_`` calls exactly this but takes no compute kernel config; calling it directly keeps the
        config in the plan. ``numeric_stable=True`` subtracts each row's max before the exponential, which tt-metal's
        ViT does not: the plan runs the exponential with ``math_approx_mode`` (the SFPU's bit-trick exp,
        ckernel_sfpu_exp.h), whose result is only valid below about 88.7 (above, the rounded integer reaches the
        sign bit; ``deit_tt.backends.tensix_numerics.fast_exp`` reproduces it and tests/backends/test_tensix_numerics.py pins
        it). Scaled scores of a trained model are not bounded by anything in the config, and the max pass costs one
        row reduction per tile row, so it stays.
        """
        return self._run(
            ttnn.scale_mask_softmax_in_place,
            scores,
            1.0 / math.sqrt(self.dims.head_size),
            self.mask,
            program_config=self.plan.softmax,
            compute_kernel_config=self.plan.softmax_compute,
            numeric_stable=True,
        )

    # -- heads ------------------------------------------------------------------------------------

    def head(self, hidden, stage=None):
        """The final LayerNorm, then the classifier: padded logits (consumes ``hidden``'s LayerNorm output)."""
        stage = stage or _unrecorded
        return self.classifier(stage(FINAL_LAYERNORM, self._layer_norm(hidden, self.params.layernorm_weight, self.params.layernorm_bias)))

    def classifier(self, normed):
        """Every head as one matmul (weights side by side) on the first tile row of each image, which holds the
        tokens the heads read: padded logits [B x 32, heads x padded classes] (consumes ``normed``)."""
        plan, dims = self.plan, self.dims
        prefix = self._consume(ttnn.slice, normed, [0, 0, 0], [plan.batch, TILE, dims.hidden], memory_config=plan.classifier_memory_config)
        return self._linear(prefix, self.classifier_weight, self.classifier_bias, "classifier")

    def logits(self, padded_logits: torch.Tensor, keep: StageCallback | None = None) -> TtDeiTOutput:
        """The output from the classifier's padded logits read back to the host: each head's token and real classes
        (and, given ``keep``, each kind of logits handed to it as a stage)."""
        rows = padded_logits.reshape(-1, TILE, len(self.heads), self.dims.classes_padded)
        per_head = {head: rows[:, head.token, index, : self.num_labels] for index, head in enumerate(self.heads)}
        cls_logits = per_head[self.heads[0]]
        distillation_logits = per_head.get(DISTILLATION_HEAD)
        logits = cls_logits if distillation_logits is None else (cls_logits + distillation_logits) / 2
        if keep:
            for head, value in per_head.items():
                keep(head.stage, value)
            keep("logits", logits)
        return TtDeiTOutput(logits, cls_logits, distillation_logits)

    def release(self) -> None:
        """Deallocate every tensor the model placed (on a device: its DRAM and L1 buffers). The model is unusable after."""
        self.placed.release(self.executor)

    # -- stages read back ---------------------------------------------------------------------------

    def _recorder(self, keep: StageCallback):
        """The forward's ``stage`` hook: reads a stage ``keep`` wants back to the host, cut to the real tokens."""
        tokens = self.dims.tokens

        def record(name: str, tensor):
            if not keep.wants(name):
                return tensor
            value = self.executor.to_torch(tensor)
            if name.endswith("attention_probs"):  # [B, heads, 224, 224]
                value = value[:, :, :tokens, :tokens]
            else:
                value = value.reshape(self.images_per_forward, self.dims.padded_tokens, -1)[:, :tokens]
                if name.endswith(".qkv"):  # compare in Hugging Face's [Q | K | V] order
                    value = deinterleave_qkv(value, self.dims.heads)
            keep(name, _compact(value))
            return tensor

        return record


def _same_storage(a, b) -> bool:
    """True when ``b`` is ``a`` or, on a device, a view of the same buffer (a to_memory_config to the config the
    tensor already has returns one)."""
    if a is b:
        return True
    if not (isinstance(a, ttnn.Tensor) and isinstance(b, ttnn.Tensor) and a.is_allocated() and b.is_allocated()):
        return False
    return a.buffer_address() == b.buffer_address() and a.memory_config().buffer_type == b.memory_config().buffer_type


def _unrecorded(name: str, tensor):
    return tensor


def _stage_kinds(stages: Collection[str], on_stage: StageCallback | None) -> frozenset[str]:
    if isinstance(stages, str):
        raise TypeError(f"stages takes a collection of stage names, e.g. {{{stages!r}}}, not a string")
    wanted = frozenset(stages)
    if unknown := sorted(wanted - ALL_STAGES):
        raise ValueError(f"unknown stage {', '.join(unknown)}: choose from {', '.join(sorted(ALL_STAGES))}")
    if on_stage is not None and not wanted:
        raise ValueError("on_stage needs stages= to say which stages to hand over (ALL_STAGES for every one)")
    return wanted


class _selecting:
    """``keep`` called only with the stages of the kinds in ``wanted`` (``"layers.3.ff1"`` is of kind ``"ff1"``)."""

    def __init__(self, wanted: frozenset[str], keep: StageCallback):
        self.wanted, self.keep = wanted, keep

    def wants(self, name: str) -> bool:
        return name.rpartition(".")[2] in self.wanted

    def __call__(self, name: str, value: torch.Tensor) -> None:
        if self.wants(name):
            self.keep(name, value)


def _layer_stage(stage, index: int, name: str, tensor):
    return stage(layer_stage(index, name), tensor)


def _compact(value: torch.Tensor) -> torch.Tensor:
    """A capture as a tensor of its own, so the padded one it was cut from is freed, and in bfloat16 when that is
    exact (every bfloat16 or bfloat8_b output is): half the memory of float32 for a whole-model capture."""
    compact = value.to(torch.bfloat16)
    return compact if torch.equal(compact.float(), value) else value.contiguous()


# How the fold's input is stored: row-major bfloat16, [B, 224, 14, 64] (see deit_tt.model.conversion.fold_pixels).
_PIXELS = {"dtype": ttnn.bfloat16, "layout": ttnn.ROW_MAJOR_LAYOUT}


def _folded(pixel_values: torch.Tensor) -> torch.Tensor:
    """The fold's input, rounded to bfloat16 by torch: the same bits as ttnn's rounding of float32 (to nearest even,
    tests/backends/test_throughput.py) in a fraction of the time (``benchmarks/device_throughput.py --mock``)."""
    return fold_pixels(pixel_values.to(torch.bfloat16))


def _place(parameters: DeiTParameters, executor) -> DeiTParameters:
    """A copy of the parameter tree with every tensor placed by the executor (device DRAM, or host torch)."""
    return _map_tensors(parameters, ttnn.Tensor, executor.parameter)


def _map_tensors(tree, kind: type, function):
    """``tree`` with ``function`` applied to every leaf of type ``kind`` (lists, tuples, dicts, dataclasses)."""

    def visit(value):
        if isinstance(value, kind):
            return function(value)
        if isinstance(value, list):
            return [visit(item) for item in value]
        if isinstance(value, tuple):
            return tuple(visit(item) for item in value)
        if isinstance(value, dict):
            return {key: visit(item) for key, item in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.replace(value, **{f.name: visit(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return value

    return visit(tree)
