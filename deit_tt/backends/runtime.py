"""Where ttnn code runs: a Tenstorrent card, tt-metal's mock device, or the host.

- ``device``: a card. Opened only when ``/dev/tenstorrent*`` exists and ttnn can query a chip behind it.
- ``mock``: tt-metal's mock device for a chosen chip (see ``deit_tt.backends.mock_device``): ttnn validates,
  plans and allocates every op of the device path; no values are computed.
- ``host``: ttnn's golden functions (see ``deit_tt.backends.executor``). ttnn's host code still needs a cluster
  description to convert tensors to TILE layout and the block-float formats; ``prepare_host`` points
  ``TT_METAL_MOCK_CLUSTER_DESC_PATH`` at a single-chip descriptor shipped with the package.

ttnn reads the mock variables once per process, at its first tensor conversion, so they are set
before that and never when a card is present. A variable the user set is left alone, except that a
mock descriptor inherited while a card is present is refused: ttnn would silently open a mock.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib import resources

import ttnn

from deit_tt.backends import mock_device, ttnn_version
from deit_tt import settings
from deit_tt.errors import UserFacingError

MOCK_CLUSTER_ENV = "TT_METAL_MOCK_CLUSTER_DESC_PATH"
L1_SMALL_SIZE = 32768  # the L1 region sharded convs/halo ops allocate from; carved out of every core's L1


@dataclass(frozen=True)
class Chip:
    name: str
    arch: str
    grid: tuple[int, int]  # compute grid (x = columns, y = rows) as compute_with_storage_grid_size reports it
    l1_bytes_per_core: int  # L1 bank size the allocator reports with L1_SMALL_SIZE reserved (measured on the mock)
    descriptor: str  # mock cluster descriptor shipped in deit_tt/assets/cluster_descriptors
    chips: int = 1  # chips of the system (the mock opens them all as one mesh)


# Grids from tt-metal's core descriptors (tt_metal/core_descriptors/*.yaml); a Blackhole P150's grid
# depends on its firmware's harvesting (13x10 unharvested, 11x10 from FW 19.5.0 on). The L1 figures are the
# allocator's bank sizes, which tests/backends/test_mock_device.py checks against the mock device of every chip.
CHIPS: dict[str, Chip] = {
    "n150": Chip("n150", "wormhole_b0", (8, 8), 1_360_544, "n150.yaml"),
    "n300": Chip("n300", "wormhole_b0", (8, 8), 1_360_544, "n300.yaml", chips=2),
    "t3k": Chip("t3k", "wormhole_b0", (8, 8), 1_360_544, "t3k.yaml", chips=8),
    "p150": Chip("p150", "blackhole", (11, 10), 1_428_352, "p150-11x10.yaml"),
    "p150-12x10": Chip("p150-12x10", "blackhole", (12, 10), 1_428_352, "p150-12x10.yaml"),
    "p150-13x10": Chip("p150-13x10", "blackhole", (13, 10), 1_428_352, "p150-13x10.yaml"),
}
DEFAULT_HOST_CHIP = "n150"
EXECUTORS = ("auto", "host", "device", "mock")

# The chip whose descriptor this process handed to ttnn (ttnn keeps the first one it reads).
_mocked_chip: Chip | None = None


@dataclass
class Runtime:
    """The chosen executor. ``device`` is an open ttnn mesh of one or more chips (cards or the mock), None on the host."""

    executor: str  # "host", "device" or "mock"
    chip: Chip
    device: object | None = None

    @property
    def grid(self) -> tuple[int, int]:
        if self.device is not None:
            grid = self.device.compute_with_storage_grid_size()
            return (grid.x, grid.y)
        return self.chip.grid

    @property
    def num_devices(self) -> int:
        """Chips the forward runs on, data parallel (1 on the host)."""
        return 1 if self.device is None else self.device.get_num_devices()

    @property
    def l1_bytes_per_core(self) -> int:
        """The L1 bank size the open device's allocator reports, else the chip's measured figure."""
        if self.device is not None:
            return ttnn.get_memory_view(self.device, ttnn.BufferType.L1).total_bytes_per_bank
        return self.chip.l1_bytes_per_core

    @property
    def computes_values(self) -> bool:
        return self.executor != "mock"

    def banner(self) -> str:
        where = {
            "device": "Tenstorrent device",
            "host": "host (ttnn golden functions, no card)",
            "mock": f"{mock_device.NO_VALUES} ({mock_device.kernel_source()})",
        }[self.executor]
        x, y = self.grid
        chips = f"{self.num_devices} chips, " if self.num_devices > 1 else ""
        return f"executor: {where} | chip: {self.chip.name} ({chips}{self.chip.arch}, {x}x{y} cores) | ttnn {ttnn_version()}"

    def require_values(self, what: str) -> None:
        """Refuse to pass the mock device's garbage off as results."""
        if not self.computes_values:
            raise no_values_error(what)

    def close(self) -> None:
        if self.device is not None:
            ttnn.close_mesh_device(self.device)
            self.device = None



