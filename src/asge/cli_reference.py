"""docs/cli.md, the option reference of every ``asge`` command, generated from the parser itself (so that it says
what ``--help`` says: the help texts, choices and defaults of the code).

    python -m asge.cli_reference docs/cli.md      # rewrite it (no path: print it)

tests/test_cli_reference.py checks that the committed file is what this writes now.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .cli import build_parser

COMMAND = "python -m asge.cli_reference docs/cli.md"


def _escape(text: str) -> str:
    """Help text as Markdown text: the characters Markdown would read as markup are escaped."""
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", text)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _command_section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """``## asge NAME``: its description, a synopsis, then each argument group's options, one line each."""
    formatter = parser.formatter_class(prog=parser.prog)
    positionals = [a for a in parser._actions if not a.option_strings]
    synopsis = " ".join([parser.prog] + [formatter._format_args(a, a.dest) for a in positionals] + ["[options]"])
    lines = [f"## asge {name}", "", _escape(parser.description or ""), "", f"    {synopsis}", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"### {group.title}", ""]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            text = formatter._expand_help(action) if action.help else ""
            lines.append(f"- `{invocation}`" + (f": {_escape(text)}" if text else ""))
        lines.append("")
    return lines


def markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole reference: the commands, then one section per command, in the parser's order."""
    parser = parser or build_parser()
    sub = _subparsers(parser)
    lines = ["# Command-line reference", "",
             f"Generated from the parser by `{COMMAND}`: run it again after changing a help text "
             "(tests/test_cli_reference.py fails while this file is not current). The help texts of the train "
             "options live with the fields of `TrainConfig` in src/asge/config.py, the others in the module of "
             "their command.", "",
             _escape(parser.description or ""), "",
             "Every command also takes `--help`, which prints the same options; `asge --version` prints the "
             "version.", ""]
    lines += [f"- [`asge {a.dest}`](#asge-{a.dest}): {_escape(a.help or '')}" for a in sub._choices_actions]
    lines.append("")
    for name, sp in sub.choices.items():
        lines += _command_section(name, sp)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(f"usage: {COMMAND}   (no path: print it)", file=sys.stderr)
        return 2
    text = markdown()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
