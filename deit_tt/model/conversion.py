"""Hugging Face DeiT weights -> ttnn host tensors, laid out the way the sharded model consumes them.

Every tensor is produced in two steps that tests, notebooks and the quantisation report can look at
separately:

1. a pure PyTorch step that rearranges and zero-pads the checkpoint's fp32 tensors (``_torch_specs``):
   fused head-interleaved QKV, the patch convolution as a 1024-input matmul, tile-padded position
   embeddings, classifier heads padded to a multiple of 384 outputs;
2. ttnn's own preprocessing helpers (``ttnn.model_preprocessing.preprocess_linear_weight`` and
   friends) or ``ttnn.from_torch``, which transpose linear weights and round to the dtype the
   ``DtypePolicy`` chooses for that tensor family.

The result stays on the host; the executor places it on a device (or keeps it on the host) later.
Conversions are cached on disk (see ``deit_tt.model.cache``): pass ``cache_dir=False`` to switch that off.

For looking at the result (notebook 01): ``family_of`` names the converter family of a Hugging Face parameter,
``qkv_column_owners`` says which head and which of q/k/v owns each fused column, and ``qkv_roundtrip`` proves
that un-fusing gives back Hugging Face's per-head weights.

Layout summary (H = hidden size, h = heads, d = 64 = head size):

- ``patch_embedding_weight`` [16*16*4, H]: the conv weight (H, 3, 16, 16) with input channels zero-padded
  3 -> 4, permuted to (kh, kw, c, out). It multiplies ``ttnn.fold(x, 16, 1, collapse_output=True)`` of the
  pixels laid out NHWC, channels padded to 4 and reshaped (B, 224, 14, 64): a fold output row holds
  16 image rows (kh) x 16 pixels (kw) x 4 channels (c), in that order.
- ``qkv_weight`` [H, 3H]: columns ``[q_h0 k_h0 v_h0 | q_h1 k_h1 v_h1 | ...]``, each block d wide, which is
  what the sharded ``ttnn.transformer.split_query_key_value_and_split_heads`` expects.
- ``position_embeddings`` [1, 224, H]: the (1, 198, H) table followed by 26 zero rows.
- classifier heads: weight [H, Npad], bias [1, Npad], zero beyond ``num_labels``; Npad is a multiple of
  384 = 32 * 12 so every supported grid column count (1, 2, 3, 4, 6, 12) divides its tiles (1000 -> 1152).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import ttnn
from ttnn.model_preprocessing import preprocess_layernorm_parameter, preprocess_linear_bias, preprocess_linear_weight

from deit_tt.model import cache as cache_module
from deit_tt.backends.blockfloat import round_to_dtype
from deit_tt.model.cache import CacheInfo
from deit_tt.errors import UserFacingError
from deit_tt.analysis.pcc import pcc
from deit_tt.model.policy import DtypePolicy, get_policy
from deit_tt.backends.runtime import prepare_host
from deit_tt.model.vocabulary import HEADS_BY_NAME, Head, heads_of
from deit_tt.sharding.dims import CLASS_PAD_MULTIPLE, TILE, ModelDims, round_up

# Bump whenever the tensor layout produced here changes (names, shapes, ordering, padding):
# it is part of the conversion cache key, so old cache entries are never reused for a new layout.
LAYOUT_VERSION = 1

HEAD_SIZE_MULTIPLE = TILE  # the sharded QKV split needs head size % 32 == 0 and no tile padding inside a head
PADDED_CHANNELS = 4  # pixels are stored NHWC with 3 channels padded to 4 so a 16-pixel row is 64 wide
SUPPORTED_IMAGE_SIZE = 224
SUPPORTED_PATCH_SIZE = 16

FAMILIES = ("patch_embedding", "embeddings", "qkv", "attention_output", "ff1", "ff2", "layernorm", "classifier")

# Hugging Face parameter names -> converter family (in FAMILIES order), for listings of a checkpoint.
_FAMILY_PATTERNS = (
    ("patch_embedding", r"patch_embeddings\."),
    ("embeddings", r"embeddings\.(cls_token|distillation_token|position_embeddings)$"),
    ("qkv", r"attention\.(q_proj|k_proj|v_proj)\."),
    ("attention_output", r"attention\.o_proj\."),
    ("ff1", r"mlp\.fc1\."),
    ("ff2", r"mlp\.fc2\."),
    ("layernorm", r"layernorm(_before|_after)?\."),
    ("classifier", r"classifier\."),
)
QKV_PARTS = ("q", "k", "v")

logger = logging.getLogger(__name__)


@dataclass
class LayerParameters:
    layernorm_before_weight: ttnn.Tensor
    layernorm_before_bias: ttnn.Tensor
    qkv_weight: ttnn.Tensor
    qkv_bias: ttnn.Tensor
    attention_output_weight: ttnn.Tensor
    attention_output_bias: ttnn.Tensor
    layernorm_after_weight: ttnn.Tensor
    layernorm_after_bias: ttnn.Tensor
    ff1_weight: ttnn.Tensor
    ff1_bias: ttnn.Tensor
    ff2_weight: ttnn.Tensor
    ff2_bias: ttnn.Tensor


# flat tensor name inside a layer -> LayerParameters field
_LAYER_FIELDS = {
    "layernorm_before.weight": "layernorm_before_weight",
    "layernorm_before.bias": "layernorm_before_bias",
    "qkv.weight": "qkv_weight",
    "qkv.bias": "qkv_bias",
    "attention_output.weight": "attention_output_weight",
    "attention_output.bias": "attention_output_bias",
    "layernorm_after.weight": "layernorm_after_weight",
    "layernorm_after.bias": "layernorm_after_bias",
    "ff1.weight": "ff1_weight",
    "ff1.bias": "ff1_bias",
    "ff2.weight": "ff2_weight",
    "ff2.bias": "ff2_bias",
}
# flat name -> DeiTParameters field, for the tensors before the layers and after them (the heads aside)
_EMBEDDING_FIELDS = {
    "patch_embedding.weight": "patch_embedding_weight",
    "patch_embedding.bias": "patch_embedding_bias",
    "cls_token": "cls_token",
    "distillation_token": "distillation_token",
    "position_embeddings": "position_embeddings",
}
_FINAL_FIELDS = {"layernorm.weight": "layernorm_weight", "layernorm.bias": "layernorm_bias"}


def tensor_names(num_layers: int, head_names: tuple[str, ...]) -> list[str]:
    """Every tensor's flat name, in conversion order: the cache's file names and the report's row names."""
    layers = [f"layers.{index}.{suffix}" for index in range(num_layers) for suffix in _LAYER_FIELDS]
    heads = [f"heads.{head}.{part}" for head in head_names for part in ("weight", "bias")]
    return [*_EMBEDDING_FIELDS, *layers, *_FINAL_FIELDS, *heads]


