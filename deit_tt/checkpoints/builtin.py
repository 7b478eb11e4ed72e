"""Checkpoints that ship inside the package and load by name, offline.

``shapes:tiny`` is a distilled DeiT-tiny (12 layers, hidden 192, 3 heads: the tiny plan) trained by
``python -m deit_tt.training.train_shapes`` on the generated scenes of ``deit_tt.data.scenes``, with its CNN teacher
beside it. It knows ten texture classes and nothing about ImageNet. This module imports nothing heavy,
so ``deit_tt.checkpoints.hub`` can tell these names from hub ids before torch loads.
"""

from __future__ import annotations

from pathlib import Path

_MODELS_DIR = Path(__file__).parents[1] / "assets" / "models"
BUILT_IN_MODELS: dict[str, Path] = {"shapes:tiny": _MODELS_DIR / "shapes-tiny"}
BUILT_IN_PREFIXES = ("shapes:",)
BUILT_IN_DESCRIPTIONS: dict[str, str] = {
    "shapes:tiny": "DeiT-tiny trained here on generated scenes (10 texture classes, deit_tt.data.scenes), not on ImageNet",
}
TEACHER_FILE = "teacher.safetensors"
TRAINING_RECORD = "training.json"


def built_in_folder(name: str) -> Path | None:
    """The folder of built-in checkpoint ``name``, or None when ``name`` is not one."""
    return BUILT_IN_MODELS.get(name)


def scenes_model_folder(name: str) -> Path | None:
    """The folder of a model trained by ``deit_tt.training.train_shapes``: a built-in one, or a folder it wrote
    (with its teacher beside the weights); None for anything else."""
    folder = built_in_folder(name) or Path(name).expanduser()
    return folder if (folder / TEACHER_FILE).is_file() else None


def training_record(name: str) -> dict:
    """The ``training.json`` that ``deit_tt.training.train_shapes`` wrote beside model ``name``."""
    import json

    folder = scenes_model_folder(name)
    if folder is None:
        raise ValueError(f"{name!r} was not trained by deit_tt.training.train_shapes; use shapes:tiny or a folder it wrote")
    return json.loads((folder / TRAINING_RECORD).read_text())
