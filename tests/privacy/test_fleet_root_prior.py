"""The fleet root prior: hour-clipped contributions, the DP release over a real secure sum, ledgers, merging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infrabrain.models.root_prior import RELATIONS, RootPrior, merge_root_priors
from infrabrain.privacy.accounting import epsilon_of
from infrabrain.privacy.fleet_root_prior import (
    FleetRootPrior,
    FleetRootPriorConfig,
    build_fleet_root_prior,
    expected_count,
    relation_contribution,
    release_noise_multiplier,
    release_noise_std,
    release_shares,
    site_root_prior,
    site_share,
)
from infrabrain.privacy.secure_fleet_stats import dequantise_sum, trusted_sites

SLOT = {r: i for i, r in enumerate(RELATIONS)}


def _table(*rows: tuple[int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tf", "relation"])


def test_each_hour_counts_at_most_one_in_l2_norm():
    # hour 0: one node failure (norm 1, kept); hour 1: a cooling cascade of 4 nodes (norm 4 -> 1);
    # hour 2: a node and a GPU failure (norm sqrt 2 -> each 1/sqrt 2)
    rel = _table((10, "node@0"), *[(3700 + i, "cooling@2") for i in range(4)], (7300, "node@0"), (7400, "gpu@1"))
    v = relation_contribution(rel, clip_norm=1.0)
    assert v[SLOT["node@0"]] == pytest.approx(1 + 2**-0.5)
    assert v[SLOT["cooling@2"]] == pytest.approx(1.0)
    assert v[SLOT["gpu@1"]] == pytest.approx(2**-0.5)
    assert v.sum() == pytest.approx(2 + 2**0.5)


def test_a_larger_clip_norm_keeps_a_cascade_s_multiplicity_for_proportionally_more_noise():
    cascade = _table(*[(3700 + i, "leaf@1") for i in range(4)], (10, "node@0"))
    assert relation_contribution(cascade, clip_norm=4.0)[SLOT["leaf@1"]] == pytest.approx(4.0)
    assert relation_contribution(cascade, clip_norm=2.0)[SLOT["leaf@1"]] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        relation_contribution(cascade, clip_norm=0.0)
    contribs = [np.full(len(RELATIONS), 40.0) for _ in range(5)]
    one = build_fleet_root_prior(contribs, FleetRootPriorConfig(epsilon=1.0, clip_norm=1.0), seed=0)
    four = build_fleet_root_prior(contribs, FleetRootPriorConfig(epsilon=1.0, clip_norm=4.0), seed=0)
    assert four.noise_multiplier == pytest.approx(one.noise_multiplier) and four.epsilon == pytest.approx(one.epsilon)
    assert four.sigma == pytest.approx(4 * one.sigma)
    err = lambda f: np.array([f.counts[r] for r in RELATIONS]) - 200.0  # noqa: E731
    assert err(four).std() == pytest.approx(4 * err(one).std(), rel=1e-3)  # same seed: the same draws, scaled


@pytest.mark.parametrize("clip_norm", [1.0, 4.0])
def test_adding_or_removing_one_hour_moves_a_contribution_by_at_most_the_clip_norm(clip_norm):
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 80))
        rel = _table(*[(int(t), RELATIONS[int(k)]) for t, k in zip(rng.integers(0, 10 * 3600, n),
                                                                     rng.integers(0, 6, n))])
        hour = int(rng.integers(0, 10))
        without = rel[rel["tf"] // 3600 != hour]
        diff = relation_contribution(rel, clip_norm) - relation_contribution(without, clip_norm)
        assert np.linalg.norm(diff) <= clip_norm + 1e-12


def test_contributions_are_validated_by_name():
    with pytest.raises(ValueError, match=r"unknown relation\(s\) \['fan@1'\]"):
        relation_contribution(_table((0, "fan@1")), 1.0)
    with pytest.raises(ValueError, match="lacks column"):
        relation_contribution(pd.DataFrame({"relation": ["node@0"]}), 1.0)
    ok = np.zeros(len(RELATIONS))
    with pytest.raises(ValueError, match=r"site 1: contribution has shape \(3,\)"):
        build_fleet_root_prior([ok, np.zeros(3), ok])
    bad = ok.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="site 2: contribution has a negative or non-finite cell"):
        build_fleet_root_prior([ok, ok, bad])
    big = ok.copy()
    big[0] = 3000.0
    with pytest.raises(ValueError, match="site 0: .* raise clip"):
        build_fleet_root_prior([big, ok, ok])
    with pytest.raises(ValueError, match="min_sites=3"):
        build_fleet_root_prior([ok, ok])
    with pytest.raises(ValueError, match="epsilon"):
        FleetRootPriorConfig(epsilon=0)


def test_the_release_sums_the_sites_and_its_epsilon_comes_from_the_accountant():
    rng = np.random.default_rng(0)
    contribs = [rng.uniform(0, 50, len(RELATIONS)) for _ in range(6)]
    cfg = FleetRootPriorConfig(epsilon=1.0)
    fleet = build_fleet_root_prior(contribs, cfg, seed=1)
    z = release_noise_multiplier(cfg)
    assert fleet.n_sites == 6 and fleet.noise_multiplier >= z
    assert fleet.epsilon == pytest.approx(epsilon_of([(fleet.noise_multiplier, 1.0, 1)], 1e-6, "prv"))
    assert fleet.epsilon <= 1.0 + 1e-6
    err = np.array([fleet.counts[r] for r in RELATIONS]) - np.sum(contribs, axis=0)
    assert 0.5 * fleet.sigma < err.std() < 2 * fleet.sigma  # noise of the calibrated size
    assert fleet.clip_norm == 4.0 and fleet.sigma == pytest.approx(4.0 * fleet.noise_multiplier)
    # a larger epsilon means less noise
    assert release_noise_multiplier(FleetRootPriorConfig(epsilon=4.0)) < z / 2


def test_a_dropped_site_is_left_out_and_the_noise_still_covers_the_target():
    contribs = [np.full(len(RELATIONS), 10.0) for _ in range(6)]
    cfg = FleetRootPriorConfig(epsilon=2.0)
    fleet = build_fleet_root_prior(contribs, cfg, dropouts=[4], seed=0)
    assert fleet.n_sites == 5
    assert fleet.noise_multiplier >= release_noise_multiplier(cfg) - 1e-9 and fleet.epsilon <= 2.0 + 1e-6
    assert np.mean([fleet.counts[r] for r in RELATIONS]) == pytest.approx(50.0, abs=3.0)


def _share_noise(cfg: FleetRootPriorConfig, n: int, min_honest: int, draws: int = 40) -> float:
    """Empirical noise std of one site's dequantised share (a zero contribution), as the coordinator would see it
    if it could unmask it."""
    rng = np.random.default_rng(7)
    zero = np.zeros(len(RELATIONS))
    got = [dequantise_sum(site_share(zero, cfg, n, rng=rng, min_honest=min_honest), 1, clip=cfg.clip,
                          quant_bits=cfg.quant_bits) for _ in range(draws)]
    return float(np.std(got))


def test_sybils_cannot_shrink_the_noise_of_a_site_that_counts_on_few_honest_sites():
    """Threat model: a coordinator that invents sites raises n, hence the threshold, and a trusting site's noise
    share falls with it; a site that counts on ``min_honest`` sites adds sigma / sqrt(min_honest) whatever n is."""
    cfg = FleetRootPriorConfig(epsilon=1.0)
    sigma = release_noise_multiplier(cfg) * cfg.clip_norm
    honest = 2
    for n in (3, 10, 40):  # 2 real sites; the coordinator claims n - 2 more
        threshold, trusting = release_shares(cfg, n)
        _, cautious = release_shares(cfg, n, min_honest=honest)
        assert trusting == pytest.approx(sigma / np.sqrt(threshold))
        assert cautious == pytest.approx(sigma / np.sqrt(min(honest, threshold)))
        # the two real sites' noise alone (Sybils add none) covers sigma only for the cautious ones
        assert np.sqrt(honest) * cautious >= sigma - 1e-9
        if threshold > honest:
            assert np.sqrt(honest) * trusting < sigma
    # measured on real quantised shares, not only computed: 40 Sybils leave a cautious site's own noise intact
    assert _share_noise(cfg, 40, 1) == pytest.approx(sigma, rel=0.1)
    assert _share_noise(cfg, 40, 0) == pytest.approx(sigma / np.sqrt(32), rel=0.1)


def test_min_honest_is_checked_and_a_release_counts_every_share_in_its_noise():
    cfg = FleetRootPriorConfig(epsilon=1.0)
    sigma = release_noise_multiplier(cfg) * cfg.clip_norm
    assert trusted_sites(5) == 5 and trusted_sites(5, 2) == 2 and trusted_sites(5, 9) == 5
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="min_honest must be a non-negative integer"):
            trusted_sites(5, bad)  # type: ignore[arg-type]
    # six sites (threshold 5): every one trusting gives sigma * sqrt(6 / 5); one counting on itself adds sigma
    assert release_noise_std(cfg, 6, [0] * 6) == pytest.approx(sigma * np.sqrt(6 / 5))
    assert release_noise_std(cfg, 6, [0] * 5 + [1]) == pytest.approx(sigma * np.sqrt(5 / 5 + 1))
    rng = np.random.default_rng(3)
    contribs = [rng.uniform(0, 50, len(RELATIONS)) for _ in range(6)]
    with pytest.raises(ValueError, match="min_honest has 2 entries for 6 contributions"):
        build_fleet_root_prior(contribs, cfg, min_honest=[1, 1])
    errs, fleets = [], []
    for seed in range(8):
        fleet = build_fleet_root_prior(contribs, cfg, min_honest=[1] * 6, seed=seed)
        fleets.append(fleet)
        errs.append(np.array([fleet.counts[r] for r in RELATIONS]) - np.sum(contribs, axis=0))
    assert fleets[0].sigma == pytest.approx(sigma * np.sqrt(6))  # the published std is the one in the sum
    assert np.std(errs) == pytest.approx(fleets[0].sigma, rel=0.15)
    assert fleets[0].epsilon < 0.5 * cfg.epsilon  # six times the noise variance: a smaller epsilon for the release
    # a dropped cautious site's share is not in the sum, nor in the published std
    dropped = build_fleet_root_prior(contribs, cfg, min_honest=[0, 0, 0, 0, 0, 1], dropouts=[5], seed=0)
    assert dropped.sigma == pytest.approx(release_noise_std(cfg, 6, [0] * 5))


def test_each_site_ledger_records_the_release_and_a_site_over_budget_is_left_out(tmp_path):
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.ledger import PrivacyLedger

    ledgers = [PrivacyLedger.open(tmp_path / f"s{i}", BudgetConfig(epsilon_total=3.0 if i < 3 else 0.5, delta=1e-6),
                                  site=f"s{i}") for i in range(4)]
    contribs = [np.full(len(RELATIONS), 5.0) for _ in range(4)]
    fleet = build_fleet_root_prior(contribs, FleetRootPriorConfig(epsilon=1.0), ledgers=ledgers,
                                   hours=[100] * 4, round_=2, seed=0)
    assert fleet.n_sites == 3
    for led in ledgers[:3]:
        reloaded = PrivacyLedger.load(led.directory)
        (run,) = reloaded.runs
        assert run.status == "committed" and run.round == 2 and run.sample_rate == 1.0 and run.steps == 1
        assert reloaded.epsilon_spent == pytest.approx(1.0, abs=0.02)
    refused = PrivacyLedger.load(ledgers[3].directory)  # its budget of 0.5 cannot take it: nothing written
    assert refused.runs == () and refused.epsilon_spent == 0.0
    with pytest.raises(ValueError, match="together"):
        build_fleet_root_prior(contribs, ledgers=ledgers)


def _fleet(counts: dict[str, float], sigma: float = 2.5) -> FleetRootPrior:
    return FleetRootPrior(counts={r: counts.get(r, 0.0) for r in RELATIONS}, n_sites=5, noise_multiplier=sigma,
                          clip_norm=1.0, epsilon=1.0, delta=1e-6, accountant="prv")


def test_a_noisy_count_reads_as_the_posterior_mean_of_a_count_that_cannot_be_negative():
    from scipy.stats import truncnorm

    for noisy, sigma in [(0.0, 2.0), (-3.0, 4.0), (5.0, 4.0), (100.0, 4.0), (-200.0, 4.0), (3.0, 0.0)]:
        want = max(0.0, noisy) if sigma == 0 else truncnorm.mean(-noisy / sigma, np.inf, loc=noisy, scale=sigma)
        assert expected_count(noisy, sigma) == pytest.approx(want, rel=1e-4, abs=1e-9)
    assert expected_count(0.0, 10.0) == pytest.approx(7.979, abs=1e-3)  # an empty relation: about 0.8 sigma


def test_a_site_adds_the_fleets_expected_counts_less_its_own():
    local = RootPrior(counts={"node@0": 7, "gpu@1": 3}, failures=10)
    fleet = _fleet({"node@0": 40.2, "cooling@2": 12.6, "pdu@1": -3.0}, sigma=0.5)
    own = np.zeros(len(RELATIONS))
    own[SLOT["node@0"]] = 6.0
    got = site_root_prior(local, fleet, own)
    # empty relations read as 0.8 x 0.5 = 0.4 -> 0; a -3.0 count (6 sigma below 0) as 0.08 -> 0
    assert got == RootPrior(counts={"cooling@2": 13, "gpu@1": 3, "node@0": 41}, failures=57)
    # a new site (no labels): the fleet alone; the cooling unit is no longer "never seen"
    new = site_root_prior(None, fleet)
    assert new is not None and new.counts == {"cooling@2": 13, "node@0": 40}
    assert new.log_prior(["cooling@2", "leaf@1"])[0] > new.log_prior(["cooling@2", "leaf@1"])[1]
    assert site_root_prior(local, None) == local and site_root_prior(None, _fleet({}, sigma=0.0)) is None
    with pytest.raises(ValueError, match="own contribution has shape"):
        site_root_prior(local, fleet, np.zeros(2))


def test_a_noisy_fleet_gives_a_weak_prior_and_a_quiet_one_a_sharp_prior():
    """The same true counts (node 60, leaf 10) read through little and much noise: through much, every relation
    gets a similar pseudo-count, so the node's lead over its leaf shrinks instead of the leaf vanishing."""
    true = {"node@0": 60.0, "leaf@1": 10.0}
    gap = {}
    for sigma in (0.5, 17.0):
        prior = site_root_prior(None, _fleet(true, sigma=sigma))
        assert prior is not None
        lp = prior.log_prior(["node@0", "leaf@1"])
        gap[sigma] = lp[0] - lp[1]
        assert set(prior.counts) == ({"node@0", "leaf@1"} if sigma < 1 else set(RELATIONS))
    assert gap[0.5] == pytest.approx(np.log(61 / 11), abs=1e-6)
    assert 0 < gap[17.0] < gap[0.5] - 0.4  # 1.17 against 1.71 logits (a floor at 2 sigma would give 4.1)


