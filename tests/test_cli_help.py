"""`p2p --help` and `p2p CMD --help`: fast (no torch, timm or matplotlib), readable at 80 columns,
ending in runnable examples; every command accepts -q/--quiet."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from p2p_cli.cli.app import app
from p2p_cli.cli.command import split_examples

ROOT = get_command(app)
HEAVY = ("torch", "timm", "matplotlib")
METAVAR = re.compile(r"^(INT|FLOAT|PATH|TEXT|\[[^\]|\s]+(\|[^\]|\s]+)+\])$")


def _commands(group=ROOT, path=()):
    """(path, click command) of every group and command, the root first."""
    yield path, group
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


GROUPS = [p for p, c in _commands() if hasattr(c, "commands")]
LEAVES = [p for p, c in _commands() if not hasattr(c, "commands")]
ids = " ".join


def _command(path):
    cmd = ROOT
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _squeezed(text: str) -> str:
    """``text`` without white space: wrapping (also at a hyphen) leaves it unchanged."""
    return "".join(text.split())


def _help(path, columns=80) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def _parse(path, args):
    """Parse ``args`` the way `p2p PATH ARGS` would, without running the command; returns its params."""
    return _command(path).make_context(" ".join(["p2p", *path]), list(args)).params


# -- no heavy imports --------------------------------------------------------------------------------

_PROBE = """
import json, sys
from typer.testing import CliRunner
from p2p_cli.cli.app import app
loaded = {}
for path in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    loaded[" ".join(["p2p", *path])] = [m for m in HEAVY if m in sys.modules]
print(json.dumps(loaded))
""".replace("HEAVY", repr(HEAVY))


def _heavy_modules_after_help() -> dict[str, list[str]]:
    paths = [list(p) for p, _ in _commands()]
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(paths)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_help_of_every_command_imports_no_torch_timm_or_matplotlib():
    loaded = _heavy_modules_after_help()
    assert set(loaded) == {" ".join(["p2p", *p]) for p, _ in _commands()}
    assert {cmd: mods for cmd, mods in loaded.items() if mods} == {}


# -- help at 80 columns --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: ids(("p2p", *p)))
def test_help_fits_80_columns_and_cuts_nothing(path):
    text = _help(path)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for name, cmd in getattr(_command(path), "commands", {}).items():  # a group lists each command's whole summary
        assert _squeezed(cmd.help.split("\n\n")[0]) in _squeezed(text), name


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: ids(("p2p", *p)))
def test_description_reflows_as_prose(path):
    """Each paragraph of the description is filled greedily: no line ends where the next word would fit."""
    width = 78  # click's formatter: COLUMNS - 2
    lines = _help(path).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if i > start and line and not line.startswith(" "))
    paragraphs = "\n".join(lines[start:end]).strip("\n").split("\n\n")
    assert paragraphs and paragraphs[0].strip()
    for paragraph in paragraphs:
        rows = paragraph.splitlines()
        for row, nxt in zip(rows, rows[1:], strict=False):
            assert len(row) + 1 + len(nxt.split()[0]) > width, f"line break before a word that fits: {row!r}"
    prose, _ = split_examples(_command(path).help)
    assert _squeezed(prose) in _squeezed("".join(lines[start:end]))


@pytest.mark.parametrize("path", LEAVES, ids=lambda p: ids(("p2p", *p)))
def test_help_ends_with_two_or_three_examples_that_parse(path):
    lines = _help(path).rstrip("\n").splitlines()
    header = lines.index("Examples:")
    examples = [line.strip() for line in lines[header + 1:]]
    assert 2 <= len(examples) <= 3 and all(line.startswith("  p2p ") for line in lines[header + 1:])
    prefix = ["p2p", *path]
    for example in examples:
        words = shlex.split(example)
        assert words[:len(prefix)] == prefix, example
        _parse(path, words[len(prefix):])  # raises on an unknown flag or a missing required option


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: ids(("p2p", *p)))
def test_metavars(path):
    cmd = _command(path)
    ctx = cmd.make_context(path[-1] if path else "p2p", [], resilient_parsing=True)
    for param in cmd.get_params(ctx):
        if param.param_type_name == "argument":  # shown as its name in capitals, in usage and help
            usage = _help(path).splitlines()[0]
            assert param.name.upper() in usage and "{" not in usage and f"{param.name.upper()} <" not in _help(path)
            continue
        names, _ = param.get_help_record(ctx)
        words = [w for w in names.replace(",", " ").replace("/", " ").split() if not w.startswith("-")]
        if param.is_flag:
            assert words == [], names  # a boolean flag shows no metavar
        else:
            assert len(words) == 1 and METAVAR.match(words[0]), names


# -- -q/--quiet everywhere -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", LEAVES, ids=lambda p: ids(("p2p", *p)))
def test_every_command_accepts_quiet(path):
    lines = _help(path).rstrip("\n").splitlines()
    first_example = shlex.split(lines[lines.index("Examples:") + 1])[1 + len(path):]
    for flag in ("-q", "--quiet"):
        assert _parse(path, [*first_example, flag])["quiet"] is True
    assert _parse(path, first_example)["quiet"] is False
