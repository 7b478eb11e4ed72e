"""Which data a checkpoint is evaluated on: ImageNet-1k, or class folders named by its own labels.

``open_evaluation_dataset(path, checkpoint)`` decides from the checkpoint's head and the folder names:

- a head whose classes are ImageNet-1k's (1000 classes named as ImageNet's, or not named at all):
  ImageNet (``deit_tt.data.imagenet``: synset folders, a flat folder with LOC_val_solution.csv, or a Hugging
  Face copy), with every ImageNet guard;
- a head with labels of its own (``config.id2label``): class folders named by those labels
  (``deit_tt.data.class_folders``) as soon as one folder with images is named by a label. A 1000-class head
  that only renames ImageNet's classes still reads the ImageNet layouts when no folder names a label;
- a head with fewer or more than 1000 classes and no names: refused (nothing to match folders to).
"""

from __future__ import annotations

import os
from pathlib import Path

from deit_tt.data.class_folders import fold, open_class_folders
from deit_tt.data.imagenet import DatasetError, ImageNetDataset, has_images, open_dataset, scan_folder
from deit_tt.checkpoints.labels import NUM_CLASSES, own_class_names


def open_evaluation_dataset(
    path: str | os.PathLike, checkpoint, layout: str = "auto", ground_truth: str | os.PathLike | None = None
) -> ImageNetDataset:
    """The dataset at ``path`` for ``checkpoint`` (anything with ``.config`` and ``.name``), labelled in its head's order."""
    config, model = checkpoint.config, checkpoint.name
    labels = own_class_names(config)
    imagenet_head = config.num_labels == NUM_CLASSES
    if labels is None:
        if imagenet_head:
            return open_dataset(path, layout, ground_truth)
        raise DatasetError(
            f"{model} names none of its {config.num_labels} classes (config.id2label is missing or LABEL_0, LABEL_1, ...), "
            "so class folders cannot be matched to them; save the checkpoint with id2label set to your class names"
        )
    if layout in ("flat", "hf") or ground_truth is not None:
        if imagenet_head:
            return open_dataset(path, layout, ground_truth)
        raise DatasetError(
            f"--layout {layout} and --ground-truth are for ImageNet-1k, but {model} has {len(labels)} labels of its own; "
            "pass class folders named by its labels (--layout auto or folder)"
        )
    if imagenet_head and not _names_a_label(Path(path).expanduser(), labels):
        return open_dataset(path, layout, ground_truth)
    return open_class_folders(path, labels, model)


def require_folder(path: str | os.PathLike) -> Path:
    """``path`` when it is a folder; otherwise a ``DatasetError`` that says what ``--data`` takes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} {'is a file' if root.exists() else 'does not exist'}; pass --data DIR: ImageNet validation "
            "images (synset folders n01440764/..., a flat folder with LOC_val_solution.csv, a Hugging Face copy), or one "
            "folder of images per class named by the checkpoint's labels"
        )
    return root


def _names_a_label(root: Path, labels: list[str]) -> bool:
    """Whether a class folder of ``root`` that holds images is named by one of ``labels``."""
    if not root.is_dir():
        return False
    folded = {fold(label) for label in labels}
    return any(fold(folder.name) in folded for folder in scan_folder(root)[0] if has_images(folder))
