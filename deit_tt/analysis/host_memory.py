"""Giving freed host memory back to the system between the large steps of a notebook.

glibc's malloc keeps freed blocks in its arenas for reuse, so after the captures of a whole-model run are
freed the process stays as large as before, and the next run's tensors come on top of memory that is free
but still resident. ``release_freed_memory`` collects garbage and asks glibc to return what it can
(``malloc_trim``); with another C library it only collects garbage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
