"""Slot layout of the inner-product query: one block of slots per metric, shared by site and coordinator.

Metric ``m`` owns ``W = D + 3`` consecutive slots starting at ``m * W``:

* the percentile block, ``D + 1`` slots: the site puts ``T_0(u_m) .. T_D(u_m)`` (Chebyshev basis of its own value
  on the reference polynomial's [-1, 1]); the coordinator's plaintext holds the fitted CDF's Chebyshev
  coefficients ``c_0 .. c_D`` there, so the block's slot SUM of the product is ``sum_k c_k T_k(u_m)``;
* the z block, 2 slots: the site puts ``[1, t_m]``, the plaintext holds ``[-mean/std, 1/std] / z_scale``.

Every slot beyond ``M * W`` (and every slot of an unavailable metric) has coefficient 0 and is thereby zeroed.
The site decrypts and sums each block; the individual slots carry zero-sum masks and mean nothing alone.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as cheb


def block_width(degree: int) -> int:
    """Slots per metric: ``degree + 1`` Chebyshev slots plus the 2-slot z block."""
    return int(degree) + 3


def n_slots_used(n_metrics: int, degree: int) -> int:
    """Slots a query fills (its declared vector size)."""
    return int(n_metrics) * block_width(degree)


def blocks(n_metrics: int, degree: int) -> list[tuple[slice, slice]]:
    """Per metric, the (percentile block, z block) slot ranges."""
    w = block_width(degree)
    return [(slice(m * w, m * w + degree + 1), slice(m * w + degree + 1, (m + 1) * w)) for m in range(n_metrics)]


def encode_site_inputs(u: np.ndarray, t: np.ndarray, present: np.ndarray, degree: int) -> np.ndarray:
    """The plaintext query vector: per present metric ``[T_0(u)..T_D(u), 1, t]``, zeros for absent ones."""
    u, t, present = np.asarray(u, float), np.asarray(t, float), np.asarray(present, bool)
    if not (u.shape == t.shape == present.shape) or u.ndim != 1:
        raise ValueError(f"u, t and present must be equal-length vectors, got {u.shape}, {t.shape}, {present.shape}")
    if np.any(np.abs(u[present]) > 1.0) or np.any(np.abs(t[present]) > 1.0):
        raise ValueError("u and t must lie in [-1, 1]")
    out = np.zeros(n_slots_used(len(u), degree))
    for m, (pb, zb) in enumerate(blocks(len(u), degree)):
        if present[m]:
            out[pb] = cheb.chebvander(np.array([u[m]]), degree)[0]
            out[zb] = (1.0, t[m])
    return out


def block_sums(slots: np.ndarray, n_metrics: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Decrypted slots -> (percentile per metric, z / z_scale per metric): the sum over each block."""
    s = np.asarray(slots, dtype=np.float64)
    if s.shape[0] < n_slots_used(n_metrics, degree):
        raise ValueError(f"{s.shape[0]} slots is fewer than the {n_slots_used(n_metrics, degree)} the layout uses")
    pairs = [(float(s[pb].sum()), float(s[zb].sum())) for pb, zb in blocks(n_metrics, degree)]
    return np.array([p for p, _ in pairs]), np.array([z for _, z in pairs])
