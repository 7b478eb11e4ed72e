"""An unreachable hub: a checkpoint that is not cached is refused at once, before torch is even imported;
one that is cached loads without any request."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from transformers import DeiTForImageClassificationWithTeacher

from deit_tt.checkpoints.loading import random_config
from deit_tt.checkpoints.hub import is_hub_id
from deit_tt.settings import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]


def closed_port_endpoint() -> str:
    """An http endpoint on localhost that refuses connections (a port that was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def offline_environment(hf_home: Path) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DEIT_TT_MODEL"):
        environment.pop(key, None)
    environment.update(HF_HOME=str(hf_home), HF_ENDPOINT=closed_port_endpoint(), PYTHONPATH=str(REPO))
    return environment


def run_python(code: str, environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300, cwd=REPO)


def test_hub_ids_are_told_from_paths_and_random_weights(tmp_path):
    assert is_hub_id(DEFAULT_MODEL)
    assert not any(map(is_hub_id, ["random:base", str(tmp_path), "./model", "~/model", "model.bin"]))


def test_uncached_hub_checkpoint_is_refused_before_torch_is_imported(tmp_path):
    code = "import sys; from deit_tt import cli; code = cli.main(['classify', 'image.jpg']); print(code, 'torch' in sys.modules)"
    result = run_python(code, offline_environment(tmp_path))
    assert result.stdout.split() == ["2", "False"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load checkpoint {DEFAULT_MODEL!r}: the Hugging Face hub is unreachable")
    assert "save_pretrained" in lines[0] and "random:base" in lines[0]


def test_cached_hub_checkpoint_loads_offline(tmp_path):
    """A checkpoint in the hub cache layout (refs/main -> snapshots/<commit>/) loads with the hub unreachable."""
    repo = tmp_path / "hub" / "models--test-org--deit-tiny-two-layers"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    config = random_config("tiny")
    config.num_hidden_layers = 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        DeiTForImageClassificationWithTeacher(config).save_pretrained(repo / "snapshots" / commit)
    code = (
        "from deit_tt.checkpoints.loading import load_checkpoint\n"
        "checkpoint = load_checkpoint('test-org/deit-tiny-two-layers')\n"
        "print(checkpoint.config.num_hidden_layers, checkpoint.is_random)"
    )
    result = run_python(code, offline_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False"]
