"""The fleet's root prior: where failures start, pooled over the sites by secure aggregation under DP.

A site's root prior (:mod:`infrabrain.models.root_prior`) counts where its own labelled failures started. A site
that never had a cooling failure ranks its cooling unit as an unlikely root, and a new site has no labels at
all. The fleet knows better, but a site's failure history is its own. So each site sends only this:

- **its contribution**: for each hour of its history, the count of its failures per relation
  (:data:`~infrabrain.models.root_prior.RELATIONS`, a fixed public list), scaled down to L2 norm ``clip_norm``
  if larger, summed over the hours. The privacy unit is one hour of one site's failure history, the hour a
  training window's label covers (``privacy.unit``): adding or removing one such hour moves the contribution by
  at most ``clip_norm`` in L2 norm, however many nodes failed in it. At ``clip_norm`` 1 a cascade that takes
  four nodes counts as one failure; at 4 it counts as four, as the local prior counts it, for 4x the noise;
- **Gaussian noise**, its share of the noise: the shares of the at least ``threshold`` surviving sites sum to
  the calibrated ``sigma`` (distributed DP, as in :mod:`infrabrain.privacy.secure_fleet_stats`);
- **masked**, in a SecAgg+ round (:mod:`infrabrain.privacy.secure_sum`), so the coordinator sees only the
  noisy sum. :func:`build_fleet_root_prior` runs every party in one process (the bench); a federation runs it
  over Flower, each site in its own process (``coordinator.fleet_prior_round``, ``client.fleet_prior_site``).

The noise multiplier is calibrated by the Opacus accountant for the release's target epsilon (one Gaussian
step at sample rate 1), and each site's privacy ledger records the release as such a run before its share
leaves; a site whose budget cannot take it is left out of the sum. Every site gets the noisy fleet counts back.
It reads each one as the posterior mean of the true count given the noise (:func:`expected_count`: a count
cannot be negative), less its own contribution, and adds that to its local counts (:func:`site_root_prior`).
So a small or short-lived fleet, whose counts are mostly noise, gives every relation a similar pseudo-count
(a weak prior), and a large one the sharp prior its counts support. Given a base (the published failure mix's
shares on the site's topology, issue 3 follow-up 26) the counts are read under a prior that follows those
shares instead, so the noise on relations the mix makes rare no longer outweighs the rest. The local counts and
the contribution never leave the site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrabrain.logs import get_logger
from infrabrain.models.root_prior import RELATIONS, RootPrior, merge_root_priors
from infrabrain.privacy.accounting import calibrate_noise, epsilon_of
from infrabrain.privacy.budget import AccountantName
from infrabrain.privacy.ledger import BudgetExceededError, PrivacyLedger
from infrabrain.privacy.secure_fleet_stats import (check_modulus, distributed_noisy_sum, noise_share_sigma,
                                                   noisy_quantised_share, sum_noise_std)

log = get_logger("privacy.fleet_root_prior")

#: The privacy unit's length: one hour of a site's failure history (a training window's label hour).
UNIT_S = 3600


class FleetRootPriorConfig(BaseModel):
    """How the fleet root prior is released."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(1.0, gt=0, description="epsilon of one release, for one hour of one site's history")
    delta: float = Field(1e-6, gt=0, lt=1)
    accountant: AccountantName = Field("prv", description="Opacus accountant that calibrates the noise")
    min_sites: int = Field(3, ge=2, description="smallest fleet a prior is built from")
    survival: float = Field(0.8, gt=0.5, le=1.0, description="Shamir threshold as a fraction of the sites: the "
                            "round aborts below it, and each site's noise share assumes at least that many")
    clip_norm: float = Field(4.0, gt=0, description="largest L2 norm of one hour's relation counts (the "
                             "sensitivity): the failures of an hour with more are scaled down to it. 4 keeps a "
                             "leaf or cooling cascade over a 4-node rack whole; 1 counted it as one failure and "
                             "lost the prior's gain on cascades (docs/predictor.md follow-up 23)")
    clip: float = Field(4096.0, gt=0, description="quantisation range of a noisy cell (clipped failures)")
    quant_bits: int = Field(24, ge=8, le=24)
    mod_bits: int = Field(40, ge=24, le=62)


