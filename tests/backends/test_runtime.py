"""Where ttnn code runs: the executor choice, the mock cluster descriptor and the guards around a real card."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ttnn

from deit_tt.backends import runtime, ttnn_version
from deit_tt.errors import UserFacingError


@pytest.fixture
def no_card(monkeypatch):
    """A machine without a card on which nothing has handed ttnn a descriptor yet."""
    monkeypatch.delenv(runtime.MOCK_CLUSTER_ENV, raising=False)
    monkeypatch.setattr(runtime, "_mocked_chip", None)
    monkeypatch.setattr(runtime, "device_nodes", lambda: [])


@pytest.fixture
def card(monkeypatch):
    """A machine whose /dev/tenstorrent/0 answers ttnn's query with one chip; opening it is recorded."""
    opened = []
    monkeypatch.setattr(runtime, "device_nodes", lambda: ["/dev/tenstorrent/0"])
    monkeypatch.setattr(runtime.ttnn, "GetNumAvailableDevices", lambda: 1)
    monkeypatch.setattr(runtime, "open_device", lambda count, mesh_shape=None, trace_region_size=0: opened.append(count) or FakeDevice())
    return opened


class FakeDevice:
    def compute_with_storage_grid_size(self):
        return ttnn.CoreCoord(8, 8)

    def arch(self):
        return "Arch.WORMHOLE_B0"

    def get_num_devices(self):
        return 1


@pytest.mark.parametrize(
    "chip, arch, harvest_mask",
    [("n150", "wormhole_b0", 1), ("p150", "blackhole", 3), ("p150-12x10", "blackhole", 1), ("p150-13x10", "blackhole", 0)],
)
def test_prepare_host_points_ttnn_at_a_shipped_single_chip_descriptor(no_card, chip, arch, harvest_mask):
    selected = runtime.prepare_host(chip)
    path = Path(os.environ[runtime.MOCK_CLUSTER_ENV])
    assert path.is_file() and path.name == selected.descriptor
    text = path.read_text()
    assert f"0: {arch}" in text and "chips_with_mmio" in text and f"harvest_mask: {harvest_mask}\n" in text


def test_prepare_host_leaves_a_user_setting_alone(no_card, monkeypatch):
    monkeypatch.setenv(runtime.MOCK_CLUSTER_ENV, "/users/own/descriptor.yaml")
    runtime.prepare_host("p150")
    assert os.environ[runtime.MOCK_CLUSTER_ENV] == "/users/own/descriptor.yaml"


def test_prepare_host_never_mocks_when_a_card_is_present(no_card, card):
    runtime.prepare_host()
    assert runtime.MOCK_CLUSTER_ENV not in os.environ


def test_host_conversion_to_block_floats_works_without_a_card():
    import torch

    tensor = torch.randn(64, 128)
    restored = ttnn.to_torch(ttnn.from_torch(tensor, dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT))
    assert restored.shape == (64, 128)
    assert torch.corrcoef(torch.stack([tensor.flatten(), restored.float().flatten()]))[0, 1] > 0.9999


def test_auto_executor_without_a_card_is_the_host_with_a_labelled_banner(no_card, monkeypatch):
    monkeypatch.delenv("DEIT_TT_EXECUTOR", raising=False)
    selected = runtime.select_runtime()
    assert selected.executor == "host" and selected.device is None and selected.computes_values
    banner = selected.banner()
    assert "host" in banner and "n150" in banner and "8x8" in banner and ttnn_version() in banner


def test_chip_and_executor_come_from_the_environment(no_card, monkeypatch):
    monkeypatch.setenv("DEIT_TT_EXECUTOR", "host")
    monkeypatch.setenv("DEIT_TT_CHIP", "p150")
    selected = runtime.select_runtime()
    assert selected.chip.name == "p150" and selected.grid == (11, 10)


@pytest.mark.parametrize(
    "executor, chip, message",
    [
        ("device", None, "no Tenstorrent card found"),
        ("gpu", None, "unknown executor 'gpu'"),
        ("host", "e150", "unknown chip 'e150'"),
        ("mock", "e150", "unknown chip 'e150'"),
    ],
)
def test_bad_choices_are_one_line_user_errors(no_card, executor, chip, message):
    with pytest.raises(UserFacingError) as excinfo:
        runtime.select_runtime(executor, chip)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_a_card_is_opened_when_present(no_card, card):
    selected = runtime.select_runtime("auto")
    assert selected.executor == "device" and card == [1] and selected.chip.name == "n150"


@pytest.mark.parametrize("executor", ["auto", "device"])
def test_an_inherited_mock_descriptor_is_refused_while_a_card_is_present(no_card, card, monkeypatch, executor):
    monkeypatch.setenv(runtime.MOCK_CLUSTER_ENV, "/somewhere/n150.yaml")
    with pytest.raises(UserFacingError) as excinfo:
        runtime.select_runtime(executor)
    message = str(excinfo.value)
    assert "TT_METAL_MOCK_CLUSTER_DESC_PATH is set (/somewhere/n150.yaml)" in message and "unset it" in message
    assert "\n" not in message and card == []  # nothing was opened


@pytest.mark.parametrize("executor", ["auto", "device"])
def test_a_device_node_ttnn_cannot_query_stops_with_one_line_instead_of_falling_back(no_card, monkeypatch, executor):
    def broken_query():
        raise RuntimeError("TT_THROW: firmware 18.2.0 is older than the minimum supported\nbacktrace: ...")

    monkeypatch.setattr(runtime, "device_nodes", lambda: ["/dev/tenstorrent/0"])
    monkeypatch.setattr(runtime.ttnn, "GetNumAvailableDevices", broken_query)
    with pytest.raises(UserFacingError) as excinfo:
        runtime.select_runtime(executor)
    message = str(excinfo.value)
    assert message.startswith("/dev/tenstorrent/0 exists but ttnn cannot query it (TT_THROW: firmware 18.2.0")
    assert "--executor host" in message and "\n" not in message
    assert runtime.select_runtime("host").executor == "host"  # asked for explicitly, the host still runs


def test_the_mock_banner_says_no_values_are_computed():
    mock = runtime.Runtime("mock", runtime.CHIPS["n150"], device=None)
    assert mock.banner().startswith("executor: mock device: ops validated and allocated by ttnn, no values computed")
    assert not mock.computes_values
    with pytest.raises(UserFacingError, match="the mock device computes none"):
        mock.require_values("classify")
