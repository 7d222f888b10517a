"""`infrabrain simulate` end to end (small), and its errors."""

from __future__ import annotations

import json
import logging

import pytest

from infrabrain.cli import main
from infrabrain.simulation.engine import SIMULATOR_VERSION


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() installs a JSON handler on pytest's captured stderr; remove it so later tests don't log to a
    closed stream."""
    before = list(logging.getLogger().handlers)
    yield
    for h in logging.getLogger().handlers:
        if h not in before:
            logging.getLogger().removeHandler(h)


def test_simulate_writes_dataset_and_summary(tmp_path, capsys) -> None:
    out = tmp_path / "fed"
    rc = main(["simulate", "--sites", "2", "--hours", "4", "--acceleration", "80", "--seed", "3", "--out", str(out),
               "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sites"] == 2 and summary["gpus"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["sites"]] == ["site-0", "site-1"] and manifest["seed"] == 3
    assert manifest["simulator_version"] == SIMULATOR_VERSION


def test_simulate_errors_name_the_problem(tmp_path, capsys) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["simulate", "--hours", "1", "--out", str(f), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows: -2\ngpu_mix: {V100: 1}\n")
    assert main(["simulate", "--spec", str(bad), "--hours", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "rows" in err and "V100" in err
    assert main(["simulate", "--what-if", "crac-2 melts", "--hours", "1"]) == 2
    assert "not understood" in capsys.readouterr().err


def test_what_if_cli_and_scenario(tmp_path, capsys) -> None:
    png = tmp_path / "w.png"
    assert main(["simulate", "--what-if", "cooling crac-2 fails at 2h", "--hours", "5", "--no-progress",
                 "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "crac-2 fails at 2.00h" in text and "path: crac-2" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sc = tmp_path / "s.yaml"
    sc.write_text("site: {name: lab, racks_per_row: 4, racks_per_cooling: 2}\nhours: 5\n"
                  "events: [{component: leaf-r01, at: 90m}]\n")
    out = tmp_path / "w"
    assert main(["simulate", "--scenario", str(sc), "--out", str(out), "--no-progress", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["injections"][0]["component"] == "leaf-r01"
    assert any(c["root_component"] == "leaf-r01" for c in rep["caused_failures"])
    assert (out / "site=lab-whatif" / "events.parquet").is_file()
