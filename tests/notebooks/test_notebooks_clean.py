"""Committed notebooks are clean: no outputs, no execution counts, the standard kernel, and a first
code cell that reads the settings through notebook_setup (so CI can run every notebook small and a user can run it full)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _load(path: Path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_nbformat(path):
    nbformat.validate(_load(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs_or_execution_counts(path):
    notebook = _load(path)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_the_python3_kernel(path):
    kernelspec = _load(path).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec.get('name')!r}, expected 'python3'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_reads_its_settings_through_notebook_setup(path):
    """One place reads the settings and picks the model (or its offline fallback): no notebook reads the
    environment itself, so CI can run every notebook small and a user can run it full."""
    code = [cell for cell in _load(path).cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    # 00 and 06 load no checkpoint by name: they read their few settings from deit_tt.settings directly
    reads_settings = "setup = notebook_setup(" in code[0].source or "from deit_tt import settings" in code[0].source
    assert reads_settings, f"{path.name}: the first code cell must call notebook_setup (or read deit_tt.settings)"
    readers = [index for index, cell in enumerate(code) if "environ" in cell.source or "getenv" in cell.source]
    assert not readers, f"{path.name}: code cells {readers} read the environment; use notebook_setup / deit_tt.settings"
