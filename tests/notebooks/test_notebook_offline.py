"""A notebook runs as a learner without the hub runs it: no DEIT_TT_* variable, no hub, nothing in the hub cache.

Notebook 03 is the one run here: its offline default is shapes:tiny on the bundled scenes, with a warning for the
photo outside what the model knows (`make test` then runs every notebook the same way, under nbmake)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_attention_maps.ipynb"


@pytest.fixture
def offline_environment(tmp_path, monkeypatch):
    """The kernel inherits this process's environment: clear every DEIT_TT_* variable and take the hub away."""
    for name in [name for name in os.environ if name.startswith("DEIT_TT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_notebook_03_runs_with_no_settings_and_no_hub(offline_environment, tmp_path):
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    notebook = nbformat.read(copy, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "model: shapes:tiny (DeiT-tiny trained here on generated scenes" in text
    assert "because facebook/deit-base-distilled-patch16-224 cannot be loaded here" in text
    assert "WARNING cat_chelsea.jpg: shapes:tiny knows only the ten textures" in text
    assert "widget self-test passed: rings.png" in text


@pytest.fixture
def no_hub(monkeypatch):
    from deit_tt.checkpoints import hub

    for name in [name for name in os.environ if name.startswith("DEIT_TT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: False)
    hub.hub_unreachable.cache_clear()
    yield
    hub.hub_unreachable.cache_clear()


def test_notebook_setup_falls_back_only_for_the_default_model(no_hub, monkeypatch, capsys):
    from deit_tt.analysis.notebook import notebook_setup
    from deit_tt.checkpoints.builtin import scenes_model_folder
    from deit_tt.errors import UserFacingError

    setup = notebook_setup("random:tiny", "batch", "num_images")
    assert (setup.model, setup.batch, setup.num_images) == ("random:tiny", 8, 0) and setup.model_choice.fell_back
    banner = capsys.readouterr().out
    assert "model: random:tiny (DeiT-tiny with seeded random weights" in banner and "($DEIT_TT_MODEL)" in banner
    assert "batch: 8   ($DEIT_TT_BATCH)" in banner and "num_images: 0   ($DEIT_TT_NUM_IMAGES)" in banner

    monkeypatch.setenv("DEIT_TT_MODEL", "random:base")  # named, and loadable: kept
    assert notebook_setup("shapes:tiny").model == "random:base"
    setup = notebook_setup("shapes:tiny", accepts=scenes_model_folder)  # notebook 05: needs a scenes model
    assert setup.model == "shapes:tiny" and setup.model_choice.reason == "random:base is not a model trained on the generated scenes"

    monkeypatch.setenv("DEIT_TT_MODEL", "facebook/deit-small-distilled-patch16-224")  # named, not loadable: the hub's error
    with pytest.raises(UserFacingError, match="^cannot load checkpoint 'facebook/deit-small-distilled-patch16-224'"):
        notebook_setup("random:tiny")
