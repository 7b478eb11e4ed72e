"""The model to use here: the one the settings ask for when it can be loaded, else a built-in fallback.

Without ``settings.MODEL`` the default is the real DeiT-base checkpoint, which needs the Hugging Face hub
or its local cache. A machine that has neither still runs the demo and every notebook, on a model that
loads offline: ``shapes:tiny`` (trained here, knows ten textures) or ``random:*`` (seeded random weights)
where the structure is the point. A model named explicitly is never replaced by a different model: when it
cannot be loaded, the one-line error of ``deit_tt.checkpoints.hub`` stands. Nothing heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deit_tt import settings
from deit_tt.checkpoints.builtin import BUILT_IN_DESCRIPTIONS
from deit_tt.checkpoints.hub import unloadable_reason
from deit_tt.errors import UserFacingError

FALLBACK_DESCRIPTIONS = {
    **BUILT_IN_DESCRIPTIONS,
    "random:tiny": "DeiT-tiny with seeded random weights: the structure is real, the values say nothing about DeiT",
    "random:small": "DeiT-small with seeded random weights: the structure is real, the values say nothing about DeiT",
    "random:base": "DeiT-base with seeded random weights: the structure is real, the values say nothing about DeiT",
}


@dataclass(frozen=True)
class ModelChoice:
    model: str  # what will be loaded
    requested: str  # what the settings asked for (the default when ``settings.MODEL`` is unset)
    reason: str | None  # why ``model`` replaces ``requested``, or None when it does not

    @property
    def fell_back(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        """One line: the model, and when it is a fallback, why."""
        if not self.fell_back:
            return self.model
        return f"{self.model} ({FALLBACK_DESCRIPTIONS.get(self.model, 'a fallback')}), because {self.reason}"


def choose_model(fallback: str, accepts: Callable[[str], object] | None = None) -> ModelChoice:
    """``settings.MODEL`` (else the real checkpoint) when it loads here and ``accepts`` it, else ``fallback``.

    An explicitly set model that cannot load raises the hub's one-line error; one that ``accepts`` refuses
    (a notebook that needs a model trained on the scenes) is replaced, and the reason says so."""
    requested = settings.MODEL.get()
    if accepts is not None and not accepts(requested):
        return ModelChoice(fallback, requested, f"{requested} is not a model trained on the generated scenes")
    problem = unloadable_reason(requested)
    if problem is None:
        return ModelChoice(requested, requested, None)
    if settings.MODEL.is_set():
        raise UserFacingError(problem)
    return ModelChoice(fallback, requested, f"{requested} cannot be loaded here (no connection to the Hugging Face hub and not in its local cache)")
