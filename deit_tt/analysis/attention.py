"""Where the CLS and the distillation token look: attention maps, rollout, token similarity, overlays.

Token layout of distilled DeiT at 224x224 with 16x16 patches (198 tokens):
index 0 = CLS, index 1 = distillation, 2..197 = the 14x14 patches in row-major order, so patch
``2 + 14 * row + col`` covers pixels ``[16*row : 16*row+16, 16*col : 16*col+16]`` of the 224x224 crop.
(ViT tooling that slices ``[:, 1:]`` is off by one for DeiT-distilled: always slice ``[:, 2:]``.)

Inputs are attention probabilities per layer, ``[B, heads, 198, 198]`` with rows = queries (each row
sums to 1): the pipeline's ``captures[f"layers.{i}.attention_probs"]`` (see ``attention_from_captures``)
or Hugging Face ``outputs.attentions`` from an eager-attention model.

- ``token_attention_map``: one layer, one query token, heads fused by mean/min/max or one head picked.
- ``attention_rollout``: Abnar & Zuidema (2020): per layer ``A_hat = (A_fused + I)``, row-normalised
  (= 0.5 A + 0.5 I when rows sum to 1), multiplied from the first layer to the last; the map is the
  row of the query token over the patches. ``discard_ratio`` zeroes the weakest links first (the
  jacobgil/vit-explain variant; the 2x2 block between the two prefix tokens is never discarded).
- ``token_cosine_similarity``: cosine of the CLS and distillation hidden states after each layer (the
  DeiT paper reports 0.06 for the learned input tokens, rising to 0.93 at the last layer).
- ``map_similarity``: how alike two maps are, as Pearson correlation and Jensen-Shannon divergence (an
  uncentred cosine is close to 1 for any two near-uniform maps and cannot tell them apart).
- ``overlay`` / ``plot_token_maps``: the map upsampled onto the 224x224 crop the model actually saw, on an
  absolute probability scale shared by the maps of one figure (``map_scale``) with a colour bar.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deit_tt.errors import UserFacingError
from deit_tt.data.preprocessing import CROP_SIZE, resize_and_crop
from deit_tt.model.vocabulary import CLS_HEAD, DISTILLATION_HEAD, PREFIX_TOKENS

CLS_INDEX = CLS_HEAD.token
DISTILLATION_INDEX = DISTILLATION_HEAD.token
TOKENS = {"cls": CLS_INDEX, "distillation": DISTILLATION_INDEX, "dist": DISTILLATION_INDEX}
TOKEN_TITLES = {CLS_INDEX: "CLS token", DISTILLATION_INDEX: "distillation token"}
HEAD_FUSIONS = ("mean", "min", "max")
# The captured stages this module reads: probabilities for maps and rollout, hidden states for token similarity.
STAGES_FOR_MAPS = frozenset({"attention_probs", "embeddings", "output", "final_ln"})
# DeiT paper (Touvron et al. 2021, Sec. 4): cosine of the learned CLS and distillation tokens, and of the
# two tokens' embeddings at the last layer, for DeiT-B distilled.
PAPER_TOKEN_COSINE = {"learned tokens": 0.06, "last layer": 0.93}


class AttentionUnavailableError(UserFacingError):
    """Attention probabilities were asked for but are not in the given outputs."""


def token_index(token: str | int) -> int:
    """"cls" -> 0, "distillation" (or "dist") -> 1; integers 0 and 1 pass through."""
    if isinstance(token, str):
        if token.lower() not in TOKENS:
            raise ValueError(f"unknown token {token!r}; use 'cls', 'distillation', 0 or 1")
        return TOKENS[token.lower()]
    if token not in (CLS_INDEX, DISTILLATION_INDEX):
        raise ValueError(f"token index {token!r} is not a prefix token; use 0 (CLS) or 1 (distillation)")
    return int(token)


def grid_side(num_tokens: int) -> int:
    """198 tokens -> 14 (patches per side)."""
    patches = num_tokens - PREFIX_TOKENS
    side = math.isqrt(max(patches, 0))
    if patches <= 0 or side * side != patches:
        raise ValueError(f"{num_tokens} tokens is not 2 prefix tokens + a square grid of patches")
    return side


def patch_token(row: int, col: int, side: int = 14) -> int:
    """Token index of the patch at (row, col) of the grid."""
    return PREFIX_TOKENS + row * side + col


def fuse_heads(attention: torch.Tensor, head: str | int = "mean") -> torch.Tensor:
    """[B, heads, N, N] -> [B, N, N]: mean / min / max over heads, or the single head ``head``."""
    attention = _as_4d(attention)
    if isinstance(head, str):
        if head == "mean":
            return attention.mean(dim=1)
        if head == "min":
            return attention.amin(dim=1)
        if head == "max":
            return attention.amax(dim=1)
        raise ValueError(f"unknown head fusion {head!r}; use one of {HEAD_FUSIONS} or a head index")
    heads = attention.shape[1]
    if not -heads <= head < heads:
        raise ValueError(f"head {head} does not exist: this layer has {heads} heads (0..{heads - 1})")
    return attention[:, head]


def token_attention_map(attentions_layer: torch.Tensor, token: str | int = "cls", head: str | int = "mean") -> torch.Tensor:
    """Attention of ``token`` (query) to every patch (key) in one layer, as a [B, 14, 14] grid.

    The values are attention probabilities (the share of the token's attention going to each patch;
    the rest goes to the two prefix tokens), not rescaled.
    """
    fused = fuse_heads(attentions_layer, head)
    side = grid_side(fused.shape[-1])
    row = fused[:, token_index(token), PREFIX_TOKENS:]
    return row.reshape(-1, side, side).float()


def rollout_matrix(attentions: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """The full rollout [B, N, N] = A_hat(L) ... A_hat(1), each A_hat the row-normalised (fused + I)."""
    attentions = as_attention_list(attentions)
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"unknown head fusion {head_fusion!r}; use one of {HEAD_FUSIONS}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    result = None
    for layer in attentions:
        fused = fuse_heads(layer, head_fusion).double()
        if discard_ratio > 0:
            fused = _discard_lowest(fused, discard_ratio)
        identity = torch.eye(fused.shape[-1], dtype=fused.dtype)
        a_hat = fused + identity
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)  # keepdim: divide each ROW by its own sum
        result = a_hat if result is None else a_hat @ result
    return result.float()


def attention_rollout(
    attentions: Sequence[torch.Tensor], token: str | int = "cls", head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout from ``token`` to the patches through all layers: [B, 14, 14]."""
    rollout = rollout_matrix(attentions, head_fusion, discard_ratio)
    side = grid_side(rollout.shape[-1])
    return rollout[:, token_index(token), PREFIX_TOKENS:].reshape(-1, side, side)


