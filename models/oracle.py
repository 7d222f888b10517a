"""Oracle scorers from the simulator's ground truth: what *any* next-hour predictor could reach on this simulator.

The simulator draws, per real visible precursor, :data:`~infrabrain.simulation.faults.BENIGN_RATIO` benign
look-alikes with the same lead distribution, and precursor leads are log-normal with medians of 0.7-12 h, so many
rows more than an hour before a failure look exactly like precursor rows but are labelled negative. The oracles
re-derive each site's fault plan (same seed, same random stream as the run) and score each (snapshot, node) row:

- ``observable``: knows every *visible* precursor that is active on the node or its upstream components (GPU,
  node, PDU, leaf switch, cooling unit), its mode and the time elapsed since its onset ``e`` -- but neither
  whether it is real or a benign look-alike nor its remaining lead. A precursor of mode ``m`` then causes a
  failure of this node within the hour with probability
  ``P(real) * q_m * P(failure in (e, e + 60 min] | lead > e)``, with ``P(real) = 1 / (1 + BENIGN_RATIO)``, the
  lead distribution of the mode table (log-normal, clipped to ``[MIN_LEAD_S, MAX_LEAD_S]``), and for a cooling
  unit the share ``q`` of its nodes that fail, spread over the hour after the unit fails.
- ``lead_aware``: also knows each precursor's remaining time to its end (what a perfect reader of the ramp
  shapes could infer), but not benign from real: ``P(real) * 1[remaining <= 60 min]`` (cooling: times the share
  of its nodes that fail within the hour).
- ``clairvoyant``: knows benign from real but not the remaining lead (benign precursors score 0, real ones drop
  the ``P(real)`` factor).
- ``amplitude_aware``: knows what ``lead_aware`` knows and each precursor's amplitude, but not benign from real:
  ``P(real | amplitude) * 1[remaining <= 60 min]``, the posterior from the simulator's amplitude laws
  (:func:`real_posterior`). Everything a precursor puts into the telemetry is a function of its mode, onset, end
  and amplitude (plus noise that says nothing about the benign flag), so no scorer that reads the telemetry can
  rank better on average than this posterior: it is the *ceiling* among them. It also reads the
  die-temperature ramps that a failing cooling unit starts, halfway through its precursor, on one GPU of each
  node it will take down (which nodes, and when).
- ``window_aware``: what a reader of one window of telemetry could know about a *counter* precursor (HBM and SRAM
  ECC, PCIe replays, InfiniBand and receive errors, host EDAC errors, disk io time: the memory, "other" and node
  network causes). It knows that the precursor is active, its mode, and the counts the precursor itself adds
  over the window and over the window's last quarter (no background noise), but neither its amplitude nor its
  onset nor its end. It scores ``P(real and it ends within the hour | those two counts)``, from a Monte Carlo of
  the simulator's own laws (:func:`window_posterior`). Shape precursors (die temperature, PDU load, cooling)
  and a leaf switch's (its latency ramp shows how far along it is) are scored as ``amplitude_aware`` does.
  ``amplitude_aware`` is generous because it knows a precursor's amplitude from its first minute; this one
  estimates how much of that a one-hour window shows.

All five also know the observable events the simulator emits only before *real* failures (XID 63 row
remapping 5-45 min before an HBM failure, a thermal-slowdown event part-way up a hot GPU's ramp, which fixes its
failure time); after such an event the node's failure time is known.

They also score the rows between an upstream root's failure and its nodes going down: a failed cooling unit's
nodes over the next hour (a share of them); a failed leaf switch's within ``LEAF_NODE_DELAY_S`` (its latency stays
at the peak until repaired while a look-alike's drops, so every kind is sure); a tripped PDU's rack within
``PDU_NODE_DELAY_S`` (sure only for the kinds that read the ramp's amplitude, ``P(real)`` for the others).

Rows with no active precursor get the node's rate of failures without a visible precursor (a constant per site).
Several active precursors combine as ``1 - prod(1 - p_i)``.

The first three are *reference* points, not a ceiling: the simulator's ramps (exponential counter ramps, the
die-temperature floor, the cooling supply temperature) carry some information about the remaining lead, and
benign look-alikes have smaller amplitudes (``x U(0.3, 1)``; shape signals at most ``BENIGN_LEVEL`` of a real
one's), which a model can partly exploit and ``observable`` / ``lead_aware`` ignore. ``amplitude_aware`` reads
both perfectly. They need the raw ``SiteRun`` (spec, seed, hours, acceleration) attached to
each site and check that the re-derived plan reproduces the run's node failures.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from infrabrain.models.snapshots import HORIZON_S, SnapshotDataset
from infrabrain.simulation.faults import COOLING_FAIL_MEAN

ORACLE_KINDS: tuple[str, ...] = ("observable", "lead_aware", "clairvoyant", "amplitude_aware", "window_aware")
#: The oracle no telemetry reader can beat on average (see the module docstring).
CEILING_KIND = "amplitude_aware"
#: Mean share of a failed cooling unit's nodes that fail (the simulator draws it uniformly).
COOLING_SHARE = COOLING_FAIL_MEAN
_N_QUANTILES = 4000
#: Oracles that read each precursor's amplitude (and a failing cooling unit's hot GPUs).
_AMPLITUDE_KINDS: tuple[str, ...] = ("amplitude_aware", "window_aware")
#: Counter precursors that ``window_aware`` reads only through the counts they add in the window.
WINDOW_COUNTER_SIGNALS: tuple[str, ...] = ("ecc", "sram", "pcie", "cable", "nic", "edac", "ssd")
#: Window of ``window_aware`` (the predictor's default window).
WINDOW_S = 3600.0
_WINDOW_SAMPLES = 400_000
_WINDOW_BIN = 0.15  # width of the log1p(count) bins of the posterior table
_WINDOW_BINS = 80
_WINDOW_PSEUDO = 2.0  # prior pseudo-weight per bin (sparse bins fall back towards the prior)


def _validate_kind(kind: str) -> None:
    if kind not in ORACLE_KINDS:
        raise ValueError(f"oracle kind must be one of {ORACLE_KINDS}, got {kind!r}")


@lru_cache(maxsize=64)
def _lead_quantiles(mode_name: str) -> np.ndarray:
    """Deterministic sample (quantile grid) of a mode's precursor lead in seconds (clipped like the simulator)."""
    from scipy.stats import norm

    from infrabrain.simulation.faults import MAX_LEAD_S, MIN_LEAD_S, MODE_ID, MODES

    m = MODES[MODE_ID[mode_name]]
    u = (np.arange(_N_QUANTILES) + 0.5) / _N_QUANTILES
    lead = m.lead_median_h * 3600.0 * np.exp(m.lead_sigma * norm.ppf(u))
    return np.clip(lead, MIN_LEAD_S, MAX_LEAD_S)


