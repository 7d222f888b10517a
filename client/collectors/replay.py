"""Replay of a simulator dataset (the Parquet layout of ``docs/data-contract.md``) as if it were live telemetry.

Used for demos, back-tests and tests of the daemon without a cluster: simulated second ``t`` is stamped
``start_epoch + t`` and delivered once ``(now - start_epoch) * speed >= t``. With ``speed`` 1 that is live
replay; with ``speed`` > 1 simulated time runs ``speed`` times faster than the wall clock, the data keeps its
own cadence (stamps run ahead of the wall clock), so windows and scores look exactly as on the simulated site.
Reads ``site=<name>/telemetry/kind=<kind>/*.parquet`` (wide: ``t, component_id, <metric columns>``) with pyarrow;
no simulator code is needed on the site.

The replay clock outlives the process: ``position()`` (kept in the store with each batch) holds ``start_epoch``
and the last simulated second delivered, so a restarted daemon or a second ``client collect-once`` continues
the same replay instead of storing the dataset again, shifted to a new start. A ``start_epoch`` pinned in
``site.yaml`` wins over a stored one that differs (the replay then starts anew at the pinned time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from infrabrain.client.collectors.base import Collector
from infrabrain.client.records import KINDS, CollectResult, EventRecord, SampleBatch


def site_dir(dataset: str | os.PathLike[str], site: str | None = None) -> Path:
    """The ``site=<name>`` directory of a dataset (the only one when ``site`` is None)."""
    root = Path(dataset)
    if root.name.startswith("site="):
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"replay dataset {str(root)!r} does not exist")
    sites = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("site="))
    if site is not None:
        wanted = root / f"site={site}"
        if not wanted.is_dir():
            raise ValueError(f"replay dataset {str(root)!r} has no site {site!r} (has {[p.name[5:] for p in sites]})")
        return wanted
    if len(sites) != 1:
        raise ValueError(f"replay dataset {str(root)!r} holds {len(sites)} sites; name one with replay.site")
    return sites[0]


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _seconds(value: float) -> str:
    """An epoch second or a speed in full, without a trailing ``.0`` (``:g`` would print 1.8e+09)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


class ReplayCollector(Collector):
    """Replays one simulated site's telemetry (and XID events) on the wall clock."""

    name = "replay"

    def __init__(self, dataset: str | os.PathLike[str], start_epoch: float, site: str | None = None,
                 speed: float = 1.0, start_pinned: bool = True) -> None:
        """``start_pinned`` False: ``start_epoch`` is only a default, and a stored position's start replaces it."""
        if speed <= 0:
            raise ValueError(f"replay speed={speed} must be positive")
        self.dir = site_dir(dataset, site)
        self.source = str(self.dir.resolve())  # what a stored position names, to be resumed only by this dataset
        self.start_epoch = float(start_epoch)
        self.start_pinned = bool(start_pinned)
        self.speed = float(speed)
        self.frames: dict[str, pd.DataFrame] = {}
        tel = self.dir / "telemetry"
        if not tel.is_dir():
            raise ValueError(f"{str(self.dir)!r} has no telemetry/ directory: not a simulator dataset")
        for kdir in sorted(tel.iterdir()):
            kind = kdir.name.removeprefix("kind=")
            if kind not in KINDS:
                raise ValueError(f"replay dataset has unknown component kind directory {kdir.name!r}")
            frame = pq.read_table(kdir).to_pandas()
            for col in ("t", "component_id"):
                if col not in frame.columns:
                    raise ValueError(f"{str(kdir)!r} lacks column {col!r}")
            self.frames[kind] = frame.sort_values("t", kind="stable").reset_index(drop=True)
        events_path = self.dir / "events.parquet"
        self.events = pd.read_parquet(events_path) if events_path.is_file() else pd.DataFrame()
        self.cursor_sim: float = -np.inf  # last simulated second delivered
        self.finished = False

    def position(self) -> dict[str, Any] | None:
        """The replay's clock and the last simulated second delivered (None before the first pass)."""
        if not np.isfinite(self.cursor_sim):
            return None
        return {"dataset": self.source, "speed": self.speed, "start_epoch": self.start_epoch,
                "cursor_sim": self.cursor_sim}

    def resume(self, position: dict[str, Any]) -> None:
        """Continue a stored replay of the same dataset on its own clock."""
        if position.get("dataset") != self.source:
            raise ValueError(f"the stored replay position is for {position.get('dataset')!r}, not {self.source!r}")
        if _finite(position.get("speed")) != self.speed:
            raise ValueError(f"the stored replay ran at speed {position.get('speed')!r}, not "
                             f"{_seconds(self.speed)}")
        start, cursor = _finite(position.get("start_epoch")), _finite(position.get("cursor_sim"))
        if start is None or cursor is None:
            raise ValueError(f"the stored replay position has start_epoch={position.get('start_epoch')!r}, "
                             f"cursor_sim={position.get('cursor_sim')!r}: not two finite numbers")
        if self.start_pinned and start != self.start_epoch:
            raise ValueError(f"site.yaml pins replay.start_epoch={_seconds(self.start_epoch)}, but the stored "
                             f"replay started at {_seconds(start)}")
        self.start_epoch, self.cursor_sim = start, cursor

    def sim_time(self, now: float) -> float:
        """Simulated second that corresponds to wall time ``now``."""
        return (now - self.start_epoch) * self.speed

    def collect(self, now: float) -> CollectResult:
        """Rows with ``cursor < t <= sim_time(now)``, timestamped ``start_epoch + t``."""
        hi = self.sim_time(now)
        lo = self.cursor_sim
        result = CollectResult(samples=SampleBatch())
        if hi <= lo:
            return result
        for kind, frame in self.frames.items():
            t = frame["t"].to_numpy()
            a, b = np.searchsorted(t, lo, side="right"), np.searchsorted(t, hi, side="right")
            if b <= a:
                continue
            part = frame.iloc[a:b]
            metrics = [c for c in part.columns if c not in ("t", "component_id")]
            wall = (int(self.start_epoch) + part["t"].to_numpy()).astype(np.int64)
            result.samples.extend(SampleBatch.from_wide(wall, part["component_id"].tolist(), kind, metrics,
                                                        part[metrics].to_numpy(dtype=np.float64)))
        if len(self.events):
            ev = self.events[(self.events["t"] > lo) & (self.events["t"] <= hi) & (self.events["event"] == "xid")]
            for row in ev.itertuples(index=False):
                result.events.append(EventRecord(int(self.start_epoch) + int(row.t), str(row.component_id),
                                                 str(row.kind), "xid", int(row.xid), str(getattr(row, "detail", ""))))
        self.cursor_sim = hi
        if not self.finished and not any(len(f) and f["t"].iloc[-1] > hi for f in self.frames.values()):
            self.finished = True
            result.warnings.append(f"replay of {str(self.dir)!r} has reached its end; nothing more will come")
        return result