def _discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``int(N*N*ratio)`` entries of each [N, N] matrix, keeping the prefix-token block."""
    batch, n, _ = fused.shape
    count = int(n * n * ratio)
    if count == 0:
        return fused
    flat = fused.reshape(batch, n * n).clone()
    protected = torch.zeros(n, n, dtype=torch.bool)
    protected[:PREFIX_TOKENS, :PREFIX_TOKENS] = True
    ranking = flat.masked_fill(protected.reshape(1, -1), float("inf"))
    lowest = ranking.topk(count, dim=-1, largest=False).indices
    flat.scatter_(1, lowest, 0.0)
    return flat.reshape(batch, n, n)


def attention_from_captures(captures: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per-layer attention probabilities [B, heads, 198, 198] from pipeline (or reference) captures."""
    layers = []
    for key, value in captures.items():
        if key.startswith("layers.") and key.endswith(".attention_probs"):
            layers.append((int(key.split(".")[1]), value))
    if not layers:
        raise AttentionUnavailableError(
            'the captures hold no attention probabilities; run the pipeline with stages={"attention_probs"} '
            "(or, for Hugging Face, output_attentions=True with attn_implementation='eager')"
        )
    layers.sort(key=lambda item: item[0])
    if [index for index, _ in layers] != list(range(len(layers))):
        raise ValueError(f"attention captures are missing layers: found {[index for index, _ in layers]}")
    return [torch.as_tensor(value).float() for _, value in layers]


