"""The coordinator's fleet reference store: per-metric CDFs fitted from the secure, DP-noised aggregate.

Only a ``FleetAggregate`` (noisy histogram sums, site counts, epsilon) is stored. Everything else is
deterministic post-processing of it (so it costs no privacy): a smoothed CDF over ``t`` (the public domain
mapped to [-1, 1]), a zoom window where that CDF rises, a degree-``DEGREE`` Chebyshev least-squares fit of the
CDF on the zoom window mapped to ``u`` in [-1, 1], and the mean/std of ``t`` for the z-score. The Chebyshev
coefficients go, unchanged, into the coefficient plaintext of the inner-product circuit
(``infrabrain.coordinator.query_layout``): the site supplies ``T_k(u)`` itself, so the degree costs no depth.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.polynomial import chebyshev as cheb
from scipy.special import erf as _erf

from infrabrain.atomic import atomic_write_text
from infrabrain.coordinator.query_layout import blocks, n_slots_used
from infrabrain.privacy.secure_fleet_stats import FleetAggregate, MetricSpec

#: Chebyshev degree of the CDF fit (the circuit is an inner product, so the degree costs slots, not depth)
DEGREE = 31
#: the z block's sum carries z / Z_SCALE (kept as a protocol field; 1 since the inner product has ample headroom)
Z_SCALE = 1.0
_GRID = 4001
#: smoothing kernel of the noisy histogram, in bins (post-processing; trades resolution for a fit within 0.01)
SMOOTH_BINS = 1.0
#: a metric needs at least this many (noisy) contributing sites, and at least twice the noise sigma
MIN_SITES = 3


@dataclass(frozen=True)
class MetricReference:
    """One metric's fitted reference."""

    spec: MetricSpec
    available: bool
    n_sites: int
    zoom_lo: float
    zoom_hi: float
    cheb_coeffs: np.ndarray  # [degree+1], Chebyshev basis in u
    t_mean: float
    t_std: float
    median_t: float
    fit_err: float  # max |poly(u) - cdf(t(u))| on the zoom window
    grid_t: np.ndarray
    grid_cdf: np.ndarray

    def cdf(self, t: np.ndarray | float) -> np.ndarray:
        """The plaintext percentile (0..1) of ``t`` under the stored reference (exact, no polynomial)."""
        return np.interp(np.clip(t, -1.0, 1.0), self.grid_t, self.grid_cdf)

    def to_u(self, t: float) -> float:
        """Map ``t`` onto the polynomial's [-1, 1] (clamped): what the site encrypts in slot m."""
        mid, half = (self.zoom_hi + self.zoom_lo) / 2.0, (self.zoom_hi - self.zoom_lo) / 2.0
        return float(min(1.0, max(-1.0, (t - mid) / half)))

    def poly(self, u: np.ndarray | float) -> np.ndarray:
        """Plaintext evaluation of the fitted polynomial (what the circuit computes, before noise)."""
        return cheb.chebval(u, self.cheb_coeffs)


def _smoothed_cdf(counts: np.ndarray, bins: int, kernel_bins: float = SMOOTH_BINS) -> tuple[np.ndarray, np.ndarray]:
    """CDF on a fine t-grid of the clipped noisy histogram, smoothed with a one-bin Gaussian kernel."""
    grid = np.linspace(-1.0, 1.0, _GRID)
    width = 2.0 / bins
    dens = np.zeros_like(grid)
    centers = -1.0 + width * (np.arange(bins) + 0.5)
    for c, w in zip(centers, np.clip(counts, 0.0, None), strict=True):
        if w > 0:
            # a uniform bin blurred by a Gaussian of one bin width, via erf differences (mass w)
            k = kernel_bins * width * math.sqrt(2.0)
            a, b = (grid - (c - width / 2)) / k, (grid - (c + width / 2)) / k
            dens += w * (_erf(a) - _erf(b)) / (2.0 * width)
    # keep the mass inside [-1, 1] (values are clamped onto the domain, so mass outside belongs to the edges)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2.0 * np.diff(grid))])
    total = cdf[-1]
    if total <= 0:
        return grid, np.zeros_like(grid)
    return grid, cdf / total


