"""The first line of a results file: what produced the run, and which of it a resumed run must share.

Each field is one ``HeaderField`` row of ``HEADER_FIELDS``: its key, how it is read from the run, and,
for a field a resumed run must share, the words a refusal uses for it. Adding a field is one row; a
field a resumed run must share also needs ``legacy``, the value files written before it existed had,
so that they still resume (e.g. ``HeaderField("numerics", ..., "numerics", legacy="ideal")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from deit_tt.checkpoints.loading import RANDOM_SIZES
from deit_tt.evaluation.errors import EvaluationError
from deit_tt.checkpoints.labels import head_class_names, imagenet_class_names

RESULTS_FORMAT = "deit-tt-evaluation-results/1"
_SIZES = {hidden: size for size, (hidden, _) in RANDOM_SIZES.items()}  # hidden size -> DeiT size


@dataclass(frozen=True)
class Run:
    """What one evaluation run is made of; header fields read from it."""

    pipeline: object
    dataset: object
    preprocessor: object
    compare_reference: bool

    @property
    def checkpoint(self):
        return getattr(self.pipeline, "checkpoint", None)

    @property
    def runtime(self):
        return getattr(self.pipeline, "runtime", None)

    @property
    def config(self):
        return getattr(self.checkpoint, "config", None)

    @property
    def name(self) -> str:
        return getattr(self.checkpoint, "name", None) or getattr(self.pipeline, "name", type(self.pipeline).__name__)


@dataclass(frozen=True)
class HeaderField:
    key: str
    read: Callable[[Run], object]
    must_match: str | None = None  # a resumed run must have the same value; the refusal calls it this
    legacy: object = None  # the value of files written before this field existed


def model_size(config) -> str | None:
    """"tiny" / "small" / "base" for a 224x224, patch-16 DeiT config, else None."""
    if getattr(config, "image_size", 224) != 224 or getattr(config, "patch_size", 16) != 16:
        return None
    return _SIZES.get(getattr(config, "hidden_size", None))


def checkpoint_class_names(config) -> list[str] | None:
    """The head's class names when they are the checkpoint's own; None when they are ImageNet-1k's
    (the usual case, kept out of the results file)."""
    if config is None:
        return None
    names = head_class_names(config)
    return None if names == imagenet_class_names() else names


def _size(run: Run) -> str | None:
    return model_size(run.config) if run.config is not None else getattr(run.pipeline, "model_size", None)


def _created(run: Run) -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version(run: Run) -> str:
    from deit_tt import __version__

    return __version__


HEADER_FIELDS = (
    HeaderField("model", lambda run: run.name),
    HeaderField("model_identity", lambda run: getattr(run.checkpoint, "identity", None) or run.name, "model"),
    HeaderField("random_weights", lambda run: bool(getattr(run.checkpoint, "is_random", False))),
    HeaderField("distilled", lambda run: bool(getattr(run.checkpoint, "distilled", True))),
    HeaderField("model_size", _size),
    HeaderField("class_names", lambda run: checkpoint_class_names(run.config)),
    HeaderField("executor", lambda run: getattr(run.runtime, "executor", None) or getattr(run.pipeline, "executor", "unknown"), "executor"),
    HeaderField("chip", lambda run: getattr(getattr(run.runtime, "chip", None), "name", None)),
    HeaderField("numerics", lambda run: getattr(run.pipeline, "numerics", None), "host numerics", legacy="ideal"),
    HeaderField("dtype_policy", lambda run: getattr(getattr(run.pipeline, "policy", None), "name", None) or getattr(run.pipeline, "dtype_policy", None), "dtype policy"),
    HeaderField("batch_size", lambda run: int(run.pipeline.batch_size)),
    HeaderField("chips", lambda run: int(getattr(run.runtime, "num_devices", 1))),
    HeaderField("preprocess", lambda run: run.preprocessor.mode, "preprocessing"),
    HeaderField("preprocess_description", lambda run: run.preprocessor.description, "preprocessing"),
    HeaderField("dataset", lambda run: run.dataset.metadata()),
    HeaderField("dataset_fingerprint", lambda run: run.dataset.fingerprint(), "dataset"),
    HeaderField("compare_reference", lambda run: bool(run.compare_reference), "--compare-reference setting"),
    HeaderField("created", _created),
    HeaderField("deit_tt_version", _version),
)


def run_header(pipeline, dataset, preprocessor, compare_reference: bool) -> dict:
    """The first line of a results file: what produced it."""
    run = Run(pipeline, dataset, preprocessor, compare_reference)
    return {"type": "header", "format": RESULTS_FORMAT, **{field.key: field.read(run) for field in HEADER_FIELDS}}


def check_compatible(path: Path, old: dict, new: dict) -> None:
    """Refuse to continue ``old`` (a results file's header) with a run whose header is ``new``."""
    for field in HEADER_FIELDS:
        if field.must_match is None:
            continue
        before = old.get(field.key, field.legacy)
        if before != new.get(field.key):
            raise EvaluationError(
                f"{path} was written for a different {field.must_match} ({field.key}: {before!r}, now {new.get(field.key)!r}); "
                "pass another --out, or --restart to discard it"
            )