def as_attention_list(attentions) -> list[torch.Tensor]:
    """Accept pipeline captures, a Hugging Face output (``.attentions``) or a sequence of layers."""
    if hasattr(attentions, "attentions") and not isinstance(attentions, torch.Tensor):
        attentions = attentions.attentions  # a Hugging Face ModelOutput (itself a Mapping)
    elif isinstance(attentions, Mapping):
        return attention_from_captures(attentions)
    if attentions is None or any(layer is None for layer in attentions):
        raise AttentionUnavailableError(
            "attention probabilities are None: Hugging Face returns them only with eager attention; "
            "load the model with attn_implementation='eager' (or call model.set_attn_implementation('eager'))"
        )
    layers = [_as_4d(torch.as_tensor(layer)).float() for layer in attentions]
    if not layers:
        raise ValueError("no attention layers given")
    return layers


def _as_4d(attention: torch.Tensor) -> torch.Tensor:
    attention = torch.as_tensor(attention)
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"expected attention probabilities [batch, heads, tokens, tokens], got shape {tuple(attention.shape)}")
    return attention


def token_attention_stats(attentions) -> pd.DataFrame:
    """Per layer, how the two prefix tokens spend their attention (heads averaged, then batch averaged).

    Columns: ``layer``; ``cls_to_distillation`` = A[0, 1] and ``distillation_to_cls`` = A[1, 0], the
    direct links between the tokens; ``cls_patch_share`` / ``distillation_patch_share``: the part of
    each token's attention that goes to patches (the rest goes to the two prefix tokens);
    ``map_pearson``: Pearson correlation of the two tokens' patch maps (1 = same places, 0 = unrelated);
    ``map_js``: their Jensen-Shannon divergence in bits, each map renormalised to sum 1 (0 = identical, 1 = disjoint);
    ``cls_entropy`` / ``distillation_entropy``: entropy of each patch map renormalised to sum 1,
    divided by log(196), so 1 = spread evenly over all patches and 0 = one patch.
    """

    rows = []
    for index, layer in enumerate(as_attention_list(attentions)):
        fused = fuse_heads(layer, "mean").double()
        patches = fused[:, :PREFIX_TOKENS, PREFIX_TOKENS:]  # [B, 2, 196]
        share = patches.sum(-1)  # [B, 2]
        distribution = patches / share.clamp_min(1e-30)[..., None]
        entropy = -(distribution * distribution.clamp_min(1e-30).log()).sum(-1) / math.log(patches.shape[-1])
        similarity = map_similarity(patches[:, 0], patches[:, 1])
        rows.append(
            {
                "layer": index,
                "cls_to_distillation": float(fused[:, CLS_INDEX, DISTILLATION_INDEX].mean()),
                "distillation_to_cls": float(fused[:, DISTILLATION_INDEX, CLS_INDEX].mean()),
                "cls_patch_share": float(share[:, 0].mean()),
                "distillation_patch_share": float(share[:, 1].mean()),
                "map_pearson": float(similarity["pearson"].mean()),
                "map_js": float(similarity["js"].mean()),
                "cls_entropy": float(entropy[:, 0].mean()),
                "distillation_entropy": float(entropy[:, 1].mean()),
            }
        )
    return pd.DataFrame(rows)


