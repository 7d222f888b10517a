"""Parameter allow-list and strict context/ciphertext validation (no server needed)."""

from __future__ import annotations

import pytest
import tenseal as ts

from infrabrain.coordinator.query_validation import (
    ValidationError,
    parse_context_proto,
    parse_fields,
    validate_public_context,
    validate_query_vector,
)
from infrabrain.privacy.he_params import ALLOWED_PARAMS, DEFAULT_PARAMS, get_params, make_context, public_context_bytes


def test_allow_list_is_128_bit_secure():
    for p in ALLOWED_PARAMS.values():
        assert sum(p.coeff_mod_bit_sizes) <= {4096: 109, 8192: 218, 16384: 438}[p.poly_modulus_degree]


def test_public_context_has_no_secret_relin_or_galois_keys():
    ctx = make_context()
    parts = validate_public_context(public_context_bytes(ctx), DEFAULT_PARAMS)
    assert not parts.secret_key and not parts.galois_keys and not parts.relin_keys and parts.public_key
    assert len(public_context_bytes(ctx)) < 200 * 1024  # parameters + public key only


def test_relin_keys_are_refused():
    ctx = make_context()
    ctx.generate_relin_keys()
    blob = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True)
    with pytest.raises(ValidationError, match="relinearisation"):
        validate_public_context(blob, DEFAULT_PARAMS)


def test_parameter_guards_refuse_insecure_or_unfit_sets():
    from infrabrain.privacy.he_params import HEParamSet, _check_params

    ok = get_params(DEFAULT_PARAMS)
    _check_params(ok)
    too_big = ok.model_copy(update={"coeff_mod_bit_sizes": (60, 50)})  # 110 > 109 bits at N=4096
    with pytest.raises(ValueError, match="128-bit"):
        _check_params(too_big)
    lax = ok.model_copy(update={"max_total_bits": 200})
    with pytest.raises(ValueError, match="HE-standard"):
        _check_params(lax)
    chain = HEParamSet(name="x", poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 30, 30), scale_bits=20,
                       coeff_scale_bits=10, max_total_bits=109)
    with pytest.raises(ValueError, match="one data prime"):
        _check_params(chain)
    no_room = ok.model_copy(update={"scale_bits": 30, "coeff_scale_bits": 26})
    with pytest.raises(ValueError, match="headroom"):
        _check_params(no_room)


def test_mask_sigma_leaves_headroom_below_q0():
    """The masks' coefficients stay >= 2^MASK_HEADROOM_BITS standard deviations below q0/2."""
    import math

    from infrabrain.privacy.he_params import MASK_HEADROOM_BITS

    for p in ALLOWED_PARAMS.values():
        for n in (18, 306, p.slots):
            sigma = p.mask_sigma(n)
            coeff_std = p.answer_scale * sigma * math.sqrt(2 * n) / p.poly_modulus_degree
            assert coeff_std <= 2.0 ** (p.coeff_mod_bit_sizes[0] - 1 - MASK_HEADROOM_BITS)
            assert coeff_std > 2.0 ** (p.coeff_mod_bit_sizes[0] - 2 - MASK_HEADROOM_BITS)  # not needlessly small


def test_secret_key_context_is_refused():
    ctx = make_context()
    with pytest.raises(ValidationError, match="secret key"):
        validate_public_context(ctx.serialize(save_secret_key=True), DEFAULT_PARAMS)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(fno: int, payload: bytes) -> bytes:
    return _varint(fno << 3 | 2) + _varint(len(payload)) + payload


def test_galois_keys_are_refused():
    # real Galois keys at N=8192 are ~50 MB (refused by size alone); graft a small field to reach the check
    blob = public_context_bytes(make_context())
    top = parse_fields(blob, "t")
    public = top[2][0] + _ld(5, b"\x5e\xa1" + b"g" * 200)
    crafted = _ld(1, top[1][0]) + _ld(2, public) + _varint(4 << 3) + _varint(top.get(4, [0])[0])
    with pytest.raises(ValidationError, match="Galois"):
        validate_public_context(crafted, DEFAULT_PARAMS)
    big = b"\x00" * (5 * 1024 * 1024)
    with pytest.raises(ValidationError, match="exceeds the limit"):
        validate_public_context(big, DEFAULT_PARAMS)


def test_off_list_parameters_are_refused():
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_relin_keys()
    blob = public_context_bytes(ctx)
    with pytest.raises(ValidationError, match="not the allow-listed"):
        validate_public_context(blob, DEFAULT_PARAMS)
    with pytest.raises(ValidationError, match="allow-list"):
        validate_public_context(blob, "ckks-n32768-whatever")


def test_wrong_scale_is_refused():
    ctx = make_context()
    ctx.global_scale = 2**30
    with pytest.raises(ValidationError, match="scale"):
        validate_public_context(public_context_bytes(ctx), DEFAULT_PARAMS)
    vec = ts.ckks_vector(ctx, [0.1, 0.2]).serialize()
    with pytest.raises(ValidationError, match="scale"):
        validate_query_vector(vec, DEFAULT_PARAMS, 2)


def test_query_vector_checks_size_and_count():
    ctx = make_context()
    vec = ts.ckks_vector(ctx, [0.1] * 6).serialize()
    assert validate_query_vector(vec, DEFAULT_PARAMS, 6)
    with pytest.raises(ValidationError, match="size"):
        validate_query_vector(vec, DEFAULT_PARAMS, 4)
    with pytest.raises(ValidationError):
        validate_query_vector(vec[: len(vec) // 2], DEFAULT_PARAMS, 6)
    with pytest.raises(ValidationError, match="empty"):
        validate_query_vector(b"", DEFAULT_PARAMS, 6)


def test_parameter_blob_is_deterministic():
    a = parse_context_proto(public_context_bytes(make_context())).encryption_parameters
    b = parse_context_proto(public_context_bytes(make_context())).encryption_parameters
    assert a == b
    assert get_params(DEFAULT_PARAMS).slots == 2048
