"""Every setting read from the environment, with its default: the one place a ``DEIT_TT_*`` variable is named.

A value is read when asked for, not at import, so a variable set later (by a test, or a notebook's first cell)
is seen. Numbers are checked when read, with one line that names the variable and says what it takes. This
module imports nothing heavy: the CLI reads settings before torch, ttnn or transformers load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deit_tt.errors import UserFacingError

DEFAULT_MODEL = "facebook/deit-base-distilled-patch16-224"


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str | None
    meaning: str

    @property
    def described(self) -> str:
        """How a help text names it: ``$DEIT_TT_BATCH, then 8``."""
        return f"${self.variable}" + (f", then {self.default}" if self.default else "")

    def get(self, given: str | None = None) -> str | None:
        """``given`` when it is set, else the variable when it is set (and not empty), else the default."""
        return given or os.environ.get(self.variable) or self.default

    def is_set(self) -> bool:
        """True when the variable is set (and not empty): the value is the user's, not the default."""
        return bool(os.environ.get(self.variable))

    def path(self, given: str | Path | None = None) -> Path | None:
        value = self.get(str(given) if given else None)
        return Path(value).expanduser() if value else None

    def integer(self, given: int | None = None, minimum: int = 1) -> int:
        """A whole number of at least ``minimum``: ``given``, else the variable, else the default."""
        if given is not None:
            return _checked_integer(given, minimum, "the argument")
        raw = os.environ.get(self.variable) or self.default
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise UserFacingError(f"${self.variable}={raw!r} is not a whole number: set it to one ({self.meaning})") from None
        return _checked_integer(value, minimum, f"${self.variable}")

    def number(self) -> float:
        raw = os.environ.get(self.variable) or self.default
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise UserFacingError(f"${self.variable}={raw!r} is not a number: set it to one ({self.meaning})") from None


def _checked_integer(value: int, minimum: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserFacingError(f"{source} must be a whole number of at least {minimum}, got {value!r}")
    return value


MODEL = Setting("DEIT_TT_MODEL", DEFAULT_MODEL, "a hub id, a save_pretrained folder, shapes:tiny or random:tiny|small|base")
EXECUTOR = Setting("DEIT_TT_EXECUTOR", "auto", "where ttnn ops run: auto, host, device or mock")
CHIP = Setting("DEIT_TT_CHIP", None, "without a card, the card whose core grid to plan for")
BATCH = Setting("DEIT_TT_BATCH", "8", "images per forward pass per chip")
NUMERICS = Setting("DEIT_TT_NUMERICS", "tensix", "the host's arithmetic: ideal or tensix")
CACHE = Setting("DEIT_TT_CACHE", "~/.cache/deit_tt", "the conversion cache and the mock device's runtime")
RESULTS_DIR = Setting("DEIT_TT_RESULTS_DIR", "~/.cache/deit_tt/evaluation", "where evaluation results files go")

# Notebook parameters (each notebook's table says which it reads).
DATA_DIR = Setting("DEIT_TT_DATA_DIR", None, "a folder of images to use as inputs")
IMAGENET = Setting("DEIT_TT_IMAGENET", None, "an ImageNet-1k validation folder")
NUM_IMAGES = Setting("DEIT_TT_NUM_IMAGES", None, "how many images to evaluate")
PREPROCESS = Setting("DEIT_TT_PREPROCESS", "official", "official or hf preprocessing")
COMPARE_REFERENCE = Setting("DEIT_TT_COMPARE_REFERENCE", "auto", "auto, 1 or 0")
SAVE_CHECKPOINT = Setting("DEIT_TT_SAVE_CHECKPOINT", None, "a folder to save the real checkpoint into")
TRAIN_MINUTES = Setting("DEIT_TT_TRAIN_MINUTES", "3", "minutes of the short live training run")
TRAIN_IMAGES = Setting("DEIT_TT_TRAIN_IMAGES", None, "scenes of the short live training run")
HELD_OUT = Setting("DEIT_TT_HELD_OUT", "200", "held-out scenes checked per policy")
