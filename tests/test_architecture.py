"""The layers of docs/architecture.md: every ``p2p_cli`` import (``TYPE_CHECKING`` ones included)
goes to the importer's own layer or one below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "p2p_cli"
LAYERS = [
    {"errors", "__init__", "io", "runtime"},
    {"models", "losses", "metrics", "data", "viz"},
    {"training", "pruning", "attacks", "evaluation", "explain", "export"},
    {"workflows"},
    {"api"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def imported_packages(path: Path) -> set[str]:
    """The top-level ``p2p_cli`` packages (or modules) that the file imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "p2p_cli":
                out.add(parts[1] if len(parts) > 1 else "__init__")
    return out


def test_every_package_has_a_layer():
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))}
    assert top == set(LAYER_OF)


def test_imports_go_down_or_sideways_only():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for dst in imported_packages(path):
            if LAYER_OF[dst] > LAYER_OF[src]:
                upward.append(f"{rel} imports p2p_cli.{dst}")
    assert not upward, upward


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from p2p_cli.workflows.push import PushRequest\n")
    assert imported_packages(bad) == {"workflows"}
