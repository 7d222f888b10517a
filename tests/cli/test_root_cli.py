"""The root `infrabrain` command: every area's subcommands are present, help works, bad demo input is refused."""

from __future__ import annotations

import subprocess
import sys

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


def test_demo_refuses_a_single_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--sites", "1"]) == 2
    assert "--sites must be at least 2" in capsys.readouterr().err


def test_console_script_runs_without_heavy_imports() -> None:
    code = ("import sys, infrabrain.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'flwr', 'tenseal', 'opacus') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"`infrabrain --help` imports {out.strip()}"
