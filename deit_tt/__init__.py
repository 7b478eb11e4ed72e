"""DeiT on Tenstorrent hardware through ttnn.

Subpackages, one concept each: ``model`` (the forward, its stages and heads, weight conversion and cache,
dtype policy), ``sharding`` (program and memory configs from dims, batch and grid), ``backends`` (who runs
the ops: a card, the host, the mock device; tracing, recording), ``checkpoints``, ``data``, ``evaluation``,
``analysis`` (PCC, reference captures, attention, what notebooks draw), ``training``, ``cli``.

The names below are the public API the notebooks and the README use; they import on first use, so
``import deit_tt`` stays light (the CLI checks its arguments before ttnn and torch load).
"""

import os
import sys

# ttnn logs through loguru, whose default stderr handler shows DEBUG unless LOGURU_LEVEL says otherwise:
# ttnn dumps its whole configuration on import and logs every config change; tt-metal's C++ logger
# (TT_LOGGER_LEVEL, read when the first device or mock cluster is set up) logs every mock-driver call.
# Keep notebooks and the CLI readable unless the user asked for more. Imported before ttnn, the
# variables do it; imported after, loguru's default handler is replaced by one at that level (a
# handler the user added stays as it is). The dump printed by an earlier ``import ttnn`` itself
# is already out: set LOGURU_LEVEL=WARNING in the environment for that (the Makefile does).
os.environ.setdefault("LOGURU_LEVEL", "WARNING")
os.environ.setdefault("TT_LOGGER_LEVEL", "error")


def _quiet_loguru_default_handler() -> None:
    from loguru import logger

    try:
        logger.remove(0)  # loguru's default handler, created at import with the level of that time
    except ValueError:
        return  # already removed: whoever did so configured logging themselves
    logger.add(sys.stderr, level=os.environ["LOGURU_LEVEL"])


_quiet_loguru_default_handler()

__version__ = "0.1.0"

_PUBLIC = {
    "build_pipeline": "deit_tt.pipeline",
    "DeiTPipeline": "deit_tt.pipeline",
    "TtDeiT": "deit_tt.model.deit",
    "TtDeiTOutput": "deit_tt.model.deit",
    "ALL_STAGES": "deit_tt.model.vocabulary",
    "LAYER_STAGES": "deit_tt.model.vocabulary",
    "get_policy": "deit_tt.model.policy",
    "load_checkpoint": "deit_tt.checkpoints.loading",
    "random_checkpoint": "deit_tt.checkpoints.loading",
    "load_image": "deit_tt.data.images",
    "image_paths": "deit_tt.data.images",
    "preprocess": "deit_tt.data.preprocessing",
    "classify_sources": "deit_tt.classify",
    "select_runtime": "deit_tt.backends.runtime",
    "open_mock": "deit_tt.backends.runtime",
    "card_present": "deit_tt.backends.runtime",
    "make_plan": "deit_tt.sharding",
    "pcc": "deit_tt.analysis.pcc",
    "pcc_report": "deit_tt.analysis.pcc",
    "capture_reference": "deit_tt.analysis.reference",
    "compare_with_reference": "deit_tt.analysis.reference",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'deit_tt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
