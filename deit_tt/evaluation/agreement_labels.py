"""Label a dataset with a PyTorch model's own predictions, so that accuracy measures agreement with it.

On synthetic images (or with random weights) the true labels are unreachable and every accuracy is 0 %. Labelled
with the fp32 Hugging Face model's top-1 instead, top-1/top-5, per-class accuracy and the confusions of an
evaluation answer one question: *would the card (or the host emulation) predict what PyTorch predicts?*
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from deit_tt.data.imagenet import ImageNetDataset
from deit_tt.data.images import ImageError


def label_with_reference(dataset: ImageNetDataset, model, preprocess, batch_size: int = 8) -> ImageNetDataset:
    """A copy of ``dataset`` whose labels are ``model``'s top-1 (its output logits, float32) on each image.

    ``preprocess`` turns a PIL image into [3, 224, 224] (e.g. a ``deit_tt.evaluation.Preprocessor``). Images that do
    not decode keep their label (the evaluation records them as corrupt either way).
    """
    labels = {}
    decoded = []
    for sample in dataset.samples:
        try:
            decoded.append((sample.image_id, preprocess(dataset.load(sample))))
        except ImageError:
            continue
    dtype = next(model.parameters()).dtype
    for start in tqdm(range(0, len(decoded), batch_size), desc="PyTorch fp32 labels"):
        chunk = decoded[start : start + batch_size]
        with torch.no_grad():
            logits = model(pixel_values=torch.stack([pixels for _, pixels in chunk]).to(dtype)).logits
        labels.update({image_id: int(label) for (image_id, _), label in zip(chunk, logits.argmax(-1))})
    samples = [sample._replace(label=labels.get(sample.image_id, sample.label)) for sample in dataset.samples]
    note = "labels: the fp32 PyTorch model's own top-1 predictions (accuracy = agreement with PyTorch)"
    return dataclasses.replace(dataset, samples=samples, notes=[*dataset.notes, note])
