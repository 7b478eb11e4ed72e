"""The package's structure: a light public API, no import circles, one home per fact."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import deit_tt

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deit_tt"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The deit_tt modules ``path`` imports, at import time or later inside a function (type-checking imports
    aside). A name imported from a package counts as the submodule when there is one, else as the package."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    imported = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deit_tt"):
            imported.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("deit_tt"))
    return imported & modules


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(modules)) - {name, "deit_tt"} for name, path in modules.items()}


def test_the_public_api_resolves_and_importing_the_package_loads_neither_torch_nor_ttnn():
    assert all(getattr(deit_tt, name) is not None for name in deit_tt.__all__)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, deit_tt; print(sorted({'torch', 'ttnn'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    assert loaded == "[]"


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for following in graph[todo.pop()] - seen:
                seen.add(following)
                todo.append(following)
        return seen

    assert sorted(name for name in graph if name in reachable(name)) == []


def test_every_deit_tt_setting_is_named_only_in_the_settings_module():
    named = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "DEIT_TT_" in line
    ]
    assert named == []


def test_tile_is_defined_once_and_no_private_brief_is_cited():
    definitions = [path for path in PACKAGE.rglob("*.py") if re.search(r"^TILE\s*=", path.read_text(), re.MULTILINE)]
    assert [path.relative_to(ROOT).as_posix() for path in definitions] == ["deit_tt/sharding/dims.py"]
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    brief = "shared/" + "reference"  # the briefs users do not have; spelt in two parts so this file does not cite them
    assert [name for name in tracked if (ROOT / name).is_file() and brief in (ROOT / name).read_text(errors="ignore")] == []