def map_similarity(first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per map of a batch ([B, ...] each, flattened): ``pearson`` correlation and ``js`` Jensen-Shannon divergence
    (bits, of the maps renormalised to sum 1). Two near-uniform maps have an uncentred cosine of almost 1 whatever
    their pattern; both of these measures see the pattern instead."""
    a = torch.as_tensor(first).double().flatten(1)
    b = torch.as_tensor(second).double().flatten(1)
    centred_a, centred_b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denominator = (centred_a.norm(dim=-1) * centred_b.norm(dim=-1)).clamp_min(1e-300)
    pearson = (centred_a * centred_b).sum(-1) / denominator
    p, q = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    middle = 0.5 * (p + q)

    def kl(x, y):
        return torch.where(x > 0, x * (x.clamp_min(1e-300) / y.clamp_min(1e-300)).log2(), 0.0).sum(-1)

    return {"pearson": pearson, "js": 0.5 * kl(p, middle) + 0.5 * kl(q, middle)}


def row_sum_deviation(attentions) -> float:
    """Largest |sum of a query row - 1| over all layers, images, heads and queries of stored probabilities.

    A softmax row sums to 1; stored in bfloat8_b every probability is rounded to a step set by the largest
    value of its 16-value block, so the stored rows sum to 1 only up to the rounding of ~200 values."""
    return max(float((layer.double().sum(-1) - 1.0).abs().max()) for layer in as_attention_list(attentions))


def padded_key_mass(captures: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Softmax probability that real query tokens give to the padded keys, per layer.

    ``captures`` holds ``layers.<i>.attention_probs`` restricted to the real tokens ([B, heads, 198, 198]), so each
    query row sums to 1 minus what went to keys 198..223. Columns: layer, mean_mass, max_mass (over images, heads
    and queries). With the key-padding mask both are ~0; without it they measure the leak.
    """
    rows = []
    for layer, probabilities in enumerate(attention_from_captures(captures)):
        leaked = (1.0 - probabilities.double().sum(dim=-1)).clamp_min(0.0)
        rows.append({"layer": layer, "mean_mass": float(leaked.mean()), "max_mass": float(leaked.max())})
    return pd.DataFrame(rows, columns=["layer", "mean_mass", "max_mass"])


def attention_agreement(captures, reference) -> pd.DataFrame:
    """Per layer, PCC between two runs' attention (e.g. ttnn vs Hugging Face): of the full probabilities
    [B, heads, 198, 198], of the CLS and distillation maps (head mean) and of the two rollouts up to that
    layer; plus the largest absolute difference of a probability."""

    from deit_tt.analysis.pcc import pcc

    ours, theirs = as_attention_list(captures), as_attention_list(reference)
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} attention layers vs {len(theirs)} in the reference")
    rows = []
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            raise ValueError(f"layer {index}: attention shape {tuple(a.shape)} vs reference {tuple(b.shape)}")
        row = {"layer": index, "pcc_probabilities": pcc(a, b)}
        for token in ("cls", "distillation"):
            row[f"pcc_{token}_map"] = pcc(token_attention_map(a, token), token_attention_map(b, token))
        for token in ("cls", "distillation"):
            row[f"pcc_{token}_rollout"] = pcc(attention_rollout(ours[: index + 1], token), attention_rollout(theirs[: index + 1], token))
        row["max_abs_error"] = float((a - b).abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- token similarity


def _cosine(hidden: torch.Tensor, other: int | str = DISTILLATION_INDEX) -> float:
    hidden = torch.as_tensor(hidden).double()
    partner = hidden[:, PREFIX_TOKENS:] if other == "patches" else hidden[:, other : other + 1]
    cos = torch.nn.functional.cosine_similarity(hidden[:, CLS_INDEX : CLS_INDEX + 1], partner, dim=-1)
    return float(cos.mean().clamp(-1.0, 1.0))


def token_cosine_similarity(captures, other: int | str = DISTILLATION_INDEX) -> pd.DataFrame:
    """Cosine similarity of the CLS and distillation token states at each depth, averaged over the batch.

    ``other="patches"`` compares the CLS token with every patch token instead (mean over patches): when that
    is as high as CLS vs distillation, the two tokens are alike only because all tokens are.

    ``captures``: pipeline/reference captures (uses "embeddings", "layers.{i}.output" and, when
    present, "final_ln"), or a sequence of hidden states [B, 198, H] (Hugging Face ``hidden_states``:
    embeddings first, then one per layer).

    Returns a DataFrame with one row per depth: ``stage`` ("embeddings", "layer 0", ..., "final_ln"),
    ``depth`` (0 = input embeddings incl. position embeddings, i + 1 = after layer i; final_ln has the
    depth of the last layer) and ``cosine``.
    """

    rows = []
    if isinstance(captures, Mapping):
        if "embeddings" in captures:
            rows.append(("embeddings", 0, _cosine(captures["embeddings"], other)))
        outputs = sorted(
            (int(key.split(".")[1]), value)
            for key, value in captures.items()
            if key.startswith("layers.") and key.endswith(".output")
        )
        if not outputs:
            raise UserFacingError("the captures hold no layer outputs; run the pipeline with stages=attention.STAGES_FOR_MAPS")
        for index, value in outputs:
            rows.append((f"layer {index}", index + 1, _cosine(value, other)))
        if "final_ln" in captures:
            rows.append(("final_ln", len(outputs), _cosine(captures["final_ln"], other)))
    else:
        states = list(captures)
        for depth, value in enumerate(states):
            rows.append(("embeddings" if depth == 0 else f"layer {depth - 1}", depth, _cosine(value, other)))
    return pd.DataFrame(rows, columns=["stage", "depth", "cosine"])


def random_network_cosine(config, pixel_values: torch.Tensor, seed: int = 1) -> pd.DataFrame:
    """:func:`token_cosine_similarity` of an untrained DeiT of ``config``'s shape (``random:*`` initialisation,
    ``seed``) on the same pixels, in float32 PyTorch: the baseline a trained model's curve is read against.

    It rises too: with random weights the attention is nearly uniform, so every layer adds almost the same
    average of all tokens to each of them, and the tokens converge (the rank collapse of deep attention)."""
    from deit_tt.checkpoints.loading import random_model

    model = random_model(config, seed)
    with torch.no_grad():
        hidden = model.deit(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    del model
    return token_cosine_similarity(hidden)


def learned_token_cosine(model) -> float:
    """Cosine of the learned CLS and distillation token parameters (the paper's 0.06 for DeiT-B).

    ``model``: a Hugging Face DeiT model (or a ``Checkpoint``, whose ``.model`` is used).
    """
    model = getattr(model, "model", model)
    embeddings = model.deit.embeddings if hasattr(model, "deit") else model.embeddings
    cls = embeddings.cls_token.detach().double().reshape(-1)
    dist = embeddings.distillation_token.detach().double().reshape(-1)
    return float(torch.nn.functional.cosine_similarity(cls, dist, dim=0))


# ---------------------------------------------------------------- display


def model_view(image: Image.Image) -> Image.Image:
    """The 224x224 crop the model sees, before normalisation; attention maps align with it patch for patch."""
    return resize_and_crop(image.convert("RGB"))


def map_scale(*maps) -> tuple[float, float]:
    """(0, largest value) over ``maps``: one absolute scale for every map of a figure, so that equal colours mean
    equal probabilities (a map stretched to its own range turns 0.0048-0.0053 into full contrast)."""
    high = max(float(torch.as_tensor(m).max()) for m in maps)
    return 0.0, high if high > 0 else 1.0


def normalise_map(attention_map, scale: tuple[float, float] | None = None) -> np.ndarray:
    """Scale a map to [0, 1] for display: by ``scale`` = (low, high) when given (values outside are clipped),
    else by its own min-max range (a constant map becomes all zeros)."""
    array = np.asarray(torch.as_tensor(attention_map).detach().float().cpu(), dtype=np.float64)
    low, high = scale if scale is not None else (float(array.min()), float(array.max()))
    return np.clip((array - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(array)


def upsample_map(attention_map, size: int = CROP_SIZE, mode: str = "bilinear", scale: tuple[float, float] | None = None) -> np.ndarray:
    """[14, 14] -> [size, size] in [0, 1]; ``mode`` "bilinear" (smooth) or "nearest" (patch blocks); ``scale``
    as in :func:`normalise_map`."""
    grid = torch.from_numpy(normalise_map(attention_map, scale)).float()[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    up = torch.nn.functional.interpolate(grid, size=(size, size), mode=mode, **kwargs)
    return up[0, 0].clamp(0, 1).numpy()


def overlay(
    image: Image.Image,
    attention_map,
    alpha: float = 0.55,
    cmap: str = "inferno",
    mode: str = "bilinear",
    crop: bool = True,
    scale: tuple[float, float] | None = None,
) -> Image.Image:
    """The attention map as a heat map over the image the model saw; returns a 224x224 RGB image.

    ``image``: the original picture (``crop=True``: it is cut to the model's 224x224 view first) or an
    already cropped square. ``attention_map``: [14, 14] (a [1, 14, 14] batch of one is accepted).
    ``scale``: the (low, high) probabilities mapped to the ends of ``cmap`` (see :func:`map_scale`); None
    stretches the map to its own range, which shows where it is largest but not how large.
    """
    import matplotlib

    view = model_view(image) if crop else image.convert("RGB")
    attention_map = torch.as_tensor(attention_map)
    if attention_map.ndim == 3 and attention_map.shape[0] == 1:
        attention_map = attention_map[0]
    if attention_map.ndim != 2:
        raise ValueError(f"expected one [rows, cols] attention map, got shape {tuple(attention_map.shape)}")
    heat = upsample_map(attention_map, size=view.width, mode=mode, scale=scale)
    if view.height != view.width:
        heat = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize(view.size, Image.Resampling.BILINEAR)) / 255.0
    colours = matplotlib.colormaps[cmap](heat)[..., :3]
    base = np.asarray(view, dtype=np.float64) / 255.0
    blended = (1.0 - alpha) * base + alpha * colours
    return Image.fromarray(np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8))


def plot_token_maps(
    image: Image.Image,
    cls_map,
    distillation_map,
    title: str | None = None,
    axes=None,
    alpha: float = 0.55,
    cmap: str = "inferno",
    show_image: bool = True,
    scale: tuple[float, float] | None = None,
):
    """Draw the model's view, the CLS map and the distillation map side by side; returns the Figure.

    Both maps share one absolute ``scale`` (default: :func:`map_scale` of the two). Without ``axes`` the figure
    gets a colour bar; pass ``axes`` (a row of 3 axes, or 2 with ``show_image=False``) to draw into an existing
    grid and add the colour bar yourself with :func:`add_map_colorbar`.
    """
    from matplotlib.figure import Figure

    panels = 3 if show_image else 2
    own_axes = axes is None
    if own_axes:
        figure = Figure(figsize=(3.2 * panels, 3.6), layout="constrained")
        axes = figure.subplots(1, panels)
    else:
        figure = axes[0].figure
    scale = scale or map_scale(cls_map, distillation_map)
    view = model_view(image)
    items = [("model input (224x224 crop)", view)] if show_image else []
    items += [("CLS token", overlay(view, cls_map, alpha, cmap, crop=False, scale=scale)),
              ("distillation token", overlay(view, distillation_map, alpha, cmap, crop=False, scale=scale))]
    for axis, (label, picture) in zip(axes, items):
        axis.imshow(picture)
        axis.set_title(label, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    if own_axes:
        add_map_colorbar(figure, axes[-2:], scale, cmap)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def add_map_colorbar(figure, axes, scale: tuple[float, float], cmap: str = "inferno", label: str = "attention probability"):
    """A colour bar for overlays drawn with ``scale`` (the heat map's colours; the photo underneath is blended in)."""
    from matplotlib import cm, colors

    mappable = cm.ScalarMappable(norm=colors.Normalize(*scale), cmap=cmap)
    return figure.colorbar(mappable, ax=axes, shrink=0.85, label=label)


def figure_to_png(figure, dpi: int = 90) -> bytes:
    """Render a matplotlib Figure to PNG bytes (no pyplot, no display needed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
