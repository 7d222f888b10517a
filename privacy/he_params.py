"""Allow-listed CKKS parameter sets (128-bit security) and the site's TenSEAL context.

Only the parameter sets below are accepted by the benchmark-query coordinator. Each is within the
HomomorphicEncryption.org 128-bit bound (N=4096: at most 109 bits of coefficient modulus; N=8192: at most
218), which SEAL itself enforces when the context is built. Every set has depth 3 (three rescaling primes),
exactly what the degree-7 CDF circuit in ``infrabrain.coordinator.query_eval`` consumes.

The public context a site registers holds the encryption parameters, the public key and the relinearisation
keys only: never the secret key, never Galois keys (no rotations are needed, and without them the coordinator
cannot move values between slots either).
"""

from __future__ import annotations

import functools

from pydantic import BaseModel, ConfigDict, Field

#: The circuit needs exactly this many rescaling primes between the first data prime and the special prime.
CIRCUIT_DEPTH = 3


class HEParamSet(BaseModel):
    """One allow-listed CKKS parameter set."""

    model_config = ConfigDict(frozen=True)

    name: str
    poly_modulus_degree: int = Field(gt=0)
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int = Field(gt=0)
    max_total_bits: int = Field(gt=0, description="128-bit security bound for this N (HE standard)")

    @property
    def slots(self) -> int:
        """Number of CKKS slots (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The exact input scale a query ciphertext must carry."""
        return float(2**self.scale_bits)


#: name -> parameter set. N=4096 is not offered: at its 109-bit bound a depth-3 chain leaves a 20-bit scale,
#: and the degree-7 circuit then measured an absolute error of ~0.3 (see docs/encrypted-queries.md).
ALLOWED_PARAMS: dict[str, HEParamSet] = {
    p.name: p
    for p in (
        HEParamSet(
            name="ckks-n8192-d3",
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(49, 40, 40, 40, 49),
            scale_bits=40,
            max_total_bits=218,
        ),
        HEParamSet(
            name="ckks-n8192-d3-lean",
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(40, 30, 30, 30, 40),
            scale_bits=30,
            max_total_bits=218,
        ),
    )
}
DEFAULT_PARAMS = "ckks-n8192-d3"

for _p in ALLOWED_PARAMS.values():  # guard against an edit that breaks the security bound
    assert sum(_p.coeff_mod_bit_sizes) <= _p.max_total_bits, _p.name
    assert len(_p.coeff_mod_bit_sizes) == CIRCUIT_DEPTH + 2, _p.name


def get_params(name: str) -> HEParamSet:
    """Return the allow-listed parameter set ``name`` or raise ``ValueError`` naming the allowed ones."""
    try:
        return ALLOWED_PARAMS[name]
    except KeyError:
        raise ValueError(f"params={name!r} is not on the allow-list {sorted(ALLOWED_PARAMS)}") from None


def make_context(name: str = DEFAULT_PARAMS):  # -> tenseal.Context
    """Create a private CKKS context (secret key stays in it) with relinearisation keys, no Galois keys.

    Public-key (asymmetric) encryption: the public key travels with the registration so the coordinator can
    re-randomise its answer with a fresh encryption of zero (TenSEAL's symmetric mode has no public key).
    """
    import tenseal as ts

    p = get_params(name)
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
        encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC,
        n_threads=1,
    )
    ctx.global_scale = p.scale
    ctx.generate_relin_keys()
    return ctx


def public_context_bytes(ctx) -> bytes:
    """Serialise what the coordinator may hold: parameters, public key, relinearisation keys. Nothing else."""
    return ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True)


@functools.lru_cache(maxsize=None)
def encryption_parameter_blobs(name: str) -> frozenset[bytes]:
    """The exact serialised SEAL encryption-parameter blobs of set ``name`` (what a valid context carries).

    The validator compares a registered context's parameter blob byte for byte against these, before
    TenSEAL parses anything else, so an off-list N, modulus chain or scheme is refused cheaply.
    """
    from infrabrain.coordinator.query_validation import parse_context_proto

    blob = parse_context_proto(public_context_bytes(make_context(name))).encryption_parameters
    return frozenset({blob})