@dataclass
class DeiTParameters:
    patch_embedding_weight: ttnn.Tensor
    patch_embedding_bias: ttnn.Tensor
    cls_token: ttnn.Tensor
    distillation_token: ttnn.Tensor
    position_embeddings: ttnn.Tensor
    layers: list[LayerParameters]
    layernorm_weight: ttnn.Tensor
    layernorm_bias: ttnn.Tensor
    heads: dict[str, tuple[ttnn.Tensor, ttnn.Tensor]]
    policy: DtypePolicy
    num_labels: int
    # How these tensors were obtained (converted, loaded from the cache, ...); None when built by hand.
    cache: CacheInfo | None = field(default=None, compare=False, repr=False)

    @property
    def padded_num_labels(self) -> int:
        return next(iter(self.heads.values()))[0].shape[-1]

    def named_tensors(self) -> dict[str, ttnn.Tensor]:
        """Every tensor under its flat name (``tensor_names``), in that order."""
        tensors = [getattr(self, attribute) for attribute in _EMBEDDING_FIELDS.values()]
        tensors += [getattr(layer, attribute) for layer in self.layers for attribute in _LAYER_FIELDS.values()]
        tensors += [getattr(self, attribute) for attribute in _FINAL_FIELDS.values()]
        tensors += [tensor for weight_and_bias in self.heads.values() for tensor in weight_and_bias]
        return dict(zip(tensor_names(len(self.layers), tuple(self.heads)), tensors, strict=True))

    @classmethod
    def from_named(
        cls,
        named: dict[str, ttnn.Tensor],
        *,
        policy: DtypePolicy,
        num_labels: int,
        num_layers: int,
        head_names: tuple[str, ...],
    ) -> "DeiTParameters":
        layers = [
            LayerParameters(**{attribute: named[f"layers.{i}.{suffix}"] for suffix, attribute in _LAYER_FIELDS.items()})
            for i in range(num_layers)
        ]
        return cls(
            **{attribute: named[name] for name, attribute in {**_EMBEDDING_FIELDS, **_FINAL_FIELDS}.items()},
            layers=layers,
            heads={head: (named[f"heads.{head}.weight"], named[f"heads.{head}.bias"]) for head in head_names},
            policy=policy,
            num_labels=num_labels,
        )


