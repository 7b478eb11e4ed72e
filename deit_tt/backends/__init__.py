"""Where the forward's ops run: a card or tt-metal's mock device, or the host (ideal or Tensix numerics); tracing and recording."""

from importlib.metadata import version


def ttnn_version() -> str:
    """The installed ttnn's version: part of the conversion cache's key, the mock runtime's folder and card reports."""
    return version("ttnn")
