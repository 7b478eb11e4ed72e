"""Class folders named by a checkpoint's labels (``DIR/<label>/<image>``): how people evaluate a DeiT
fine-tuned on their own data.

A folder names a label of the checkpoint (its ``config.id2label``) when its name

1. is exactly the label, or else
2. equals the label once both are *folded*: case ignored, and every run of spaces, underscores and
   characters a folder name cannot hold (``/ \\ : * ? " < > |``) read as one space, so the label
   "Golden retriever" can be the folder ``golden_retriever`` and "cat/dog" the folder ``cat_dog``,
   provided that no other label folds to the same name.

Every folder that holds images must name a label; two folders may not name the same label, and a
folder named by a label must hold images (directly, not in sub-folders). Labels without a folder
are fine: the summary covers the classes present. Images directly in DIR and empty folders named by
no label are ignored, with a note.

Image ids are ``<folder>/<file name>``. The evaluation order takes the classes in turn (the first
image of every class, in label order, then the second, ...; files sorted by name within a class), so
the first N images that ``--limit N`` evaluates cover the classes evenly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from deit_tt.data.imagenet import SYNSET_PATTERN, DatasetError, ImageNetDataset, Sample, has_images, is_image_entry, quote_examples, scan_folder

_SEPARATORS = re.compile(r'[\s_/\\:*?"<>|]+')
_SPLIT_FOLDERS = {"train", "val", "validation", "test"}


def fold(name: str) -> str:
    """The name as matching compares it when it is not an exact label (see the module docstring)."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


def match_folders(root: Path, folders: Sequence[str], labels: Sequence[str], model: str) -> dict[str, int]:
    """{folder name: label index} for folders that all name labels; a one-line ``DatasetError`` otherwise."""
    exact = {label: index for index, label in enumerate(labels)}
    folded: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        folded.setdefault(fold(label), []).append(index)
    matched: dict[str, int] = {}
    unknown: list[str] = []
    for folder in folders:
        if folder in exact:
            matched[folder] = exact[folder]
            continue
        candidates = folded.get(fold(folder), [])
        if len(candidates) > 1:
            raise DatasetError(
                f"{root}: folder {folder!r} could be label {labels[candidates[0]]!r} or {labels[candidates[1]]!r} of {model} "
                "(they differ only in case, spaces or underscores); rename the folder to one of them exactly"
            )
        if candidates:
            matched[folder] = candidates[0]
        else:
            unknown.append(folder)
    if unknown:
        raise _unknown_folders(root, unknown, sorted(matched), labels, model)
    by_label: dict[int, str] = {}
    for folder, index in sorted(matched.items()):
        if index in by_label:
            raise DatasetError(
                f"{root}: folders {by_label[index]!r} and {folder!r} both name label {labels[index]!r} of {model}; "
                "merge them into one folder"
            )
        by_label[index] = folder
    return matched


def _unknown_folders(root: Path, unknown: list[str], matched: list[str], labels: Sequence[str], model: str) -> DatasetError:
    synsets = [name for name in unknown if SYNSET_PATTERN.match(name)]
    some_labels = quote_examples(labels)
    if matched and synsets:
        return DatasetError(
            f"{root} mixes folders named by labels of {model} ({quote_examples(matched)}) with ImageNet synset folders "
            f"({quote_examples(synsets)}); evaluate one kind at a time: move the synset folders out"
        )
    if synsets and len(synsets) == len(unknown):
        return DatasetError(
            f"{root} holds ImageNet synset folders ({quote_examples(synsets)}), but {model} classifies {len(labels)} classes "
            f"of its own ({some_labels}); evaluate ImageNet with an ImageNet-1k checkpoint "
            "(e.g. --model facebook/deit-base-distilled-patch16-224), or pass class folders named by its labels"
        )
    return DatasetError(
        f"{root}: {len(unknown)} of {len(unknown) + len(matched)} class folders are not labels of {model} "
        f"({quote_examples(unknown)}); its {len(labels)} labels are {some_labels}: rename the folders to labels "
        "(case, spaces and underscores do not matter) or move them out"
    )


def open_class_folders(path: str | os.PathLike, labels: Sequence[str], model: str = "the checkpoint") -> ImageNetDataset:
    """The images of ``path``/<label>/, labelled by their index in ``labels`` (a checkpoint's head, in index order)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"dataset folder {root} {what}; pass --data DIR with one sub-folder of images per class, named by {model}'s labels")
    subdirs, loose = scan_folder(root)
    populated = [folder for folder in subdirs if has_images(folder)]
    if not populated:
        raise _no_class_folders(root, subdirs, labels, model)
    names = [folder.name for folder in subdirs]
    matched = match_folders(root, [folder.name for folder in populated], labels, model)
    empty_labels = [name for name in names if name not in matched and _names_label(name, labels)]
    if empty_labels:
        nested = any(any(p.is_dir() for p in (root / name).iterdir()) for name in empty_labels)
        raise DatasetError(
            f"{root}: class folder(s) {quote_examples(empty_labels)} hold no images"
            + (" (images must be directly in the class folder, not in sub-folders)" if nested else "")
            + "; add images or remove the folder"
        )
    samples = _interleaved(root, populated, matched)
    notes = []
    if loose:
        notes.append(f"ignored {len(loose)} image(s) directly in {root} (outside the class folders)")
    ignored = [name for name in names if name not in matched]
    if ignored:
        notes.append(f"ignored {len(ignored)} empty folder(s) not named by a label ({quote_examples(ignored)})")
    return ImageNetDataset("folder", root, samples, notes=notes, class_names=list(labels))


def _names_label(name: str, labels: Sequence[str]) -> bool:
    return name in labels or fold(name) in {fold(label) for label in labels}


def _no_class_folders(root: Path, subdirs: list[Path], labels: Sequence[str], model: str) -> DatasetError:
    splits = sorted(folder.name for folder in subdirs if folder.name.lower() in _SPLIT_FOLDERS)
    if splits:
        return DatasetError(
            f"{root} holds split folders ({', '.join(splits)}) but no class folders with images; "
            f"pass one split itself: --data {root / splits[0]}"
        )
    return DatasetError(
        f"{root} has no class folders with images; pass a folder with one sub-folder of images per class, "
        f"named by {model}'s labels ({quote_examples(labels)})"
    )


def _interleaved(root: Path, folders: list[Path], matched: dict[str, int]) -> list[Sample]:
    """Classes in turn, in label order; files by name within a class."""
    per_class = []
    for folder in sorted(folders, key=lambda f: matched[f.name]):
        files = sorted(entry.name for entry in os.scandir(folder) if is_image_entry(entry))
        per_class.append([Sample(f"{folder.name}/{name}", str(folder / name), matched[folder.name]) for name in files])
    longest = max(len(samples) for samples in per_class)
    return [samples[rank] for rank in range(longest) for samples in per_class if rank < len(samples)]
