"""The README documents every config key and every command that exists, and every ``p2p …`` command
line in the README and docs/commands.md names a real command with flags that command has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from p2p_cli.cli.app import app
from p2p_cli.io.config import KEYS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SECTIONS = ["Install", "Quickstart", "The four commands", "Other commands", "Use your own data", "Configuration",
            "Outputs", "Metrics", "Performance", "Troubleshooting", "Python API", "Development"]
PLACEHOLDERS = {"CMD"}  # "p2p CMD --help" in prose
CALL = re.compile(r"(?:^|[\s`(])(?:p2p|-m p2p_cli)\s+(.*)")


def test_every_config_key_is_documented():
    missing = [k for k in KEYS if f"| `{k}` |" not in README]
    assert not missing
    table = README.split("\n**Every key:**\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.M)
    assert len(documented) == len(set(documented)) and not set(documented) - set(KEYS), documented


def test_every_command_is_documented():
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert names
    for name in names:
        assert f"p2p {name}" in README, name


def test_the_readme_is_a_manual_with_its_sections_in_order():
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert [h for h in headings if h in SECTIONS] == SECTIONS, headings
    contents = README.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    for section in SECTIONS:  # the table of contents links every section by its GitHub anchor
        anchor = re.sub(r"[^a-z0-9 -]", "", section.lower()).replace(" ", "-")
        assert f"[{section}](#{anchor})" in contents, section
    assert "spec §" not in README.lower() and "SPEC" not in README


def test_the_readme_links_files_that_exist_and_small_images():
    links = re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)(?:#[^)]*)?\)", README)
    assert any(link.startswith("docs/images/") for link in links), links  # the figure
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, missing
    for image in (ROOT / "docs" / "images").iterdir():
        assert image.stat().st_size <= 300_000, image  # small enough to travel with the repository


def command_lines(text: str) -> list[str]:
    """Every ``p2p …`` invocation in the text's code blocks and inline code spans, one per command
    (a line is cut at comments, ``&&``, pipes and ``;``)."""
    spans = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    spans += [" ".join(s.split()) for s in inline if s.startswith("p2p ")]
    calls = []
    for span in spans:
        for line in span.splitlines():
            for part in re.split(r"\s(?:&&|\||;)\s", line.split(" #", 1)[0]):
                match = CALL.search(part)
                if match:
                    calls.append(match.group(1).strip())
    return calls


def flags_of(command: str) -> tuple[object | None, list[str]]:
    """The click command a ``p2p`` argument string names (None for a placeholder) and its flags."""
    tokens = shlex.split(command.replace("[", " ").replace("]", " ").replace("…", " "))
    group = typer.main.get_command(app)
    if not tokens or tokens[0] in PLACEHOLDERS:
        return None, []
    if tokens[0].startswith("-"):  # p2p --version, p2p --help
        cmd, rest = group, tokens
    else:
        cmd, rest = group.commands.get(tokens[0]), tokens[1:]
        assert cmd is not None, f"no command {tokens[:1]} in: p2p {command}"
    if hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):  # a group: data, hub
        if "|" in rest[0]:
            return None, []  # "p2p data synthesize|check|prepare" names several
        sub = cmd.commands.get(rest[0])
        assert sub is not None, f"no subcommand {rest[:1]} in: p2p {command}"
        cmd, rest = sub, rest[1:]
    return cmd, [t.split("=", 1)[0] for t in rest if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", t)]


@pytest.mark.parametrize("doc", ["README.md", "docs/commands.md"])
def test_every_command_line_in_the_docs_is_real(doc):
    calls = command_lines((ROOT / doc).read_text())
    assert len(calls) > 20, calls  # the docs do show commands
    wrong = []
    for call in calls:
        cmd, flags = flags_of(call)
        if cmd is None:
            continue
        known = {"--help", "-h"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        wrong += [f"p2p {call}: {flag}" for flag in flags if flag not in known]
    assert not wrong, wrong


def test_the_command_line_check_catches_a_wrong_flag():
    assert command_lines("```bash\nOMP_NUM_THREADS=1 p2p evaluate --model a  # x\n```\nsee `p2p models --timm 'r*'`") \
        == ["evaluate --model a", "models --timm 'r*'"]
    cmd, flags = flags_of("evaluate --modell a --tau 0.1")
    assert flags == ["--modell", "--tau"]
    assert "--modell" not in {o for p in cmd.params for o in p.opts}
    with pytest.raises(AssertionError, match="no command"):
        flags_of("evaluat --model a")
