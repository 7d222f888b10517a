"""Homomorphic evaluation of the fleet percentile and z-score: the inner-product circuit.

The site sends, per metric, a block ``[T_0(u)..T_D(u)]`` (the Chebyshev basis of its own value, computed in
plaintext) and a block ``[1, t]`` (``infrabrain.coordinator.query_layout``). The coordinator computes::

    answer = ct (x) C  +  P_fresh  +  Enc_pk(0)

* ``C``: ONE plaintext with the fitted CDF's Chebyshev coefficients in each percentile block and
  ``[-mean/std, 1/std] / z_scale`` in each z block, zero everywhere else (so every other slot is zeroed).
  Encoded once per (parameter set, reference version) and shared by every site (CKKS plaintexts depend on the
  parameters only, not on keys).
* ``P_fresh``: a fresh plaintext per answer: zero-sum Gaussian masks in every block (each slot alone is noise;
  only the block's sum means something), the Laplace DP noise of the answer on the first slot of each block,
  Gaussian flooding noise in every slot outside the blocks and in the imaginary parts.
* ``Enc_pk(0)``: a fresh public-key encryption of zero (re-randomisation).

Depth 1, no rescale, no relinearisation, no rotation: a ``multiply_plain``, an ``add_plain`` and an ``add``.
The site decrypts and sums each block. ``P_fresh`` and ``Enc_pk(0)`` are made while the worker is idle.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseSpec:
    """What goes into each answer's fresh plaintext.

    ``laplace_scale``: [slots], Laplace DP scale (non-zero on one slot per block); ``blocks``: the slot ranges
    that get zero-sum Gaussian masks of std ``mask_sigma``; ``flood_sigma``: Gaussian noise in every slot
    outside the blocks and in every imaginary part.
    """

    laplace_scale: np.ndarray
    blocks: tuple[tuple[int, int], ...]
    mask_sigma: float
    flood_sigma: float


class CircuitPlan:
    """The coefficient plaintext of one (parameter set, reference version), with the scales and level."""

    def __init__(self, seal_context, coeffs: np.ndarray, input_scale: float, coeff_scale: float) -> None:
        from tenseal import sealapi

        self._sealapi = sealapi
        self.ctx = seal_context
        self.encoder = sealapi.CKKSEncoder(seal_context)
        self.slots = self.encoder.slot_count()
        if coeffs.shape != (self.slots,):
            raise ValueError(f"coeffs shape {coeffs.shape} must be ({self.slots},)")
        first = seal_context.first_context_data()
        if first.next_context_data() is not None:
            raise ValueError("parameter set has more than one data level; the inner-product circuit needs one")
        self.level = first.parms_id()
        self.input_scale = float(input_scale)
        self.answer_scale = float(input_scale) * float(coeff_scale)
        self.coeffs = self._encode(coeffs, float(coeff_scale))

    def _encode(self, values: np.ndarray, scale: float):
        p = self._sealapi.Plaintext()
        self.encoder.encode(np.asarray(values).tolist(), self.level, float(scale), p)
        return p

    def noise_plaintext(self, noise: NoiseSpec, rng: np.random.Generator):
        """Encode one answer's fresh masks + DP noise + flooding noise at the answer's level and scale."""
        slots = self.slots
        real = rng.laplace(0.0, 1.0, slots) * noise.laplace_scale
        outside = np.ones(slots, dtype=bool)
        for lo, hi in noise.blocks:
            g = rng.normal(0.0, noise.mask_sigma, hi - lo)
            real[lo:hi] += g - g.mean()  # zero-sum: the block's sum is untouched, each slot alone is noise
            outside[lo:hi] = False
        if noise.flood_sigma > 0:
            real[outside] += rng.normal(0.0, noise.flood_sigma, int(outside.sum()))
            values = real + 1j * rng.normal(0.0, noise.flood_sigma, slots)
        else:
            values = real
        return self._encode(values, self.answer_scale)


def prepare_spare(plan: CircuitPlan, public_key, noise: NoiseSpec, rng: np.random.Generator):
    """A fresh (encryption of zero, noise plaintext) pair, made ahead of time while the worker is idle.

    Each pair is used for exactly one answer; together they are most of the circuit's cost.
    """
    zero = plan._sealapi.Ciphertext()
    plan._sealapi.Encryptor(plan.ctx, public_key).encrypt_zero(plan.level, zero)
    return zero, plan.noise_plaintext(noise, rng)


def evaluate(plan: CircuitPlan, ct, public_key, noise: NoiseSpec, rng: np.random.Generator, spare=None):
    """Run the circuit on ciphertext ``ct`` (data level, input scale); return the answer ciphertext.

    ``spare`` is an unused pair from :func:`prepare_spare` (made with the same public key and noise spec).
    Masks and re-randomisation are always applied; accuracy measurements switch off only the deliberate noise
    (Laplace scales and flooding sigma of 0).
    """
    sa = plan._sealapi
    ev = sa.Evaluator(plan.ctx)
    out = sa.Ciphertext()
    ev.multiply_plain(ct, plan.coeffs, out)
    if out.scale != plan.answer_scale:
        raise ArithmeticError(f"answer scale {out.scale} is not {plan.answer_scale}")
    zero, noise_pt = spare if spare is not None else prepare_spare(plan, public_key, noise, rng)
    ev.add_plain_inplace(out, noise_pt)
    zero.scale = out.scale
    ev.add_inplace(out, zero)
    return out


def masked_view_kl(coeffs: np.ndarray, blocks: tuple[tuple[int, int], ...], mask_sigma: float) -> float:
    """KL divergence, per answer, between the masked slots a site decrypts and a simulation from the block sums.

    Simulator: given block sum ``S``, output ``S / K + r'`` with fresh zero-sum masks ``r'``. The real view is
    ``v + r`` with ``v = c (.) x``; both are Gaussians with covariance ``sigma^2 (I - 11^T / K)`` on the block,
    whose means differ by the zero-sum part of ``v``, so ``KL = ||P v||^2 / (2 sigma^2) <= ||c_b||^2 / (2 sigma^2)``
    for inputs ``|x_k| <= 1`` (what an honest site sends: ``|T_k(u)| <= 1``, ``1``, ``|t| <= 1``). Summed over
    blocks. A site that sends larger values scales this by their square: the bound is for honest inputs only.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    return float(sum(np.sum(c[lo:hi] ** 2) for lo, hi in blocks) / (2.0 * mask_sigma**2))


def masked_view_distance(kl_per_answer: float, answers: int) -> float:
    """Statistical distance bound over ``answers`` answers (KL adds up; Pinsker: SD <= sqrt(KL / 2))."""
    return float(min(1.0, np.sqrt(max(0, answers) * kl_per_answer / 2.0)))


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
