"""Committed notebooks are clean: no outputs, no execution counts, the standard kernel, and a first
code cell that reads DEIT_TT_MODEL (so CI can run every notebook small and a user can run it full)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
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
def test_first_code_cell_reads_the_model_from_the_environment(path):
    code = [cell for cell in _load(path).cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    source = code[0].source
    reads_environment = "environ" in source or "getenv" in source
    assert "DEIT_TT_MODEL" in source and reads_environment, f"{path.name}: the first code cell must read DEIT_TT_MODEL from the environment"
