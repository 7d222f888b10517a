"""Allow-listed CKKS parameter sets (128-bit security) and the site's TenSEAL context.

Only the parameter sets below are accepted by the benchmark-query coordinator. Each is within the
HomomorphicEncryption.org 128-bit bound (N=4096: at most 109 bits of coefficient modulus; N=8192: at most
218), which SEAL itself enforces when the context is built.

The circuit (``infrabrain.coordinator.query_eval``) is an inner product: ONE ``multiply_plain`` by the
coefficient plaintext, ONE ``add_plain`` of fresh masks and noise, ONE added encryption of zero. It has depth 1
and does no rescale, so the chain is one data prime plus the special prime (which SEAL needs for key
generation and which makes fresh encryptions nearly noiseless). The answer stays at the data level with scale
``2^(input_scale_bits + coeff_scale_bits)``; the masks' standard deviation is sized so that the answer's
coefficients stay far below ``q0 / 2`` (see ``mask_sigma``).

The public context a site registers holds the encryption parameters and the public key only: never the secret
key, never Galois keys (no rotations: nothing can move between slots), never relinearisation keys (no
ciphertext-ciphertext product).
"""

from __future__ import annotations

import functools
import math

from pydantic import BaseModel, ConfigDict, Field

#: levels the circuit uses below the key level: exactly one data level (no rescale)
DATA_LEVELS = 1
#: the answer's largest coefficient may reach 2^(data prime bits - 1 - MASK_HEADROOM_BITS) in expectation
MASK_HEADROOM_BITS = 6


class HEParamSet(BaseModel):
    """One allow-listed CKKS parameter set."""

    model_config = ConfigDict(frozen=True)

    name: str
    poly_modulus_degree: int = Field(gt=0)
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int = Field(gt=0, description="input scale: the exact scale a query ciphertext must carry")
    coeff_scale_bits: int = Field(gt=0, description="scale of the coefficient plaintext")
    max_total_bits: int = Field(gt=0, description="128-bit security bound for this N (HE standard)")

    @property
    def slots(self) -> int:
        """Number of CKKS slots (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The exact input scale a query ciphertext must carry."""
        return float(2**self.scale_bits)

    @property
    def coeff_scale(self) -> float:
        """Scale at which the coefficient plaintext is encoded."""
        return float(2**self.coeff_scale_bits)

    @property
    def answer_scale(self) -> float:
        """Scale of the answer (input scale x coefficient scale; no rescale)."""
        return float(2 ** (self.scale_bits + self.coeff_scale_bits))

    def mask_sigma(self, n_slots_used: int) -> float:
        """Standard deviation of the zero-sum Gaussian masks in the answer blocks.

        A slot vector with i.i.d. N(0, s^2) entries in ``n`` slots encodes to coefficients with standard
        deviation about ``scale * s * sqrt(2 n) / N``. Keeping that at 2^(bits(q0) - 1 - MASK_HEADROOM_BITS)
        leaves 2^MASK_HEADROOM_BITS standard deviations (64) below ``q0 / 2``: no wrap-around in practice.
        Rounded down to a power of two.
        """
        q0_bits = self.coeff_mod_bit_sizes[0]
        n = max(1, int(n_slots_used))
        limit = 2.0 ** (q0_bits - 1 - MASK_HEADROOM_BITS) * self.poly_modulus_degree / math.sqrt(2.0 * n)
        return float(2 ** math.floor(math.log2(limit / self.answer_scale)))


#: name -> parameter set.
ALLOWED_PARAMS: dict[str, HEParamSet] = {
    p.name: p
    for p in (
        HEParamSet(
            name="ckks-n4096-ip",
            poly_modulus_degree=4096,
            coeff_mod_bit_sizes=(60, 49),
            scale_bits=25,
            coeff_scale_bits=22,
            max_total_bits=109,
        ),
        HEParamSet(
            name="ckks-n8192-ip",
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=(60, 49),
            scale_bits=25,
            coeff_scale_bits=22,
            max_total_bits=218,
        ),
    )
}
DEFAULT_PARAMS = "ckks-n4096-ip"


def _check_params(p: HEParamSet) -> None:
    """Guard against an edit that breaks the security bound or the circuit's assumptions."""
    if sum(p.coeff_mod_bit_sizes) > p.max_total_bits:
        raise ValueError(f"{p.name}: {sum(p.coeff_mod_bit_sizes)} modulus bits exceed the 128-bit bound "
                         f"{p.max_total_bits}")
    if p.max_total_bits > {4096: 109, 8192: 218, 16384: 438}.get(p.poly_modulus_degree, 0):
        raise ValueError(f"{p.name}: max_total_bits={p.max_total_bits} is not the HE-standard bound for "
                         f"N={p.poly_modulus_degree}")
    if len(p.coeff_mod_bit_sizes) != DATA_LEVELS + 1:
        raise ValueError(f"{p.name}: the inner-product circuit needs exactly one data prime and the special prime")
    if p.scale_bits + p.coeff_scale_bits >= p.coeff_mod_bit_sizes[0] - MASK_HEADROOM_BITS:
        raise ValueError(f"{p.name}: answer scale 2^{p.scale_bits + p.coeff_scale_bits} leaves no headroom in "
                         f"the {p.coeff_mod_bit_sizes[0]}-bit data prime")


for _p in ALLOWED_PARAMS.values():
    _check_params(_p)


def get_params(name: str) -> HEParamSet:
    """Return the allow-listed parameter set ``name`` or raise ``ValueError`` naming the allowed ones."""
    try:
        return ALLOWED_PARAMS[name]
    except KeyError:
        raise ValueError(f"params={name!r} is not on the allow-list {sorted(ALLOWED_PARAMS)}") from None


def make_context(name: str = DEFAULT_PARAMS):  # -> tenseal.Context
    """Create a private CKKS context (secret key stays in it); only its public key is ever sent.

    Public-key (asymmetric) encryption: the public key travels with the registration so the coordinator can
    re-randomise its answer with a fresh encryption of zero (TenSEAL's symmetric mode has no public key).
    TenSEAL generates relinearisation keys on its own; :func:`public_context_bytes` leaves them out.
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
    return ctx


def public_context_bytes(ctx) -> bytes:
    """Serialise what the coordinator may hold: parameters and public key. Nothing else."""
    return ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


@functools.lru_cache(maxsize=None)
def encryption_parameter_blobs(name: str) -> frozenset[bytes]:
    """The exact serialised SEAL encryption-parameter blobs of set ``name`` (what a valid context carries).

    The validator compares a registered context's parameter blob byte for byte against these, before
    TenSEAL parses anything else, so an off-list N, modulus chain or scheme is refused cheaply.
    """
    from infrabrain.coordinator.query_validation import parse_context_proto

    blob = parse_context_proto(public_context_bytes(make_context(name))).encryption_parameters
    return frozenset({blob})
