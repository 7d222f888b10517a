"""The simulator-truth oracles: re-derived fault plans, hazards, and that they beat the incumbents' rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


def test_failure_hazard_is_a_probability_and_short_leads_are_more_urgent() -> None:
    from infrabrain.models.oracle import failure_hazard

    e = np.array([0.0, 600.0, 3600.0, 4 * 3600.0])
    for mode in ("hbm", "leaf", "cooling", "psu_node"):
        h = failure_hazard(mode, e)
        assert h.shape == e.shape and np.all((h >= 0) & (h <= 1))
    # a PSU precursor (median lead 0.7 h) is far likelier to end within the hour than an HBM one (12 h)
    assert failure_hazard("psu_node", np.array([0.0]))[0] > 5 * failure_hazard("hbm", np.array([0.0]))[0]
    with pytest.raises(ValueError, match="unknown fault mode 'nope'"):
        failure_hazard("nope", e)


def test_fault_plan_is_rederived_and_a_mismatch_is_refused(small_runs) -> None:
    from infrabrain.models.oracle import fault_plan_of

    run = small_runs[0]
    plan = fault_plan_of(run)
    assert len(plan.failures) > 0
    other = dataclasses.replace(run, seed=run.seed + 7)
    with pytest.raises(ValueError, match="does not reproduce"):
        fault_plan_of(other)


def test_oracles_beat_the_rules_on_held_out_rows(small_splits) -> None:
    from infrabrain.models.baselines import feature_table, rule_table
    from infrabrain.models.evaluation import attach_truth, evaluate_scores, failure_events
    from infrabrain.models.oracle import oracle_table

    test = small_splits.test_sites
    _, truth = feature_table(test)
    events = failure_events(test)
    rules = evaluate_scores(attach_truth(rule_table(test), truth), events, probabilistic=False)
    obs_rows = attach_truth(oracle_table(test, "observable"), truth)
    assert len(obs_rows) == len(truth)  # the same rows as every model
    obs = evaluate_scores(obs_rows, events)
    clair = evaluate_scores(attach_truth(oracle_table(test, "clairvoyant"), truth), events)
    # (on these few failures the clairvoyant is not always above the observable oracle: knowing a look-alike is
    # benign also zeroes the rows where a software failure happens to coincide with it)
    for oracle in (obs, clair):
        assert oracle["pr_auc"] > rules["pr_auc"] + 0.05
        assert oracle["event_recall_at_p50_precursor"] >= rules["event_recall_at_p50_precursor"]
    with pytest.raises(ValueError, match="oracle kind"):
        oracle_table(test, "psychic")


def test_real_posterior_matches_the_simulators_amplitude_draws() -> None:
    """P(real | amplitude) against a Monte Carlo of the simulator's own laws (real draw vs draw x benign scale)."""
    from infrabrain.models.oracle import real_posterior
    from infrabrain.simulation.faults import BENIGN_AMP_SCALE, BENIGN_LEVEL, SIGNAL_AMP_RANGE

    rng = np.random.default_rng(0)
    lo, hi = SIGNAL_AMP_RANGE["ecc"]
    real = rng.uniform(lo, hi, 200_000)
    benign = rng.uniform(lo, hi, 200_000) * rng.uniform(*BENIGN_AMP_SCALE, 200_000)
    for a0, a1 in ((150.0, 400.0), (1000.0, 1500.0), (2500.0, 3000.0), (4500.0, 5000.0)):
        n_real = np.count_nonzero((real >= a0) & (real < a1))
        n_benign = np.count_nonzero((benign >= a0) & (benign < a1))
        want = n_real / (n_real + n_benign)
        got = np.mean([real_posterior("ecc", a) for a in np.linspace(a0, a1, 201)[:-1] + (a1 - a0) / 400])
        assert abs(got - want) < 0.03, (a0, a1, got, want)
    assert real_posterior("ecc", lo * 0.5) == 0.0  # below any real draw: only a look-alike
    assert 0.9 < real_posterior("ecc", hi * 0.999) <= 1.0  # near the top: a look-alike needs a scale near 1
    for signal, level in BENIGN_LEVEL.items():  # shape signals: a real one's level 1 is out of a look-alike's reach
        assert real_posterior(signal, 1.0) == 1.0 and real_posterior(signal, level) == 0.0
    with pytest.raises(ValueError, match="unknown precursor signal 'hum'"):
        real_posterior("hum", 1.0)


