"""How every p2p command parses and shows itself: the Typer command and group classes.

Help is plain text laid out by click's formatter at the terminal's width (at most 80 columns):
the docstring's paragraphs reflow as prose, positional arguments are listed by their names in
capitals, options in one section per panel (Common, Data, Model, …) with their metavar
(``INT``, ``FLOAT``, ``PATH``, ``TEXT`` or ``[a|b|c]``; none for boolean flags), and a final
``Examples:`` block of the docstring is shown line by line, as written. Nothing is cut: a long
option name puts its help on the next line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from typer.core import TyperCommand, TyperGroup

EXAMPLES = "Examples:"
_TYPE_METAVARS = {"int": "INT", "float": "FLOAT", "str": "TEXT", "path": "PATH", "file": "PATH",
                  "directory": "PATH"}


def _is_option(token: str) -> bool:
    """An option name (``--x``, ``-x``), not a value such as ``-1`` or ``-inf``."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def expand_variadic(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``--metrics acc aap --tau 0.1 inf`` → ``--metrics acc --metrics aap --tau 0.1 --tau inf``.

    Click options take one value each; the documented syntax lists several after one flag. Values
    run until the next option (a token starting with ``-`` that is not a number) or ``--``.
    """
    out: list[str] = []
    current: str | None = None
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        if _is_option(tok):
            name = tok.split("=", 1)[0]
            current = name if name in flags and "=" not in tok else None
            out.append(tok)
            if current is not None and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif current is not None:
            out.extend([current, tok])
        else:
            out.append(tok)
        i += 1
    return out


def metavar(param: Any, ctx: Any) -> str | None:
    """The metavar a parameter shows in help: INT, FLOAT, PATH, TEXT or ``[a|b|c]`` (flags: none)."""
    if getattr(param, "is_flag", False):
        return None
    given = param.metavar
    if given:
        return f"[{given}]" if "|" in given and not given.startswith("[") else given
    label = param.display_type(ctx).strip("<>").removesuffix(" range")  # "int range": min/max are shown apart
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _TYPE_METAVARS.get(label, label.upper())


def split_examples(text: str) -> tuple[str, list[str]]:
    """A docstring → (its prose, the lines of its final ``Examples:`` block)."""
    text = inspect.cleandoc(text or "")
    prose, sep, examples = text.partition(f"\n{EXAMPLES}\n")
    if not sep:
        return text, []
    return prose.rstrip(), [line.strip() for line in examples.splitlines() if line.strip()]


def first_paragraph(text: str | None) -> str:
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


def _with_metavars(params: list[Any], ctx: Any) -> list[Any]:
    for param in params:
        kind = getattr(param, "param_type_name", "")
        if kind == "option" and not param.is_flag:
            param.metavar = metavar(param, ctx)
        elif kind == "argument":  # shown by its name in capitals: IMAGES... in the usage line
            param.metavar = param.name.upper()
    return params


def _argument_record(param: Any, ctx: Any) -> tuple[str, str]:
    """(``NAME`` or ``NAME...``, help) of a positional argument."""
    name = param.name.upper() + ("..." if param.nargs == -1 else "")
    return name, getattr(param, "help", None) or ""


def _format_options(command: Any, ctx: Any, formatter: Any) -> None:
    """One section per help panel, options without a panel first."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "param_type_name", "") == "argument":
            sections.setdefault("Arguments", []).append(_argument_record(param, ctx))
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        panel = getattr(param, "rich_help_panel", None) or "Options"
        sections.setdefault(panel, [])
        sections[panel].append(record)
    for panel in sorted(sections, key=lambda p: (p != "Arguments", p != "Options")):
        with formatter.section(panel):
            formatter.write_dl(sections[panel])


def _format_help(command: Any, ctx: Any, formatter: Any, extra: Callable[[], None] | None = None) -> None:
    """Usage, the prose of the docstring, the options (then ``extra``), and the examples last."""
    command.format_usage(ctx, formatter)
    prose, examples = split_examples(command.help)
    if prose:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(prose)
    _format_options(command, ctx, formatter)
    if extra is not None:
        extra()
    if examples:
        with formatter.section(EXAMPLES.rstrip(":")):
            for line in examples:
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


class P2PCommand(TyperCommand):
    """A p2p command: plain help (see the module docstring); ``variadic`` flags take several values."""

    variadic: ClassVar[tuple[str, ...]] = ()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if self.variadic:
            args = expand_variadic(list(args), self.variadic)
        return super().parse_args(ctx, args)

    def get_params(self, ctx: Any) -> list[Any]:
        return _with_metavars(super().get_params(ctx), ctx)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] NAME...``: positional arguments by their names in capitals (``[NAME]`` when optional)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") == "argument":
                name = _argument_record(param, ctx)[0]
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter)


class P2PGroup(TyperGroup):
    """A group of p2p commands: plain help listing each command with its whole first paragraph."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _with_metavars(super().get_params(ctx), ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter, lambda: self._format_command_list(formatter))

    def _format_command_list(self, formatter: Any) -> None:
        rows = [(name, first_paragraph(cmd.help)) for name, cmd in self.commands.items() if not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def variadic_command(*flags: str) -> type[P2PCommand]:
    """A command class whose ``flags`` (list options) take several values after one flag."""
    return type("VariadicCommand", (P2PCommand,), {"variadic": tuple(flags)})
