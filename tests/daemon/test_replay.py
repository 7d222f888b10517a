"""Replay of the simulator's Parquet layout: what goes through collector -> store -> window is what was simulated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infrabrain.client.collectors.replay import ReplayCollector
from infrabrain.client.store import TelemetryStore


def test_replay_store_window_round_trip(small_run: Any, small_dataset: Path, tmp_path: Path) -> None:
    t0 = 1_800_000_000
    replay = ReplayCollector(small_dataset, start_epoch=t0, speed=1e6)
    first = replay.collect(t0 + 0.003)  # 3,000 simulated seconds = 50 steps + step 0
    rest = replay.collect(t0 + 1.0)
    assert any("reached its end" in w for w in rest.warnings)
    with TelemetryStore(tmp_path / "s.db") as store:
        store.ingest(first.samples, first.events)
        store.ingest(rest.samples, rest.events)
        steps = len(small_run.timestamps)
        for kind in ("gpu", "node", "pdu"):
            w = store.read_window(kind, t0, t0 + 60 * steps, 60, small_run.topology.ids[kind],
                                  small_run.metric_names[kind], correct_counters=False)
            np.testing.assert_allclose(w.values, small_run.metrics[kind], rtol=1e-6, equal_nan=True)
        xids = store.read_events(0, 2**40)
    sim_xids = small_run.events[small_run.events["event"] == "xid"]
    assert len(xids) == len(sim_xids)
    assert len(replay.collect(t0 + 2.0).samples) == 0  # after the end: nothing more, no error


def test_replay_bad_dataset_paths(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReplayCollector(tmp_path / "nope", start_epoch=0)
    with pytest.raises(ValueError, match="has no site 'other'"):
        ReplayCollector(small_dataset, start_epoch=0, site="other")
    with pytest.raises(ValueError, match="speed"):
        ReplayCollector(small_dataset, start_epoch=0, speed=0)


# -- the replay's clock outlives the daemon process ---------------------------------------------------------------
def _replay_site(tmp: Path, dataset: Path, **replay: Any) -> Any:
    """site.yaml for a replay-only site on ``dataset`` (speed 600: 1 wall second = 10 simulated minutes)."""
    import yaml

    from infrabrain.cli import main as cli_main
    from infrabrain.client.config import load_site_config

    assert cli_main(["client", "topology-from-sim", str(dataset), "--out", str(tmp / "topology.yaml")]) == 0
    (tmp / "site.yaml").write_text(yaml.safe_dump({
        "site": "lab", "topology": "topology.yaml", "cadence_s": 60, "metrics": {"port": 0},
        "store": {"path": "store.db", "retention_days": 3650},
        "collectors": {"replay": {"dataset": str(dataset), "speed": 600, **replay}},
    }))
    return load_site_config(tmp / "site.yaml")


def _dataset_with_xids(small_dataset: Path, small_run: Any, tmp: Path) -> Path:
    """A copy of the small dataset with three XID events (the small site has none), one after the first pass."""
    import shutil

    import pandas as pd

    out = tmp / "dataset"
    shutil.copytree(small_dataset, out)
    gpus = list(small_run.topology.ids["gpu"])
    pd.DataFrame({"t": [600, 1200, 4200], "component_id": gpus[:3], "kind": ["gpu"] * 3, "event": ["xid"] * 3,
                  "cause": [""] * 3, "root_component": gpus[:3], "xid": [79, 48, 63], "detail": [""] * 3}) \
        .to_parquet(next(out.iterdir()) / "events.parquet", index=False)
    return out


def test_a_restarted_daemon_continues_the_replay_and_stores_nothing_twice(small_run: Any, small_dataset: Path,
                                                                          tmp_path: Path) -> None:
    from infrabrain.client.daemon import Daemon

    cfg = _replay_site(tmp_path, _dataset_with_xids(small_dataset, small_run, tmp_path))
    t0 = 1_800_000_000.0
    first = Daemon(cfg, now=t0)
    try:
        assert first.collect_once(t0 + 3.0) > 0  # simulated seconds 0..1800
    finally:
        first.close()
    # restarted 50 s later (8 simulated hours at speed 600): a new process would start a new replay clock here
    again = Daemon(cfg, now=t0 + 50.0)
    try:
        replay = again.collectors[0]
        assert replay.start_epoch == t0 and replay.cursor_sim == 1800.0
        assert again.collect_once(t0 + 60.0) > 0  # the rest, on the first clock
        info = again.store.info()
        steps = len(small_run.timestamps)
        assert info.n_samples == sum(small_run.metrics[k].size for k in small_run.metrics)  # nothing twice
        assert (info.t_min, info.t_max) == (int(t0), int(t0) + 60 * (steps - 1))
        for kind in ("gpu", "node", "pdu"):
            w = again.store.read_window(kind, int(t0), int(t0) + 60 * steps, 60, small_run.topology.ids[kind],
                                        small_run.metric_names[kind], correct_counters=False)
            np.testing.assert_allclose(w.values, small_run.metrics[kind], rtol=1e-6, equal_nan=True)
        events = again.store.read_events(0, 2**40)
        assert list(events["t"] - int(t0)) == [600, 1200, 4200] and list(events["xid"]) == [79, 48, 63]
        assert info.positions["replay"]["start_epoch"] == t0
    finally:
        again.close()


def test_cli_collect_once_twice_continues_one_replay(small_run: Any, small_dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import time

    from infrabrain.cli import main as cli_main

    _replay_site(tmp_path, _dataset_with_xids(small_dataset, small_run, tmp_path))
    cfg = str(tmp_path / "site.yaml")
    assert cli_main(["client", "collect-once", "--config", cfg]) == 0
    time.sleep(1.1)  # 11 more simulated minutes
    assert cli_main(["client", "collect-once", "--config", cfg]) == 0
    with TelemetryStore(tmp_path / "store.db", read_only=True) as store:
        events = store.read_events(0, 2**40)
        t_min = store.info(check=False).t_min
    # one clock: the second call did not store the dataset again, shifted to a new start
    assert list(events["xid"]) == [79, 48][:len(events)] and len(events) >= 1
    assert list(events["t"] - t_min) == [600, 1200][:len(events)]
    capsys.readouterr()
    assert cli_main(["client", "store-info", "--config", cfg]) == 0
    info = json.loads(capsys.readouterr().out)
    assert int(info["positions"]["replay"]["start_epoch"]) == t_min and info["positions"]["replay"]["cursor_sim"] > 600


def test_a_pinned_start_or_another_dataset_starts_anew_and_says_why(small_run: Any, small_dataset: Path,
                                                                    tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from infrabrain.client.daemon import Daemon

    caplog.set_level(logging.INFO, logger="infrabrain")
    cfg = _replay_site(tmp_path, small_dataset)
    t0 = 1_800_000_000.0
    first = Daemon(cfg, now=t0)
    first.collect_once(t0 + 1.0)
    first.close()
    pinned = _replay_site(tmp_path, small_dataset, start_epoch=t0 + 7200.0)  # the operator pins a new replay
    again = Daemon(pinned, now=t0 + 10.0)
    try:
        assert again.collectors[0].start_epoch == t0 + 7200.0 and again.collectors[0].cursor_sim == -np.inf
    finally:
        again.close()
    with TelemetryStore(tmp_path / "store.db") as store:  # a position damaged on disk
        store._db.execute("UPDATE meta SET value = '{cut' WHERE key = 'position:replay'")
    Daemon(pinned, now=t0 + 20.0).close()
    said = [r.error for r in caplog.records if r.getMessage().startswith("collector starts anew")]
    assert len(said) == 2
    assert "pins replay.start_epoch=1800007200, but the stored replay started at 1800000000" in said[0]
    assert "holds a position for collector 'replay' that is not JSON: '{cut'" in said[1]
    other = ReplayCollector(small_dataset, start_epoch=t0, speed=600)
    with pytest.raises(ValueError, match="the stored replay position is for '/elsewhere'"):
        other.resume({"dataset": "/elsewhere", "speed": 600, "start_epoch": t0, "cursor_sim": 60})
    with pytest.raises(ValueError, match="ran at speed 60, not 600$"):
        other.resume({"dataset": str(other.dir.resolve()), "speed": 60, "start_epoch": t0, "cursor_sim": 60})
    with pytest.raises(ValueError, match="not two finite numbers"):
        other.resume({"dataset": str(other.dir.resolve()), "speed": 600, "start_epoch": t0, "cursor_sim": "x"})
    assert other.cursor_sim == -np.inf and other.start_epoch == t0  # a refused position changes nothing
