"""SecAgg+ (Bell et al. 2020) as the steps each party runs, so one protocol serves in-process and over Flower.

A site's steps take and return only bytes and integer vectors, the aggregator's likewise, so the same code runs
in one process (:func:`secure_sum`, the benchmark reference and the bench's fleet root prior) and across the
network (the fleet root prior round, ``coordinator.fleet_prior_round`` / ``client.fleet_prior_site``), where the
coordinator only forwards what the sites send each other. Built from Flower's secure-aggregation primitives
(``flwr.common.secure_aggregation``: ECDH key agreement + HKDF, Fernet, Shamir shares):

1. :func:`advertise`: a site makes two ECDH key pairs (SECP384R1) and a self-mask seed, and publishes the two
   public keys;
2. :func:`share_keys`: it Shamir-shares its self-mask seed and its mask secret key among itself and its
   neighbours (a ring, :func:`neighbours`), each share encrypted for its holder under an ECDH+HKDF key;
3. :func:`mask_input`: it uploads ``x + PRG(b_i) + sum_j +-PRG(s_ij)`` over its neighbours ``j`` that took part;
4. :func:`reveal_shares`: a surviving holder reveals, per owner in its neighbourhood, the self-mask share of a
   survivor or the secret-key share of a dropped site, never both for one owner;
5. :func:`unmask_sum`: the aggregator removes every mask and learns the sum over the survivors only.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Ring neighbourhood half-width: each site pairs with this many sites on either side (all of them if few).
HALF_NEIGHBOURHOOD = 4
#: Length of an uncompressed SECP384R1 public point (what a site advertises).
PUBLIC_KEY_BYTES = 97


@dataclass
class SiteSecrets:
    """What a site keeps between the steps of one round (never sent): its two ECDH secret keys (DER) and
    self-mask seed, and the shares its neighbours sent it (``received``: owner index -> encrypted share)."""

    c_sk: bytes
    s_sk: bytes
    b_seed: bytes
    received: dict[int, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Hex-encoded, for the site's state file (the ClientApp process ends between steps)."""
        return {"c_sk": self.c_sk.hex(), "s_sk": self.s_sk.hex(), "b_seed": self.b_seed.hex(),
                "received": {str(k): v.hex() for k, v in self.received.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SiteSecrets:
        return cls(bytes.fromhex(raw["c_sk"]), bytes.fromhex(raw["s_sk"]), bytes.fromhex(raw["b_seed"]),
                   {int(k): bytes.fromhex(v) for k, v in raw.get("received", {}).items()})


def _prg(seed: bytes, n: int, modulus: int) -> np.ndarray:
    """Expand a 32-byte seed into ``n`` uniform integers mod ``modulus`` (SHA-256 -> PCG64 with the full seed)."""
    key = int.from_bytes(hashlib.sha256(seed).digest(), "little")
    return np.random.Generator(np.random.PCG64(key)).integers(0, modulus, size=n, dtype=np.uint64)


def _pub_bytes(pk: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return pk.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_public_key(raw: bytes, who: str = "site") -> Any:
    """An advertised public key; ``ValueError`` naming ``who`` if it is not a SECP384R1 point."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"{who}: public key must be {PUBLIC_KEY_BYTES} bytes (uncompressed SECP384R1 point)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), raw)
    except ValueError as exc:
        raise ValueError(f"{who}: public key is not a point on SECP384R1 ({exc})") from None


def _sk_bytes(sk: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return sk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())


def _load_sk(raw: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(raw, password=None)


def _pair_seed(sk: Any, pk: Any) -> bytes:
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key

    return hashlib.sha256(generate_shared_key(sk, pk)).digest()


def neighbours(n: int, half: int = HALF_NEIGHBOURHOOD) -> list[list[int]]:
    """SecAgg+ neighbourhoods: a ring where each site pairs with ``half`` sites on either side (all if small)."""
    if n <= 2 * half + 1:
        return [[j for j in range(n) if j != i] for i in range(n)]
    return [sorted({(i + d) % n for d in range(-half, half + 1) if d}) for i in range(n)]


def share_threshold(holders: int, survival: float) -> int:
    """Shares needed to rebuild one site's secrets: ``survival`` of its share holders, at least 2."""
    return max(2, math.ceil(survival * holders))


def advertise() -> tuple[SiteSecrets, bytes, bytes]:
    """Step 1 (site): fresh key pairs and self-mask seed; returns the secrets and the two public keys."""
    from cryptography.hazmat.primitives.asymmetric import ec

    c_sk, s_sk = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    secrets = SiteSecrets(_sk_bytes(c_sk), _sk_bytes(s_sk), os.urandom(32))
    return secrets, _pub_bytes(c_sk.public_key()), _pub_bytes(s_sk.public_key())


def public_keys(secrets: SiteSecrets) -> tuple[bytes, bytes]:
    """The two public keys a site advertised (to check that the aggregator forwards them unchanged)."""
    return _pub_bytes(_load_sk(secrets.c_sk).public_key()), _pub_bytes(_load_sk(secrets.s_sk).public_key())


def _pack(b_share: bytes, sk_share: bytes) -> bytes:
    return len(b_share).to_bytes(4, "little") + b_share + sk_share


def _unpack(plain: bytes, part: int, owner: int) -> bytes:
    if len(plain) < 4:
        raise ValueError(f"share of site {owner} is truncated")
    k = int.from_bytes(plain[:4], "little")
    if len(plain) < 4 + k:
        raise ValueError(f"share of site {owner} is truncated")
    return plain[4 : 4 + k] if part == 0 else plain[4 + k :]


def share_keys(secrets: SiteSecrets, idx: int, n: int, pub_c: Mapping[int, bytes], *, survival: float,
               half: int = HALF_NEIGHBOURHOOD) -> dict[int, bytes]:
    """Step 2 (site ``idx`` of ``n``): Shamir shares of the self-mask seed and the mask secret key for each holder
    (itself and its neighbours), encrypted for the neighbours; its own share is kept in ``secrets.received``.
    Returns ``{holder: ciphertext}`` for the aggregator to forward."""
    from flwr.common.secure_aggregation.crypto.shamir import create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import encrypt, generate_shared_key

    holders = [idx, *neighbours(n, half)[idx]]
    t = share_threshold(len(holders), survival)
    b_sh = create_shares(secrets.b_seed, t, len(holders))
    sk_sh = create_shares(secrets.s_sk, t, len(holders))
    c_sk = _load_sk(secrets.c_sk)
    out: dict[int, bytes] = {}
    for k, j in enumerate(holders):
        packed = _pack(b_sh[k], sk_sh[k])
        if j == idx:
            secrets.received[idx] = packed  # own share kept locally, in clear
        else:
            out[j] = encrypt(generate_shared_key(c_sk, load_public_key(pub_c[j], f"site {j}")), packed)
    return out


def mask_input(secrets: SiteSecrets, idx: int, n: int, vec_q: np.ndarray, pub_s: Mapping[int, bytes],
               modulus: int, *, active: Collection[int] | None = None, half: int = HALF_NEIGHBOURHOOD) -> np.ndarray:
    """Step 3 (site): the masked input ``vec_q + PRG(b) + sum_j +-PRG(s_ij)`` mod ``modulus`` over the neighbours
    in ``active`` (those whose shares went out in step 2; all by default)."""
    mod = np.uint64(modulus)
    vec = np.asarray(vec_q, dtype=np.uint64) % mod
    y = (vec + _prg(secrets.b_seed, vec.shape[0], modulus)) % mod
    s_sk = _load_sk(secrets.s_sk)
    for j in neighbours(n, half)[idx]:
        if active is not None and j not in active:
            continue
        m = _prg(_pair_seed(s_sk, load_public_key(pub_s[j], f"site {j}")), vec.shape[0], modulus)
        y = (y + m) % mod if idx < j else (y + mod - m) % mod
    return y


def reveal_shares(secrets: SiteSecrets, idx: int, n: int, pub_c: Mapping[int, bytes], survivors: Collection[int],
                  dropped: Collection[int], *, half: int = HALF_NEIGHBOURHOOD) -> tuple[dict[int, bytes],
                                                                                       dict[int, bytes]]:
    """Step 4 (site ``idx``, a survivor): for each owner whose share it holds, the self-mask share if the owner
    survived, the secret-key share if it dropped. Refuses to reveal both kinds for one owner (the aggregator could
    then unmask that owner's input). Returns ``(b_shares, sk_shares)``, owner -> share."""
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key

    surv, gone = set(survivors), set(dropped)
    if surv & gone:
        raise ValueError(f"site(s) {sorted(surv & gone)} listed both as survivors and as dropped: refusing to reveal")
    if idx not in surv:
        raise ValueError(f"site {idx} is not among the survivors: it reveals nothing")
    c_sk = _load_sk(secrets.c_sk)
    b_out: dict[int, bytes] = {}
    sk_out: dict[int, bytes] = {}
    for owner, raw in secrets.received.items():
        if owner not in surv and owner not in gone:
            continue
        if owner == idx:
            plain = raw
        else:
            try:
                plain = decrypt(generate_shared_key(c_sk, load_public_key(pub_c[owner], f"site {owner}")), raw)
            except Exception as exc:  # noqa: BLE001 - a tampered share names its owner
                raise ValueError(f"share from site {owner} does not decrypt ({type(exc).__name__})") from None
        if owner in surv:
            b_out[owner] = _unpack(plain, 0, owner)
        else:
            sk_out[owner] = _unpack(plain, 1, owner)
    return b_out, sk_out


def unmask_sum(masked: Mapping[int, np.ndarray], b_shares: Mapping[int, Sequence[bytes]],
               sk_shares: Mapping[int, Sequence[bytes]], pub_s: Mapping[int, bytes], n: int, modulus: int, *,
               survival: float, active: Collection[int] | None = None,
               half: int = HALF_NEIGHBOURHOOD) -> np.ndarray:
    """Step 5 (aggregator): the sum of the survivors' inputs (``masked``' keys) mod ``modulus``, from their masked
    inputs, the survivors' self-mask shares and the secret-key shares of the sites in ``active`` that dropped.
    Raises ``ValueError`` naming a site whose secrets too few holders revealed."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares

    mod = np.uint64(modulus)
    nbrs = neighbours(n, half)
    act = set(range(n)) if active is None else set(active)
    dim = int(next(iter(masked.values())).shape[0])

    def rebuild(owner: int, shares: Mapping[int, Sequence[bytes]]) -> bytes:
        t = share_threshold(1 + len(nbrs[owner]), survival)
        got = list(shares.get(owner, ()))
        if len(got) < t:
            raise ValueError(f"site {owner}: {len(got)} share(s) revealed, {t} needed; round aborted")
        return combine_shares(got[:t])

    total = np.zeros(dim, dtype=np.uint64)
    for y in masked.values():
        total = (total + np.asarray(y, dtype=np.uint64)) % mod
    for i in masked:
        total = (total + mod - _prg(rebuild(i, b_shares), dim, modulus)) % mod
    for d in sorted(act - set(masked)):
        sk_d = _load_sk(rebuild(d, sk_shares))
        for j in nbrs[d]:
            if j not in masked:
                continue
            m = _prg(_pair_seed(sk_d, load_public_key(pub_s[j], f"site {j}")), dim, modulus)
            # survivor j added +m if j < d else -m: take it back out
            total = (total + mod - m) % mod if j < d else (total + m) % mod
    return total


def secure_sum(vectors: Sequence[np.ndarray], *, threshold: int, modulus: int, dropouts: Sequence[int] = (),
               half_neighbourhood: int = HALF_NEIGHBOURHOOD, survival: float = 0.8) -> tuple[np.ndarray, list[int]]:
    """Sum integer vectors (mod ``modulus``) in one process, running every party's steps: the aggregator sees
    only masked vectors. Sites in ``dropouts`` drop after sharing their keys. Returns the sum over survivors and
    their indices; raises when fewer than ``threshold`` sites survive or a neighbourhood cannot reconstruct."""
    n = len(vectors)
    if n < threshold or threshold < 2:
        raise ValueError(f"secure_sum needs threshold>=2 and at least threshold sites; got n={n}, t={threshold}")
    half = half_neighbourhood
    keys = [advertise() for _ in range(n)]
    secrets = [k[0] for k in keys]
    pub_c = {i: k[1] for i, k in enumerate(keys)}
    pub_s = {i: k[2] for i, k in enumerate(keys)}
    for i in range(n):  # the aggregator only forwards ciphertexts
        for j, ct in share_keys(secrets[i], i, n, pub_c, survival=survival, half=half).items():
            secrets[j].received[i] = ct
    gone = set(dropouts)
    survivors = [i for i in range(n) if i not in gone]
    if len(survivors) < threshold:
        raise ValueError(f"only {len(survivors)} sites survived, threshold is {threshold}: round aborted")
    masked = {i: mask_input(secrets[i], i, n, vectors[i], pub_s, modulus, half=half) for i in survivors}
    b_shares: dict[int, list[bytes]] = {}
    sk_shares: dict[int, list[bytes]] = {}
    for h in survivors:
        b, sk = reveal_shares(secrets[h], h, n, pub_c, survivors, gone, half=half)
        for owner, s in b.items():
            b_shares.setdefault(owner, []).append(s)
        for owner, s in sk.items():
            sk_shares.setdefault(owner, []).append(s)
    total = unmask_sum(masked, b_shares, sk_shares, pub_s, n, modulus, survival=survival, half=half)
    return total, survivors
