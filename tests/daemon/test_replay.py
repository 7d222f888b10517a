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
