"""The root `infrabrain` command: every area's subcommands are present, help works, bad demo input is refused."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from infrabrain.cli import build_parser, main

EXPECTED = {"demo", "simulate", "train", "evaluate", "predict", "privacy", "federate", "coordinator", "certs",
            "benchmark", "benchmark-server", "client"}


def test_every_area_registers_its_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert EXPECTED <= set(sub.choices), f"missing: {EXPECTED - set(sub.choices)}"


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help_of_every_command_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: infrabrain " + command in capsys.readouterr().out


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[str, argparse.Action]]:
    """Every option and positional of ``parser`` and of its subcommands, with the command path it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_of_every_command_says_what_it_does() -> None:
    """``--help`` that helps: no option is listed bare, and each help text formats (a stray ``%`` would make
    ``--help`` itself fail)."""
    bare = []
    for command, action in _options(build_parser(), ("infrabrain",)):
        if not action.help:
            bare.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
        else:
            action.help % {"default": action.default, "prog": command, "choices": action.choices}
    assert not bare, f"options without help: {bare}"


def test_demo_refuses_a_single_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--sites", "1"]) == 2
    assert "--sites must be at least 2" in capsys.readouterr().err


def test_console_script_runs_without_heavy_imports() -> None:
    code = ("import sys, infrabrain.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'flwr', 'tenseal', 'opacus') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"`infrabrain --help` imports {out.strip()}"
