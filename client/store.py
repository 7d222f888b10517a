"""The site's local time-series store: SQLite in WAL mode, one transaction per ingested batch, with retention.

Why SQLite/WAL: it ships with Python, it is crash-safe by construction (a committed transaction survives a
``kill -9`` of the writer; an uncommitted one vanishes as a whole), and readers (``client store-info``, Grafana
exporters, the scorer after a restart) never block the writer. Samples live in a ``WITHOUT ROWID`` table keyed by
``(t, series)``, so ingestion appends at the end of the B-tree and retention deletes a prefix.

Durability: ``synchronous=normal`` (default) loses nothing on a process crash and at most the last few
commits on a power cut; ``synchronous=full`` also survives power cuts at some ingestion speed.
Each collector's position (where its next pass starts) is written in the ``meta`` table in the same transaction
as the batch it follows, so after a crash the stored position never runs ahead of, nor lags behind, the stored
data. Missing values (NaN) are stored as SQL NULL and read back as NaN. Raw values are kept as collected: counter
resets are corrected when read (:func:`infrabrain.client.records.counter_monotone`), never by rewriting rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infrabrain.client.records import EventRecord, KindWindow, SampleBatch, counter_monotone, is_counter
from infrabrain.logs import get_logger

if TYPE_CHECKING:  # pandas is imported where frames are built: a writer process stays light
    import pandas as pd

SCHEMA_VERSION = 1
POSITION_KEY = "position:"  # meta key prefix of a collector's position
log = get_logger("client.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    component_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (component_id, metric)
);
CREATE TABLE IF NOT EXISTS samples (
    t INTEGER NOT NULL,
    series INTEGER NOT NULL,
    v REAL,
    PRIMARY KEY (t, series)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    t INTEGER NOT NULL,
    component_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    xid INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_t ON events (t);
"""


@dataclass(frozen=True)
class StoreInfo:
    """Summary of a store for ``client store-info`` and the daemon's metrics."""

    path: str
    bytes_on_disk: int
    n_samples: int
    n_series: int
    n_events: int
    t_min: int | None
    t_max: int | None
    retention_s: int
    integrity: str
    positions: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dict(self.__dict__)


def _validate_synchronous(value: str) -> str:
    if value not in ("normal", "full"):
        raise ValueError(f"store synchronous={value!r} is not one of 'normal', 'full'")
    return value


def _position_json(collector: str, position: Mapping[str, Any]) -> str:
    """``position`` as JSON; ``ValueError`` naming the collector when it is not plain finite JSON."""
    try:
        return json.dumps(dict(position), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"collector {collector!r} gave a position that is not finite JSON: {exc}") from exc


