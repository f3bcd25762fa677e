"""docs/cli.md is the option reference the parser gives now (regenerate: python -m asge.cli_reference docs/cli.md)."""
import argparse
from pathlib import Path

from asge.cli import build_parser
from asge.cli_reference import COMMAND, markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_current():
    text = DOC.read_text(encoding="utf-8")
    assert COMMAND in text.split("\n\n")[1]                  # the regeneration command, at the top
    assert text == markdown(), f"docs/cli.md is out of date: run `{COMMAND}`"


def test_the_reference_has_every_command_and_option():
    text = markdown()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert f"\n## asge {name}\n" in text
        section = text.split(f"\n## asge {name}\n")[1].split("\n## ")[0]
        for group in p._action_groups:
            if any(a.help != argparse.SUPPRESS and a.dest != "help" for a in group._group_actions):
                assert f"\n### {group.title}\n" in section, (name, group.title)
        for action in p._actions:
            if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help":
                assert f"- `{action.option_strings[0]}" in section, (name, action.option_strings)