class FleetRootPrior(BaseModel):
    """What the coordinator publishes: the noisy fleet sum per relation and the DP terms of its release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    counts: dict[str, float]  # relation -> noisy sum over the sites of their hour-clipped counts (may be < 0)
    n_sites: int = Field(..., ge=1)  # sites in the secure sum
    noise_multiplier: float = Field(..., ge=0)  # total noise std over the L2 sensitivity (clip_norm)
    clip_norm: float = Field(..., gt=0)
    epsilon: float = Field(..., ge=0)
    delta: float = Field(..., gt=0, lt=1)
    accountant: str
    unit_s: int = UNIT_S
    mechanism: str = ("distributed Gaussian over a SecAgg+ sum, one hour of one site's failure history clipped "
                      "to L2 norm clip_norm; epsilon by the Opacus accountant")

    @field_validator("counts")
    @classmethod
    def _validate_counts(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(RELATIONS))
        if unknown:
            raise ValueError(f"fleet root prior has unknown relation(s) {unknown}")
        bad = sorted(r for r, c in v.items() if not math.isfinite(c))
        if bad:
            raise ValueError(f"fleet root prior count(s) for {bad} are not finite")
        return v

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise on each count."""
        return self.noise_multiplier * self.clip_norm


def release_noise_multiplier(config: FleetRootPriorConfig) -> float:
    """Noise multiplier (std over the L2 sensitivity) at which one release costs ``config.epsilon``."""
    return calibrate_noise([], sample_rate=1.0, steps=1, runs=1, epsilon_target=config.epsilon,
                           delta=config.delta, mechanism=config.accountant)