def test_read_against_a_base_the_noise_on_relations_the_base_makes_rare_adds_little():
    """With the published mix's shares as a base (follow-up 26), an empty relation the base expects nothing of
    reads as the base's floor, not as the flat read's 0.8 sigma, and counts well above the noise stay what they
    were."""
    from infrabrain.privacy.fleet_root_prior import BASE_SHARE_FLOOR, base_shifts

    base = {"gpu@1": 0.5, "node@0": 0.35, "leaf@1": 0.1, "cooling@2": 0.05}
    true = {"gpu@1": 400.0, "node@0": 280.0, "leaf@1": 80.0, "cooling@2": 40.0}
    flat = site_root_prior(None, _fleet(true, sigma=17.0))
    read = site_root_prior(None, _fleet(true, sigma=17.0), base=base)
    assert set(flat.counts) == set(RELATIONS) and flat.counts["spine@3"] == pytest.approx(0.8 * 17, abs=1)
    # every other relation reads as about its prior mean (floor share x total = 4), not as 0.8 sigma (14)
    assert max(n for r, n in read.counts.items() if r not in base) <= BASE_SHARE_FLOOR * 800 + 0.5
    assert sum(read.counts.values()) < 0.75 * sum(flat.counts.values())
    # the total is fitted to the counts (not set by the base): the shift is sigma^2 / (share x total)
    noisy = np.array([true.get(r, 0.0) for r in RELATIONS])
    shifts = base_shifts(noisy, 17.0, base)
    for r, c in true.items():
        assert read.counts[r] == round(expected_count(c - shifts[SLOT[r]], 17.0))
        if c >= 80:
            assert read.counts[r] == pytest.approx(c, rel=0.05)  # far above the noise: the count itself
    assert shifts[SLOT["gpu@1"]] == pytest.approx(17.0**2 / (0.5 * 800.0), rel=0.02)
    assert shifts[SLOT["spine@3"]] == pytest.approx(17.0**2 / (BASE_SHARE_FLOOR * 800.0), rel=0.02)
    # a count far above the noise at a relation the base calls impossible is still read
    odd = site_root_prior(None, _fleet({**true, "spine@3": 400.0}, sigma=17.0), base=base)
    assert odd.counts["spine@3"] > 300
    for bad in ({"fan@1": 0.1}, {"node@0": -0.1}, {"node@0": float("nan")}):
        with pytest.raises(ValueError, match="base shares must be known relations"):
            site_root_prior(None, _fleet(true, sigma=17.0), base=bad)


@pytest.mark.parametrize("change, error", [
    ({"counts": {"fan@1": 3.0}}, r"unknown relation\(s\) \['fan@1'\]"),
    ({"counts": {"node@0": float("nan")}}, r"\['node@0'\] are not finite"),
    ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"n_sites": 0}, "n_sites"),
])
def test_a_malformed_published_prior_is_refused_by_name(change, error):
    good = _fleet({"node@0": 3.0}).model_dump()
    FleetRootPrior.model_validate(good)
    with pytest.raises(ValueError, match=error):
        FleetRootPrior.model_validate({**good, **change})


def test_merging_priors_adds_their_counts():
    a = RootPrior(counts={"node@0": 2}, failures=2)
    b = RootPrior(counts={"node@0": 1, "leaf@1": 4}, failures=5)
    assert merge_root_priors(a, None, b) == RootPrior(counts={"leaf@1": 4, "node@0": 3}, failures=7)
    assert merge_root_priors(None, None) is None
