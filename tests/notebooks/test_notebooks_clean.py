"""Committed notebooks are clean: no outputs, no execution counts, the standard kernel, a first code cell that
reads the settings through notebook_setup (so CI can run every notebook small and a user can run it full), and
claim checks out of the reader's way: collapsed self-check cells, at most one per section, after its text."""

from __future__ import annotations

import ast
import re
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


# -- self-checks: every claim checked, out of the reader's way -------------------------------------------------------

SELF_CHECK_TAG = "self-check"
# Notebooks whose claim checks all live in self-check cells: no assert in a teaching cell, and every assert of a
# self-check names the sentence of the text it guards (its message quotes it).
CLAIMS_CHECKED_OUT_OF_THE_WAY = [
    "01_weight_conversion", "01a_sharding_plan", "03_attention_maps", "04_imagenet_evaluation",
    "05_distillation_through_attention",
]
HEADING = re.compile(r"^#{1,6} ", re.MULTILINE)


def _is_self_check(cell) -> bool:
    return cell.cell_type == "code" and SELF_CHECK_TAG in cell.metadata.get("tags", [])


def _starts_a_section(cell) -> bool:
    """A markdown cell with a heading outside fenced code starts a section (at its first heading)."""
    if cell.cell_type != "markdown":
        return False
    text = re.sub(r"```.*?```", "", cell.source, flags=re.DOTALL)
    return bool(HEADING.search(text))


def _sections(notebook) -> list[list[tuple[int, object]]]:
    sections: list[list[tuple[int, object]]] = [[]]
    for index, cell in enumerate(notebook.cells):
        if _starts_a_section(cell):
            sections.append([])
        sections[-1].append((index, cell))
    return sections


def _asserts(cell) -> list[ast.Assert]:
    source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assert)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_self_check_cells_are_collapsed_and_tagged(path):
    """JupyterLab collapses a cell's source when its metadata says so; the book hides the source of tagged cells."""
    for index, cell in enumerate(_load(path).cells):
        hidden = cell.metadata.get("jupyter", {}).get("source_hidden", False)
        assert hidden == _is_self_check(cell), (
            f"{path.name} cell {index}: a self-check cell is tagged {SELF_CHECK_TAG!r} and has its source collapsed "
            '(metadata "jupyter": {"source_hidden": true}), and only self-check cells are collapsed')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_section_has_at_most_one_self_check_after_its_text(path):
    for section in _sections(_load(path)):
        checks = [index for index, cell in section if _is_self_check(cell)]
        assert len(checks) <= 1, f"{path.name}: cells {checks} are self-checks of one section; merge them into one at its end"
        if checks:
            text_after = [index for index, cell in section if cell.cell_type == "markdown" and index > checks[0]]
            assert not text_after, f"{path.name}: markdown cells {text_after} follow the self-check {checks[0]} of their section"


@pytest.mark.parametrize("name", CLAIMS_CHECKED_OUT_OF_THE_WAY)
def test_claim_checks_live_in_self_checks_and_name_their_sentence(name):
    notebook = _load(NOTEBOOK_DIR / f"{name}.ipynb")
    checks = [cell for cell in notebook.cells if _is_self_check(cell)]
    assert checks, f"{name} has no self-check cell"
    teaching = [index for index, cell in enumerate(notebook.cells)
                if cell.cell_type == "code" and not _is_self_check(cell) and _asserts(cell)]
    assert not teaching, f"{name}: code cells {teaching} assert in the teaching; move the checks into their section's self-check"
    for cell in checks:
        unnamed = [node.lineno for node in _asserts(cell) if node.msg is None]
        assert not unnamed, f"{name}: self-check {cell.source.splitlines()[0]!r}: asserts on lines {unnamed} name no sentence"
