"""The README documents every config key and every command that exists."""

from __future__ import annotations

from pathlib import Path

from p2p_cli.cli.app import app
from p2p_cli.io.config import KEYS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_config_key_is_documented():
    missing = [k for k in KEYS if f"| `{k}` |" not in README]
    assert not missing


def test_every_command_is_documented():
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert names
    for name in names:
        assert f"p2p {name}" in README, name
