"""Where ttnn code runs, and the mock cluster descriptor that makes host-side tile conversion work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ttnn

from deit_tt import runtime
from deit_tt.errors import UserFacingError


@pytest.fixture
def no_mock_variable(monkeypatch):
    monkeypatch.delenv(runtime.MOCK_CLUSTER_ENV, raising=False)
    monkeypatch.setattr(runtime, "card_present", lambda: False)


@pytest.mark.parametrize("chip, arch", [("n150", "wormhole_b0"), ("p150", "blackhole")])
def test_prepare_host_points_ttnn_at_a_shipped_single_chip_descriptor(no_mock_variable, chip, arch):
    selected = runtime.prepare_host(chip)
    path = Path(os.environ[runtime.MOCK_CLUSTER_ENV])
    assert path.is_file() and path.name == selected.descriptor
    text = path.read_text()
    assert f"0: {arch}" in text and "chips_with_mmio" in text


def test_prepare_host_leaves_a_user_setting_alone(monkeypatch):
    monkeypatch.setenv(runtime.MOCK_CLUSTER_ENV, "/users/own/descriptor.yaml")
    monkeypatch.setattr(runtime, "card_present", lambda: False)
    runtime.prepare_host("p150")
    assert os.environ[runtime.MOCK_CLUSTER_ENV] == "/users/own/descriptor.yaml"


def test_prepare_host_never_mocks_when_a_card_is_present(monkeypatch):
    monkeypatch.delenv(runtime.MOCK_CLUSTER_ENV, raising=False)
    monkeypatch.setattr(runtime, "card_present", lambda: True)
    runtime.prepare_host()
    assert runtime.MOCK_CLUSTER_ENV not in os.environ


def test_host_conversion_to_block_floats_works_without_a_card():
    import torch

    tensor = torch.randn(64, 128)
    restored = ttnn.to_torch(ttnn.from_torch(tensor, dtype=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT))
    assert restored.shape == (64, 128)
    assert torch.corrcoef(torch.stack([tensor.flatten(), restored.float().flatten()]))[0, 1] > 0.9999


def test_auto_executor_without_a_card_is_the_host_with_a_labelled_banner(no_mock_variable, monkeypatch):
    monkeypatch.delenv("DEIT_TT_EXECUTOR", raising=False)
    selected = runtime.select_runtime()
    assert selected.executor == "host" and selected.device is None
    banner = selected.banner()
    assert "host" in banner and "n150" in banner and "8x8" in banner and runtime.ttnn_version() in banner


def test_chip_and_executor_come_from_the_environment(no_mock_variable, monkeypatch):
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
    ],
)
def test_bad_choices_are_one_line_user_errors(no_mock_variable, executor, chip, message):
    with pytest.raises(UserFacingError) as excinfo:
        runtime.select_runtime(executor, chip)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)
