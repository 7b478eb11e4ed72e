"""Class names of a checkpoint's head, and the ImageNet-1k ids and names in the order of DeiT's heads.

A checkpoint names its classes in ``config.id2label``. Fine-tuned checkpoints carry their own
names there; a checkpoint saved without names gets transformers' generic ``LABEL_0``, ``LABEL_1``...
:func:`head_class_names` uses the checkpoint's names whenever it has real ones, and falls back to
ImageNet-1k only for a 1000-way head whose names are missing or generic.

The ImageNet heads use lexicographically sorted WordNet synset ids (index 0 = n01440764 "tench",
999 = n15075141 "toilet tissue"). Names are not unique ("crane" is both 134 and 517), so
classes must be matched by index or synset, never by name.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

NUM_CLASSES = 1000
_GENERIC_LABEL = re.compile(r"LABEL_(\d+)")  # what transformers fills in when a config names no classes


def head_class_names(config) -> list[str]:
    """Names of the classes of ``config``'s head (a transformers config), in head index order.

    The checkpoint's own ``id2label`` when it names every class and not all names are generic;
    otherwise the ImageNet-1k names for a 1000-way head, and ``class i`` for any other head.
    """
    num_classes = config.num_labels
    own = _own_class_names(getattr(config, "id2label", None) or {}, num_classes)
    if own is not None:
        return own
    if num_classes == NUM_CLASSES:
        return imagenet_class_names()
    return [f"class {index}" for index in range(num_classes)]


def own_class_names(config) -> list[str] | None:
    """The checkpoint's own class names, in head index order; None when it names no classes (``id2label``
    missing, incomplete or generic) or when its names are ImageNet-1k's."""
    own = _own_class_names(getattr(config, "id2label", None) or {}, config.num_labels)
    return None if own is None or own == imagenet_class_names() else own


def _own_class_names(id2label: dict, num_classes: int) -> list[str] | None:
    """``id2label`` as a list (keys may be ints or, straight from JSON, strings), or None if incomplete or generic."""
    names = [id2label.get(index, id2label.get(str(index))) for index in range(num_classes)]
    if any(name is None for name in names):
        return None
    names = [str(name) for name in names]
    if all(_is_generic(name, index) for index, name in enumerate(names)):
        return None
    return names


def _is_generic(name: str, index: int) -> bool:
    match = _GENERIC_LABEL.fullmatch(name)
    return match is not None and int(match[1]) == index


@functools.cache
def _rows() -> tuple[tuple[str, str], ...]:
    text = resources.files("deit_tt").joinpath("assets/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith(("#", "index\t"))]
    if [int(index) for index, _, _ in rows] != list(range(NUM_CLASSES)):
        raise RuntimeError("deit_tt/assets/imagenet_classes.tsv is damaged: expected indices 0..999 in order")
    return tuple((synset, name) for _, synset, name in rows)


def imagenet_synsets() -> list[str]:
    """The 1000 synset ids, index i = class i of the heads."""
    return [synset for synset, _ in _rows()]


def imagenet_class_names() -> list[str]:
    """The 1000 WordNet lemmas, index i = class i of the heads (the same strings as HF's id2label)."""
    return [name for _, name in _rows()]


def short_name(name: str) -> str:
    """First lemma of a class name: "tench, Tinca tinca" -> "tench"."""
    return name.split(",")[0].strip()