def relation_contribution(relations: pd.DataFrame, clip_norm: float, unit_s: int = UNIT_S) -> np.ndarray:
    """A site's contribution over :data:`RELATIONS`: per hour (``tf // unit_s``), its failures' relation counts
    scaled to L2 norm at most ``clip_norm`` (the release's, :class:`FleetRootPriorConfig`), summed over the hours.
    ``relations``: ``tf, relation`` (:func:`~infrabrain.models.root_prior.root_relations` of one site)."""
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    missing = {"tf", "relation"} - set(relations.columns)
    if missing:
        raise ValueError(f"relation table lacks column(s) {sorted(missing)}")
    unknown = sorted(set(relations["relation"]) - set(RELATIONS))
    if unknown:
        raise ValueError(f"unknown relation(s) {unknown}: a contribution counts only {len(RELATIONS)} public "
                         "relations (models.root_prior.RELATIONS)")
    slot = {r: i for i, r in enumerate(RELATIONS)}
    out = np.zeros(len(RELATIONS), dtype=np.float64)
    for _, hour in relations.groupby(relations["tf"].to_numpy() // unit_s):
        vec = np.zeros(len(RELATIONS), dtype=np.float64)
        np.add.at(vec, [slot[r] for r in hour["relation"]], 1.0)
        out += vec * min(1.0, clip_norm / float(np.linalg.norm(vec)))
    return out


def validate_contribution(vec: np.ndarray, clip: float, who: str = "site") -> np.ndarray:
    """A contribution over :data:`RELATIONS`: finite, non-negative, and small enough to leave the noise room
    inside the quantisation range; ``ValueError`` naming ``who`` otherwise."""
    vec = np.asarray(vec, dtype=np.float64)
    if vec.shape != (len(RELATIONS),):
        raise ValueError(f"{who}: contribution has shape {vec.shape}, expected ({len(RELATIONS)},)")
    if not np.isfinite(vec).all() or (vec < 0).any():
        raise ValueError(f"{who}: contribution has a negative or non-finite cell")
    if vec.max() > clip / 2:
        raise ValueError(f"{who}: a contribution cell of {vec.max():.1f} leaves no room for the noise "
                         f"inside the quantisation range clip={clip:g}; raise clip")
    return vec


def release_shares(config: FleetRootPriorConfig, n: int, min_honest: int = 0) -> tuple[int, float]:
    """A release among ``n`` sites: the secure sum's threshold and the noise std of a site that counts on
    ``min_honest`` honest sites (0: the threshold; :func:`~infrabrain.privacy.secure_fleet_stats.trusted_sites`).
    Both follow from ``n``, the config and the site's own ``min_honest``, so each site and the coordinator
    compute them themselves."""
    return noise_share_sigma(release_noise_multiplier(config) * config.clip_norm, n, config.min_sites,
                             config.survival, min_honest)


def release_noise_std(config: FleetRootPriorConfig, n: int, min_honest: Sequence[int]) -> float:
    """The noise std in the sum of a release among ``n`` sites whose survivors assumed ``min_honest`` (one each):
    the calibrated sigma when every survivor counted on the threshold, more when some counted on fewer."""
    sigma = release_noise_multiplier(config) * config.clip_norm
    threshold, _ = noise_share_sigma(sigma, n, config.min_sites, config.survival)
    return sum_noise_std(sigma, threshold, min_honest)


def site_share(vec: np.ndarray, config: FleetRootPriorConfig, n: int,
               rng: np.random.Generator | None = None, min_honest: int = 0) -> np.ndarray:
    """What a site puts into the secure sum of a release among ``n`` sites (run at the site): its contribution
    plus its share of the noise (:func:`release_shares`, for the ``min_honest`` sites it counts on), quantised."""
    check_modulus(n, config.quant_bits, config.mod_bits)
    _, sigma_site = release_shares(config, n, min_honest)
    return noisy_quantised_share(validate_contribution(vec, config.clip), sigma_site, clip=config.clip,
                                 quant_bits=config.quant_bits, rng=rng)


def prior_from_sum(summed: np.ndarray, k: int, sigma: float, config: FleetRootPriorConfig) -> FleetRootPrior:
    """The published prior of a dequantised sum of ``k`` sites' shares whose noise std is ``sigma``."""
    z_total = sigma / config.clip_norm
    eps = epsilon_of([(z_total, 1.0, 1)], config.delta, config.accountant)
    return FleetRootPrior(counts={r: float(c) for r, c in zip(RELATIONS, summed, strict=True)}, n_sites=k,
                          noise_multiplier=z_total, clip_norm=config.clip_norm, epsilon=eps, delta=config.delta,
                          accountant=config.accountant)


def build_fleet_root_prior(contributions: Sequence[np.ndarray], config: FleetRootPriorConfig | None = None, *,
                           ledgers: Sequence[PrivacyLedger] | None = None, hours: Sequence[int] | None = None,
                           round_: int = 0, dropouts: Sequence[int] = (), min_honest: Sequence[int] | None = None,
                           seed: int | None = None) -> FleetRootPrior:
    """Run one release in one process: each site (locally) charges its ledger, noises its share and quantises it;
    the secure sum; the coordinator dequantises. ``ledgers`` (one per site, with ``hours``: each site's history
    length, the ledger's sample count) record the release before a share leaves; a site whose budget refuses it
    is left out. ``min_honest`` (one per site, 0 = the threshold) is how many honest sites each counts on
    (:func:`release_shares`). Raises ``ValueError`` when fewer than ``min_sites`` sites take part."""
    cfg = config or FleetRootPriorConfig()
    vecs = [validate_contribution(v, cfg.clip, f"site {i}") for i, v in enumerate(contributions)]
    if ledgers is not None and (len(ledgers) != len(vecs) or hours is None or len(hours) != len(vecs)):
        raise ValueError("ledgers and hours must be given together, one per contribution")
    honest = [0] * len(vecs) if min_honest is None else list(min_honest)
    if len(honest) != len(vecs):
        raise ValueError(f"min_honest has {len(honest)} entries for {len(vecs)} contributions")
    z = release_noise_multiplier(cfg)
    taking_part = list(range(len(vecs)))
    if ledgers is not None:
        taking_part = [i for i in taking_part
                       if charge_release(ledgers[i], cfg, int(hours[i]), round_)]  # type: ignore[index]
    n = len(taking_part)
    if n < cfg.min_sites:
        raise ValueError(f"need at least min_sites={cfg.min_sites} sites for a fleet root prior, got {n}")
    summed, k, sigma = distributed_noisy_sum(
        [vecs[i] for i in taking_part], z * cfg.clip_norm, min_sites=cfg.min_sites, survival=cfg.survival,
        clip=cfg.clip, quant_bits=cfg.quant_bits, mod_bits=cfg.mod_bits, dropouts=dropouts,
        min_honest=[honest[i] for i in taking_part], seed=seed)
    prior = prior_from_sum(summed, k, sigma, cfg)
    log.info("fleet root prior built", extra={"sites": k, "left_out": len(vecs) - k,
                                               "epsilon": round(prior.epsilon, 4),
                                               "noise_multiplier": round(prior.noise_multiplier, 4)})
    return prior


def charge_release(ledger: PrivacyLedger, config: FleetRootPriorConfig, hours: int, round_: int) -> bool:
    """Record one release in the site's ledger (one Gaussian step at sample rate 1, ``hours`` of history as the
    sample count) before its share leaves; False, with nothing written, if its budget refuses it."""
    try:
        run = ledger.reserve(round=round_, noise_multiplier=release_noise_multiplier(config), sample_rate=1.0,
                             steps=1, num_samples=hours, max_grad_norm=config.clip_norm)
    except BudgetExceededError as exc:
        log.warning("site left out of the fleet root prior", extra={"site": ledger.site, "reason": str(exc)})
        return False
    ledger.commit(run.run_id)
    return True


def expected_count(noisy: float, sigma: float) -> float:
    """Posterior mean of a count ``c >= 0`` (flat prior) given ``noisy = c + N(0, sigma^2)``: the mean of a normal
    at ``noisy`` truncated at 0, ``noisy + sigma * phi(x) / Phi(x)`` with ``x = noisy / sigma``. An empty
    relation reads as about 0.8 sigma, a count far above the noise as itself."""
    if sigma <= 0:
        return max(0.0, noisy)
    x = noisy / sigma
    if x < -30.0:  # Phi underflows: the Mills-ratio expansion phi/Phi = -x - 1/x + 2/x^3 - ...
        return sigma * (-1.0 / x + 2.0 / x**3)
    ratio = math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) / (0.5 * math.erfc(-x / math.sqrt(2.0)))
    return noisy + sigma * ratio