def test_amplitude_aware_oracle_is_the_ceiling(small_splits) -> None:
    """Knowing each precursor's amplitude too ranks at least as well as knowing only its remaining lead, and the
    look-alikes it can rule out score lower than under the lead-aware oracle."""
    from infrabrain.models.baselines import feature_table
    from infrabrain.models.evaluation import attach_truth, evaluate_scores, failure_events
    from infrabrain.models.oracle import oracle_table

    test = small_splits.test_sites
    _, truth = feature_table(test)
    events = failure_events(test)
    lead = attach_truth(oracle_table(test, "lead_aware"), truth)
    amp = attach_truth(oracle_table(test, "amplitude_aware"), truth)
    assert len(amp) == len(truth)
    assert evaluate_scores(amp, events)["pr_auc"] >= evaluate_scores(lead, events)["pr_auc"] - 1e-9
    neg = ~lead["label"].to_numpy(bool)
    moved = amp["score"].to_numpy() != lead["score"].to_numpy()
    assert moved.any()  # the posterior is not the flat 1 / (1 + BENIGN_RATIO)
    assert amp["score"].to_numpy()[neg].mean() < lead["score"].to_numpy()[neg].mean()


def test_window_counts_are_the_simulators_counter_increments() -> None:
    """What ``window_aware`` reads is what telemetry.py renders: floor(amplitude x ramp) differences."""
    from infrabrain.models.oracle import window_counts
    from infrabrain.simulation.telemetry import _ramp

    t0, t1, amp, w = 1000.0, 1000.0 + 5 * 3600.0, 2345.0, 3600.0
    t = np.arange(t0 - 600.0, t1, 300.0)
    s_w, s_q = window_counts(np.full(len(t), amp), t - t0, np.full(len(t), t1 - t0), w)

    def rendered(x: np.ndarray) -> np.ndarray:
        return np.floor(amp * _ramp(x, t0, t1))

    assert np.abs(s_w - (rendered(t) - rendered(t - w))).max() <= 1  # float32 rounding of the renderer
    assert np.abs(s_q - (rendered(t) - rendered(t - w / 4))).max() <= 1
    assert s_w[0] == 0 and s_w[-1] > s_w[len(t) // 2] > 0  # nothing before onset; the ramp accelerates


@pytest.mark.parametrize("mode", ["hbm", "gpu_sram", "gpu_bus", "cable", "nic", "host_maintenance", "ssd"])
def test_window_posterior_is_a_posterior(mode: str) -> None:
    """Averaged over the simulator's own hypotheses, the posterior gives back the prior (total probability);
    no counts in the window is evidence against a failure within the hour, a steep ramp near its end for one."""
    from infrabrain.models.oracle import _window_table, window_posterior

    post, weight, prior = _window_table(mode, 3600.0)
    assert ((post >= 0) & (post <= 1)).all()
    assert float((post * weight).sum() / weight.sum()) == pytest.approx(prior, rel=0.02)
    assert window_posterior(mode, np.array([0.0]), np.array([0.0]))[0] < prior
    # a short ramp caught near its end: 30 % of the largest amplitude in the hour, 55 % of it in the last quarter
    from infrabrain.simulation.faults import MODE_ID, MODES, SIGNAL_AMP_RANGE

    most = 0.3 * SIGNAL_AMP_RANGE[MODES[MODE_ID[mode]].signal][1]
    assert window_posterior(mode, np.array([most]), np.array([0.55 * most]))[0] > prior


def test_window_aware_oracle_changes_only_counter_precursor_rows(small_splits) -> None:
    """``window_aware`` reads counter precursors through their window counts and scores everything else as the
    ceiling does; on this site it ranks no better than the ceiling."""
    from infrabrain.models.baselines import feature_table
    from infrabrain.models.evaluation import attach_truth, evaluate_scores, failure_events
    from infrabrain.models.oracle import WINDOW_COUNTER_SIGNALS, _window_table, fault_plan_of, oracle_table
    from infrabrain.simulation.faults import MODE_ID, MODES

    with pytest.raises(ValueError, match="no counter precursor"):
        _window_table("gpu_thermal", 3600.0)
    test = small_splits.test_sites
    _, truth = feature_table(test)
    events = failure_events(test)
    amp = attach_truth(oracle_table(test, "amplitude_aware"), truth)
    win = attach_truth(oracle_table(test, "window_aware"), truth)
    assert len(win) == len(amp) and (win[["site", "t", "node"]].to_numpy() == amp[["site", "t", "node"]].to_numpy()).all()
    changed = win["score"].to_numpy() != amp["score"].to_numpy()
    assert changed.any()
    # every changed row lies on a node with an active counter precursor upstream (or on its GPUs)
    site = test.sites[0]
    inc = fault_plan_of(site.run).incidents
    counter = inc[inc["visible"] & inc["mode"].map(lambda m: MODES[MODE_ID[m]].signal in WINDOW_COUNTER_SIGNALS)]
    assert len(counter)
    t_changed = win.loc[changed, "t"].to_numpy(float)
    on = np.zeros(len(t_changed), bool)
    for r in counter.itertuples(index=False):
        on |= (t_changed >= r.t_onset) & (t_changed < r.t_fail)
    assert on.all()
    assert evaluate_scores(win, events)["pr_auc"] <= evaluate_scores(amp, events)["pr_auc"] + 0.02


def _failed_root(cause: str, mode: str):
    """A small site with ``cause`` 100x as frequent, its fault plan and a real, visible, failed ``mode`` incident
    with the node failures it caused."""
    from infrabrain.models.oracle import fault_plan_of
    from infrabrain.simulation import federation_specs
    from infrabrain.simulation.engine import simulate_site

    spec = federation_specs(1, seed=3, racks=(2, 3), nodes_per_rack=2)[0].with_cause_scale({cause: 100})
    run = simulate_site(spec, hours=6, seed=1, acceleration=500)
    plan = fault_plan_of(run)
    inc = plan.incidents
    hit = inc[(inc["mode"] == mode) & inc["visible"] & ~inc["benign"] & inc["failed"]]
    assert len(hit), f"the {cause}-heavy site should hold a failed {mode} incident with a precursor"
    row = hit.iloc[0]
    return run, float(row["t_fail"]), plan.failures[plan.failures["incident"] == row["incident"]]


def test_a_failed_leafs_nodes_score_one_until_they_go_down() -> None:
    """A failed leaf keeps its latency at the peak (a look-alike's drops) and takes its nodes down within
    LEAF_NODE_DELAY_S: in that gap every oracle knows they fail within the hour (half an hour before, none is
    sure)."""
    from infrabrain.models.oracle import ORACLE_KINDS, site_oracle_scores
    from infrabrain.simulation.faults import LEAF_NODE_DELAY_S

    run, t_fail, down = _failed_root("network", "leaf")
    assert ((down["t"] >= t_fail) & (down["t"] <= t_fail + LEAF_NODE_DELAY_S)).all()
    nodes = down["node"].to_numpy(int)
    times = np.array([t_fail - 1800.0, float(down["t"].min()) - 1e-3])
    for kind in ORACLE_KINDS:
        p = site_oracle_scores(run, times, kind)
        assert np.all(p[1, nodes] == pytest.approx(1.0)), kind
        assert np.all(p[0, nodes] < 1.0), kind


def test_a_tripped_pdus_rack_is_known_only_to_the_oracles_that_read_amplitudes() -> None:
    """In the PDU_NODE_DELAY_S between a trip and its rack going down, only a real ramp's end (at the rating)
    tells it from a look-alike's: the amplitude-reading oracles are sure, the observable one has P(real)."""
    from infrabrain.models.oracle import site_oracle_scores
    from infrabrain.simulation.faults import BENIGN_RATIO, PDU_NODE_DELAY_S

    run, t_fail, down = _failed_root("psu", "pdu_trip")
    assert ((down["t"] >= t_fail) & (down["t"] <= t_fail + PDU_NODE_DELAY_S)).all()
    nodes = down["node"].to_numpy(int)
    t = np.array([t_fail + 0.5 * (float(down["t"].min()) - t_fail)])
    for kind in ("amplitude_aware", "window_aware", "clairvoyant"):
        assert np.all(site_oracle_scores(run, t, kind)[0, nodes] == pytest.approx(1.0)), kind
    p_real = 1.0 / (1.0 + BENIGN_RATIO)
    assert np.all(site_oracle_scores(run, t, "observable")[0, nodes] >= p_real - 1e-9)
    assert np.all(site_oracle_scores(run, t, "observable")[0, nodes] < 1.0)
