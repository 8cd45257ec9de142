"""Every ``p2p_cli.x.y.name`` path that the README, docs/method.md, docs/architecture.md,
docs/reliability.md and docs/commands.md name exists: a module, or an attribute reached from the
longest importable module prefix (so the docs cannot rot)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PATH = re.compile(r"p2p_cli(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def named_paths(doc: str) -> list[str]:
    return sorted(set(PATH.findall((DOCS / doc).read_text())))


def resolve(path: str) -> object:
    """The module or attribute ``path`` names; AttributeError/ImportError when there is none."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


@pytest.mark.parametrize(("doc", "at_least"), [("method.md", 21), ("architecture.md", 21), ("reliability.md", 11),
                                              ("commands.md", 1), ("../README.md", 2)])
def test_every_code_path_in_the_docs_exists(doc, at_least):
    paths = named_paths(doc)
    assert len(paths) >= at_least  # the docs do name the code
    missing = []
    for path in paths:
        try:
            resolve(path)
        except (AttributeError, ImportError) as exc:
            missing.append(f"{path} ({exc})")
    assert not missing, f"{doc} names code that does not exist: {missing}"


def test_resolve_fails_on_a_stale_path():
    with pytest.raises(AttributeError):
        resolve("p2p_cli.workflows.evaluate.base_activations")  # moved to evaluation.collect
    assert resolve("p2p_cli.evaluation.collect.base_activations").__name__ == "base_activations"