def failure_hazard(mode_name: str, elapsed_s: np.ndarray, horizon_s: float = HORIZON_S) -> np.ndarray:
    """``P(the node fails in (e, e + horizon] | the precursor has not ended by e)`` for a *real* precursor of
    ``mode_name`` at elapsed times ``e`` (seconds since onset); includes the cooling unit's node share and spread."""
    from infrabrain.simulation.faults import MODE_ID, MODES

    if mode_name not in MODE_ID:
        raise ValueError(f"unknown fault mode {mode_name!r}; known: {[m.name for m in MODES]}")
    lead = _lead_quantiles(mode_name)
    e = np.asarray(elapsed_s, float)[:, None]
    alive = lead[None, :] > e
    r = lead[None, :] - e  # remaining time to the root's failure
    if MODES[MODE_ID[mode_name]].root == "cooling":
        # node fails d ~ U(0, H) after the unit (for a share of the unit's nodes)
        g = COOLING_SHARE * np.clip((horizon_s - r) / horizon_s, 0.0, 1.0)
    else:
        g = (r <= horizon_s).astype(float)
    num = (g * alive).sum(axis=1)
    den = alive.sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1), 1.0)


def real_posterior(signal: str, amplitude: float) -> float:
    """``P(real | amplitude)`` of a visible precursor of ``signal``, from the simulator's amplitude laws: a real
    counter precursor's amplitude is ``U(lo, hi)`` (``SIGNAL_AMP_RANGE``), a look-alike's the same draw times
    ``U(*BENIGN_AMP_SCALE)``; a real shape precursor has level 1, a look-alike at most ``BENIGN_LEVEL`` < 1. The
    prior odds real : look-alike are ``1 : BENIGN_RATIO``."""
    from infrabrain.simulation.faults import BENIGN_AMP_SCALE, BENIGN_LEVEL, BENIGN_RATIO, SIGNAL_AMP_RANGE

    if signal in BENIGN_LEVEL:
        return 1.0 if amplitude >= 1.0 else 0.0
    if signal not in SIGNAL_AMP_RANGE:
        raise ValueError(f"unknown precursor signal {signal!r}; known: {sorted({*SIGNAL_AMP_RANGE, *BENIGN_LEVEL})}")
    lo, hi = SIGNAL_AMP_RANGE[signal]
    s_lo, s_hi = BENIGN_AMP_SCALE
    f_real = 1.0 / (hi - lo) if lo <= amplitude <= hi else 0.0
    a, b = max(s_lo, amplitude / hi), min(s_hi, amplitude / lo)  # scales s with amplitude / s in [lo, hi]
    f_benign = float(np.log(b / a)) / ((s_hi - s_lo) * (hi - lo)) if b > a else 0.0
    den = f_real + BENIGN_RATIO * f_benign
    return f_real / den if den > 0 else 0.0


