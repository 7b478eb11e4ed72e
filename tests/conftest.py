"""Shared fixtures. Random-initialised checkpoints stand in for the hub, which CI cannot reach."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.backends.runtime import card_present, prepare_host

# Host-side TILE/bfloat8_b conversion needs a cluster description before the first conversion.
prepare_host()
# One conversion cache for the whole session (notebook kernels inherit it), never the user's; removed at the end
# (with the mock runtime in it, about 2 GB).
SESSION_CACHE = None if os.environ.get("DEIT_TT_CACHE") else tempfile.mkdtemp(prefix="deit-tt-test-cache-")
if SESSION_CACHE:
    os.environ["DEIT_TT_CACHE"] = SESSION_CACHE


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    # Files holding a slow test first, each file's order kept: make test's workers (pytest-xdist, a file per worker)
    # then end together, instead of one running the held-out scenes alone after the other has finished.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
    if card_present():
        return
    skip = pytest.mark.skip(reason="needs a Tenstorrent card: no /dev/tenstorrent* device visible to ttnn")
    for item in items:
        if item.get_closest_marker("device"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint():
    return random_checkpoint("tiny")


@pytest.fixture(scope="session")
def small_checkpoint():
    return random_checkpoint("small")


@pytest.fixture(scope="session")
def base_checkpoint():
    return random_checkpoint("base")
