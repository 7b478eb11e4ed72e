"""Image classification with a DeiT pipeline: top-k of the CLS head, the distillation head and their average.

Scores are softmax probabilities. The averaged head is the model's own output: the mean of the two
heads' logits (what the released DeiT code and Hugging Face return), then a softmax. For a plain
``DeiTForImageClassification`` checkpoint there is no distillation head and the average is the CLS head.

The JSON form (``to_json``) is the one hosted image-classification endpoints use: one entry per image,
a list of ``{"label": ..., "score": ...}`` sorted by score, descending, from the averaged head; an image
that could not be used is ``{"error": "..."}`` in its slot.

A user's photo is decoded the way an image viewer shows it, EXIF orientation applied (a phone photo
stored sideways comes out upright); evaluation does not apply it (``ImageNetDataset.load``). Each image is
decoded and preprocessed on its own, so only one full-size picture is in memory at a time, whatever the batch.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from PIL import Image

from deit_tt.errors import UserFacingError
from deit_tt.data.images import ImageError, load_image
from deit_tt.checkpoints.labels import head_class_names, short_name
from deit_tt.data.preprocessing import official_transform, preprocess

DEFAULT_TOP_K = 5
DEFAULT_CHUNK = 8


@dataclass(frozen=True)
class Prediction:
    index: int  # class index of the head (sorted WordNet synsets for ImageNet)
    label: str
    score: float  # softmax probability

    def as_dict(self) -> dict:
        return {"label": self.label, "score": self.score}


@dataclass
class ClassificationResult:
    """The outcome for one image: predictions, or ``error`` (a one-line message) when it could not be used."""

    name: str
    average: list[Prediction] = field(default_factory=list)
    cls: list[Prediction] = field(default_factory=list)
    distillation: list[Prediction] | None = None  # None for a checkpoint without a distillation head
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top1(self) -> Prediction | None:
        return self.average[0] if self.average else None

    def as_json(self):
        if self.error is not None:
            return {"error": self.error}
        return [prediction.as_dict() for prediction in self.average]


def top_predictions(logits: torch.Tensor, names: Sequence[str], k: int = DEFAULT_TOP_K) -> list[Prediction]:
    """Softmax over one row of logits [C] and the k most probable classes, most probable first."""
    probabilities = torch.softmax(torch.as_tensor(logits).double(), dim=-1)
    k = max(1, min(k, probabilities.numel()))
    scores, indices = probabilities.topk(k)
    return [Prediction(int(i), names[int(i)], float(s)) for s, i in zip(scores, indices)]


def results_from_output(output, names: Sequence[str], image_names: Sequence[str], k: int = DEFAULT_TOP_K) -> list[ClassificationResult]:
    """``TtDeiTOutput`` of a batch -> one ClassificationResult per image."""
    results = []
    for row, name in enumerate(image_names):
        distillation = None
        if output.distillation_logits is not None:
            distillation = top_predictions(output.distillation_logits[row], names, k)
        results.append(
            ClassificationResult(
                name=name,
                average=top_predictions(output.logits[row], names, k),
                cls=top_predictions(output.cls_logits[row], names, k),
                distillation=distillation,
            )
        )
    return results


def classify_images(pipeline, images: Sequence[Image.Image], names: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K) -> list[ClassificationResult]:
    """Classify decoded RGB images (preprocessed with ``deit_tt.data.preprocessing.preprocess``)."""
    images = list(images)
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if not images:
        return []
    return classify_pixels(pipeline, preprocess(images), names, top_k)


def classify_pixels(pipeline, pixel_values: torch.Tensor, names: Sequence[str], top_k: int = DEFAULT_TOP_K) -> list[ClassificationResult]:
    """Classify preprocessed images [B, 3, 224, 224]; non-finite logits are an error naming the checkpoint."""
    output = pipeline(pixel_values)
    heads = [output.logits, output.cls_logits] + ([output.distillation_logits] if output.distillation_logits is not None else [])
    if not all(bool(torch.isfinite(logits.float()).all()) for logits in heads):
        raise UserFacingError(
            f"{pipeline.checkpoint.name} gave non-finite logits (NaN or infinity): its weights are probably damaged; "
            "re-download or re-save the checkpoint"
        )
    return results_from_output(output, head_class_names(pipeline.checkpoint.config), names, top_k)


def classify_sources(
    pipeline, sources: Sequence[tuple[str, object]], top_k: int = DEFAULT_TOP_K, chunk_size: int | None = None, progress: bool = False
) -> list[ClassificationResult]:
    """Classify ``(name, path-or-bytes)`` items; an item that is not a usable image gets an error result.

    A source may also be an ``Exception`` (e.g. undecodable base64): it becomes an error result.
    Images are decoded and run ``chunk_size`` at a time (default: one forward of the pipeline, all chips).
    """
    pipeline.runtime.require_values("classify")
    chunk_size = chunk_size or getattr(pipeline, "images_per_forward", None) or DEFAULT_CHUNK
    results: list[ClassificationResult | None] = [None] * len(sources)
    pending: list[tuple[int, str, torch.Tensor]] = []  # preprocessed: a decoded full-size image lives only in its turn
    bar = None
    if progress and len(sources) > chunk_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="classifying", unit="image", leave=False, disable=None)  # None: only on a terminal

    def flush():
        if not pending:
            return
        batch = classify_pixels(pipeline, torch.stack([pixels for _, _, pixels in pending]), [name for _, name, _ in pending], top_k)
        for (slot, _, _), result in zip(pending, batch):
            results[slot] = result
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    for slot, (name, source) in enumerate(sources):
        if isinstance(source, Exception):
            results[slot] = ClassificationResult(name=name, error=str(source))
            continue
        try:
            pending.append((slot, name, official_transform(load_image(source, name, exif_orientation=True))))
        except ImageError as error:
            results[slot] = ClassificationResult(name=name, error=str(error))
            if bar is not None:
                bar.update(1)
            continue
        if len(pending) >= chunk_size:
            flush()
    flush()
    if bar is not None:
        bar.close()
    return results


def decode_input_data(text: str) -> list[tuple[str, bytes | Exception]]:
    """Parse ``{"input_data": ["<base64>", ...]}`` into ``(name, bytes)`` items named ``stdin[i]``.

    Each entry may be plain base64 or a ``data:image/...;base64,`` URL. An entry that does not decode
    becomes an ``ImageError`` in its slot; a payload that is not of this shape raises ``UserFacingError``.
    """
    hint = 'pipe JSON of the form {"input_data": ["<base64 image>", ...]} to stdin'
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserFacingError(f"stdin is not valid JSON ({error.msg} at line {error.lineno}); {hint}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("input_data"), list):
        raise UserFacingError(f'stdin JSON has no "input_data" list; {hint}')
    items: list[tuple[str, bytes | Exception]] = []
    for index, entry in enumerate(payload["input_data"]):
        name = f"stdin[{index}]"
        if not isinstance(entry, str):
            items.append((name, ImageError(name, "not_image", f"is a JSON {type(entry).__name__}, not a base64 string; {hint}")))
            continue
        if entry.startswith("data:") and "," in entry:
            entry = entry.split(",", 1)[1]
        try:
            items.append((name, base64.b64decode("".join(entry.split()), validate=True)))
        except (binascii.Error, ValueError):
            items.append((name, ImageError(name, "not_image", "is not valid base64; encode the image file's bytes with base64")))
    return items


def to_json(results: Iterable[ClassificationResult]) -> list:
    """The endpoint format: per image a list of {"label", "score"} (averaged head), or {"error"}."""
    return [result.as_json() for result in results]


def format_table(results: Sequence[ClassificationResult], label_width: int = 26) -> str:
    """Human-readable top-k per image: the averaged head, the CLS head and the distillation head."""
    lines = []
    for result in results:
        if lines:
            lines.append("")
        if not result.ok:
            # the message already starts with the file name
            message = result.error if result.error.startswith(result.name) else f"{result.name}: {result.error}"
            lines.append(f"ERROR {message}")
            continue
        lines.append(f"{result.name}")
        columns = [("average of heads", result.average), ("CLS head", result.cls)]
        if result.distillation is not None:
            columns.append(("distillation head", result.distillation))
        cell = label_width + 8
        lines.append("   # " + "".join(f"{title:<{cell}}" for title, _ in columns).rstrip())
        for rank in range(len(result.average)):
            cells = []
            for _, predictions in columns:
                prediction = predictions[rank]
                label = _clip(short_name(prediction.label), label_width)
                cells.append(f"{prediction.score:6.4f}  {label:<{label_width}}")
            lines.append(f"  {rank + 1:>2} " + "".join(cells).rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"
