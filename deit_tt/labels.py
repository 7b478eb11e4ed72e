"""ImageNet-1k class ids and names in the order of DeiT's 1000-way heads.

The heads use lexicographically sorted WordNet synset ids (index 0 = n01440764 "tench",
999 = n15075141 "toilet tissue"). Names are not unique ("crane" is both 134 and 517), so
classes must be matched by index or synset, never by name.
"""

from __future__ import annotations

import functools
from importlib import resources

NUM_CLASSES = 1000


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
