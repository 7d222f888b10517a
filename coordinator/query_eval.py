"""Homomorphic evaluation of the fleet percentile and z-score on a site's CKKS ciphertext.

The circuit evaluates, slot by slot, a degree-7 polynomial ``p_j(x) = sum_k C[k, j] x^k`` whose coefficient
VECTORS ``C[k]`` are plaintexts: slot ``m`` carries metric ``m``'s Chebyshev CDF approximation (converted to
the power basis), slot ``M + m`` carries the affine z-score of metric ``m`` (only ``C[0]``, ``C[1]`` non-zero),
every other slot has all-zero coefficients and is therefore zeroed. No Galois keys exist, so slot ``j`` of the
answer depends on slot ``j`` of the query only: packing many probe values buys nothing.

Depth 3 (the minimum for degree 7) with lazy relinearisation and rescale-before-relinearise, so each key
switch runs on as few primes as possible::

    L0  x
    L1  x2 = x*x                         (relin on 3 primes)
    L2  x4 = x2*x2                       (relin on 2 primes)
    L2  B  = c5*x + c6*x2 + (c7*x)*x2    (relin on 2 primes for the last term)
    L3  p  = c0 + c1*x + c2*x2 + (c3*x)*x2 + c4*x4 + x4*B   (one relin on 1 prime)

Every plaintext scale is chosen so that each term lands at level 3 with exactly the target scale; the
plaintexts are encoded once per (parameter set, reference version) and shared by all sites, since CKKS
plaintexts depend on the parameters only, not on keys. After the polynomial the answer gets DP noise on its
answer slots, complex Gaussian flooding noise in every slot, and a fresh public-key encryption of zero
(re-randomisation), in that order.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

DEGREE = 7


@dataclass(frozen=True)
class NoiseSpec:
    """Per-slot noise added to the answer: Laplace scales for answer slots, Gaussian flooding sigma for all."""

    laplace_scale: np.ndarray  # [slots]; 0 where no DP noise
    flood_sigma: float


class CircuitPlan:
    """Precomputed plaintexts and scales of the CDF circuit for one parameter set and one coefficient matrix."""

    def __init__(self, seal_context, coeffs: np.ndarray, input_scale: float, relin_first: bool = True) -> None:
        from tenseal import sealapi

        self._sealapi = sealapi
        self.relin_first = relin_first
        self.ctx = seal_context
        self.encoder = sealapi.CKKSEncoder(seal_context)
        self.slots = self.encoder.slot_count()
        if coeffs.shape != (DEGREE + 1, self.slots):
            raise ValueError(f"coeffs shape {coeffs.shape} must be ({DEGREE + 1}, {self.slots})")
        cd = seal_context.first_context_data()
        self.levels = []
        while cd is not None:
            self.levels.append(cd.parms_id())
            cd = cd.next_context_data()
        if len(self.levels) != 4:
            raise ValueError(f"parameter set has {len(self.levels)} levels, the circuit needs exactly 4")
        primes = [float(m.value()) for m in seal_context.first_context_data().parms().coeff_modulus()]
        q1, q2, q3 = primes[1], primes[2], primes[3]  # dropped at L2, L1, L0 respectively
        self.q = primes
        s0 = float(input_scale)
        self.input_scale = s0
        # scales exactly as SEAL computes them (same double operations in the same order)
        s_x2 = s0 * s0 / q3
        s_x4 = s_x2 * s_x2 / q2
        target = s0
        s_b = target * q1 / s_x4
        s_c7x = s_b * q2 / s_x2
        s_c3x = target * q1 / s_x2
        self.s = {"x2": s_x2, "x4": s_x4, "B": s_b, "T": target, "c7x": s_c7x, "c3x": s_c3x}
        L0, L1, L2, L3 = self.levels
        enc = self._encode
        c = coeffs
        self.pt = {
            "c7": enc(c[7], L0, s_c7x * q3 / s0),
            "c5": enc(c[5], L1, s_b * q2 / s0),
            "c6": enc(c[6], L1, s_b * q2 / s_x2),
            "c3": enc(c[3], L1, s_c3x * q2 / s0),
            "c1": enc(c[1], L2, target * q1 / s0),
            "c2": enc(c[2], L2, target * q1 / s_x2),
            "c4": enc(c[4], L2, target * q1 / s_x4),
            "c0": enc(c[0], L3, target),
        }

    def _encode(self, values: np.ndarray, parms_id, scale: float):
        p = self._sealapi.Plaintext()
        self.encoder.encode(np.asarray(values, dtype=np.float64).tolist(), parms_id, float(scale), p)
        return p

    def noise_plaintext(self, noise: NoiseSpec, rng: np.random.Generator):
        """Encode fresh DP + flooding noise at the answer level and scale."""
        slots = self.slots
        real = rng.laplace(0.0, 1.0, slots) * noise.laplace_scale
        if noise.flood_sigma > 0:
            real = real + rng.normal(0.0, noise.flood_sigma, slots)
            imag = rng.normal(0.0, noise.flood_sigma, slots)
        else:
            imag = np.zeros(slots)
        p = self._sealapi.Plaintext()
        self.encoder.encode((real + 1j * imag).tolist(), self.levels[3], self.s["T"], p)
        return p


def _relin_rescale(ev, ct, relin_keys, relin_first: bool) -> None:
    """Relinearise and rescale; relinearising first keeps key-switching noise small relative to the scale."""
    if relin_first:
        ev.relinearize_inplace(ct, relin_keys)
        ev.rescale_to_next_inplace(ct)
    else:
        ev.rescale_to_next_inplace(ct)
        ev.relinearize_inplace(ct, relin_keys)


def _force_scale(ct, scale: float) -> None:
    if abs(ct.scale / scale - 1.0) > 1e-9:
        raise ArithmeticError(f"scale drift in circuit: {ct.scale} vs {scale}")
    ct.scale = scale


def prepare_spare(plan: CircuitPlan, public_key, noise: NoiseSpec, rng: np.random.Generator):
    """A fresh (encryption of zero, noise plaintext) pair, made ahead of time while the worker is idle.

    Each pair is used for exactly one answer; it only moves ~4 ms of work off the latency path.
    """
    zero = plan._sealapi.Ciphertext()
    plan._sealapi.Encryptor(plan.ctx, public_key).encrypt_zero(plan.levels[3], zero)
    return zero, plan.noise_plaintext(noise, rng)


def evaluate(plan: CircuitPlan, ct, relin_keys, public_key, noise: NoiseSpec | None, rng: np.random.Generator,
             spare=None):
    """Run the circuit on ciphertext ``ct`` (level 0, input scale); return the answer ciphertext (level 3).

    ``spare`` is an unused pair from :func:`prepare_spare` (made with the same public key and noise spec).
    """
    sa = plan._sealapi
    ev = sa.Evaluator(plan.ctx)
    L0, L1, L2, L3 = plan.levels
    pt, s = plan.pt, plan.s

    def new():
        return sa.Ciphertext()

    # powers
    x2 = new()
    ev.square(ct, x2)
    _relin_rescale(ev, x2, relin_keys, plan.relin_first)
    x4 = new()
    ev.square(x2, x4)
    _relin_rescale(ev, x4, relin_keys, plan.relin_first)
    x_l1 = new()
    ev.mod_switch_to(ct, L1, x_l1)
    x_l2 = new()
    ev.mod_switch_to(ct, L2, x_l2)
    x2_l2 = new()
    ev.mod_switch_to(x2, L2, x2_l2)

    def pmul(a, p):
        out = new()
        ev.multiply_plain(a, p, out)
        return out

    def cmul(a, b):
        out = new()
        ev.multiply(a, b, out)
        return out

    # Terms that land on the same level are summed BEFORE rescaling (all share the same pre-rescale scale),
    # so each level costs one rescale and at most one relinearisation.
    # c7*x at L1 (it is a multiplicand)
    c7x = pmul(ct, pt["c7"])
    ev.rescale_to_next_inplace(c7x)
    # B = c5 x + c6 x2 + (c7 x) x2 : summed at L1, rescaled to L2, relinearised (2 primes)
    b = cmul(c7x, x2)
    pre_b = s["B"] * plan.q[2]
    _force_scale(b, pre_b)
    for term in (pmul(x_l1, pt["c5"]), pmul(x2, pt["c6"])):
        _force_scale(term, pre_b)
        ev.add_inplace(b, term)
    ev.rescale_to_next_inplace(b)
    ev.relinearize_inplace(b, relin_keys)
    # c3*x at L2 (a multiplicand)
    c3x = pmul(x_l1, pt["c3"])
    ev.rescale_to_next_inplace(c3x)
    _force_scale(c3x, s["c3x"])
    _force_scale(b, s["B"])
    # everything else at L2, summed, one rescale to L3, one relinearisation on a single prime
    pre_t = s["T"] * plan.q[1]
    acc = cmul(x4, b)
    _force_scale(acc, pre_t)
    for term in (cmul(c3x, x2_l2), pmul(x_l2, pt["c1"]), pmul(x2_l2, pt["c2"]), pmul(x4, pt["c4"])):
        _force_scale(term, pre_t)
        ev.add_inplace(acc, term)
    ev.rescale_to_next_inplace(acc)
    _force_scale(acc, s["T"])
    ev.relinearize_inplace(acc, relin_keys)
    ev.add_plain_inplace(acc, pt["c0"])
    if noise is not None:
        zero, noise_pt = spare if spare is not None else prepare_spare(plan, public_key, noise, rng)
        ev.add_plain_inplace(acc, noise_pt)
        zero.scale = acc.scale
        ev.add_inplace(acc, zero)
    return acc


_TMPDIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def ciphertext_to_bytes(ct) -> bytes:
    """Serialise a SEAL ciphertext (TenSEAL's sealapi only saves to a path: use a private tmpfs file)."""
    fd, path = tempfile.mkstemp(prefix="ib-ct-", dir=_TMPDIR)
    os.close(fd)
    try:
        ct.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def ciphertext_from_bytes(seal_context, blob: bytes):
    """Load (and SEAL-validate against ``seal_context``) a ciphertext from bytes."""
    from tenseal import sealapi

    fd, path = tempfile.mkstemp(prefix="ib-ct-", dir=_TMPDIR)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        ct = sealapi.Ciphertext()
        ct.load(seal_context, path)
        return ct
    finally:
        os.unlink(path)
