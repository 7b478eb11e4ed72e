"""The DeiT forward pass, written once against the ttnn 0.81 API.

The design follows tt-metal's sharded ViT for Wormhole: the patch embedding is a fold + matmul,
the encoder activations stay block-sharded in L1 for LayerNorm, QKV, self-output and the MLP, and
attention runs on a grid with one image per row and height-sharded heads. DeiT-specific parts:
two prefix tokens (CLS at 0, distillation at 1), a 198-row position table, two classifier heads
read from tokens 0 and 1 and averaged as Hugging Face does.

The sequence is padded explicitly from 198 to 224 tokens (7 tiles) so that every shape is a tile
multiple. The padded rows are not zero after the first LayerNorm (they become its beta), so as keys
they would leak into every real token's softmax; an additive mask hides key columns 198..223.

Every op goes through ``executor.run``: the same sequence runs on a card or, through ttnn's
golden functions, on the host (see ``deit_tt.backends.executor``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
import ttnn

from deit_tt.model.conversion import DeiTParameters, deinterleave_qkv, fold_pixels
from deit_tt.sharding import ShardingPlan, attention_mask

LAYER_STAGES = ("ln1", "qkv", "attention_probs", "context", "attention_residual", "ln2", "ff1", "output")

# Receives a stage as it is computed: (name, host tensor), as the captures would hold it.
Consumer = Callable[[str, torch.Tensor], None]


@dataclass
class DeiTOutput:
    """Logits of the real classes (padding removed), float32 on the host."""

    logits: torch.Tensor
    cls_logits: torch.Tensor
    distillation_logits: torch.Tensor | None
    captures: dict[str, torch.Tensor] = field(default_factory=dict)


class TtDeiT:
    """DeiT for one fixed batch size, bound to one executor and one sharding plan.

    The plan is per chip; on a mesh of N chips (``executor.data_parallel``) a forward takes N x plan.batch images.
    """

    def __init__(
        self,
        parameters: DeiTParameters,
        plan: ShardingPlan,
        executor,
        layer_norm_eps: float,
        mask_padded_tokens: bool = True,
    ):
        self.plan = plan
        self.layer_norm_eps = layer_norm_eps
        self.dims = plan.dims
        self.executor = executor
        self.policy = parameters.policy
        self.num_labels = parameters.num_labels
        self.mask_padded_tokens = mask_padded_tokens
        self.params = _place(parameters, executor)
        self.images_per_forward = plan.batch * executor.data_parallel
        batch, hidden = plan.batch, self.dims.hidden
        tokens = torch.cat(
            [ttnn.to_torch(parameters.cls_token).float(), ttnn.to_torch(parameters.distillation_token).float()], dim=1
        )
        self.prefix_tokens = executor.from_torch(
            tokens.expand(batch, 2, hidden), dtype=self.policy.embeddings, layout=ttnn.ROW_MAJOR_LAYOUT
        )
        padding_rows = self.dims.padded_tokens - self.dims.tokens
        self.padding_tokens = executor.from_torch(
            torch.zeros(batch, padding_rows, hidden), dtype=self.policy.embeddings, layout=ttnn.ROW_MAJOR_LAYOUT
        )
        self.position_embeddings = executor.from_torch(
            ttnn.to_torch(parameters.position_embeddings).float().expand(batch, -1, -1),
            dtype=self.policy.embeddings,
            layout=ttnn.TILE_LAYOUT,
        )
        self.mask = (
            executor.from_torch(
                attention_mask(plan, torch.bfloat16),
                dtype=ttnn.bfloat16,
                layout=plan.attention_mask_layout,
                memory_config=plan.attention_mask_memory_config,
            )
            if mask_padded_tokens
            else None
        )

    def __call__(self, pixel_values: torch.Tensor, capture: bool | Collection[str] | Consumer = False) -> DeiTOutput:
        """``capture``: True records every stage; a collection of stage names (``{"attention_probs", "output"}``)
        only those, and the logits; a callable is handed every stage as ``capture(name, tensor)`` and nothing is
        kept (``deit_tt.analysis.reference.compare_in_lockstep``)."""
        expected = (self.images_per_forward, 3, self.dims.image_size, self.dims.image_size)
        if pixel_values.shape != expected:
            raise ValueError(f"expected pixel_values of shape {expected}, got {tuple(pixel_values.shape)}")
        captures: dict[str, torch.Tensor] = {}
        keep = record = None
        if capture:
            keep = capture if callable(capture) else captures.__setitem__
            record = self._recorder(keep, None if capture is True or callable(capture) else frozenset(capture))
        head_logits = self.forward(self.pixel_input(pixel_values), record)
        output = self.logits({name: self.executor.to_torch(t) for name, t in head_logits.items()}, keep)
        for tensor in head_logits.values():
            self.executor.deallocate(tensor)
        return dataclasses.replace(output, captures=captures)

    def pixel_input(self, pixel_values: torch.Tensor):
        """The pixels as the fold reads them: height-sharded in L1 (on a mesh, each chip gets its own images)."""
        return self.executor.from_torch(
            fold_pixels(pixel_values), **_PIXELS, memory_config=self.plan.fold_input_memory_config, batch_sharded=True
        )

    def host_pixels(self, pixel_values: torch.Tensor):
        """The same pixels converted (and split over the mesh) on the host, for a copy into a persistent input buffer."""
        return self.executor.host_tensor(fold_pixels(pixel_values), **_PIXELS, batch_sharded=True)

    def forward(self, pixels, record=None) -> dict[str, object]:
        """Every op of one batch, from the fold of ``pixels`` (freed after it) to each head's padded logits,
        which stay where the executor put them: nothing is read back, so a trace can capture exactly this."""
        hidden = self.embeddings(pixels, record)
        for index, layer in enumerate(self.params.layers):
            hidden = self.encoder_layer(hidden, layer, index, record)
        return self.heads(hidden, record)

    # -- embeddings -------------------------------------------------------------------------------

    def embeddings(self, pixels, record):
        run, plan, dims = self.executor.run, self.plan, self.dims
        act = self.policy.activations
        folded = run(ttnn.fold, pixels, dims.patch_size, 1, collapse_output=True)
        self.executor.deallocate(pixels)
        unsharded = run(ttnn.to_memory_config, folded, plan.fold_output_memory_config)
        self.executor.deallocate(folded)
        patches = run(ttnn.to_layout, unsharded, ttnn.TILE_LAYOUT, dtype=act)
        self.executor.deallocate(unsharded)
        patches = run(
            ttnn.linear,
            patches,
            self.params.patch_embedding_weight,
            bias=self.params.patch_embedding_bias,
            memory_config=ttnn.L1_MEMORY_CONFIG,
            dtype=ttnn.bfloat16,
            core_grid=plan.encoder_grid,
            compute_kernel_config=plan.matmul_compute_for("patch_embedding"),
        )
        patches = run(ttnn.to_layout, patches, ttnn.ROW_MAJOR_LAYOUT)
        patches = run(ttnn.reshape, patches, (plan.batch, dims.patches, dims.hidden))
        tokens = run(ttnn.concat, [self.prefix_tokens, patches, self.padding_tokens], dim=1)
        tokens = run(ttnn.to_layout, tokens, ttnn.TILE_LAYOUT)
        embeddings = run(ttnn.add, tokens, self.position_embeddings, dtype=act)
        embeddings = run(ttnn.to_memory_config, embeddings, plan.encoder_memory_config, dtype=act)
        if record:
            record("embeddings", embeddings)
        return embeddings

    # -- encoder ----------------------------------------------------------------------------------

    def encoder_layer(self, hidden, layer, index: int, record):
        run, plan, dims = self.executor.run, self.plan, self.dims
        act = self.policy.activations
        free = self.executor.deallocate
        prefix = f"layers.{index}."

        normed = self._layer_norm(hidden, layer.layernorm_before_weight, layer.layernorm_before_bias)
        qkv = self._linear(normed, layer.qkv_weight, layer.qkv_bias, "qkv")
        if record:
            record(prefix + "ln1", normed)
            record(prefix + "qkv", qkv)
        free(normed)

        # attention: one image per grid row, heads height-sharded
        qkv = run(ttnn.to_memory_config, qkv, plan.qkv_attention_memory_config, dtype=act)
        query, key, value = run(
            ttnn.transformer.split_query_key_value_and_split_heads,
            qkv,
            num_heads=dims.heads,
            memory_config=plan.heads_memory_config,
        )
        free(qkv)
        scores = self._attention_matmul(query, key, "query_by_key")
        free(query)
        free(key)
        probabilities = self._softmax(scores)
        if record:
            record(prefix + "attention_probs", probabilities)
        context = self._attention_matmul(probabilities, value, "attention_by_value")
        free(probabilities)
        free(value)
        context = run(ttnn.transformer.concatenate_heads, context, memory_config=plan.context_memory_config)
        context = run(ttnn.to_memory_config, context, plan.encoder_memory_config, dtype=act)
        if record:
            record(prefix + "context", context)

        attention_output = self._linear(context, layer.attention_output_weight, layer.attention_output_bias, "self_output")
        free(context)
        residual = self._add(attention_output, hidden)
        free(attention_output)
        free(hidden)

        normed = self._layer_norm(residual, layer.layernorm_after_weight, layer.layernorm_after_bias)
        intermediate = self._linear(normed, layer.ff1_weight, layer.ff1_bias, "ff1")  # GELU fused in the config
        if record:
            record(prefix + "attention_residual", residual)
            record(prefix + "ln2", normed)
            record(prefix + "ff1", intermediate)
        free(normed)
        output = self._linear(intermediate, layer.ff2_weight, layer.ff2_bias, "ff2")
        free(intermediate)
        output = self._add(output, residual)
        free(residual)
        if record:
            record(prefix + "output", output)
        return output

    def _linear(self, tensor, weight, bias, op: str):
        """A block-sharded matmul on the encoder (or classifier) grid; weights stream from DRAM. ``op`` names
        its program config in the plan (and its compute config, ``plan.matmul_compute_for``)."""
        return self.executor.run(
            ttnn.linear,
            tensor,
            weight,
            bias=bias,
            memory_config=self.plan.matmul_output_memory_config,
            program_config=getattr(self.plan, op),
            dtype=self.policy.activations,
            compute_kernel_config=self.plan.matmul_compute_for(op),
        )

    def _attention_matmul(self, a, b, op: str):
        """A batched matmul on the attention grid: per core, its images' heads, height-sharded in L1."""
        return self.executor.run(
            ttnn.matmul,
            a,
            b,
            program_config=getattr(self.plan, op),
            memory_config=self.plan.heads_memory_config,
            dtype=self.policy.activations,
            compute_kernel_config=self.plan.matmul_compute_for(op),
        )

    def _layer_norm(self, tensor, weight, bias):
        return self.executor.run(
            ttnn.layer_norm,
            tensor,
            weight=weight,
            bias=bias,
            epsilon=self.layer_norm_eps,
            memory_config=self.plan.matmul_output_memory_config,
            program_config=self.plan.layernorm,
            compute_kernel_config=self.plan.layernorm_compute,
        )

    def _add(self, a, b):
        return self.executor.run(
            ttnn.add, a, b, memory_config=self.plan.matmul_output_memory_config, dtype=self.policy.activations
        )

    def _softmax(self, scores):
        """Scale, hide padded keys, softmax: one fused in-place op on the height-sharded scores.

        ``attention_softmax_`` calls exactly this (numerically stable) but takes no compute kernel config;
        calling it directly keeps the config in the plan. Without the mask it is tt-metal ViT's mul_ + softmax.
        """
        return self.executor.run(
            ttnn.scale_mask_softmax_in_place,
            scores,
            1.0 / math.sqrt(self.dims.head_size),
            self.mask,
            program_config=self.plan.softmax,
            compute_kernel_config=self.plan.softmax_compute,
            numeric_stable=True,
        )

    # -- heads ------------------------------------------------------------------------------------

    def heads(self, hidden, record) -> dict[str, object]:
        """Final LayerNorm and each classifier head: padded logits [B, 224, padded classes] per head name."""
        run, plan = self.executor.run, self.plan
        act = self.policy.activations
        normed = self._layer_norm(hidden, self.params.layernorm_weight, self.params.layernorm_bias)
        if record:
            record("final_ln", normed)
        normed = run(ttnn.to_memory_config, normed, plan.classifier_memory_config, dtype=act)
        head_logits = {}
        for head_name in _HEAD_TOKENS:
            if head_name in self.params.heads:
                weight, bias = self.params.heads[head_name]
                head_logits[head_name] = self._linear(normed, weight, bias, "classifier")
        self.executor.deallocate(normed)
        return head_logits

    def logits(self, head_logits: dict[str, torch.Tensor], keep: Consumer | None = None) -> DeiTOutput:
        """The output from each head's padded logits read back to the host: its token, the real classes
        (and, given ``keep``, each kind of logits handed to it as a stage)."""
        logits_per_head = {name: value[:, _HEAD_TOKENS[name], : self.num_labels] for name, value in head_logits.items()}
        if "classifier" in logits_per_head:  # plain DeiTForImageClassification: one head on the CLS token
            cls_logits, distillation_logits = logits_per_head["classifier"], None
            logits = cls_logits
        else:
            cls_logits = logits_per_head["cls_classifier"]
            distillation_logits = logits_per_head["distillation_classifier"]
            logits = (cls_logits + distillation_logits) / 2
        if keep:
            keep("cls_logits", cls_logits)
            if distillation_logits is not None:
                keep("distillation_logits", distillation_logits)
            keep("logits", logits)
        return DeiTOutput(logits, cls_logits, distillation_logits)

    def release(self) -> None:
        """Deallocate every tensor the model placed (on a device: its DRAM and L1 buffers). The model is unusable after."""
        resident = [self.params, self.prefix_tokens, self.padding_tokens, self.position_embeddings, self.mask]
        _map_tensors(resident, self.executor.tensor_type, self.executor.deallocate)

    # -- capture ----------------------------------------------------------------------------------

    def _recorder(self, keep: Consumer, stages: frozenset[str] | None):
        tokens = self.dims.tokens

        def record(name: str, tensor):
            if stages is not None and name.rpartition(".")[2] not in stages:
                return
            value = self.executor.to_torch(tensor)
            if name.endswith("attention_probs"):  # [B, heads, 224, 224]
                value = value[:, :, :tokens, :tokens]
            else:
                value = value.reshape(self.images_per_forward, self.dims.padded_tokens, -1)[:, :tokens]
                if name.endswith(".qkv"):  # compare in Hugging Face's [Q | K | V] order
                    value = deinterleave_qkv(value, self.dims.heads)
            keep(name, _compact(value))

        return record


def _compact(value: torch.Tensor) -> torch.Tensor:
    """A capture as a tensor of its own, so the padded one it was cut from is freed, and in bfloat16 when that is
    exact (every bfloat16 or bfloat8_b output is): half the memory of float32 for a whole-model capture."""
    compact = value.to(torch.bfloat16)
    return compact if torch.equal(compact.float(), value) else value.contiguous()


# How the fold's input is stored: row-major bfloat16, [B, 224, 14, 64] (see deit_tt.model.conversion.fold_pixels).
_PIXELS = {"dtype": ttnn.bfloat16, "layout": ttnn.ROW_MAJOR_LAYOUT}
# The classifier heads and the token each one reads (Hugging Face: cls on token 0, distillation on token 1).
_HEAD_TOKENS = {"classifier": 0, "cls_classifier": 0, "distillation_classifier": 1}


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
