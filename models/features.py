"""Feature set and normalisation: which metrics of which component kind the predictor reads, and how.

A :class:`FeatureSet` fixes, per component kind, the ordered metric names the model was built for. Every
snapshot tensor uses a *per-kind layout*: feature slot ``j`` of a component of kind ``k`` holds
``FeatureSet.metrics[k][j]``; slots beyond ``len(metrics[k])`` are padding (always masked). The kind itself is
given separately (``kind`` index per component), so the model knows how to read the slots.

Cumulative counters (``*_TOTAL``, ``*_errors_total``, violation counters, remapped rows) are turned into
per-step increments (``log1p`` of the non-negative difference) before normalisation: a level of a cumulative
counter means nothing, its rate does. The XID gauge (DCGM reports the *number* of the last XID, which stays set
for good) becomes a state: 1 for an hour after it changes to a hardware-fault code of :data:`HARDWARE_XIDS`,
else 0 -- a code is a category, not a magnitude, and a months-old XID 79 must not read as "79 units" forever.
Missing values (NaN) stay NaN here and become a mask in the snapshot, never an invented value. A feature set
may also name *derived* metrics (:mod:`infrabrain.models.derived_metrics`), computed on site from raw columns
before these transforms.

:data:`ENCODING` versions these transforms; it is part of a feature set's identity (its fingerprint), so a model
trained on another encoding is refused instead of misreading its inputs.

:class:`Normalizer` holds per (kind, metric) centre and scale, fitted on *training* data only and saved with the
model (see :mod:`infrabrain.models.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infrabrain.models.derived_metrics import derivable, derived_metric

#: Component kinds the predictor knows, in a fixed order (the kind index used in snapshots).
#: Same order as ``infrabrain.simulation.topology.KINDS`` in the data contract.
KINDS: tuple[str, ...] = ("gpu", "node", "leaf", "spine", "pdu", "cooling", "rack")

#: Static configuration published as a metric (a PDU's rating): constant for a component and different per site,
#: it identifies a site rather than describing its state, so the model does not read it (it only invites
#: overfitting to the training sites) and explanations never quote it.
STATIC_METRICS: frozenset[str] = frozenset({"pdu_rating_kw"})

#: Values are clipped to +-CLIP after normalisation, so one absurd reading cannot dominate a snapshot.
CLIP = 10.0

#: Smallest scale of a cumulative counter's normalised ``log1p`` increments: one e-fold of its per-step count.
#: Such a series is 0 almost everywhere, so its spread is tiny (the PCIe replay counter's is 0.098 on the
#: predictor bench's 24 h draw 0): standardised by it, two replays in a minute read 11 and were clipped to 10 like
#: two thousand, which erased the amplitude that tells a failing link from a look-alike and how close its ramp is
#: to the end (issue 3 follow-up 17). With this floor a counter reads about its ``log1p`` count per step and
#: reaches the clip only past ``e ** 10`` (22,000) events per step.
COUNTER_SCALE_FLOOR = 1.0

#: Version of the per-metric transforms below (1: XID gauge read as a level; 2: as a held hardware-XID state;
#: 3: a code seen again after an outage longer than :data:`XID_GAP_STEPS` is not a raise; 4: the derived metrics
#: of :mod:`infrabrain.models.derived_metrics`, a GPU's temperature above its node's other GPUs).
ENCODING = 4

#: Steps a hardware XID stays "raised" in the encoded state (60 = one hour at the 60-s cadence the predictor
#: reads: the label horizon). Encoding a window exactly needs this much history before it (see
#: :func:`history_steps`).
XID_HOLD_STEPS = 60

#: A change of the XID gauge counts as a raise only if at most this many unobserved steps lie between the code
#: and the previous one (a scrape gap of a few minutes does not hide a change). After a longer outage (a
#: component unobserved this long is dead, ``snapshots.ALIVE_STEPS``) the code was raised at an unknown time:
#: a GPU back from repair still shows the XID it failed with. Read across the outage, that stale code looked
#: like a fresh fault for an hour on a just-repaired node (34 of the 57 hardware-XID "raises" in a 24 h draw
#: of ten sites), and no finite window could reproduce it at inference. Bounding the look-back makes the
#: encoding of a window exact with :func:`history_steps` of history.
XID_GAP_STEPS = 5

#: XIDs that signal a GPU hardware fault (NVIDIA's XID catalogue: 48 double-bit ECC, 63 / 64 row remapping
#: recorded / failed, 79 fallen off the bus, 92 high single-bit ECC rate, 94 / 95 contained / uncontained ECC).
#: NVLink (74) and application / driver XIDs (13, 31, 43, ...) are not in it: they are mostly software or noise.
HARDWARE_XIDS: frozenset[int] = frozenset({48, 63, 64, 79, 92, 94, 95})


def is_counter(metric: str) -> bool:
    """True for cumulative counters: ``*_TOTAL`` / ``*_total``, violation times, replay counters, remapped rows.

    ``DCGM_FI_DEV_XID_ERRORS`` is *not* a counter: DCGM reports the number of the last XID seen (a code).
    """
    up = metric.upper()
    return (up.endswith("_TOTAL") or up.endswith("_COUNTER") or "VIOLATION" in up or up.endswith("REMAPPED_ROWS"))


def is_xid_code(metric: str) -> bool:
    """True for the XID gauge (``DCGM_FI_DEV_XID_ERRORS``: the number of the last XID seen, 0 = none)."""
    return metric.upper().endswith("XID_ERRORS")


@dataclass(frozen=True)
class FeatureSet:
    """Ordered metric names per component kind; the identity of a model's inputs.

    ``metrics`` maps each kind in :data:`KINDS` to its metric names (possibly empty). Two models are
    compatible only if their feature sets have the same :meth:`fingerprint`.
    """

    metrics: Mapping[str, tuple[str, ...]]
    kinds: tuple[str, ...] = KINDS
    encoding: int = ENCODING

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(self.kinds)
        if unknown:
            raise ValueError(f"feature set names unknown component kind(s) {sorted(unknown)}; known: {self.kinds}")
        if self.encoding != ENCODING:
            raise ValueError(f"feature encoding {self.encoding} is not supported (this version reads encoding "
                             f"{ENCODING}: the XID gauge as a held hardware-XID state, not raised across an outage, "
                             "and a GPU's temperature above its node's other GPUs); retrain the model")

    @property
    def f_max(self) -> int:
        """Width of the per-kind feature layout (largest number of metrics of any kind, at least 1)."""
        return max([1, *(len(v) for v in self.metrics.values())])

    def metrics_of(self, kind: str) -> tuple[str, ...]:
        """Metric names of ``kind`` (empty tuple if the kind has none)."""
        return tuple(self.metrics.get(kind, ()))

    def raw_metrics_of(self, kind: str) -> tuple[str, ...]:
        """The telemetry columns of ``kind`` to collect: its metrics without the derived ones, plus their sources
        (computed on site from those, :mod:`~infrabrain.models.derived_metrics`)."""
        names = self.metrics_of(kind)
        raw = [m for m in names if derived_metric(m) is None]
        for m in names:
            d = derived_metric(m)
            if d is not None and d.source not in raw:
                raw.append(d.source)
        return tuple(raw)

    def counters(self, kind: str) -> np.ndarray:
        """Boolean mask over ``metrics_of(kind)``: which are cumulative counters."""
        return np.array([is_counter(m) for m in self.metrics_of(kind)], dtype=bool)

    def xid_codes(self, kind: str) -> np.ndarray:
        """Boolean mask over ``metrics_of(kind)``: which are XID gauges (encoded by :func:`xid_state`)."""
        return np.array([is_xid_code(m) for m in self.metrics_of(kind)], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the model card)."""
        return {"kinds": list(self.kinds), "metrics": {k: list(self.metrics_of(k)) for k in self.kinds},
                "encoding": self.encoding}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSet:
        """Inverse of :meth:`to_dict` (a dict without ``encoding`` predates it: encoding 1, refused)."""
        kinds = tuple(data.get("kinds", KINDS))
        return cls(metrics={k: tuple(v) for k, v in data["metrics"].items()}, kinds=kinds,
                   encoding=int(data.get("encoding", 1)))

    def fingerprint(self) -> str:
        """Short stable hash of the kinds, metric names (order matters) and the encoding version."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_run(cls, run: Any, derived: bool = True) -> FeatureSet:
        """The feature set of a simulated/loaded ``SiteRun``: every metric of every kind it carries, except the
        static configuration in :data:`STATIC_METRICS`, then (with ``derived``) the derived metrics its columns
        allow. The federated task's model reads none (``derived=False``: measured not to help it, issue 3
        follow-up 21)."""
        names = getattr(run, "metric_names")
        unknown = set(names) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown component type(s) {sorted(unknown)} in telemetry; known: {KINDS}")
        return cls(metrics={k: tuple(m for m in names[k] if m not in STATIC_METRICS)
                            + (derivable(k, names[k]) if derived else ()) for k in KINDS if k in names})


def history_steps(window: int) -> int:
    """Raw steps to pass for an exact encoding of a ``window``-step snapshot: :data:`XID_HOLD_STEPS` more for the
    XID state (with fewer, an XID raised before them is not seen) and :data:`XID_GAP_STEPS` more for the code
    before such a raise (which also gives counters their increment at the window's first step)."""
    return int(window) + XID_HOLD_STEPS + XID_GAP_STEPS


def validate_metric_columns(feature_set: FeatureSet, metric_names: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Map each kind's telemetry columns onto the feature set's order; error on anything missing or unknown.

    Returns, per kind of the feature set, the column indices into ``metric_names[kind]``. Extra columns are
    ignored (a newer exporter may add fields); a missing column is an error that names the kind and metric,
    never a silently zero-filled input.
    """
    unknown = set(metric_names) - set(feature_set.kinds)
    if unknown:
        raise ValueError(f"unknown component type(s) {sorted(unknown)} in telemetry; the model knows {feature_set.kinds}")
    out: dict[str, np.ndarray] = {}
    for kind in feature_set.kinds:
        wanted = feature_set.metrics_of(kind)
        if not wanted:
            continue
        have = list(metric_names.get(kind, []))
        if kind not in metric_names:
            raise ValueError(f"telemetry has no component kind {kind!r}, which the model needs (metrics {list(wanted)})")
        missing = [m for m in wanted if m not in have]
        if missing:
            sources = [f"{m} from {d.source}" for m in missing if (d := derived_metric(m)) is not None]
            hint = f" (derived on site: {', '.join(sources)})" if sources else ""
            raise ValueError(f"missing metric column(s) for kind {kind!r}: {missing}{hint}")
        out[kind] = np.array([have.index(m) for m in wanted], dtype=np.int64)
    return out


def transform_series(values: np.ndarray, counters: np.ndarray, xid_codes: np.ndarray | None = None) -> np.ndarray:
    """Turn raw ``[T, n, F]`` telemetry into model-ready values (counters -> log1p of per-step increments, XID
    gauges -> held hardware-XID state, see :func:`xid_state`).

    The first step of a counter or XID gauge has no predecessor and becomes NaN (masked). NaNs propagate;
    nothing is filled.
    """
    out = values.astype(np.float32, copy=True)
    if xid_codes is not None and xid_codes.any():
        out[:, :, xid_codes] = xid_state(values[:, :, xid_codes])
    if counters.any():
        c = values[:, :, counters].astype(np.float32)
        d = np.full_like(c, np.nan)
        d[1:] = np.diff(c, axis=0)
        with np.errstate(invalid="ignore"):
            d = np.log1p(np.clip(d, 0.0, None))
        out[:, :, counters] = d
    return out


def xid_state(codes: np.ndarray, hold_steps: int = XID_HOLD_STEPS, gap_steps: int = XID_GAP_STEPS) -> np.ndarray:
    """XID gauge ``[T, ...]`` (last XID number, 0 = none) -> 1.0 while it shows a code of :data:`HARDWARE_XIDS`
    that it changed to within the last ``hold_steps`` steps, 0.0 where observed otherwise, NaN where missing or
    at the first step (no predecessor: when its code was raised is unknown).

    The previous code is the last *observed* one, with at most ``gap_steps`` unobserved steps in between (a scrape
    gap does not hide a change across it; after a longer outage the raise time is unknown, as at the first step).
    A state held for an hour, not a one-minute spike: a row-remapping XID 63 comes 5-45 minutes before an HBM
    failure and should weigh on every window until then (measured, docs/predictor.md: a one-step event halved the GNN's
    PR-AUC on memory faults, the held state raised it by 30 %). DCGM keeps only the last number, so a repeat of
    the same XID is invisible in the gauge.
    """
    c = np.asarray(codes, dtype=np.float64)
    obs = np.isfinite(c)
    t_idx = np.arange(c.shape[0]).reshape((-1,) + (1,) * (c.ndim - 1))
    # forward-fill along time: index of the last observed step at or before each step
    idx = np.maximum.accumulate(np.where(obs, t_idx, -1), axis=0)
    filled = np.take_along_axis(np.where(obs, c, np.nan), np.maximum(idx, 0), axis=0)
    filled[(idx < 0) | (t_idx - idx > gap_steps)] = np.nan  # last code seen too long ago: unknown (outage)
    prev = np.full_like(c, np.nan)
    prev[1:] = filled[:-1]
    hw = np.isin(np.where(obs, c, -1).astype(np.int64), sorted(HARDWARE_XIDS))
    raised = hw & np.isfinite(prev) & (c != prev)
    last_raised = np.maximum.accumulate(np.where(raised, t_idx, -(10**9)), axis=0)
    out = np.where(hw & (t_idx - last_raised < hold_steps), 1.0, 0.0)
    out[~obs | ~np.isfinite(prev)] = np.nan
    return out.astype(np.float32)


@dataclass
class Normalizer:
    """Per (kind, metric) centre and scale, fitted on training data only; applied as ``(x - centre) / scale``.

    ``unlearned`` marks, per kind, the metrics the training data held no value of (a field its exporters never
    sent). The model saw them only masked, so :meth:`apply` masks them everywhere (NaN), also where a site sends
    them: read unmasked, a value would reach weights that never learned it (issue 3 follow-up 47)."""

    center: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, np.ndarray] = field(default_factory=dict)
    unlearned: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, transformed: Mapping[str, Sequence[np.ndarray]], feature_set: FeatureSet,
            observed: Mapping[str, np.ndarray] | None = None) -> Normalizer:
        """Fit from lists of transformed arrays ``[T, n, F_kind]`` per kind (NaNs ignored).

        A metric never observed gets centre 0 and scale 1 and is ``unlearned``: never observed in ``observed``
        (per kind, whether each metric had a value anywhere in the training data, where ``transformed`` is a
        subsample of it), else in ``transformed``. A counter's scale is at least :data:`COUNTER_SCALE_FLOOR`, so
        its amplitude survives the clip.
        """
        center: dict[str, np.ndarray] = {}
        scale: dict[str, np.ndarray] = {}
        unlearned: dict[str, np.ndarray] = {}
        for kind in feature_set.kinds:
            f = len(feature_set.metrics_of(kind))
            if f == 0:
                continue
            arrays = [a.reshape(-1, f) for a in transformed.get(kind, [])]
            flat = np.concatenate(arrays, axis=0) if arrays else np.full((1, f), np.nan, np.float32)
            with np.errstate(invalid="ignore"), _quiet_nan_warnings():
                mu = np.nanmean(flat, axis=0)
                sd = np.nanstd(flat, axis=0)
            seen = np.asarray(observed[kind], bool) if observed is not None and kind in observed else np.isfinite(mu)
            if not seen.all():
                unlearned[kind] = ~seen
            mu = np.where(np.isfinite(mu), mu, 0.0)
            sd = np.where(np.isfinite(sd), sd, 1.0)
            # A floor on the scale: a counter that is almost always 0 must not turn one event into 1e6, nor every
            # burst into the clip (COUNTER_SCALE_FLOOR).
            floor = np.maximum(1e-2, 1e-3 * np.abs(mu))
            floor = np.where(feature_set.counters(kind), np.maximum(floor, COUNTER_SCALE_FLOOR), floor)
            center[kind] = mu.astype(np.float32)
            scale[kind] = np.maximum(sd, floor).astype(np.float32)
        return cls(center=center, scale=scale, unlearned=unlearned)

    def apply(self, kind: str, transformed: np.ndarray) -> np.ndarray:
        """Normalise a transformed ``[..., F_kind]`` array of ``kind`` and clip to +-CLIP (NaN stays NaN)."""
        if kind not in self.center:
            raise ValueError(f"normaliser has no statistics for component kind {kind!r}")
        z = np.clip((transformed - self.center[kind]) / self.scale[kind], -CLIP, CLIP).astype(np.float32)
        if kind in self.unlearned:
            z[..., self.unlearned[kind]] = np.nan  # as the model saw them in training
        return z

    def unlearned_metrics(self, feature_set: FeatureSet) -> dict[str, list[str]]:
        """Per kind, the names of the ``unlearned`` metrics (empty for a normaliser fitted where every metric had a
        value, and for one read from a card written before issue 3 follow-up 47)."""
        return {k: [m for m, u in zip(feature_set.metrics_of(k), v, strict=True) if u]
                for k, v in self.unlearned.items() if v.any()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the model card)."""
        out: dict[str, Any] = {
            "center": {k: [float(x) for x in v] for k, v in self.center.items()},
            "scale": {k: [float(x) for x in v] for k, v in self.scale.items()},
        }
        if self.unlearned:
            out["unlearned"] = {k: [int(i) for i in np.flatnonzero(v)] for k, v in self.unlearned.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        center = {k: np.asarray(v, np.float32) for k, v in data["center"].items()}
        unlearned = {}
        for k, idx in (data.get("unlearned") or {}).items():
            if k not in center or not all(isinstance(i, int) and 0 <= i < len(center[k]) for i in idx):
                raise ValueError(f"normaliser: unlearned metrics of {k!r} must be column indices of that kind, got "
                                 f"{idx!r}")
            mask = np.zeros(len(center[k]), bool)
            mask[list(idx)] = True
            unlearned[k] = mask
        return cls(center=center, scale={k: np.asarray(v, np.float32) for k, v in data["scale"].items()},
                   unlearned=unlearned)


class _quiet_nan_warnings:
    """Silence numpy's 'mean of empty slice' warnings for all-NaN columns (handled explicitly)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
