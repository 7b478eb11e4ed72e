"""Defaults that ``python -m deit_tt evaluate`` and notebook 04 share, so that each resumes the other's run.

``default_results_path`` names the results file of a run from everything a resumed run must share
(model, executor, dtype policy, preprocessing, reference comparison, dataset), so two different runs
never meet in one file and the same run always finds its file, from any working directory:
``settings.RESULTS_DIR`` (default ``~/.cache/deit_tt/evaluation``) /
``<model>-<executor>[-<numerics>]-<policy>-<preprocess>[-reference]-<dataset folder>-<dataset fingerprint>.jsonl``.
"""

from __future__ import annotations

import re
from pathlib import Path

from deit_tt import settings

# The fp32 PyTorch reference runs on the CPU beside the model: affordable for a sample, not for 50,000 images.
REFERENCE_AUTO_IMAGES = 2000


def default_results_dir() -> Path:
    return settings.RESULTS_DIR.path()


def default_results_path(pipeline, dataset, preprocess="official", compare_reference: bool = False, results_dir=None) -> Path:
    """The results file of evaluating ``pipeline`` on ``dataset`` (``preprocess``: a mode or a ``Preprocessor``),
    in ``results_dir`` (default: ``default_results_dir()``)."""
    return results_path_for(
        pipeline.checkpoint,
        pipeline.runtime.executor,
        getattr(pipeline, "numerics", None),
        pipeline.policy.name,
        dataset,
        preprocess,
        compare_reference,
        results_dir,
    )


def results_path_for(
    checkpoint, executor: str, numerics: str | None, policy: str, dataset, preprocess="official", compare_reference: bool = False, results_dir=None
) -> Path:
    """``default_results_path`` from its parts, known before the pipeline is built (the CLI locks the file first)."""
    mode = getattr(preprocess, "mode", preprocess)
    fingerprint = dataset.fingerprint().split(":")[-1][:8]
    parts = [
        getattr(checkpoint, "short_name", None) or checkpoint.name,
        executor,
        *([numerics] if numerics else []),
        policy,
        mode,
        *(["reference"] if compare_reference else []),
        Path(dataset.root).name,
        fingerprint,
    ]
    name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "-", str(part)).strip("-") for part in parts)
    folder = Path(results_dir).expanduser() if results_dir else default_results_dir()
    return folder / f"{name}.jsonl"


def compare_reference_by_default(images: int) -> bool:
    """Whether a run of ``images`` images compares with the PyTorch reference unless told otherwise."""
    return images <= REFERENCE_AUTO_IMAGES


def compare_reference_for(setting: str | bool, images: int) -> bool:
    """A user's setting (``settings.COMPARE_REFERENCE`` in notebook 04): ``"auto"`` follows
    ``compare_reference_by_default``; ``"1"``/``"0"`` or a bool are taken as given."""
    if setting == "auto":
        return compare_reference_by_default(images)
    return setting in (True, "1", "true", "yes", "on")
