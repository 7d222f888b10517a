"""The coordinator's fleet reference store: per-metric CDFs fitted from the secure, DP-noised aggregate.

Only a ``FleetAggregate`` (noisy histogram sums, site counts, epsilon) is stored. Everything else is
deterministic post-processing of it (so it costs no privacy): a smoothed CDF over ``t`` (the public domain
mapped to [-1, 1]), a zoom window where that CDF rises, a degree-7 Chebyshev least-squares fit of the CDF on
the zoom window mapped to ``u`` in [-1, 1] (converted to power-basis coefficients for the circuit), and the
mean/std of ``t`` for the z-score.
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
from infrabrain.privacy.secure_fleet_stats import FleetAggregate, MetricSpec

DEGREE = 7
#: answer slot M+m carries z / Z_SCALE so that |value| stays well inside the first prime's headroom
Z_SCALE = 16.0
_GRID = 4001
#: smoothing kernel of the noisy histogram, in bins (post-processing; trades resolution for a fit within 0.01)
SMOOTH_BINS = 2.0
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
    cheb_coeffs: np.ndarray  # [DEGREE+1], Chebyshev basis in u
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


def fit_metric(spec: MetricSpec, counts: list[float], presence: float, bins: int, sigma: float = 0.0) -> MetricReference:
    """Fit one metric's reference from its noisy histogram; too few sites (vs. the noise) -> unavailable."""
    c = np.asarray(counts, dtype=np.float64)
    n_sites = max(0, int(round(presence)))
    grid, cdf = _smoothed_cdf(c, bins, SMOOTH_BINS)
    if np.clip(c, 0, None).sum() < 1.0 or presence < max(MIN_SITES, 2.0 * sigma):
        return MetricReference(spec, False, n_sites, -1.0, 1.0, np.zeros(DEGREE + 1), 0.0, 1.0, 0.0, 0.0, grid,
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
    coeffs = cheb.chebfit(u, target, DEGREE)
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
    """All metrics' references plus the version string queries must name."""

    def __init__(self, aggregate: FleetAggregate) -> None:
        self.aggregate = aggregate
        self.metrics = [fit_metric(spec, aggregate.counts[i], min(aggregate.presence[i], aggregate.n_sites),
                                   aggregate.bins, aggregate.sigma)
                        for i, spec in enumerate(aggregate.metrics)]
        self.version = hashlib.sha256(aggregate.model_dump_json().encode()).hexdigest()[:16]

    @property
    def n_metrics(self) -> int:
        return len(self.metrics)

    @property
    def n_slots_used(self) -> int:
        """Slots a query fills: u_m in slot m, t_m in slot M+m."""
        return 2 * self.n_metrics

    def index(self, name: str) -> int:
        for i, m in enumerate(self.metrics):
            if m.spec.name == name:
                return i
        raise ValueError(f"metric {name!r} is not in the reference ({[m.spec.name for m in self.metrics]})")

    def coefficient_matrix(self, slots: int) -> np.ndarray:
        """Power-basis coefficient vectors [DEGREE+1, slots]; all-zero columns zero the unused slots."""
        m = self.n_metrics
        out = np.zeros((DEGREE + 1, slots))
        for i, ref in enumerate(self.metrics):
            if not ref.available:
                continue
            out[:, i] = cheb.cheb2poly(ref.cheb_coeffs)
            out[0, m + i] = -ref.t_mean / (ref.t_std * Z_SCALE)
            out[1, m + i] = 1.0 / (ref.t_std * Z_SCALE)
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
