"""In-memory ring of the last W cadence steps of every component, for minute-by-minute scoring.

The store is the durable copy; scoring every minute from SQLite would re-read W x components x metrics rows
each time, so the daemon keeps the recent window in a dense ring ``[W, n_kind, F_kind]`` per kind (the
simulator's ``SiteRun.metrics`` layout), fills it from each ingested batch, and warms it from the store on
start. Samples are snapped down to their cadence step; a step never written stays NaN (missing, not
invented). Components or metrics outside the topology/feature set are counted and otherwise ignored here
(they are still in the store); the components the topology lacks are named per batch, for the daemon to say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from infrabrain.client.records import SampleBatch, counter_monotone, is_counter


def min_filled_steps(steps: int) -> int:
    """The fewest of a model's ``steps`` that must hold data for a window to be scored: half, rounded up (a mostly
    empty window would give scores of nothing)."""
    return (int(steps) + 1) // 2


class WindowBuffer:
    """Dense ring buffer of recent telemetry, indexed by cadence step."""

    def __init__(
        self,
        component_ids: Mapping[str, Sequence[str]],
        metric_names: Mapping[str, Sequence[str]],
        cadence_s: int,
        steps: int,
    ) -> None:
        if cadence_s <= 0 or steps <= 0:
            raise ValueError(f"window buffer needs cadence_s > 0 and steps > 0, got {cadence_s}, {steps}")
        self.cadence_s = int(cadence_s)
        self.steps = int(steps)
        self.component_ids = {k: list(v) for k, v in component_ids.items()}
        self.metric_names = {k: list(metric_names.get(k, ())) for k in self.component_ids}
        self._cidx = {k: {c: i for i, c in enumerate(v)} for k, v in self.component_ids.items()}
        self._midx = {k: {m: j for j, m in enumerate(v)} for k, v in self.metric_names.items()}
        self._data = {
            k: np.full((self.steps, len(self.component_ids[k]), len(self.metric_names[k])), np.nan, np.float32)
            for k in self.component_ids
        }
        self._slot_step = np.full(self.steps, -1, dtype=np.int64)
        #: the components of the last :meth:`add`'s batch that the topology lacks ("id" or "id (kind)" where the
        #: kind is not one the buffer holds): their samples are ignored here
        self.unknown_components: set[str] = set()
        self.ignored_samples = 0
        self.latest_step: int = -1

    def _slot(self, step: int) -> int:
        slot = step % self.steps
        if self._slot_step[slot] != step:
            if self._slot_step[slot] > step:  # older than the window: caller drops it
                return -1
            for arr in self._data.values():
                arr[slot] = np.nan
            self._slot_step[slot] = step
        return slot

    def add(self, batch: SampleBatch) -> int:
        """Put a batch into the ring; returns how many samples landed in it."""
        landed = 0
        oldest_ok = self.latest_step - self.steps + 1
        slots: dict[int, int] = {}
        unknown: set[str] = set()
        for t, comp, kind, metric, value in zip(batch.t, batch.component_id, batch.kind, batch.metric, batch.value,
                                                strict=True):
            cidx = self._cidx.get(kind)
            i = cidx.get(comp) if cidx is not None else None
            if i is None:
                unknown.add(comp if cidx is not None else f"{comp} ({kind})")
                self.ignored_samples += 1
                continue
            j = self._midx[kind].get(metric)
            if j is None:
                self.ignored_samples += 1
                continue
            step = t // self.cadence_s
            if step < oldest_ok:
                continue
            slot = slots.get(step)
            if slot is None:
                if step > self.latest_step:
                    self.latest_step = step
                    oldest_ok = step - self.steps + 1
                slot = slots[step] = self._slot(step)
            if slot < 0:
                continue
            self._data[kind][slot, i, j] = value
            landed += 1
        self.unknown_components = unknown
        return landed

    def filled_steps(self, steps: int | None = None, end_t: int | None = None) -> int:
        """How many of the ``steps`` steps ending at ``end_t`` (default: the newest) received any sample."""
        steps = self.steps if steps is None else int(steps)
        if self.latest_step < 0:
            return 0
        end_step = self.latest_step if end_t is None else int(end_t) // self.cadence_s
        wanted = np.arange(end_step - steps + 1, end_step + 1, dtype=np.int64)
        return int((self._slot_step[wanted % self.steps] == wanted).sum())

    def window(self, end_t: int | None = None, steps: int | None = None,
               correct_counters: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(timestamps [S], {kind: [S, n, F]})`` for the ``steps`` steps ending at ``end_t`` (default: newest)."""
        steps = self.steps if steps is None else int(steps)
        if steps > self.steps:
            raise ValueError(f"asked for {steps} steps, the buffer holds {self.steps}")
        end_step = self.latest_step if end_t is None else int(end_t) // self.cadence_s
        wanted = np.arange(end_step - steps + 1, end_step + 1, dtype=np.int64)
        slots = wanted % self.steps
        valid = self._slot_step[slots] == wanted
        out: dict[str, np.ndarray] = {}
        for kind, arr in self._data.items():
            w = arr[slots].copy()
            w[~valid] = np.nan
            if correct_counters:
                cols = [j for j, m in enumerate(self.metric_names[kind]) if is_counter(m)]
                if cols:
                    w[:, :, cols] = counter_monotone(w[:, :, cols], axis=0)
            out[kind] = w
        return wanted * self.cadence_s, out