def device_nodes() -> list[str]:
    return sorted(glob.glob("/dev/tenstorrent*"))


def card_present() -> bool:
    """True when a Tenstorrent PCIe device node exists and ttnn can see a chip behind it."""
    try:
        return probe_card()
    except UserFacingError:
        return False


def probe_card() -> bool:
    """Like ``card_present``, but a device node that ttnn cannot query is an error, not "no card"."""
    nodes = device_nodes()
    if not nodes:
        return False
    try:
        return ttnn.GetNumAvailableDevices() > 0
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserFacingError(
            f"{nodes[0]} exists but ttnn cannot query it ({reason}); check the driver and firmware (tt-smi), "
            "or run on the host with --executor host"
        ) from None


def prepare_host(chip: str = DEFAULT_HOST_CHIP) -> Chip:
    """Make ttnn's host conversions work without a card; returns the emulated chip.

    Safe to call many times. Leaves a user-set TT_METAL_MOCK_CLUSTER_DESC_PATH alone. Where the mock
    device can be prepared, its runtime root is set too, so that this process can open it later.
    """
    selected = _chip(chip)
    if not card_present() and MOCK_CLUSTER_ENV not in os.environ:
        _hand_mock_to_ttnn(selected, require_device=False)
    return selected


def resolve_executor(executor: str | None = None) -> str:
    """The executor asked for: ``executor``, else ``settings.EXECUTOR``, else ``auto``."""
    executor = settings.EXECUTOR.get(executor).lower()
    if executor not in EXECUTORS:
        raise UserFacingError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    return executor


def no_values_error(what: str) -> UserFacingError:
    return UserFacingError(
        f"{what} needs computed values, and the mock device computes none (it only validates and allocates "
        "every op); use --executor host or a card, or `python -m deit_tt plan --dry-run` to check the device path"
    )


def select_runtime(
    executor: str | None = None, chip: str | None = None, devices: int | None = None, trace_region_size: int = 0
) -> Runtime:
    """Pick the executor: ``auto`` (default, or ``settings.EXECUTOR``) uses a card when one is present.

    ``devices``: how many chips to run on, data parallel (default: every chip of the machine, or of the mocked system).
    ``trace_region_size``: see ``open_device``.
    """
    executor = resolve_executor(executor)
    chip = settings.CHIP.get(chip)
    if devices is not None and devices < 1:
        raise UserFacingError(f"--devices must be at least 1, got {devices}")
    if executor == "host":
        if devices not in (None, 1):
            raise UserFacingError(f"the host executor runs on one (emulated) chip; --devices {devices} needs a card or --executor mock")
        return Runtime("host", prepare_host(chip or DEFAULT_HOST_CHIP))
    if executor == "mock":
        return open_mock(chip, devices, trace_region_size=trace_region_size)
    has_card = probe_card()
    if executor == "device" and not has_card:
        raise UserFacingError(
            "no Tenstorrent card found (/dev/tenstorrent* missing or not visible to ttnn); "
            "use --executor host to run the same model on the host, or --executor mock to check the device path"
        )
    if has_card:
        _refuse_inherited_mock()
        device = open_device(_device_count(devices, ttnn.GetNumAvailableDevices(), "this machine has"), trace_region_size=trace_region_size)
        return Runtime("device", _device_chip(device, chip), device)
    return Runtime("host", prepare_host(chip or DEFAULT_HOST_CHIP))


def open_mock(
    chip: str | None = None,
    devices: int | None = None,
    mesh_shape: tuple[int, int] | None = None,
    trace_region_size: int = 0,
) -> Runtime:
    """Open tt-metal's mock device for ``chip`` (default n150; all its chips, or ``devices`` of them, as one 1 x N mesh
    unless ``mesh_shape`` says otherwise): every op of the device path runs ttnn's host side, no kernel runs.

    A descriptor the user set in TT_METAL_MOCK_CLUSTER_DESC_PATH is used as it is, unless another chip is asked for.
    """
    selected = _chip(chip or DEFAULT_HOST_CHIP)
    inherited = os.environ.get(MOCK_CLUSTER_ENV)
    if inherited and _mocked_chip is None and inherited != _descriptor_path(selected):  # the user's own descriptor
        if chip is not None:
            raise mock_device.MockDeviceError(
                f"{MOCK_CLUSTER_ENV} is set ({os.environ[MOCK_CLUSTER_ENV]}), so ttnn mocks that system: unset it to "
                f"mock the {chip}, or leave out the chip to use your descriptor"
            )
        device = _open_mock_device(devices or 1, mesh_shape, trace_region_size)
        return Runtime("mock", _device_chip(device, None), device)
    if _mocked_chip is not None and _mocked_chip.descriptor != selected.descriptor:
        raise mock_device.MockDeviceError(
            f"this process already set ttnn up for the {_mocked_chip.name} mock, and ttnn reads the cluster "
            f"descriptor once per process: open the {selected.name} mock in a new process"
        )
    _hand_mock_to_ttnn(selected, require_device=True)
    count = _device_count(devices, selected.chips, f"the {selected.name} mock has")
    return Runtime("mock", selected, _open_mock_device(count, mesh_shape, trace_region_size))


