"""DeiT on Tenstorrent hardware through ttnn.

The package is organised so that each module has one job:

- ``runtime``: where ttnn code runs (a Tenstorrent card, or the host through ttnn's golden functions)
- ``hub`` / ``checkpoint``: loading Hugging Face DeiT checkpoints (hub id, local directory, or ``random:<size>``)
- ``labels``: the class names of a checkpoint's head; the ImageNet-1k synset ids and names
- ``policy``: which ttnn dtype each tensor family uses
- ``conversion`` / ``cache`` / ``quantization``: PyTorch weights -> ttnn tensors, cached on disk
- ``sharding``: program and memory configs derived from model dims, batch and the core grid
- ``executor`` / ``model``: the one forward pass, run by a device or by the host
- ``reference`` / ``pcc``: Hugging Face captures and per-stage agreement reports
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