def fit_metric(spec: MetricSpec, counts: list[float], presence: float, bins: int, sigma: float = 0.0,
               degree: int = DEGREE, smooth_bins: float = SMOOTH_BINS) -> MetricReference:
    """Fit one metric's reference from its noisy histogram; too few sites (vs. the noise) -> unavailable."""
    c = np.asarray(counts, dtype=np.float64)
    n_sites = max(0, int(round(presence)))
    grid, cdf = _smoothed_cdf(c, bins, smooth_bins)
    if np.clip(c, 0, None).sum() < 1.0 or presence < max(MIN_SITES, 2.0 * sigma):
        return MetricReference(spec, False, n_sites, -1.0, 1.0, np.zeros(degree + 1), 0.0, 1.0, 0.0, 0.0, grid,
                               cdf)
    lo_i = int(np.searchsorted(cdf, 0.002))
    hi_i = int(np.searchsorted(cdf, 0.998))
    pad = 2.0 / bins
    zlo, zhi = max(-1.0, grid[min(lo_i, _GRID - 1)] - pad), min(1.0, grid[min(hi_i, _GRID - 1)] + pad)
    if zhi - zlo < 4.0 / bins:
        mid = (zhi + zlo) / 2.0
        zlo, zhi = max(-1.0, mid - 2.0 / bins), min(1.0, mid + 2.0 / bins)
    u = np.cos(np.pi * (np.arange(512) + 0.5) / 512)  # Chebyshev nodes: near-minimax least squares
    t = (zhi + zlo) / 2.0 + u * (zhi - zlo) / 2.0
    target = np.interp(t, grid, cdf)
    coeffs = cheb.chebfit(u, target, degree)
    uu = np.linspace(-1, 1, 2001)
    tt = (zhi + zlo) / 2.0 + uu * (zhi - zlo) / 2.0
    fit_err = float(np.max(np.abs(cheb.chebval(uu, coeffs) - np.interp(tt, grid, cdf))))
    dens = np.gradient(cdf, grid)
    mean = float(np.trapezoid(grid * dens, grid))
    std = float(math.sqrt(max(np.trapezoid((grid - mean) ** 2 * dens, grid), (2.0 / bins) ** 2 / 12.0)))
    median_t = float(np.interp(0.5, cdf, grid))
    return MetricReference(spec, True, n_sites, float(zlo), float(zhi), coeffs, mean, std, median_t, fit_err,
                           grid, cdf)


class FleetReference:
    """All metrics' references plus the version string queries must name (it covers the fit settings too)."""

    def __init__(self, aggregate: FleetAggregate, degree: int = DEGREE, smooth_bins: float = SMOOTH_BINS) -> None:
        if not 1 <= int(degree) <= 127:
            raise ValueError(f"degree={degree!r} must be in 1..127")
        if not smooth_bins > 0:
            raise ValueError(f"smooth_bins={smooth_bins!r} must be > 0")
        self.aggregate = aggregate
        self.degree = int(degree)
        self.smooth_bins = float(smooth_bins)
        self.metrics = [fit_metric(spec, aggregate.counts[i], min(aggregate.presence[i], aggregate.n_sites),
                                   aggregate.bins, aggregate.sigma, self.degree, self.smooth_bins)
                        for i, spec in enumerate(aggregate.metrics)]
        fit = f"|degree={self.degree}|smooth={self.smooth_bins!r}|z_scale={Z_SCALE!r}".encode()
        self.version = hashlib.sha256(aggregate.model_dump_json().encode() + fit).hexdigest()[:16]

    @property
    def n_metrics(self) -> int:
        return len(self.metrics)

    @property
    def n_slots_used(self) -> int:
        """Slots a query fills: one block of ``degree + 3`` slots per metric (``query_layout``)."""
        return n_slots_used(self.n_metrics, self.degree)

    def index(self, name: str) -> int:
        for i, m in enumerate(self.metrics):
            if m.spec.name == name:
                return i
        raise ValueError(f"metric {name!r} is not in the reference ({[m.spec.name for m in self.metrics]})")

    def coefficient_vector(self, slots: int) -> np.ndarray:
        """The circuit's one coefficient plaintext [slots]: per available metric its Chebyshev coefficients in
        the percentile block and ``[-mean/std, 1/std] / Z_SCALE`` in the z block; zero everywhere else."""
        if slots < self.n_slots_used:
            raise ValueError(f"slots={slots} is fewer than the {self.n_slots_used} the layout needs")
        out = np.zeros(slots)
        for ref, (pb, zb) in zip(self.metrics, blocks(self.n_metrics, self.degree), strict=True):
            if not ref.available:
                continue
            out[pb] = ref.cheb_coeffs
            out[zb] = (-ref.t_mean / (ref.t_std * Z_SCALE), 1.0 / (ref.t_std * Z_SCALE))
        return out

    def save(self, path: str | Path) -> None:
        """Store the aggregate (the only thing the coordinator keeps), atomically."""
        atomic_write_text(path, self.aggregate.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: str | Path) -> FleetReference:
        """Load a stored aggregate; a malformed file raises ``ValueError`` naming the file."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(FleetAggregate.model_validate(raw))
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"fleet reference {str(path)!r} is unreadable: {exc}") from exc
