"""The local store: round trip, NaN, replace-on-replay, retention, and a REAL kill -9 during ingestion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infrabrain.client.records import EventRecord, SampleBatch, counter_monotone
from infrabrain.client.store import TelemetryStore


def _batch(t: int, n_comp: int = 3) -> SampleBatch:
    b = SampleBatch()
    for c in range(n_comp):
        b.add(t, f"r00-n00-g{c}", "gpu", "DCGM_FI_DEV_GPU_TEMP", 40.0 + c)
        b.add(t, f"r00-n00-g{c}", "gpu", "DCGM_FI_DEV_XID_ERRORS", float("nan") if c == 1 else 0.0)
    return b


def test_round_trip_nan_and_replay(tmp_path: Path) -> None:
    with TelemetryStore(tmp_path / "s.db") as store:
        assert store.ingest(_batch(60), [EventRecord(60, "r00-n00-g0", "gpu", "xid", 79, "fell off bus")]) == 6
        store.ingest(_batch(60))  # replay: replaces, no duplicates
        store.ingest(_batch(120))
        df = store.read_samples(0, 10_000)
        assert len(df) == 12
        nan_rows = df[df["value"].isna()]
        assert set(nan_rows["component_id"]) == {"r00-n00-g1"}
        ev = store.read_events(0, 1000)
        assert ev.iloc[0]["xid"] == 79
        info = store.info()
        assert info.integrity == "ok" and info.n_series == 6 and info.t_min == 60 and info.t_max == 120


def test_window_gap_and_counter_reset(tmp_path: Path) -> None:
    with TelemetryStore(tmp_path / "s.db") as store:
        b = SampleBatch()
        raw = [0, 5, 9, None, 2, 4]  # gap at step 3, reset at step 4
        for i, v in enumerate(raw):
            if v is not None:
                b.add(i * 60, "g0", "gpu", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", v)
        store.ingest(b)
        w = store.read_window("gpu", 0, 360, 60, ["g0", "g-unknown"], ["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"])
        got = w.values[:, 0, 0]
        assert np.isnan(got[3])
        np.testing.assert_allclose(got[[0, 1, 2, 4, 5]], [0, 5, 9, 11, 13])
        assert np.isnan(w.values[:, 1, 0]).all()
        raw_w = store.read_window("gpu", 0, 360, 60, ["g0"], ["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"], correct_counters=False)
        assert raw_w.values[4, 0, 0] == 2  # stored values are never rewritten


def test_counter_monotone_is_nondecreasing() -> None:
    x = np.array([3.0, 7.0, 1.0, np.nan, 0.0, 5.0])
    y = counter_monotone(x)
    finite = y[np.isfinite(y)]
    assert (np.diff(finite) >= 0).all() and y[-1] == 7 + 1 + 5


def test_retention_deletes_only_old(tmp_path: Path) -> None:
    with TelemetryStore(tmp_path / "s.db", retention_s=3600) as store:
        store.ingest(_batch(0))
        store.ingest(_batch(7200))
        assert store.apply_retention(now=7200 + 60) == 6
        assert store.read_samples(0, 10**6)["t"].unique().tolist() == [7200]


def test_bad_store_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention_s"):
        TelemetryStore(tmp_path / "x.db", retention_s=0)
    with pytest.raises(ValueError, match="synchronous"):
        TelemetryStore(tmp_path / "y.db", synchronous="sometimes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        TelemetryStore(tmp_path / "missing.db", read_only=True)


def test_a_file_that_is_not_a_store_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """``store.path`` pointing at another file (not SQLite, or another application's database) is refused by
    name, for reading and writing, and the file is untouched: SQLite's own error had escaped as a traceback, and
    a foreign database would have been given the store's tables."""
    import sqlite3

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all\n" * 10)
    for read_only in (False, True):
        with pytest.raises(ValueError, match=r"junk.db' is not an infrabrain telemetry store \(SQLite: file is not"):
            TelemetryStore(junk, read_only=read_only)
    assert junk.read_bytes() == b"not a database at all\n" * 10
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(ValueError, match=r"a SQLite database with tables \['invoices'\]\); left as it is"):
        TelemetryStore(other)
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["junk.db", "other.db"]
    with TelemetryStore(tmp_path / "ours.db") as store:  # a store of ours reopens as before
        store.ingest(_batch(60))
    with TelemetryStore(tmp_path / "ours.db") as store:
        assert store.info().n_samples > 0


def test_a_position_that_is_not_json_is_refused_with_its_batch(tmp_path: Path) -> None:
    with TelemetryStore(tmp_path / "s.db") as store:
        store.ingest(_batch(60), positions={"prometheus": {"cursor": 60}})
        with pytest.raises(ValueError, match="collector 'prometheus' gave a position that is not finite JSON"):
            store.ingest(_batch(120), positions={"prometheus": {"cursor": float("nan")}})
        assert store.info().t_max == 60 and store.read_position("prometheus") == {"cursor": 60}  # nothing lost
        assert store.read_position("replay") is None
        store._db.execute("INSERT INTO meta VALUES ('position:replay', '{not json')")
        with pytest.raises(ValueError, match="position for collector 'replay' that is not JSON"):
            store.read_position("replay")
        assert store.positions()["prometheus"] == {"cursor": 60}
        assert "not JSON" in store.positions()["replay"]


def test_kill_9_during_ingestion_loses_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    per_batch = 20_000
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_store_writer.py")), str(path), str(per_batch)],
        stdout=subprocess.PIPE, text=True,
    )
    acked = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked = int(line)
            if acked >= 8:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the writer is mid-way through its next batch
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL and acked >= 8
    with TelemetryStore(path, retention_s=10**9, read_only=True) as store:
        assert store.integrity_check() == "ok"
        df = store.read_samples(0, 2**40)
        positions = store.positions()
    per_t = df.groupby("t").size()
    batches = sorted((per_t.index - 1_700_000_000) // 60)
    # every acknowledged batch is there, complete; beyond it at most whole batches that committed before the
    # kill landed (never a partial one)
    assert batches[: acked + 1] == list(range(acked + 1))
    assert (per_t == per_batch).all()
    assert len(batches) <= acked + 3
    # the collector's position committed with its batch: it names the last batch stored, never one more or less
    assert positions == {"writer": {"batch": batches[-1]}}
    # the store opens for writing again and takes new data
    with TelemetryStore(path, retention_s=10**9) as store:
        store.ingest(_batch(5))
        assert store.integrity_check() == "ok"
