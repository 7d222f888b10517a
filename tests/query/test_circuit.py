"""The inner-product circuit in process (no server): block sums are the CDF and z-score, single slots are masked."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from infrabrain.coordinator.query_eval import CircuitPlan, NoiseSpec, evaluate
from infrabrain.coordinator.query_layout import block_sums, blocks, encode_site_inputs, n_slots_used
from infrabrain.coordinator.query_reference import Z_SCALE
from infrabrain.privacy.he_params import DEFAULT_PARAMS, get_params, make_context, public_context_bytes


def test_layout_round_trip():
    u, t = np.array([0.3, -0.2, 0.0]), np.array([0.1, 0.5, -1.0])
    present = np.array([True, False, True])
    vec = encode_site_inputs(u, t, present, 5)
    assert vec.shape == (n_slots_used(3, 5),) == (24,)
    (pb0, zb0), (pb1, zb1), _ = blocks(3, 5)
    assert vec[pb0][0] == 1.0 and vec[pb0][1] == pytest.approx(0.3) and vec[pb0][2] == pytest.approx(2 * 0.09 - 1)
    assert list(vec[zb0]) == [1.0, 0.1] and not vec[pb1].any() and not vec[zb1].any()
    pct, z = block_sums(vec, 3, 5)
    assert z[2] == pytest.approx(0.0) and pct[1] == 0.0
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        encode_site_inputs(np.array([1.5]), np.array([0.0]), np.array([True]), 5)


def _answer(reference, vec, noisy: bool, seed: int = 0):
    p = get_params(DEFAULT_PARAMS)
    ctx = make_context(DEFAULT_PARAMS)
    pub = ts.context_from(public_context_bytes(ctx))
    plan = CircuitPlan(pub.seal_context().data, reference.coefficient_vector(p.slots), p.scale, p.coeff_scale)
    m, d = reference.n_metrics, reference.degree
    lap = np.zeros(p.slots)
    if noisy:
        for pb, zb in blocks(m, d):
            lap[pb.start] = lap[zb.start] = 0.05
    noise = NoiseSpec(lap, tuple((b.start, b.stop) for pair in blocks(m, d) for b in pair),
                      p.mask_sigma(reference.n_slots_used), 1e-3 if noisy else 0.0)
    ct = ts.ckks_vector(ctx, vec.tolist()).ciphertext()[0]
    out = evaluate(plan, ct, pub.public_key().data, noise, np.random.default_rng(seed))
    from tenseal import sealapi

    sc = ctx.seal_context().data
    pt = sealapi.Plaintext()
    sealapi.Decryptor(sc, ctx.secret_key().data).decrypt(out, pt)
    return np.asarray(sealapi.CKKSEncoder(sc).decode_double(pt))


def test_block_sums_are_the_cdf_and_z_and_single_slots_are_masked(reference):
    m, d = reference.n_metrics, reference.degree
    present = np.array([r.available for r in reference.metrics])
    t = np.linspace(-0.9, 0.9, m)
    u = np.array([r.to_u(tv) for r, tv in zip(reference.metrics, t, strict=True)])
    slots = _answer(reference, encode_site_inputs(u, t, present, d), noisy=False)
    pct, z = block_sums(slots, m, d)
    for i, r in enumerate(reference.metrics):
        if r.available:
            assert pct[i] == pytest.approx(float(r.poly(u[i])), abs=1e-3)
            assert z[i] * Z_SCALE == pytest.approx((t[i] - r.t_mean) / r.t_std, abs=1e-3)
    used = reference.n_slots_used
    block_slots = np.concatenate([slots[pb] for (pb, _), ok in zip(blocks(m, d), present, strict=True) if ok])
    assert np.std(block_slots) > 1000.0  # masks of std ~2^13: one slot alone says nothing about one term
    assert np.max(np.abs(slots[used:])) < 1e-3  # outside the blocks: zeroed


def test_deliberate_noise_moves_the_sum(reference):
    m, d = reference.n_metrics, reference.degree
    present = np.array([r.available for r in reference.metrics])
    vec = encode_site_inputs(np.zeros(m), np.zeros(m), present, d)
    a = block_sums(_answer(reference, vec, noisy=True, seed=1), m, d)[0]
    b = block_sums(_answer(reference, vec, noisy=True, seed=2), m, d)[0]
    i = int(np.argmax(present))
    assert a[i] != b[i] and abs(a[i] - float(reference.metrics[i].poly(0.0))) < 1.0


def test_mask_bound_is_computed_from_the_coefficients(reference):
    from infrabrain.coordinator.query_eval import masked_view_distance, masked_view_kl

    p = get_params(DEFAULT_PARAMS)
    bl = tuple((b.start, b.stop) for pair in blocks(reference.n_metrics, reference.degree) for b in pair)
    coeffs = reference.coefficient_vector(p.slots)
    kl = masked_view_kl(coeffs, bl, p.mask_sigma(reference.n_slots_used))
    assert kl == pytest.approx(float(np.sum(coeffs**2)) / (2 * p.mask_sigma(reference.n_slots_used) ** 2))
    assert 0 < masked_view_distance(kl, 1) < masked_view_distance(kl, 100) < 0.5
    assert masked_view_kl(coeffs, bl, 1.0) > kl and masked_view_distance(1e9, 1) == 1.0
