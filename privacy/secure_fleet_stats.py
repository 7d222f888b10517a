"""The fleet reference for benchmark queries: per-site statistics, DP-noised histograms, secure aggregation.

Each site derives a handful of statistics from its own run (failures per GPU-hour by GPU model, XID rates by
class, thermal-violation hours, repair time), maps each onto a PUBLIC, data-independent domain and one-hot
encodes it into a fixed histogram. It adds its share of Gaussian noise (distributed DP: the shares of at least
``min_sites`` surviving sites sum to the target sigma), quantises, and masks the vector in a SecAgg+-style
round (:mod:`infrabrain.privacy.secure_sum`: ECDH key agreement + HKDF, Fernet-encrypted Shamir shares, all
Flower's primitives; Flower's stochastic quantisation). The coordinator only ever sees masked vectors and their
sum, so it learns the noisy aggregate histogram, never one site's value.

The privacy unit is one site (add/remove): a site changes at most ``M`` histogram cells and ``M`` presence
cells by 1, so the L2 sensitivity is ``sqrt(2M)``. Epsilon comes from the exact analytic Gaussian mechanism
(Balle & Wang 2018) for the sigma actually present in the sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infrabrain.logs import get_logger
from infrabrain.privacy.secure_sum import secure_sum

log = get_logger("privacy.secure_fleet_stats")

# ------------------------------------------------------------------------------------------- public metric catalog

GPU_MODELS: tuple[str, ...] = ("A100", "H100")
XID_CLASSES: dict[str, tuple[int, ...]] = {
    "memory": (48, 63, 64, 92, 94, 95),
    "nvlink": (74,),
    "bus": (79,),
    "gsp": (119, 120),
}
XID_OTHER = "other"


class MetricSpec(BaseModel):
    """A public metric definition: its name, unit and the data-independent domain its histogram covers."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: str
    unit: str
    log10: bool
    lo: float
    hi: float

    def to_t(self, value: float) -> float:
        """Map a value onto ``t`` in [-1, 1] over the public domain (log10 first if ``log10``), clamped."""
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: value {value!r} is not finite")
        v = math.log10(value) if (self.log10 and value > 0) else (self.lo if self.log10 else value)
        return float(min(1.0, max(-1.0, 2.0 * (v - self.lo) / (self.hi - self.lo) - 1.0)))

    def from_t(self, t: float) -> float:
        """Inverse of :meth:`to_t` (inside the domain)."""
        v = self.lo + (t + 1.0) / 2.0 * (self.hi - self.lo)
        return float(10.0**v) if self.log10 else float(v)


def metric_catalog() -> list[MetricSpec]:
    """The fixed, public list of benchmark metrics (slot ``m`` of a query is metric ``m`` of this list)."""
    out = [MetricSpec(name=f"gpu_failure_rate.{m}", family="gpu_failure_rate", unit="per GPU-hour", log10=True,
                      lo=-7.0, hi=-2.0) for m in GPU_MODELS]
    out += [MetricSpec(name=f"xid_rate.{c}", family="xid_rate", unit="per GPU-hour", log10=True, lo=-7.0, hi=-1.0)
            for c in (*XID_CLASSES, XID_OTHER)]
    out.append(MetricSpec(name="thermal_violation_hours", family="thermal_violation_hours",
                          unit="hours per 1000 GPU-hours", log10=True, lo=-2.0, hi=3.0))
    out.append(MetricSpec(name="repair_time_hours", family="repair_time_hours", unit="hours", log10=True,
                          lo=-1.0, hi=2.5))
    return out


def metric_families() -> list[str]:
    """Distinct metric families, for the CLI's ``--metric`` choices."""
    return list(dict.fromkeys(m.family for m in metric_catalog()))


# ------------------------------------------------------------------------------------------- site statistics


def _xid_class(code: int) -> str:
    for name, codes in XID_CLASSES.items():
        if code in codes:
            return name
    return XID_OTHER


