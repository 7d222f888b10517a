"""The fleet reference for benchmark queries: per-site statistics, DP-noised histograms, secure aggregation.

Each site derives a handful of statistics from its own run (failures per GPU-hour by GPU model, XID rates by
class, thermal-violation hours, repair time), maps each onto a PUBLIC, data-independent domain and one-hot
encodes it into a fixed histogram. It adds its share of Gaussian noise (distributed DP: the shares of at least
``min_sites`` surviving sites sum to the target sigma), quantises, and masks the vector in a SecAgg+-style
round built from Flower's secure-aggregation primitives (``flwr.common.secure_aggregation``: ECDH key
agreement + HKDF, Fernet-encrypted Shamir shares, stochastic quantisation). The coordinator only ever sees
masked vectors and their sum, so it learns the noisy aggregate histogram, never one site's value.

The privacy unit is one site (add/remove): a site changes at most ``M`` histogram cells and ``M`` presence
cells by 1, so the L2 sensitivity is ``sqrt(2M)``. Epsilon comes from the exact analytic Gaussian mechanism
(Balle & Wang 2018) for the sigma actually present in the sum.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infrabrain.logs import get_logger

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


# ------------------------------------------------------------------------------------------- SecAgg+ equivalent


def _prg(seed: bytes, n: int, modulus: int) -> np.ndarray:
    """Expand a 32-byte seed into ``n`` uniform integers mod ``modulus`` (SHA-256 -> PCG64 with the full seed)."""
    key = int.from_bytes(hashlib.sha256(seed).digest(), "little")
    return np.random.Generator(np.random.PCG64(key)).integers(0, modulus, size=n, dtype=np.uint64)


@dataclass
class _Site:
    idx: int
    vec_q: np.ndarray  # quantised noisy contribution
    c_sk: Any = None
    s_sk: Any = None
    b_seed: bytes = b""
    received: dict[int, bytes] = field(default_factory=dict)  # from site j: encrypted (b share, sk share)


def _pub_bytes(pk) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return pk.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _load_pub(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), raw)


def _sk_bytes(sk) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return sk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())


def _load_sk(raw: bytes):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(raw, password=None)


def _pair_seed(sk, pk) -> bytes:
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key

    return hashlib.sha256(generate_shared_key(sk, pk)).digest()


def _neighbours(n: int, half: int) -> list[list[int]]:
    """SecAgg+ neighbourhoods: a ring where each site pairs with ``half`` sites on either side (all if small)."""
    if n <= 2 * half + 1:
        return [[j for j in range(n) if j != i] for i in range(n)]
    return [sorted({(i + d) % n for d in range(-half, half + 1) if d}) for i in range(n)]


def secure_sum(vectors: Sequence[np.ndarray], *, threshold: int, modulus: int, dropouts: Sequence[int] = (),
               half_neighbourhood: int = 4, survival: float = 0.8) -> tuple[np.ndarray, list[int]]:
    """Sum integer vectors (mod ``modulus``) so that the aggregator only ever sees masked vectors.

    A SecAgg+ round (Bell et al. 2020) run in-process with real cryptography, neighbourhoods of
    ``2*half_neighbourhood`` sites on a ring: (1) each site advertises two ECDH public keys (SECP384R1);
    (2) it Shamir-shares (Flower's ``create_shares``) its self-mask seed and its mask secret key among itself
    and its neighbours, each share Fernet-encrypted for its holder under an ECDH+HKDF key (Flower's
    ``generate_shared_key``/``encrypt``); (3) sites not in ``dropouts`` upload ``x + PRG(b_i) + sum_j +-PRG(s_ij)``
    over their neighbours j; (4) surviving holders reveal b-shares of survivors and sk-shares of dropped sites,
    and the aggregator removes every mask. Returns the sum over survivors and their indices; raises when
    fewer than ``threshold`` sites survive or a neighbourhood cannot reconstruct.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key

    n = len(vectors)
    if n < threshold or threshold < 2:
        raise ValueError(f"secure_sum needs threshold>=2 and at least threshold sites; got n={n}, t={threshold}")
    dim = int(vectors[0].shape[0])
    nbrs = _neighbours(n, half_neighbourhood)
    sites = [_Site(i, np.asarray(v, dtype=np.uint64) % np.uint64(modulus)) for i, v in enumerate(vectors)]
    # round 1: advertise keys
    pub_c, pub_s = {}, {}
    for s in sites:
        s.c_sk, s.s_sk = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
        pub_c[s.idx], pub_s[s.idx] = _pub_bytes(s.c_sk.public_key()), _pub_bytes(s.s_sk.public_key())
    # round 2: share keys among the neighbourhood (the server only forwards ciphertexts)
    share_t = {}
    for s in sites:
        holders = [s.idx, *nbrs[s.idx]]
        t_local = max(2, math.ceil(survival * len(holders)))
        share_t[s.idx] = t_local
        s.b_seed = os.urandom(32)
        b_sh = create_shares(s.b_seed, t_local, len(holders))
        sk_sh = create_shares(_sk_bytes(s.s_sk), t_local, len(holders))
        for k, j in enumerate(holders):
            packed = len(b_sh[k]).to_bytes(4, "little") + b_sh[k] + sk_sh[k]
            if j == s.idx:
                s.received[j] = packed  # own share kept locally, in clear
                continue
            sites[j].received[s.idx] = encrypt(generate_shared_key(s.c_sk, _load_pub(pub_c[j])), packed)
    # round 3: masked inputs
    mod = np.uint64(modulus)
    gone = set(dropouts)
    survivors = [s for s in sites if s.idx not in gone]
    if len(survivors) < threshold:
        raise ValueError(f"only {len(survivors)} sites survived, threshold is {threshold}: round aborted")
    masked = {}
    for s in survivors:
        y = (s.vec_q + _prg(s.b_seed, dim, modulus)) % mod
        for j in nbrs[s.idx]:
            m = _prg(_pair_seed(s.s_sk, _load_pub(pub_s[j])), dim, modulus)
            y = (y + m) % mod if s.idx < j else (y + mod - m) % mod
        masked[s.idx] = y
    # round 4: unmask (surviving holders reveal the shares the aggregator asks for)
    dropped = [i for i in range(n) if i not in masked]

    def shares(owner: int, part: int) -> list[bytes]:
        out = []
        for h in [owner, *nbrs[owner]]:
            if h in gone:
                continue
            raw = sites[h].received[owner]
            plain = raw if h == owner else decrypt(generate_shared_key(sites[h].c_sk, _load_pub(pub_c[owner])), raw)
            k = int.from_bytes(plain[:4], "little")
            out.append(plain[4 : 4 + k] if part == 0 else plain[4 + k :])
            if len(out) == share_t[owner]:
                return out
        raise ValueError(f"site {owner}: fewer than {share_t[owner]} surviving share holders, round aborted")

    total = np.zeros(dim, dtype=np.uint64)
    for y in masked.values():
        total = (total + y) % mod
    for s in survivors:
        total = (total + mod - _prg(combine_shares(shares(s.idx, 0)), dim, modulus)) % mod
    for d in dropped:
        sk_d = _load_sk(combine_shares(shares(d, 1)))
        for j in nbrs[d]:
            if j in gone:
                continue
            m = _prg(_pair_seed(sk_d, _load_pub(pub_s[j])), dim, modulus)
            # survivor j added +m if j < d else -m: take it back out
            total = (total + mod - m) % mod if j < d else (total + m) % mod
    return total, [s.idx for s in survivors]


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


def distributed_noisy_sum(vectors: Sequence[np.ndarray], sigma: float, *, min_sites: int, survival: float,
                          clip: float, quant_bits: int, mod_bits: int, dropouts: Sequence[int] = (),
                          seed: int | None = None) -> tuple[np.ndarray, int, float]:
    """Distributed Gaussian noise over a secure sum: each site (locally) adds its share of ``N(0, sigma^2)`` (the
    shares of at least the Shamir threshold of surviving sites sum to ``sigma``) and quantises to ``quant_bits``
    over ``[-clip, clip]``; :func:`secure_sum` adds the masked shares mod ``2^mod_bits``; the aggregator
    dequantises. Returns the noisy sum, the number of surviving sites and the noise std actually in the sum."""
    from flwr.common.secure_aggregation.quantization import quantize

    n = len(vectors)
    threshold = max(min_sites, math.ceil(survival * n))
    sigma_site = sigma / math.sqrt(threshold)  # >= threshold survivors => total sigma >= sigma
    rng = np.random.default_rng(seed)
    target_range = 2**quant_bits
    modulus = 2**mod_bits
    if n * target_range >= modulus:
        raise ValueError(f"{n} sites x 2^{quant_bits} overflows the 2^{mod_bits} modulus")
    quantised = []
    for vec in vectors:  # each site, locally
        noisy = vec + rng.normal(0.0, sigma_site, vec.shape)
        quantised.append(quantize([noisy], clip, target_range)[0].astype(np.uint64))
    total, survivors = secure_sum(quantised, threshold=threshold, modulus=modulus, dropouts=dropouts,
                                  survival=survival)
    k = len(survivors)
    summed = total.astype(np.float64) / (target_range / (2.0 * clip)) - k * clip
    return summed, k, sigma_site * math.sqrt(k)


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
