"""`make demo` on a machine without the hub: one line says so, the bundled scenes are classified, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deit_tt.data.scenes import SCENE_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def test_demo_offline_classifies_the_bundled_scenes_with_shapes_tiny():
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DEIT_TT_")}
    environment["HF_HUB_OFFLINE"] = "1"  # what a machine without the hub sees (and no real checkpoint is asked for)
    environment["HF_HOME"] = "/nonexistent-hf-home"  # nor a cached copy
    run = subprocess.run([sys.executable, "-m", "deit_tt", "demo"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("offline: facebook/deit-base-distilled-patch16-224 cannot be loaded here"), lines[0]
    assert lines[0].endswith("classifying the generated scenes of data/scenes with shapes:tiny instead")
    assert "model: shapes:tiny" in lines[1]
    for name in SCENE_CLASSES:  # every scene classified, its file naming its class
        assert f"data/scenes/{name}.png" in run.stdout
    assert run.stdout.count("average of heads") == len(SCENE_CLASSES)


def test_demo_with_a_model_named_explicitly_that_cannot_load_keeps_the_one_line_error():
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DEIT_TT_")}
    environment.update(HF_HUB_OFFLINE="1", HF_HOME="/nonexistent-hf-home", DEIT_TT_MODEL="facebook/deit-small-distilled-patch16-224")
    run = subprocess.run([sys.executable, "-m", "deit_tt", "demo"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("error: cannot load checkpoint 'facebook/deit-small-distilled-patch16-224'"), run.stderr
    assert run.stdout == ""