@dataclass
class ConvertedTensor:
    """One converted tensor next to the fp32 original in the same (fused, transposed, padded) layout."""

    name: str
    family: str
    tensor: ttnn.Tensor
    original: torch.Tensor  # float32, same shape as ``tensor``, before rounding to the policy's dtype
    valid: torch.Tensor | None  # bool mask of the real (non-padding) entries; None when nothing is padded


# --------------------------------------------------------------------------------------------------
# Step 1: PyTorch-side rearrangement


@dataclass
class _Spec:
    name: str
    family: str
    kind: str  # how it is handed to ttnn: linear_weight | linear_bias | layernorm | tile | row_major
    role: str  # DtypePolicy field that chooses the dtype
    source: torch.Tensor  # fp32, in the form the ttnn helper takes (linear weights as (out, in))
    valid: torch.Tensor | None = None  # bool mask over the *final* layout

    def reference(self) -> torch.Tensor:
        """The tensor as ttnn will hold it, before rounding: the 'original in the same layout'."""
        if self.kind == "linear_weight":
            return self.source.T.contiguous()
        if self.kind in ("linear_bias", "layernorm"):
            return self.source.reshape(1, -1).clone()  # a copy: never a view of the model's parameters
        return self.source.clone()


def padded_num_labels(num_labels: int) -> int:
    """Round the class count up to a multiple of 384 (1000 -> 1152)."""
    return round_up(num_labels, CLASS_PAD_MULTIPLE)


def padded_sequence_length(config) -> int:
    """Tokens the model runs on: CLS + distillation + patches, padded to whole tiles (198 -> 224)."""
    return round_up(_num_tokens(config), TILE)


def head_names(checkpoint) -> tuple[str, ...]:
    return tuple(head.name for head in heads_of(checkpoint.distilled))


def converted_shape(name: str, dims: ModelDims) -> tuple[int, ...]:
    """The shape this module gives tensor ``name`` (as ``DeiTParameters.named_tensors`` names it), from the model's dims
    alone: linear weights [in, out] and biases [1, out], LayerNorm parameters [1, H], each token [1, 1, H], the position
    table [1, padded tokens, H]. tests/test_conversion.py checks it against every tensor of a conversion."""
    H = dims.hidden
    if name in ("cls_token", "distillation_token"):
        return (1, 1, H)
    if name == "position_embeddings":
        return (1, dims.padded_tokens, H)
    *path, family, kind = name.split(".")  # "layers.3.ff1.weight", "heads.cls_classifier.bias", "layernorm.weight"
    linears = {
        "patch_embedding": (dims.patch_features, H),
        "qkv": (H, 3 * H),
        "attention_output": (H, H),
        "ff1": (H, dims.intermediate),
        "ff2": (dims.intermediate, H),
    }
    inputs, outputs = linears.get(family, (H, dims.classes_padded) if path == ["heads"] else (None, H))
    return (inputs, outputs) if kind == "weight" and inputs else (1, outputs)


def fused_classifier(parameters: DeiTParameters) -> tuple[tuple[Head, ...], ttnn.Tensor, ttnn.Tensor]:
    """The heads, and their weights [H, heads x padded classes] and biases side by side, for one classifier matmul.

    Each head's columns are a whole number of tiles, so no block-float exponent group spans two heads: the fused
    tensors hold exactly the values of the separate ones."""
    heads = tuple(HEADS_BY_NAME[name] for name in parameters.heads)
    weights, biases = zip(*parameters.heads.values())

    def side_by_side(tensors):
        fused = torch.cat([ttnn.to_torch(tensor).float() for tensor in tensors], dim=-1)
        return ttnn.from_torch(fused, dtype=tensors[0].dtype, layout=ttnn.TILE_LAYOUT)

    return heads, side_by_side(weights), side_by_side(biases)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """HF q/k/v weights (H_out, H_in) or biases (H_out,) -> fused, head-interleaved along the output dim.

    Output rows (weights) / entries (biases) run q_h0 k_h0 v_h0 q_h1 k_h1 v_h1 ..., each head_size long.
    """
    stacked = torch.stack([t.reshape(heads, -1, *t.shape[1:]) for t in (q, k, v)], dim=1)  # (heads, 3, d, ...)
    return stacked.reshape(3 * q.shape[0], *q.shape[1:])


