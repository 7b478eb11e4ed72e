"""The first code cell of every notebook: its parameters, the model it can load here, and a banner that says both.

``notebook_setup(fallback, "batch", "data_dir", ...)`` reads the named parameters through ``deit_tt.settings``
(so a notebook names no environment variable itself), picks the model with
``deit_tt.checkpoints.fallback.choose_model`` (the real checkpoint when it loads here, else ``fallback``:
``shapes:tiny``, or ``random:*`` where the structure is the point), prints one line per parameter with the
variable that sets it, and returns the values as attributes. Nothing heavy is imported.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from deit_tt import settings
from deit_tt.checkpoints.fallback import choose_model
from deit_tt.settings import Setting


def _count(setting: Setting) -> int:
    """A whole number where unset means 0 ("all")."""
    return setting.integer(minimum=0) if setting.get() else 0


# name -> (the setting, how its value is read)
PARAMETERS: dict[str, tuple[Setting, Callable[[Setting], object]]] = {
    "executor": (settings.EXECUTOR, Setting.get),
    "batch": (settings.BATCH, Setting.integer),
    "chip": (settings.CHIP, Setting.get),
    "data_dir": (settings.DATA_DIR, lambda setting: setting.get() or ""),
    "num_images": (settings.NUM_IMAGES, _count),
    "imagenet": (settings.IMAGENET, lambda setting: setting.get() or ""),
    "preprocess": (settings.PREPROCESS, Setting.get),
    "compare_reference": (settings.COMPARE_REFERENCE, Setting.get),
    "results_dir": (settings.RESULTS_DIR, Setting.path),
    "save_checkpoint": (settings.SAVE_CHECKPOINT, lambda setting: setting.get() or ""),
    "held_out": (settings.HELD_OUT, Setting.integer),
    "train_images": (settings.TRAIN_IMAGES, lambda setting: setting.integer() if setting.get() else None),
    "train_minutes": (settings.TRAIN_MINUTES, Setting.number),
}


def notebook_setup(fallback: str, *names: str, accepts: Callable[[str], object] | None = None) -> SimpleNamespace:
    """The model (``.model``; ``.model_choice`` says whether it is the fallback and why) and the parameters
    ``names`` (``.batch``, ``.data_dir``, ...), after printing them. ``accepts``: a test the requested model
    must pass (notebook 05 needs a model trained on the scenes)."""
    unknown = [name for name in names if name not in PARAMETERS]
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; known: {', '.join(PARAMETERS)}")
    choice = choose_model(fallback, accepts)
    values = {name: PARAMETERS[name][1](PARAMETERS[name][0]) for name in names}
    lines = [f"  model: {choice.describe()}   (${settings.MODEL.variable})"]
    lines += [f"  {name}: {_shown(value)}   (${PARAMETERS[name][0].variable})" for name, value in values.items()]
    print("Settings (environment variables, read by this cell):", *lines, sep="\n")
    return SimpleNamespace(model=choice.model, model_choice=choice, **values)


def _shown(value: object) -> str:
    return "(unset)" if value in ("", None) else str(value)
