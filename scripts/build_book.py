"""Render executed notebooks as a static HTML book: one page per notebook and an index.

    python scripts/build_book.py build/executed build/book

The notebooks must already be executed (``make book`` runs them once, under nbmake, with the offline
defaults). A notebook with an error output is refused: the book shows what ran, never half a run.
A cell whose source JupyterLab shows collapsed (metadata ``jupyter.source_hidden``: the self-check cells) keeps
its output and loses its source here too. Pages are nbconvert's HTML export (the classic template, with figures
embedded as PNG).
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter


def errors(notebook) -> list[str]:
    return [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def title(notebook, fallback: str) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            return cell.source.splitlines()[0][2:].strip()
    return fallback


def hide_collapsed_sources(notebook) -> None:
    """Mark the cells JupyterLab shows collapsed so that nbconvert's templates leave out their source (not their output)."""
    for cell in notebook.cells:
        if cell.metadata.get("jupyter", {}).get("source_hidden"):
            cell.metadata["transient"] = {"remove_source": True}


def build(executed: Path, out: Path) -> list[Path]:
    exporter = HTMLExporter(template_name="classic")
    out.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(executed.glob("*.ipynb"))
    if not notebooks:
        raise SystemExit(f"no executed notebooks in {executed}: run `make book` (it executes them first)")
    entries = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
            raise SystemExit(f"{path} has no outputs: it was not executed")
        problems = errors(notebook)
        if problems:
            raise SystemExit(f"{path.name} has errors, no book: " + "; ".join(problems))
        hide_collapsed_sources(notebook)
        body, _ = exporter.from_notebook_node(notebook)
        page = out / f"{path.stem}.html"
        page.write_text(body)
        entries.append((page.name, title(notebook, path.stem)))
    items = "\n".join(f'<li><a href="{html.escape(name)}">{html.escape(text)}</a></li>' for name, text in entries)
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>deit-tt notebooks</title>"
        "<h1>deit-tt: the notebooks, executed</h1>"
        "<p>Executed once, by <code>make test</code>, with the offline defaults: no Hugging Face hub, so each notebook's "
        "first cell names the model it fell back to, and notebook 05 with the test run's short training and held-out "
        "set (its first cell prints the values). Each banner says where the ops ran: a card, or the host.</p>"
        f"<ol>\n{items}\n</ol>\n"
    )
    return [out / name for name, _ in entries]


if __name__ == "__main__":
    pages = build(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"book: {len(pages)} pages and index.html in {sys.argv[2]}")
