"""``gradcam-kit --help``: plain text, as a terminal shows it (no reStructuredText markup)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gradcam_kit.cli import build_parser

COMMANDS = ("images", "release", "grade", "demo")
MARKUP = re.compile(r"``|:(?:func|class|meth|mod|data|attr):`")


def help_text(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "gradcam_kit", *args, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_text(command):
    text = help_text(*([command] if command else []))
    assert not MARKUP.search(text), f"reStructuredText markup in the help:\n{text}"
    assert text.strip(), "no help at all"


def test_the_main_help_names_every_command_and_each_command_says_what_it_does():
    text = help_text()
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", text, re.M), f"{command} is not listed"
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for command, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 40, f"`gradcam-kit {command} --help` says nothing"
