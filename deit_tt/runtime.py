"""Where ttnn code runs: a Tenstorrent card when one is present, otherwise the host.

On the host, no ttnn op can run (opening a device needs a card), but ttnn's own host code can
still convert tensors to TILE layout and to the block-float formats once it has a cluster
description. ``prepare_host`` points ``TT_METAL_MOCK_CLUSTER_DESC_PATH`` at a single-chip
descriptor shipped with the package, before the first conversion. It never does so when a card
is present or when the user already set the variable.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib import resources

import ttnn

from deit_tt.errors import UserFacingError

MOCK_CLUSTER_ENV = "TT_METAL_MOCK_CLUSTER_DESC_PATH"


@dataclass(frozen=True)
class Chip:
    name: str
    arch: str
    grid: tuple[int, int]  # compute grid (x = columns, y = rows) as compute_with_storage_grid_size reports it
    l1_bytes_per_core: int
    descriptor: str  # mock cluster descriptor shipped in deit_tt/assets/cluster_descriptors


# Grids and L1 sizes from tt-metal's core/soc descriptors (see ../shared/reference/ttnn-vit-sharding.md §6).
CHIPS: dict[str, Chip] = {
    "n150": Chip("n150", "wormhole_b0", (8, 8), 1_499_136, "n150.yaml"),
    "n300": Chip("n300", "wormhole_b0", (8, 8), 1_499_136, "n150.yaml"),
    "p150": Chip("p150", "blackhole", (11, 10), 1_572_864, "p150.yaml"),
    "p150-12x10": Chip("p150-12x10", "blackhole", (12, 10), 1_572_864, "p150.yaml"),
}
DEFAULT_HOST_CHIP = "n150"
EXECUTORS = ("auto", "host", "device")


@dataclass
class Runtime:
    """The chosen executor. ``device`` is an open ttnn device on a card, None on the host."""

    executor: str  # "host" or "device"
    chip: Chip
    device: object | None = None

    @property
    def grid(self) -> tuple[int, int]:
        if self.device is not None:
            grid = self.device.compute_with_storage_grid_size()
            return (grid.x, grid.y)
        return self.chip.grid

    def banner(self) -> str:
        where = "Tenstorrent device" if self.executor == "device" else "host (ttnn golden functions, no card)"
        x, y = self.grid
        return f"executor: {where} | chip: {self.chip.name} ({self.chip.arch}, {x}x{y} cores) | ttnn {ttnn_version()}"

    def close(self) -> None:
        if self.device is not None:
            ttnn.close_device(self.device)
            self.device = None


def ttnn_version() -> str:
    from importlib.metadata import version

    return version("ttnn")


def card_present() -> bool:
    """True when a Tenstorrent PCIe device node exists and ttnn can see a chip behind it."""
    if not glob.glob("/dev/tenstorrent*"):
        return False
    try:
        return ttnn.GetNumAvailableDevices() > 0
    except RuntimeError:
        return False


def prepare_host(chip: str = DEFAULT_HOST_CHIP) -> Chip:
    """Make ttnn's host conversions work without a card; returns the emulated chip.

    Safe to call many times. Leaves a user-set TT_METAL_MOCK_CLUSTER_DESC_PATH alone.
    """
    selected = _chip(chip)
    if not card_present() and MOCK_CLUSTER_ENV not in os.environ:
        path = resources.files("deit_tt").joinpath(f"assets/cluster_descriptors/{selected.descriptor}")
        os.environ[MOCK_CLUSTER_ENV] = str(path)
    return selected


def select_runtime(executor: str | None = None, chip: str | None = None) -> Runtime:
    """Pick the executor: ``auto`` (default, or $DEIT_TT_EXECUTOR) uses a card when one is present."""
    executor = (executor or os.environ.get("DEIT_TT_EXECUTOR") or "auto").lower()
    if executor not in EXECUTORS:
        raise UserFacingError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    chip = chip or os.environ.get("DEIT_TT_CHIP")
    has_card = card_present()
    if executor == "device" and not has_card:
        raise UserFacingError(
            "no Tenstorrent card found (/dev/tenstorrent* missing or not visible to ttnn); "
            "use --executor host to run the same model on the host"
        )
    if executor == "device" or (executor == "auto" and has_card):
        device = open_device()
        return Runtime("device", _device_chip(device, chip), device)
    return Runtime("host", prepare_host(chip or DEFAULT_HOST_CHIP))


def open_device(device_id: int = 0):
    """Open a card with the L1 small region the sharded ops need, program cache on."""
    device = ttnn.open_device(device_id=device_id, l1_small_size=32768)
    device.enable_program_cache()
    return device


def _chip(name: str) -> Chip:
    if name not in CHIPS:
        raise UserFacingError(f"unknown chip {name!r}; choose one of {', '.join(CHIPS)}")
    return CHIPS[name]


def _device_chip(device, requested: str | None) -> Chip:
    if requested:
        return _chip(requested)
    arch = str(device.arch()).lower()
    return CHIPS["p150"] if "blackhole" in arch else CHIPS["n150"]