def open_device(count: int = 1, mesh_shape: tuple[int, int] | None = None, trace_region_size: int = 0):
    """Open ``count`` chips as one mesh (1 x count unless ``mesh_shape`` says otherwise) with the L1 small region
    the sharded ops need, program cache on. One chip is a 1x1 mesh, as ``ttnn.open_device`` returns in 0.81.

    A ``trace_region_size`` (bytes of DRAM per chip, see ``deit_tt.backends.tracing``) also opens a second command
    queue, for traced steady-state inference; neither changes the L1 the sharded ops plan with.
    """
    shape = mesh_shape or (1, count)
    if shape[0] * shape[1] != count:
        raise UserFacingError(f"mesh shape {shape[0]}x{shape[1]} does not hold {count} chips")
    device = ttnn.open_mesh_device(
        ttnn.MeshShape(*shape),
        l1_small_size=L1_SMALL_SIZE,
        trace_region_size=trace_region_size,
        num_command_queues=2 if trace_region_size else 1,
    )
    device.enable_program_cache()
    return device


def _device_count(requested: int | None, available: int, where: str) -> int:
    if requested is None:
        return available
    if requested > available:
        raise UserFacingError(f"--devices {requested} asks for more chips than {where} ({available})")
    return requested


def _open_mock_device(count: int, mesh_shape: tuple[int, int] | None = None, trace_region_size: int = 0):
    try:
        return open_device(count, mesh_shape, trace_region_size)
    except RuntimeError as error:
        if "sfpi not found" in str(error) or "Compiler version probe failed" in str(error):
            raise mock_device.MockDeviceError(
                "ttnn was initialised in this process before the mock device was prepared (it reads "
                f"{mock_device.RUNTIME_ROOT_ENV} once): select the mock executor before any ttnn conversion, "
                "e.g. in a new process"
            ) from None
        raise


def _hand_mock_to_ttnn(chip: Chip, require_device: bool) -> None:
    """Set the mock descriptor for ``chip`` and, where possible (always when ``require_device``), the mock runtime root."""
    global _mocked_chip
    if require_device:
        environment = mock_device.mock_environment()
    else:  # host conversions need no compiler: prepare the root only when it can be built
        environment = mock_device.mock_environment() if mock_device.can_build() else {}
    for name, value in environment.items():
        os.environ.setdefault(name, value)
    if _mocked_chip is None:
        os.environ[MOCK_CLUSTER_ENV] = _descriptor_path(chip)
        _mocked_chip = chip


def _descriptor_path(chip: Chip) -> str:
    return str(resources.files("deit_tt").joinpath(f"assets/cluster_descriptors/{chip.descriptor}"))


def _refuse_inherited_mock() -> None:
    if MOCK_CLUSTER_ENV in os.environ:
        raise UserFacingError(
            f"{MOCK_CLUSTER_ENV} is set ({os.environ[MOCK_CLUSTER_ENV]}) while a Tenstorrent card is present: ttnn would "
            "open a mock device that computes nothing instead of the card; unset it (or use --executor mock on purpose)"
        )


def _chip(name: str) -> Chip:
    if name not in CHIPS:
        raise UserFacingError(f"unknown chip {name!r}; choose one of {', '.join(CHIPS)}")
    return CHIPS[name]


def _device_chip(device, requested: str | None) -> Chip:
    """The CHIPS entry for an open device: the requested one, else the one whose arch and grid match."""
    if requested:
        return _chip(requested)
    arch = str(device.arch()).lower()
    grid = device.compute_with_storage_grid_size()
    for chip in CHIPS.values():
        if chip.arch.split("_")[0] in arch and chip.grid == (grid.x, grid.y):
            return chip
    return CHIPS["p150"] if "blackhole" in arch else CHIPS["n150"]