def window_counts(amplitude: np.ndarray, elapsed_s: np.ndarray, lead_s: np.ndarray,
                  window_s: float = WINDOW_S) -> tuple[np.ndarray, np.ndarray]:
    """Counts a counter precursor adds over the window ending ``elapsed_s`` after its onset, and over the
    window's last quarter: ``floor(amplitude * ramp)`` differences, as the simulator renders them."""
    from infrabrain.simulation.telemetry import ramp_shape

    a, e, lead = (np.asarray(x, float) for x in (amplitude, elapsed_s, lead_s))

    def cum(x: np.ndarray) -> np.ndarray:
        return np.floor(a * ramp_shape(x / lead))

    now = cum(e)
    return now - cum(e - window_s), now - cum(e - window_s / 4.0)


def _window_bin(counts: np.ndarray) -> np.ndarray:
    return np.minimum((np.log1p(np.maximum(counts, 0.0)) / _WINDOW_BIN).astype(np.int64), _WINDOW_BINS - 1)


@lru_cache(maxsize=32)
def _window_table(mode_name: str, window_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior table of ``window_aware`` for one mode: ``(posterior, weight)`` over (window count bin, last
    quarter count bin), and the prior. Hypotheses drawn from the simulator's laws (fixed seed): real or
    look-alike (odds ``1 : BENIGN_RATIO``), amplitude, lead (log-normal, clipped), and the moment within the
    precursor, uniform; a precursor is seen in proportion to its lead, so hypotheses are weighted by it."""
    from infrabrain.simulation.faults import (
        BENIGN_AMP_SCALE, BENIGN_RATIO, MAX_LEAD_S, MIN_LEAD_S, MODE_ID, MODES, SIGNAL_AMP_RANGE,
    )

    mode = MODES[MODE_ID[mode_name]]
    if mode.signal not in WINDOW_COUNTER_SIGNALS:
        raise ValueError(f"mode {mode_name!r} has no counter precursor (signal {mode.signal!r})")
    rng = np.random.default_rng(20261204)
    n = _WINDOW_SAMPLES
    real = rng.random(n) < 1.0 / (1.0 + BENIGN_RATIO)
    lo, hi = SIGNAL_AMP_RANGE[mode.signal]
    amp = rng.uniform(lo, hi, n) * np.where(real, 1.0, rng.uniform(*BENIGN_AMP_SCALE, n))
    lead = np.clip(mode.lead_median_h * 3600.0 * np.exp(mode.lead_sigma * rng.standard_normal(n)),
                   MIN_LEAD_S, MAX_LEAD_S)
    elapsed = rng.random(n) * lead
    label = real & (lead - elapsed <= HORIZON_S)
    s_w, s_q = window_counts(amp, elapsed, lead, window_s)
    cell = _window_bin(s_w) * _WINDOW_BINS + _window_bin(s_q)
    weight = np.bincount(cell, weights=lead, minlength=_WINDOW_BINS ** 2)
    hits = np.bincount(cell, weights=lead * label, minlength=_WINDOW_BINS ** 2)
    prior = float(hits.sum() / weight.sum())
    post = (hits + _WINDOW_PSEUDO * prior * lead.mean()) / (weight + _WINDOW_PSEUDO * lead.mean())
    return post.reshape(_WINDOW_BINS, _WINDOW_BINS), weight.reshape(_WINDOW_BINS, _WINDOW_BINS), prior


def window_posterior(mode_name: str, window_count: np.ndarray, quarter_count: np.ndarray,
                     window_s: float = WINDOW_S) -> np.ndarray:
    """``P(real and the precursor ends within the hour | the counts it added over the window and over the
    window's last quarter)`` for an active counter precursor of ``mode_name`` (see :func:`_window_table`)."""
    post, _, _ = _window_table(mode_name, float(window_s))
    return post[_window_bin(np.asarray(window_count, float)), _window_bin(np.asarray(quarter_count, float))]


def _incident_amplitudes(plan: Any) -> dict[tuple[int, float, float], float]:
    """``(signal code, onset, end) -> amplitude`` of every precursor signal the plan rendered."""
    sig = plan.signals
    return {(int(c), float(t0), float(t1)): float(a)
            for c, t0, t1, a in zip(sig["sig"], sig["t0"], sig["t1"], sig["amp"], strict=True)}


def _read_hot_gpus(pn: np.ndarray, t: np.ndarray, nodes: np.ndarray, failures: pd.DataFrame, incident: int,
                   hot0: float) -> None:
    """From ``hot0`` on, a failing cooling unit's doomed nodes show a die-temperature ramp on one GPU each, which
    ends at their failure: the ceiling reads it (in place: doomed nodes 1 within the hour, spared nodes 0)."""
    f = failures[failures["incident"] == incident]
    fail_at = dict(zip(f["node"].to_numpy(int), f["t"].to_numpy(float), strict=True))
    seen = t >= hot0
    for j, n in enumerate(nodes):
        tf = fail_at.get(int(n))
        pn[seen, j] = 0.0 if tf is None else ((tf - t[seen] <= HORIZON_S) & (t[seen] < tf)).astype(float)


def fault_plan_of(run: Any) -> Any:
    """Re-derive a simulated run's fault plan (same seed and stream); errors if it does not match the run."""
    from infrabrain.simulation.engine import simulate_faults

    for attr in ("spec", "hours", "seed", "acceleration", "events"):
        if not hasattr(run, attr):
            raise ValueError(f"oracle needs a simulated SiteRun with {attr!r}; got {type(run).__name__}")
    plan = simulate_faults(run.spec, run.hours, seed=int(run.seed), acceleration=float(run.acceleration),
                           topology=run.topology)
    ev = run.events
    got = np.sort(ev.loc[(ev["event"] == "failure") & (ev["kind"] == "node"), "t"].to_numpy())
    f = plan.failures
    want = np.sort(np.round(f.loc[f["t"] < run.hours * 3600.0, "t"].to_numpy()).astype(np.int64))
    if len(got) != len(want) or (len(got) and np.abs(got - want).max() > 1):
        raise ValueError(f"site {run.spec.name!r}: the re-derived fault plan does not reproduce the run's "
                         f"{len(got)} node failures (got {len(want)}); was the run made with what-if injections?")
    return plan


def _affected_nodes(topo: Any, root_kind: str, root_global: int) -> np.ndarray:
    """Local node indices whose failure an incident rooted at ``root_global`` can cause."""
    local = int(root_global - topo.kind_index[root_kind][0])
    if root_kind == "gpu":
        return np.array([topo.node_of_gpu[local]], np.int64)
    if root_kind == "node":
        return np.array([local], np.int64)
    if root_kind == "leaf":
        return np.flatnonzero(topo.leaf_of_node == local)
    if root_kind == "pdu":
        return np.flatnonzero(topo.rack_of_node == topo.rack_of_pdu[local])
    if root_kind == "cooling":
        return np.flatnonzero(np.isin(topo.rack_of_node, np.flatnonzero(topo.cooling_of_rack == local)))
    raise ValueError(f"unknown root kind {root_kind!r}")


def _base_rate(plan: Any) -> float:
    """Probability that a node fails within the hour from an incident without a visible precursor."""
    from infrabrain.simulation.faults import MODES, mode_rates

    rates = mode_rates(plan.topology, plan.acceleration)
    invisible = sum(r * (1.0 - (m.visible if m.signal else 0.0)) for r, m in zip(rates, MODES))
    return float(1.0 - np.exp(-invisible * HORIZON_S / 3600.0 / max(plan.topology.count("node"), 1)))


def _reveals(plan: Any) -> dict[tuple[int, int], tuple[float, float]]:
    """Observable events that only *real* precursors emit, mapped to the failure they announce:
    ``(incident, node) -> (t_event, t_fail)``. XID 63 (row remapping) comes 5-45 min before an HBM failure; a
    thermal-slowdown event comes at a known fraction of a hot GPU's ramp, which fixes its failure time."""
    ev = plan.events
    sel = ev[((ev["event"] == "xid") & (ev["xid"] == 63)) | (ev["event"] == "throttle")]
    if not len(sel):
        return {}
    topo = plan.topology
    gidx = {cid: i for i, cid in enumerate(topo.components["component_id"].to_numpy())}
    g0 = int(topo.kind_index["gpu"][0])
    f = plan.failures
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for t_ev, cid in zip(sel["t"].to_numpy(float), sel["component_id"].to_numpy()):
        gpu = gidx[cid] - g0
        cand = f[(f["gpu"] == gpu) & (f["t"] > t_ev)]
        if not len(cand):
            continue
        first = cand.loc[cand["t"].idxmin()]
        key = (int(first["incident"]), int(first["node"]))
        if key not in out or t_ev < out[key][0]:
            out[key] = (float(t_ev), float(first["t"]))
    return out


def site_oracle_scores(run: Any, times: np.ndarray, kind: str = "observable") -> np.ndarray:
    """Oracle scores ``[len(times), n_node]`` for one simulated run at snapshot end times ``times`` (seconds)."""
    from infrabrain.simulation.faults import (
        BENIGN_RATIO, COOLING_HOT_START, LEAF_NODE_DELAY_S, MODE_ID, MODES, PDU_NODE_DELAY_S, SIGNAL_CODE,
    )

    _validate_kind(kind)
    plan = fault_plan_of(run)
    topo = plan.topology
    t = np.asarray(times, float)
    n_node = topo.count("node")
    keep = np.ones((len(t), n_node))  # prod(1 - p_i)
    p_real = 1.0 / (1.0 + BENIGN_RATIO)
    reveals = _reveals(plan)
    amps = _incident_amplitudes(plan) if kind in _AMPLITUDE_KINDS else {}
    inc = plan.incidents
    inc = inc[inc["visible"] & ~inc["injected"]]
    for row in inc.itertuples(index=False):
        mode = MODES[MODE_ID[row.mode]]
        if mode.signal is None:
            continue
        t_on, t_fail = float(row.t_onset), float(row.t_fail)
        active = (t >= t_on) & (t < t_fail)
        if mode.root == "cooling" and not row.benign:
            after = (t >= t_fail) & (t < t_fail + HORIZON_S)  # unit failed, its nodes go down within the hour
        elif mode.root == "leaf" and not row.benign:
            # a failed leaf's latency stays at its peak until repaired (a look-alike's drops at its end), and its
            # nodes go down within LEAF_NODE_DELAY_S: certain for every kind
            after = (t >= t_fail) & (t < t_fail + LEAF_NODE_DELAY_S)
        elif mode.root == "pdu" and not row.benign:
            # a tripped PDU's rack goes down within PDU_NODE_DELAY_S; its load ramp ended where a real one ends
            # (at the rating), which only the oracles that read amplitudes tell from a look-alike's end
            after = (t >= t_fail) & (t < t_fail + PDU_NODE_DELAY_S)
        else:
            after = np.zeros_like(active)
        if not (active.any() or after.any()):
            continue
        if kind == "clairvoyant" and row.benign:
            continue
        pr = 1.0 if kind == "clairvoyant" else p_real
        if kind in _AMPLITUDE_KINDS:
            key = (SIGNAL_CODE[mode.signal], t_on, t_fail)
            if key not in amps:
                raise ValueError(f"site {run.spec.name!r}: no {mode.signal} signal rendered for incident "
                                 f"{int(row.incident)}")
            pr = real_posterior(mode.signal, amps[key])
        p = np.zeros(len(t))
        if active.any() and kind == "window_aware" and mode.signal in WINDOW_COUNTER_SIGNALS:
            s_w, s_q = window_counts(amps[key], t[active] - t_on, t_fail - t_on)
            p[active] = window_posterior(mode.name, s_w, s_q)
        elif active.any() and (kind == "lead_aware" or kind in _AMPLITUDE_KINDS):
            r = t_fail - t[active]
            if mode.root == "cooling":  # its nodes fail d ~ U(0, H) after the unit
                p[active] = pr * COOLING_SHARE * np.clip((HORIZON_S - r) / HORIZON_S, 0.0, 1.0)
            else:
                p[active] = pr * (r <= HORIZON_S)
        elif active.any():
            p[active] = pr * failure_hazard(mode.name, t[active] - t_on)
        if after.any() and mode.root == "leaf":
            p[after] = 1.0
        elif after.any() and mode.root == "pdu":
            p[after] = pr
        elif after.any():  # cooling
            s = (t[after] - t_fail) / HORIZON_S  # surviving nodes: chosen ones not yet down all fail within H
            q = COOLING_SHARE
            p[after] = q * (1 - s) / np.maximum(1 - q * s, 1e-9)
        nodes = _affected_nodes(topo, mode.root, int(row.root))
        pn = np.repeat(p[:, None], len(nodes), axis=1)
        if kind in _AMPLITUDE_KINDS and mode.root == "cooling" and not row.benign:
            _read_hot_gpus(pn, t, nodes, plan.failures, int(row.incident),
                           t_on + COOLING_HOT_START * (t_fail - t_on))
        if not row.benign:
            for j, n in enumerate(nodes):
                rv = reveals.get((int(row.incident), int(n)))
                if rv is None:
                    continue
                t_ev, tf = rv
                seen = (t >= t_ev) & (t < tf)
                pn[seen, j] = ((tf - t[seen]) <= HORIZON_S).astype(float)
        keep[:, nodes] *= 1.0 - pn
    base = _base_rate(plan)
    return 1.0 - keep * (1.0 - base)


def oracle_table(dataset: SnapshotDataset, kind: str = "observable") -> pd.DataFrame:
    """Oracle scores for every alive node of every snapshot of ``dataset`` (same rows as the GNN and baselines):
    columns ``site, t, node, score``."""
    from infrabrain.models.baselines import site_score_rows

    _validate_kind(kind)
    by_site: dict[int, list[int]] = {}
    for si, ti in dataset.index:
        by_site.setdefault(si, []).append(ti)
    rows = []
    for si, tis in by_site.items():
        site = dataset.sites[si]
        if site.run is None:
            raise ValueError(f"site {site.name!r} has no raw run attached; the oracle needs the simulated run")
        times = site.timestamps[np.asarray(tis)]
        rows.extend(site_score_rows(si, site, tis, site_oracle_scores(site.run, times, kind)))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["site", "t", "node", "score"])


__all__ = ["CEILING_KIND", "ORACLE_KINDS", "failure_hazard", "fault_plan_of", "real_posterior", "site_oracle_scores",
           "oracle_table", "window_counts", "window_posterior"]
