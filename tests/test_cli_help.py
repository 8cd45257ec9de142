"""`p2p --help` and `p2p CMD --help` are fast: they import no torch, timm or matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.main import get_command

from p2p_cli.cli.app import app

ROOT = get_command(app)
HEAVY = ("torch", "timm", "matplotlib")


def _commands(group=ROOT, path=()):
    """(path, click command) of every group and command, the root first."""
    yield path, group
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


# -- no heavy imports --------------------------------------------------------------------------------

_PROBE = """
import json, sys, types
for name, values in json.loads(sys.argv[1]).items():  # stand-ins for torch-importing constant modules
    module = types.ModuleType(name)
    module.__dict__.update({key: tuple(value) for key, value in values.items()})
    sys.modules[name] = module
from typer.testing import CliRunner
from p2p_cli.cli.app import app
loaded = {}
for path in json.loads(sys.argv[2]):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    loaded[" ".join(["p2p", *path])] = [m for m in HEAVY if m in sys.modules]
print(json.dumps(loaded))
""".replace("HEAVY", repr(HEAVY))


def _heavy_modules_after_help(stand_ins: dict) -> dict[str, list[str]]:
    paths = [list(p) for p, _ in _commands()]
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(stand_ins), json.dumps(paths)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_help_of_every_command_imports_no_torch_timm_or_matplotlib():
    # evaluate and robustness read three constants for their help from modules that import torch
    # today; the probe stands in for those two modules so that every other import is checked.
    from p2p_cli.workflows.evaluate import ALL_METRICS
    from p2p_cli.workflows.robustness import ATTACKS, REGIONS

    stand_ins = {"p2p_cli.workflows.evaluate": {"ALL_METRICS": ALL_METRICS},
                 "p2p_cli.workflows.robustness": {"ATTACKS": ATTACKS, "REGIONS": REGIONS}}
    loaded = _heavy_modules_after_help(stand_ins)
    assert set(loaded) == {" ".join(["p2p", *p]) for p, _ in _commands()}
    assert {cmd: mods for cmd, mods in loaded.items() if mods} == {}


@pytest.mark.xfail(strict=True, reason="cli/evaluate.py imports ALL_METRICS from workflows/evaluate.py and "
                   "cli/robustness.py ATTACKS/REGIONS from workflows/robustness.py, which import torch; passes "
                   "once they come from torch-free modules (then drop this mark and the stand-ins above)")
def test_help_imports_no_torch_without_stand_ins():
    loaded = _heavy_modules_after_help({})
    assert {cmd: mods for cmd, mods in loaded.items() if mods} == {}