def deinterleave_qkv(fused: torch.Tensor, heads: int) -> torch.Tensor:
    """Activations [..., 3H] with head-interleaved columns [q0 k0 v0 | q1 k1 v1 | ...] -> Hugging Face's [Q | K | V]."""
    *leading, width = fused.shape
    grouped = fused.reshape(*leading, heads, 3, width // (3 * heads))
    return grouped.transpose(-3, -2).reshape(*leading, width)


def split_fused_qkv(fused, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of the QKV fusion: back to Hugging Face q, k, v.

    ``fused`` is the converted weight [H, 3H] (in-features x interleaved out-features) or bias
    [1, 3H] / [3H], as a torch tensor (or a ttnn host tensor, read back with ``ttnn.to_torch``).
    Weights come back as (H_out, H_in) like ``nn.Linear.weight``, biases as (H,).
    """
    if isinstance(fused, ttnn.Tensor):
        fused = ttnn.to_torch(fused)
    if fused.ndim == 1 or (fused.ndim == 2 and fused.shape[0] == 1):
        grouped = fused.reshape(heads, 3, -1)  # (heads, q|k|v, d)
        return tuple(grouped[:, j].reshape(-1) for j in range(3))
    if fused.ndim != 2 or fused.shape[1] != 3 * fused.shape[0]:
        raise ValueError(f"expected a fused QKV weight [H, 3H] or bias [1, 3H], got shape {tuple(fused.shape)}")
    hidden = fused.shape[0]
    grouped = fused.T.reshape(heads, 3, hidden // heads, hidden)  # (heads, q|k|v, d, H_in)
    return tuple(grouped[:, j].reshape(hidden, hidden) for j in range(3))


def family_of(name: str) -> str:
    """Converter family of a Hugging Face DeiT parameter name ("other" if none matches)."""
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, name):
            return family
    return "other"


def qkv_column_owners(hidden: int, heads: int, layout: str = "fused") -> pd.DataFrame:
    """Who owns each output column of the QKV projection.

    ``layout="fused"``: the converted weight [H, 3H] with columns q_h0 k_h0 v_h0 | q_h1 k_h1 v_h1 | ...
    (what ``ttnn.transformer.split_query_key_value_and_split_heads`` reads on a sharded tensor);
    ``layout="hf"``: Hugging Face's three projections side by side, [Q | K | V].
    Columns: column, head, part ("q"/"k"/"v"), part_index (0/1/2), offset (position inside the head).
    """
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    head_size = hidden // heads
    column = torch.arange(3 * hidden)
    if layout == "fused":
        head = column // (3 * head_size)
        part = (column % (3 * head_size)) // head_size
    elif layout == "hf":
        part = column // hidden
        head = (column % hidden) // head_size
    else:
        raise ValueError(f"layout must be 'fused' or 'hf', not {layout!r}")
    offset = column % head_size
    return pd.DataFrame(
        {
            "column": column.numpy(),
            "head": head.numpy(),
            "part": [QKV_PARTS[i] for i in part.tolist()],
            "part_index": part.numpy(),
            "offset": offset.numpy(),
        }
    )


def qkv_roundtrip(checkpoint, parameters, layer: int = 0) -> pd.DataFrame:
    """Un-fuse layer ``layer``'s converted QKV weight and bias with ``split_fused_qkv`` and compare every
    head's q/k/v block with Hugging Face's ``q_proj``/``k_proj``/``v_proj``.

    One row per (tensor, head, part): the fused columns it came from, the HF rows it matches,
    ``exact`` (the un-fused block equals HF's rows rounded to the stored dtype, element for element;
    only defined for bfloat16/float32 storage, where rounding is per element), pcc and max_abs_error
    against the fp32 HF values.
    """
    config = checkpoint.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    head_size = hidden // heads
    attention = checkpoint.model.deit.layers[layer].attention
    stored = parameters.layers[layer]
    rows = []
    for kind, fused in (("weight", stored.qkv_weight), ("bias", stored.qkv_bias)):
        elementwise = fused.dtype in (ttnn.bfloat16, ttnn.float32)
        unfused = split_fused_qkv(fused, heads)
        for part_index, (part, projection) in enumerate(zip(QKV_PARTS, ("q_proj", "k_proj", "v_proj"))):
            expected_all = getattr(getattr(attention, projection), kind).detach().float()
            actual_all = unfused[part_index].float()
            for head in range(heads):
                block = slice(head * head_size, (head + 1) * head_size)
                expected, actual = expected_all[block], actual_all[block]
                first_column = head * 3 * head_size + part_index * head_size
                rows.append(
                    {
                        "tensor": kind,
                        "head": head,
                        "part": part,
                        "fused_columns": f"{first_column}-{first_column + head_size - 1}",
                        "hf_rows": f"{block.start}-{block.stop - 1}",
                        "exact": bool(torch.equal(actual, round_to_dtype(expected, fused.dtype).float()))
                        if elementwise
                        else None,
                        "pcc": pcc(actual, expected),
                        "max_abs_error": float((actual - expected).abs().max()),
                    }
                )
    return pd.DataFrame(rows)


def patch_embedding_source(conv_weight: torch.Tensor) -> torch.Tensor:
    """Conv weight (H, 3, p, p) -> a linear weight (H, p*p*4) whose inputs run (kh, kw, c), c padded to 4."""
    padded = torch.nn.functional.pad(conv_weight, (0, 0, 0, 0, 0, PADDED_CHANNELS - conv_weight.shape[1]))
    return padded.permute(0, 2, 3, 1).reshape(conv_weight.shape[0], -1)


def fold_pixels(pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, 224, 224] -> the fold input [B, 224, 14, 64] (NHWC, channels padded to 4).

    ``ttnn.fold(x, stride_h=16, stride_w=1, collapse_output=True)`` then gives one 1024-wide row per patch.
    """
    batch, channels, height, width = pixel_values.shape
    nhwc = torch.nn.functional.pad(pixel_values.permute(0, 2, 3, 1), (0, PADDED_CHANNELS - channels))
    return nhwc.reshape(batch, height, width // SUPPORTED_PATCH_SIZE, SUPPORTED_PATCH_SIZE * PADDED_CHANNELS)


def _torch_specs(checkpoint) -> list[_Spec]:
    model = checkpoint.model
    config = checkpoint.config
    _check_supported(checkpoint)
    deit = model.deit
    heads = config.num_attention_heads
    hidden = config.hidden_size
    specs: list[_Spec] = []

    def add(name, family, kind, role, tensor, valid=None):
        specs.append(_Spec(name, family, kind, role, tensor.detach().to(torch.float32), valid))

    with torch.no_grad():
        embeddings = deit.embeddings
        conv = embeddings.patch_embeddings.projection
        patch_source = patch_embedding_source(conv.weight)
        patch_valid = torch.zeros(patch_source.shape[1], hidden, dtype=torch.bool)
        patch_valid[(torch.arange(patch_source.shape[1]) % PADDED_CHANNELS) < conv.weight.shape[1]] = True
        add("patch_embedding.weight", "patch_embedding", "linear_weight", "matmul_weights", patch_source, patch_valid)
        add("patch_embedding.bias", "patch_embedding", "linear_bias", "matmul_biases", conv.bias)

        add("cls_token", "embeddings", "row_major", "embeddings", embeddings.cls_token.reshape(1, 1, hidden))
        add("distillation_token", "embeddings", "row_major", "embeddings", embeddings.distillation_token.reshape(1, 1, hidden))
        position = embeddings.position_embeddings.reshape(1, -1, hidden)
        tokens, padded_tokens = position.shape[1], padded_sequence_length(config)
        position_valid = torch.zeros(1, padded_tokens, hidden, dtype=torch.bool)
        position_valid[:, :tokens] = True
        position = torch.nn.functional.pad(position, (0, 0, 0, padded_tokens - tokens))
        add("position_embeddings", "embeddings", "tile", "embeddings", position, position_valid)

        for i, layer in enumerate(deit.layers):
            attention, mlp = layer.attention, layer.mlp
            prefix = f"layers.{i}"
            add(f"{prefix}.layernorm_before.weight", "layernorm", "layernorm", "layernorm", layer.layernorm_before.weight)
            add(f"{prefix}.layernorm_before.bias", "layernorm", "layernorm", "layernorm", layer.layernorm_before.bias)
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            qkv_weight = fuse_qkv(*(p.weight for p in projections), heads=heads)
            qkv_bias = fuse_qkv(*(p.bias for p in projections), heads=heads)
            add(f"{prefix}.qkv.weight", "qkv", "linear_weight", "matmul_weights", qkv_weight)
            add(f"{prefix}.qkv.bias", "qkv", "linear_bias", "matmul_biases", qkv_bias)
            add(f"{prefix}.attention_output.weight", "attention_output", "linear_weight", "matmul_weights", attention.o_proj.weight)
            add(f"{prefix}.attention_output.bias", "attention_output", "linear_bias", "matmul_biases", attention.o_proj.bias)
            add(f"{prefix}.layernorm_after.weight", "layernorm", "layernorm", "layernorm", layer.layernorm_after.weight)
            add(f"{prefix}.layernorm_after.bias", "layernorm", "layernorm", "layernorm", layer.layernorm_after.bias)
            add(f"{prefix}.ff1.weight", "ff1", "linear_weight", "matmul_weights", mlp.fc1.weight)
            add(f"{prefix}.ff1.bias", "ff1", "linear_bias", "matmul_biases", mlp.fc1.bias)
            add(f"{prefix}.ff2.weight", "ff2", "linear_weight", "matmul_weights", mlp.fc2.weight)
            add(f"{prefix}.ff2.bias", "ff2", "linear_bias", "matmul_biases", mlp.fc2.bias)

        add("layernorm.weight", "layernorm", "layernorm", "layernorm", deit.layernorm.weight)
        add("layernorm.bias", "layernorm", "layernorm", "layernorm", deit.layernorm.bias)

        num_labels = config.num_labels
        padded_labels = padded_num_labels(num_labels)
        for head in head_names(checkpoint):
            linear = getattr(model, head)
            weight = torch.nn.functional.pad(linear.weight, (0, 0, 0, padded_labels - num_labels))
            bias = torch.nn.functional.pad(linear.bias, (0, padded_labels - num_labels))
            weight_valid = torch.zeros(hidden, padded_labels, dtype=torch.bool)
            weight_valid[:, :num_labels] = True
            bias_valid = torch.zeros(1, padded_labels, dtype=torch.bool)
            bias_valid[:, :num_labels] = True
            add(f"heads.{head}.weight", "classifier", "linear_weight", "matmul_weights", weight, weight_valid)
            add(f"heads.{head}.bias", "classifier", "linear_bias", "matmul_biases", bias, bias_valid)
    return specs


def _check_supported(checkpoint) -> None:
    config = checkpoint.config
    model = checkpoint.model
    problems = []
    if config.image_size != SUPPORTED_IMAGE_SIZE or config.patch_size != SUPPORTED_PATCH_SIZE:
        problems.append(f"image {config.image_size}/patch {config.patch_size} (only 224/16 is laid out)")
    if config.num_channels > PADDED_CHANNELS:
        problems.append(f"{config.num_channels} input channels (at most {PADDED_CHANNELS})")
    head_size, remainder = divmod(config.hidden_size, config.num_attention_heads)
    if remainder or head_size % HEAD_SIZE_MULTIPLE:
        problems.append(f"head size {config.hidden_size}/{config.num_attention_heads} (must be a multiple of {HEAD_SIZE_MULTIPLE})")
    for head in head_names(checkpoint):
        if not isinstance(getattr(model, head, None), torch.nn.Linear):
            problems.append(f"no linear {head} head (num_labels={config.num_labels})")
    if problems:
        raise UserFacingError(
            f"checkpoint {checkpoint.name!r} is not a layout this package converts: {'; '.join(problems)}; "
            "use a DeiT patch16-224 checkpoint (tiny, small or base)"
        )


def _num_tokens(config) -> int:
    return (config.image_size // config.patch_size) ** 2 + 2


# --------------------------------------------------------------------------------------------------
# Step 2: ttnn conversion


def row_major_dtype(dtype: ttnn.DataType) -> ttnn.DataType:
    """Block floats exist only in TILE layout; row-major tensors get bfloat16 instead."""
    return ttnn.bfloat16 if dtype in (ttnn.bfloat8_b, ttnn.bfloat4_b) else dtype


def _to_ttnn(spec: _Spec, policy: DtypePolicy) -> ttnn.Tensor:
    dtype = getattr(policy, spec.role)
    if spec.kind == "linear_weight":
        return preprocess_linear_weight(spec.source, dtype=dtype)
    if spec.kind == "linear_bias":
        return preprocess_linear_bias(spec.source, dtype=dtype)
    if spec.kind == "layernorm":
        return preprocess_layernorm_parameter(spec.source, dtype=dtype)
    if spec.kind == "tile":
        return ttnn.from_torch(spec.source, dtype=dtype, layout=ttnn.TILE_LAYOUT)
    if spec.kind == "row_major":
        return ttnn.from_torch(spec.source, dtype=row_major_dtype(dtype), layout=ttnn.ROW_MAJOR_LAYOUT)
    raise AssertionError(spec.kind)


def _convert(checkpoint, policy: DtypePolicy) -> DeiTParameters:
    prepare_host()  # TILE / block-float conversion needs a cluster description; no-op with a card
    named = {spec.name: _to_ttnn(spec, policy) for spec in _torch_specs(checkpoint)}
    return _assemble(named, checkpoint, policy)


def _assemble(named: dict[str, ttnn.Tensor], checkpoint, policy: DtypePolicy) -> DeiTParameters:
    return DeiTParameters.from_named(
        named,
        policy=policy,
        num_labels=checkpoint.config.num_labels,
        num_layers=checkpoint.config.num_hidden_layers,
        head_names=head_names(checkpoint),
    )


def expected_tensor_names(checkpoint) -> list[str]:
    """Flat names ``convert_parameters`` produces for this checkpoint, in order."""
    return tensor_names(checkpoint.config.num_hidden_layers, head_names(checkpoint))


def convert_parameters(
    checkpoint,
    policy: DtypePolicy | str | None = None,
    cache_dir: str | Path | None | bool = None,
) -> DeiTParameters:
    """Convert ``checkpoint`` to ttnn host tensors with ``policy`` (default: the bf8 policy).

    ``cache_dir``: None uses ``settings.CACHE``, then ~/.cache/deit_tt; a path uses that directory;
    False converts without touching the disk. A cache entry is loaded only if its manifest matches the
    checkpoint identity (and sampled weight values), the policy, LAYOUT_VERSION and the ttnn version,
    and every file's size and sha256 match; otherwise it is rebuilt (one log line says why).
    ``result.cache`` (a ``CacheInfo``) tells what happened and how long it took.
    """
    policy = get_policy(policy)
    prepare_host()
    root = cache_module.resolve_cache_dir(cache_dir)
    start = time.perf_counter()
    if root is None:
        parameters = _convert(checkpoint, policy)
        parameters.cache = CacheInfo("disabled", None, None, seconds=time.perf_counter() - start)
        return parameters

    store = cache_module.ConversionCache(root)
    inputs = cache_module.key_inputs(
        checkpoint.identity, policy, LAYOUT_VERSION, cache_module.weights_sample_digest(checkpoint.model)
    )
    key = cache_module.cache_key(inputs)
    label = f"{checkpoint.short_name}-{policy.name}"
    rebuild_reason = None
    try:
        named, info = store.load(key, inputs, label, expected_tensor_names(checkpoint))
    except cache_module.CacheEntryInvalid as invalid:
        logger.warning("conversion cache entry %s is unusable (%s); rebuilding it", invalid.path, invalid.reason)
        named, rebuild_reason = None, invalid.reason
    if named is not None:
        parameters = _assemble(named, checkpoint, policy)
        info.seconds = time.perf_counter() - start
        parameters.cache = info
        return parameters

    convert_start = time.perf_counter()
    parameters = _convert(checkpoint, policy)
    conversion_seconds = time.perf_counter() - convert_start
    info = store.store(key, inputs, label, parameters.named_tensors(), conversion_seconds=conversion_seconds)
    if rebuild_reason is not None and info.status == "miss":
        info.status, info.reason = "rebuilt", rebuild_reason
    info.seconds = time.perf_counter() - start
    parameters.cache = info
    return parameters


def converted_tensors(checkpoint, parameters: DeiTParameters) -> list[ConvertedTensor]:
    """Every converted tensor with its family and the fp32 original in the same layout (for reports)."""
    named = parameters.named_tensors()
    specs = _torch_specs(checkpoint)
    missing = [spec.name for spec in specs if spec.name not in named]
    if missing or len(specs) != len(named):
        raise ValueError(f"parameters do not belong to this checkpoint (missing {missing[:3]}...)")
    return [ConvertedTensor(spec.name, spec.family, named[spec.name], spec.reference(), spec.valid) for spec in specs]