def site_statistics(run: Any) -> dict[str, float | None]:
    """Derive the benchmark statistics of one site from a ``SiteRun`` (or a ``FaultPlan``: events only).

    Needs ``run.events``, ``run.topology`` and ``run.hours``; thermal-violation hours need the telemetry
    (``run.metrics['gpu']`` with ``DCGM_FI_DEV_THERMAL_VIOLATION``, microseconds, cumulative) and are ``None``
    without it. A metric the site has no data for (no GPU of that model, no failure to time a repair) is None.
    """
    topo = run.topology
    hours = float(run.hours)
    if not hours > 0:
        raise ValueError(f"run.hours must be > 0, got {hours!r}")
    comps = topo.components
    gpus = comps[comps["kind"] == "gpu"]
    n_gpu = len(gpus)
    if n_gpu == 0:
        raise ValueError("site has no GPUs; nothing to benchmark")
    model_of = dict(zip(comps["component_id"], comps["gpu_model"], strict=True))
    ev = run.events
    stats: dict[str, float | None] = {}
    fails = ev[ev["event"] == "failure"]
    for model in GPU_MODELS:
        n = int((gpus["gpu_model"] == model).sum())
        if n == 0:
            stats[f"gpu_failure_rate.{model}"] = None
            continue
        k = int(sum(1 for c in fails["component_id"] if model_of.get(c) == model))
        stats[f"gpu_failure_rate.{model}"] = k / (n * hours)
    xids = ev[ev["event"] == "xid"]["xid"].to_numpy()
    counts = {c: 0 for c in (*XID_CLASSES, XID_OTHER)}
    for code in xids:
        counts[_xid_class(int(code))] += 1
    for c, k in counts.items():
        stats[f"xid_rate.{c}"] = k / (n_gpu * hours)
    stats["thermal_violation_hours"] = None
    metrics = getattr(run, "metrics", None)
    names = getattr(run, "metric_names", {}) or {}
    if metrics is not None and "DCGM_FI_DEV_THERMAL_VIOLATION" in names.get("gpu", []):
        col = names["gpu"].index("DCGM_FI_DEV_THERMAL_VIOLATION")
        arr = metrics["gpu"][:, :, col].astype(np.float64)
        with np.errstate(all="ignore"):
            span = np.nanmax(arr, axis=0) - np.nanmin(arr, axis=0)
        viol_h = float(np.nansum(np.where(np.isfinite(span), span, 0.0))) / 3.6e9
        stats["thermal_violation_hours"] = 1000.0 * viol_h / (n_gpu * hours)
    # repair time: each failure to the next "recover" of the same component
    rec = ev[ev["event"] == "recover"]
    rec_t: dict[str, list[int]] = {}
    for c, t in zip(rec["component_id"], rec["t"], strict=True):
        rec_t.setdefault(c, []).append(int(t))
    durations = []
    for c, t in zip(fails["component_id"], fails["t"], strict=True):
        later = [r for r in rec_t.get(c, []) if r >= t]
        if later:
            durations.append((min(later) - int(t)) / 3600.0)
    stats["repair_time_hours"] = float(np.mean(durations)) if durations else None
    return stats


# ------------------------------------------------------------------------------------------- DP accounting


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def analytic_gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Exact delta of the Gaussian mechanism at ``epsilon`` (Balle & Wang 2018, Theorem 8)."""
    from scipy.special import log_ndtr

    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return _phi(a - b) - math.exp(min(700.0, epsilon + float(log_ndtr(-a - b))))


def analytic_gaussian_epsilon(sigma: float, sensitivity: float, delta: float) -> float:
    """Smallest epsilon with ``delta(epsilon) <= delta`` for noise ``sigma`` (bisection, exact mechanism)."""
    if sigma <= 0 or sensitivity <= 0 or not 0 < delta < 1:
        raise ValueError(f"need sigma>0, sensitivity>0, 0<delta<1; got {sigma}, {sensitivity}, {delta}")
    lo, hi = 0.0, 1.0
    while analytic_gaussian_delta(sigma, sensitivity, hi) > delta:
        hi *= 2.0
        if hi > 1e6:
            return math.inf
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if analytic_gaussian_delta(sigma, sensitivity, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def analytic_gaussian_sigma(epsilon: float, sensitivity: float, delta: float) -> float:
    """Smallest sigma that makes the Gaussian mechanism (epsilon, delta)-DP (bisection)."""
    lo, hi = 1e-6, 1.0
    while analytic_gaussian_delta(hi, sensitivity, epsilon) > delta:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if analytic_gaussian_delta(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
    return hi


# ------------------------------------------------------------------------------------------- configuration


class FleetStatsConfig(BaseModel):
    """How the fleet reference is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bins: int = Field(16, ge=4, le=256, description="histogram bins per metric over the public domain")
    epsilon: float = Field(4.0, gt=0, description="target epsilon of the whole reference (one release)")
    delta: float = Field(1e-6, gt=0, lt=1)
    min_sites: int = Field(3, ge=2, description="smallest fleet a reference is built from")
    survival: float = Field(0.8, gt=0.5, le=1.0, description="Shamir threshold as a fraction of the sites: the "
                            "round aborts below it, and each site's noise share assumes at least that many")
    clip: float = Field(64.0, gt=0, description="quantisation clipping range of a noisy cell")
    quant_bits: int = Field(16, ge=8, le=24)
    mod_bits: int = Field(32, ge=24, le=62)


