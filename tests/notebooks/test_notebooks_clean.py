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


def _syntax(cell) -> ast.Module:
    return ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def _asserts(cell) -> list[ast.Assert]:
    return [node for node in ast.walk(_syntax(cell)) if isinstance(node, ast.Assert)]


def _checks(cell) -> list[ast.stmt]:
    """The cell's asserts and its hand-written `raise AssertionError(...)`: a check either way."""
    raised = [node for node in ast.walk(_syntax(cell)) if isinstance(node, ast.Raise) and node.exc is not None
              and "AssertionError" in ast.unparse(node.exc)]
    return [*_asserts(cell), *raised]


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_claim_checks_live_in_self_checks_and_name_their_sentence(path):
    """Every notebook: no assert in a teaching cell, and every assert of a self-check names the sentence of the text it
    guards (its message quotes it)."""
    notebook = _load(path)
    checks = [cell for cell in notebook.cells if _is_self_check(cell)]
    assert checks, f"{path.name} has no self-check cell"
    teaching = [index for index, cell in enumerate(notebook.cells)
                if cell.cell_type == "code" and not _is_self_check(cell) and _checks(cell)]
    assert not teaching, f"{path.name}: code cells {teaching} assert in the teaching; move the checks into their section's self-check"
    for cell in checks:
        unnamed = [node.lineno for node in _asserts(cell) if node.msg is None]
        assert not unnamed, f"{path.name}: self-check {cell.source.splitlines()[0]!r}: asserts on lines {unnamed} name no sentence"


# -- self-check messages quote the text they guard -------------------------------------------------------------------

QUOTATION = re.compile(r'"([^"]+)"|“([^”]+)”')
ELLIPSIS = re.compile(r"\s*(?:…|\.\.\.)\s*")
SHORTEST_QUOTATION_WORDS = 3
FORMATTED_VALUE = "\0"  # stands for an f-string's {expression}: a quotation must not span one


def _plain(text: str) -> str:
    """Markdown as read: links by their text, no emphasis or code marks, whitespace collapsed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*`]|(?<!\w)_+|_+(?!\w)", "", text)
    return " ".join(text.split())


def _message_text(node: ast.expr) -> str | None:
    """A message's constant text (f-string expressions become FORMATTED_VALUE); None if it is not a string literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else FORMATTED_VALUE for part in node.values)
    if isinstance(node, ast.Tuple):  # `assert ok, ("quotation", value)` shows the value too
        texts = [_message_text(element) for element in node.elts]
        return None if all(text is None for text in texts) else " ".join(filter(None, texts))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message_text(node.left), _message_text(node.right)
        return None if left is None or right is None else left + right
    return None


def _quotes_the_text(message: str, text: str) -> bool:
    """The message holds a quotation (straight or curly double quotes) of at least SHORTEST_QUOTATION_WORDS words
    whose pieces (split at an ellipsis) appear, in order, in the notebook's markdown."""
    for match in QUOTATION.finditer(message):
        quotation = _plain(match.group(1) or match.group(2))
        if FORMATTED_VALUE in quotation or len(quotation.split()) < SHORTEST_QUOTATION_WORDS:
            continue
        position = 0
        for piece in filter(None, ELLIPSIS.split(quotation)):
            position = text.find(piece, position)
            if position < 0:
                break
            position += len(piece)
        else:
            return True
    return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_self_check_messages_quote_a_passage_of_the_notebooks_text(path):
    """Each self-check assert's message quotes, in double quotes, a passage of this notebook's markdown verbatim
    (whitespace, links, emphasis and backticks aside; an ellipsis may shorten it): the sentence the assert guards,
    so that a reader of a failure can find it and an edit of the text that drops the claim breaks the check."""
    notebook = _load(path)
    text = _plain("\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown"))
    failures = []
    for index, cell in enumerate(notebook.cells):
        if not _is_self_check(cell):
            continue
        for node in _asserts(cell):
            message = None if node.msg is None else _message_text(node.msg)
            if message is None or not _quotes_the_text(message, text):
                failures.append(f"cell {index} line {node.lineno}: {ast.unparse(node.msg) if node.msg else None}")
    assert not failures, f"{path.name}: self-check messages that quote no passage of the text:\n" + "\n".join(failures)


def test_the_quotation_rule_refuses_misquotes_and_descriptions():
    text = _plain("Every op's estimate stays *under* it: `make_plan` refuses a plan\nin which one does not fit.")

    def message(source: str) -> str | None:
        return _message_text(ast.parse(source, mode="eval").body)

    assert _quotes_the_text(message("""f'"Every op\\'s estimate stays under it": {peak}'"""), text)
    assert _quotes_the_text(message("""('“`make_plan` refuses a plan … does not fit”', table)"""), text)
    assert not _quotes_the_text(message("""'"every estimate stays under the bank"'"""), text)  # words the text does not say
    assert not _quotes_the_text(message("""'the estimate stays under it'"""), text)  # a description, no quotation
    assert not _quotes_the_text(message("""'"under it": the peak'"""), text)  # three words at least: two are not distinctive
    assert not _quotes_the_text(message("""f'"Every op\\'s {what} stays under it"'"""), text)  # not constant text
