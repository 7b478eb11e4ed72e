"""DeiT on Tenstorrent hardware through ttnn.

The package is organised so that each module has one job:

- ``runtime``: where ttnn code runs (a Tenstorrent card, or the host through ttnn's golden functions)
- ``checkpoint``: loading Hugging Face DeiT checkpoints (hub id, local directory, or ``random:<size>``)
- ``labels``: the ImageNet-1k synset ids and class names in head index order
- ``policy``: which ttnn dtype each tensor family uses
- ``conversion`` / ``cache`` / ``quantization``: PyTorch weights -> ttnn tensors, cached on disk
- ``sharding``: program and memory configs derived from model dims, batch and the core grid
- ``executor`` / ``model``: the one forward pass, run by a device or by the host
- ``reference`` / ``pcc``: Hugging Face captures and per-stage agreement reports
"""

import os

# ttnn logs its whole configuration at DEBUG on import and tt-metal logs every mock-driver call;
# keep notebooks and the CLI readable unless the user asked for more.
os.environ.setdefault("LOGURU_LEVEL", "WARNING")
os.environ.setdefault("TT_LOGGER_LEVEL", "error")

__version__ = "0.1.0"