def encode_contribution(stats: Mapping[str, float | None], catalog: Sequence[MetricSpec], bins: int) -> np.ndarray:
    """One-hot histogram cells (M*bins) followed by presence cells (M) for one site's statistics."""
    m = len(catalog)
    vec = np.zeros(m * bins + m, dtype=np.float64)
    for i, spec in enumerate(catalog):
        v = stats.get(spec.name)
        if v is None:
            continue
        t = spec.to_t(float(v))
        b = min(bins - 1, int((t + 1.0) / 2.0 * bins))
        vec[i * bins + b] = 1.0
        vec[m * bins + i] = 1.0
    return vec


# ------------------------------------------------------------------------------------------- the aggregate


class FleetAggregate(BaseModel):
    """What the coordinator stores: the noisy aggregate histogram per metric, site counts and the DP terms."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricSpec]
    bins: int
    counts: list[list[float]]  # [M][bins], noisy, as summed
    presence: list[float]  # [M], noisy number of contributing sites per metric
    n_sites: int  # sites in the secure sum
    sigma: float  # total Gaussian noise std per cell in the sum
    sensitivity: float
    epsilon: float
    delta: float
    mechanism: str = "distributed Gaussian, analytic accounting (Balle & Wang 2018), add/remove one site"


def noise_share_sigma(sigma: float, n: int, min_sites: int, survival: float,
                      min_honest: int = 0) -> tuple[int, float]:
    """The secure sum's threshold for ``n`` sites (``min_sites``, or ``survival`` of them if more) and a site's
    noise share: the shares of any ``trusted`` sites sum to ``sigma``, where ``trusted`` is the threshold, or
    ``min_honest`` if smaller (:func:`trusted_sites`)."""
    threshold = max(min_sites, math.ceil(survival * n))
    return threshold, sigma / math.sqrt(trusted_sites(threshold, min_honest))


def trusted_sites(threshold: int, min_honest: int = 0) -> int:
    """How many honest sites' noise a site counts on: the secure sum's ``threshold`` (at least that many shares
    are in any sum), or the site's own ``min_honest`` if smaller. 0 means the threshold.

    With the threshold, each site adds ``sigma / sqrt(threshold)``: exact DP if every survivor is a real site
    adding its share. A coordinator that invents sites (Sybils, adding no noise) raises the threshold and lowers
    every real site's share. A site that assumes only ``min_honest`` real sites in any sum adds
    ``sigma / sqrt(min_honest)``: its guarantee holds while at least that many sites adding as much are in the
    sum (with 1, whatever the others do), for ``sqrt(survivors / min_honest)`` times the noise in the release."""
    if isinstance(min_honest, bool) or not isinstance(min_honest, int) or min_honest < 0:
        raise ValueError(f"min_honest must be a non-negative integer (0: the threshold), got {min_honest!r}")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold!r}")
    return threshold if min_honest == 0 else min(min_honest, threshold)


def sum_noise_std(sigma: float, threshold: int, min_honest: Sequence[int]) -> float:
    """The noise std in a sum of the shares of sites that each assumed ``min_honest`` (one per survivor)."""
    return math.sqrt(sum(sigma**2 / trusted_sites(threshold, h) for h in min_honest))


def noisy_quantised_share(vec: np.ndarray, sigma_site: float, *, clip: float, quant_bits: int,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """A site's input to the secure sum (run at the site): ``vec`` plus its noise share, clipped to
    ``[-clip, clip]`` and stochastically quantised to ``quant_bits`` (Flower's ``quantize``)."""
    from flwr.common.secure_aggregation.quantization import quantize

    rng = rng or np.random.default_rng()
    noisy = np.asarray(vec, dtype=np.float64) + rng.normal(0.0, sigma_site, np.shape(vec))
    return quantize([noisy], clip, 2**quant_bits)[0].astype(np.uint64)


def dequantise_sum(total: np.ndarray, k: int, *, clip: float, quant_bits: int) -> np.ndarray:
    """The real-valued sum of ``k`` quantised shares from their sum (the aggregator's last step)."""
    return np.asarray(total).astype(np.float64) / (2**quant_bits / (2.0 * clip)) - k * clip


def check_modulus(n: int, quant_bits: int, mod_bits: int) -> None:
    """Refuse a sum of ``n`` quantised shares that could wrap around the modulus."""
    if n * 2**quant_bits >= 2**mod_bits:
        raise ValueError(f"{n} sites x 2^{quant_bits} overflows the 2^{mod_bits} modulus")


def distributed_noisy_sum(vectors: Sequence[np.ndarray], sigma: float, *, min_sites: int, survival: float,
                          clip: float, quant_bits: int, mod_bits: int, dropouts: Sequence[int] = (),
                          min_honest: Sequence[int] | None = None,
                          seed: int | None = None) -> tuple[np.ndarray, int, float]:
    """Distributed Gaussian noise over a secure sum: each site (locally) adds its share of ``N(0, sigma^2)`` (the
    shares of at least the Shamir threshold of surviving sites sum to ``sigma``; with ``min_honest``, one per
    site, the shares of that many: :func:`trusted_sites`) and quantises to ``quant_bits`` over ``[-clip, clip]``;
    :func:`~infrabrain.privacy.secure_sum.secure_sum` adds the masked shares mod ``2^mod_bits``; the aggregator
    dequantises. Returns the noisy sum, the number of surviving sites and the noise std actually in the sum."""
    n = len(vectors)
    honest = [0] * n if min_honest is None else [int(h) for h in min_honest]
    if len(honest) != n:
        raise ValueError(f"min_honest has {len(honest)} entries for {n} sites")
    threshold, _ = noise_share_sigma(sigma, n, min_sites, survival)
    check_modulus(n, quant_bits, mod_bits)
    rng = np.random.default_rng(seed)
    quantised = [noisy_quantised_share(vec, noise_share_sigma(sigma, n, min_sites, survival, h)[1], clip=clip,
                                       quant_bits=quant_bits, rng=rng)
                 for vec, h in zip(vectors, honest, strict=True)]  # each site, locally
    total, survivors = secure_sum(quantised, threshold=threshold, modulus=2**mod_bits, dropouts=dropouts,
                                  survival=survival)
    k = len(survivors)
    return (dequantise_sum(total, k, clip=clip, quant_bits=quant_bits), k,
            sum_noise_std(sigma, threshold, [honest[i] for i in survivors]))


def build_fleet_aggregate(site_stats: Sequence[Mapping[str, float | None]], config: FleetStatsConfig | None = None,
                          *, dropouts: Sequence[int] = (), seed: int | None = None) -> FleetAggregate:
    """Run the whole round: encode, DP-noise and quantise per site, secure-sum, dequantise, account epsilon."""
    cfg = config or FleetStatsConfig()
    catalog = metric_catalog()
    m = len(catalog)
    n = len(site_stats)
    if n < cfg.min_sites:
        raise ValueError(f"need at least min_sites={cfg.min_sites} sites for a fleet reference, got {n}")
    sensitivity = math.sqrt(2.0 * m)
    sigma_target = analytic_gaussian_sigma(cfg.epsilon, sensitivity, cfg.delta)
    vectors = [encode_contribution(stats, catalog, cfg.bins) for stats in site_stats]
    summed, k, sigma_total = distributed_noisy_sum(
        vectors, sigma_target, min_sites=cfg.min_sites, survival=cfg.survival, clip=cfg.clip,
        quant_bits=cfg.quant_bits, mod_bits=cfg.mod_bits, dropouts=dropouts, seed=seed)
    eps = analytic_gaussian_epsilon(sigma_total, sensitivity, cfg.delta)
    counts = summed[: m * cfg.bins].reshape(m, cfg.bins)
    presence = summed[m * cfg.bins :]
    log.info("fleet aggregate built", extra={"sites": k, "dropped": n - k, "epsilon": round(eps, 4),
                                             "sigma": round(sigma_total, 4)})
    return FleetAggregate(metrics=catalog, bins=cfg.bins, counts=counts.tolist(), presence=presence.tolist(),
                          n_sites=k, sigma=sigma_total, sensitivity=sensitivity, epsilon=eps, delta=cfg.delta)