class TelemetryStore:
    """Crash-safe embedded time-series store (one writer; readers may open the same file concurrently)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        retention_s: int = 14 * 86400,
        synchronous: Literal["normal", "full"] = "normal",
        read_only: bool = False,
    ) -> None:
        if retention_s <= 0:
            raise ValueError(f"store retention_s={retention_s} must be positive")
        self.path = Path(path)
        self.retention_s = int(retention_s)
        self.read_only = read_only
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no store at {str(self.path)!r}")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            if not read_only:
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables and "meta" not in tables:  # another application's database: not ours to add tables to
                    self._db.close()
                    raise ValueError(f"{str(self.path)!r} is not an infrabrain telemetry store (a SQLite database "
                                     f"with tables {sorted(tables)[:5]}); left as it is")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={_validate_synchronous(synchronous).upper()}")
                self._db.executescript(_SCHEMA)
                self._check_schema()
            self._series: dict[tuple[str, str], int] = {}
            self._load_series()
        except sqlite3.DatabaseError as exc:  # another file where the store should be: refused, left as it is
            self._db.close()
            raise ValueError(f"{str(self.path)!r} is not an infrabrain telemetry store (SQLite: {exc})") from exc

    # -- setup -------------------------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ValueError(f"store {str(self.path)!r} has schema_version {row[0]}, expected {SCHEMA_VERSION}")

    def _load_series(self) -> None:
        self._series = {
            (c, m): i for i, c, m in self._db.execute("SELECT id, component_id, metric FROM series")
        }
        self._next_id = max(self._series.values(), default=0) + 1

    # -- writing -----------------------------------------------------------------------------------------------
    def ingest(self, batch: SampleBatch, events: Sequence[EventRecord] = (),
               positions: Mapping[str, Mapping[str, Any]] | None = None) -> int:
        """Store ``batch``, ``events`` and the collectors' ``positions`` in ONE transaction; returns the samples
        written.

        A sample for an existing ``(t, component, metric)`` replaces the old value; an event is appended, so a
        collector must not deliver one twice: the position stored with its batch is where it resumes.
        """
        if self.read_only:
            raise ValueError(f"store {str(self.path)!r} is open read-only")
        if len(batch) == 0 and not events and not positions:
            return 0
        position_rows = [(POSITION_KEY + name, _position_json(name, pos)) for name, pos in (positions or {}).items()]
        series = self._series
        new_series: dict[tuple[str, str], tuple[int, str]] = {}
        next_id = self._next_id
        ids: list[int] = []
        append = ids.append
        for comp, kind, metric in zip(batch.component_id, batch.kind, batch.metric, strict=True):
            key = (comp, metric)
            sid = series.get(key)
            if sid is None:
                known = new_series.get(key)
                if known is None:
                    known = new_series[key] = (next_id, kind)
                    next_id += 1
                sid = known[0]
            append(sid)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if new_series:
                db.executemany(
                    "INSERT INTO series (id, component_id, kind, metric) VALUES (?, ?, ?, ?)",
                    [(sid, c, k, m) for (c, m), (sid, k) in new_series.items()],
                )
            db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?)", zip(batch.t, ids, batch.value))
            if events:
                db.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.t, e.component_id, e.kind, e.event, e.xid, e.detail) for e in events],
                )
            if position_rows:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", position_rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        series.update({key: sid for key, (sid, _) in new_series.items()})
        self._next_id = next_id
        return len(batch)

    def apply_retention(self, now: float | None = None) -> int:
        """Delete samples and events older than the retention period; returns the samples deleted."""
        cutoff = int((time.time() if now is None else now) - self.retention_s)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            n = self._db.execute("DELETE FROM samples WHERE t < ?", (cutoff,)).rowcount
            self._db.execute("DELETE FROM events WHERE t < ?", (cutoff,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if n:
            log.info("retention deleted old samples", extra={"deleted": n, "cutoff": cutoff})
        return int(n)

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (cheap; done on close and after retention)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Checkpoint (when writable) and close."""
        if not self.read_only:
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # another reader holds the WAL: harmless, WAL stays valid
                log.warning("checkpoint on close skipped", extra={"error": str(exc)})
        self._db.close()

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------------------
    def read_samples(
        self,
        start: int,
        end: int,
        kind: str | None = None,
        metrics: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Long-format samples with ``start <= t < end``: columns t, component_id, kind, metric, value."""
        sql = (
            "SELECT s.t, r.component_id, r.kind, r.metric, s.v FROM samples s JOIN series r ON r.id = s.series "
            "WHERE s.t >= ? AND s.t < ?"
        )
        params: list[Any] = [int(start), int(end)]
        if kind is not None:
            sql += " AND r.kind = ?"
            params.append(kind)
        if metrics is not None:
            mlist = list(metrics)
            sql += f" AND r.metric IN ({','.join('?' * len(mlist))})"
            params.extend(mlist)
        import pandas as pd

        rows = self._db.execute(sql + " ORDER BY s.t", params).fetchall()
        df = pd.DataFrame(rows, columns=["t", "component_id", "kind", "metric", "value"])
        df["value"] = df["value"].astype("float64")  # NULL -> NaN
        return df

    def read_batch(self, start: int, end: int) -> SampleBatch:
        """:meth:`read_samples` (``start <= t < end``) as a :class:`SampleBatch`, what a ``WindowBuffer`` takes."""
        df = self.read_samples(start, end)
        return SampleBatch(t=df["t"].astype(int).tolist(), component_id=df["component_id"].tolist(),
                           kind=df["kind"].tolist(), metric=df["metric"].tolist(),
                           value=df["value"].astype(float).tolist())

    def read_events(self, start: int, end: int) -> pd.DataFrame:
        """Events with ``start <= t < end``."""
        import pandas as pd

        rows = self._db.execute(
            "SELECT t, component_id, kind, event, xid, detail FROM events WHERE t >= ? AND t < ? ORDER BY t",
            (int(start), int(end)),
        ).fetchall()
        return pd.DataFrame(rows, columns=["t", "component_id", "kind", "event", "xid", "detail"])

    def read_window(
        self,
        kind: str,
        start: int,
        end: int,
        cadence_s: int,
        component_ids: Sequence[str],
        metric_names: Sequence[str],
        correct_counters: bool = True,
    ) -> KindWindow:
        """Dense ``[T, n, F]`` window on the cadence grid ``start, start+cadence, ... < end``.

        Samples are snapped down to their grid step (the last one in a step wins); steps with no sample are NaN
        (gaps are not interpolated). Counters are made monotone across resets when ``correct_counters``.
        """
        if cadence_s <= 0:
            raise ValueError(f"cadence_s={cadence_s} must be positive")
        grid = np.arange(int(start), int(end), int(cadence_s), dtype=np.int64)
        values = np.full((len(grid), len(component_ids), len(metric_names)), np.nan, dtype=np.float32)
        df = self.read_samples(start, end, kind=kind, metrics=metric_names)
        if len(df):
            comp_idx = {c: i for i, c in enumerate(component_ids)}
            met_idx = {m: i for i, m in enumerate(metric_names)}
            ci = df["component_id"].map(comp_idx)
            keep = ci.notna().to_numpy()
            ti = ((df["t"].to_numpy() - int(start)) // int(cadence_s))[keep]
            ci_arr = ci.to_numpy()[keep].astype(np.int64)
            mi = df["metric"].map(met_idx).to_numpy()[keep].astype(np.int64)
            values[ti, ci_arr, mi] = df["value"].to_numpy()[keep]
        if correct_counters:
            for j, m in enumerate(metric_names):
                if is_counter(m):
                    values[:, :, j] = counter_monotone(values[:, :, j], axis=0)
        return KindWindow(timestamps=grid, component_ids=list(component_ids), metric_names=list(metric_names),
                          values=values)

    def latest_t(self) -> int | None:
        """Newest sample time (epoch s), or None for an empty store."""
        row = self._db.execute("SELECT max(t) FROM samples").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def positions(self) -> dict[str, Any]:
        """Every collector's stored position by collector name; a malformed one reads as ``ValueError`` text."""
        out: dict[str, Any] = {}
        for key, text in self._db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (POSITION_KEY + "%",)):
            name = key[len(POSITION_KEY):]
            try:
                out[name] = self._parse_position(name, text)
            except ValueError as exc:
                out[name] = str(exc)
        return out

    def read_position(self, collector: str) -> dict[str, Any] | None:
        """The position stored for ``collector`` (None when there is none); ``ValueError`` when it is corrupt."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (POSITION_KEY + collector,)).fetchone()
        return None if row is None else self._parse_position(collector, row[0])

    def _parse_position(self, collector: str, text: str) -> dict[str, Any]:
        """A stored position's JSON object; ``ValueError`` naming the store, the collector and the bytes."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"store {str(self.path)!r} holds a position for collector {collector!r} that is not "
                             f"JSON: {text[:80]!r}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"store {str(self.path)!r} holds a position for collector {collector!r} that is not "
                             f"an object: {text[:80]!r}")
        return value

    def count_samples(self) -> int:
        """Number of stored samples."""
        return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's full integrity check: ``'ok'`` or the first problem found."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def info(self, check: bool = True) -> StoreInfo:
        """Sizes, counts, time range and (optionally) the integrity check result."""
        size = sum(
            p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")) if p.exists()
        )
        t_min, t_max = self._db.execute("SELECT min(t), max(t) FROM samples").fetchone()
        n_events = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        return StoreInfo(
            path=str(self.path),
            bytes_on_disk=int(size),
            n_samples=self.count_samples(),
            n_series=int(self._db.execute("SELECT count(*) FROM series").fetchone()[0]),
            n_events=n_events,
            t_min=None if t_min is None else int(t_min),
            t_max=None if t_max is None else int(t_max),
            retention_s=self.retention_s,
            integrity=self.integrity_check() if check else "not checked",
            positions=self.positions(),
        )