#: With a base (the relation shares a site expects a priori), the smallest share a relation's prior mean is
#: given: a relation the base makes impossible can still be read from counts well above the noise.
BASE_SHARE_FLOOR = 0.005


def base_shifts(noisy: np.ndarray, sigma: float, base: Mapping[str, float]) -> np.ndarray:
    """Per relation, what an exponential prior with mean ``share x total`` subtracts from the noisy count before
    the truncated-normal posterior mean (:func:`expected_count`): ``sigma^2 / mean``. ``share`` is the base's
    (at least :data:`BASE_SHARE_FLOOR`); ``total`` is the fleet's failure count as the shares fit the noisy
    counts (least squares, at least 1), so the base sets only how the total is spread, not how large it is."""
    bad = {r: v for r, v in base.items() if r not in RELATIONS or not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"base shares must be known relations with finite non-negative shares, got {bad}")
    shares = np.maximum(np.array([float(base.get(r, 0.0)) for r in RELATIONS]), BASE_SHARE_FLOOR)
    total = max(1.0, float(shares @ noisy) / float(shares @ shares))
    return sigma**2 / (shares * total)


def site_root_prior(local: RootPrior | None, fleet: FleetRootPrior | None,
                    own: np.ndarray | None = None, base: Mapping[str, float] | None = None) -> RootPrior | None:
    """The prior a site ranks root causes with: its local counts plus, per relation, the expected count of the
    other sites given the fleet's noisy sum less its own contribution ``own`` (:func:`expected_count`), rounded.
    With ``base`` (relation shares the site expects a priori: the published failure mix on its topology,
    :func:`infrabrain.models.published_root_prior.relation_shares`) each count is read under an exponential
    prior whose means follow those shares (:func:`base_shifts`), so that a relation the base makes rare and the
    noise cannot tell from empty adds almost nothing, where the flat read gives it about 0.8 sigma. None when
    both are empty."""
    if fleet is None:
        return local
    mine = np.zeros(len(RELATIONS)) if own is None else np.asarray(own, dtype=np.float64)
    if mine.shape != (len(RELATIONS),):
        raise ValueError(f"own contribution has shape {mine.shape}, expected ({len(RELATIONS)},)")
    noisy = np.array([fleet.counts.get(r, 0.0) for r in RELATIONS]) - mine
    shift = base_shifts(noisy, fleet.sigma, base) if base is not None else np.zeros(len(RELATIONS))
    others = {r: int(round(expected_count(v - d, fleet.sigma))) for r, v, d in zip(RELATIONS, noisy, shift)}
    others = {r: n for r, n in others.items() if n}
    pooled = RootPrior(counts=others, failures=sum(others.values())) if others else None
    return merge_root_priors(local, pooled)
