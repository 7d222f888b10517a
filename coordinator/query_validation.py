"""Strict, cheap validation of a site's public context and query ciphertext, before any evaluation.

Both arrive as TenSEAL serialisations (protobuf messages wrapping SEAL streams). They are parsed here with a
small, bounds-checked protobuf wire reader, so that a secret key, Galois or relinearisation keys, an off-list
parameter set, a wrong scale, a wrong size or a truncated/compressed-bomb SEAL stream is refused with a clear
message before
TenSEAL or SEAL touches the bytes. SEAL's own ``load`` (validity of every coefficient against the modulus)
then runs inside the memory-capped worker as the second line of defence.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

SEAL_MAGIC = 0xA15E
SEAL_HEADER_SIZE = 16
#: SEAL compression modes: 0 none, 1 zlib, 2 zstd.
SEAL_COMPR_MODES = (0, 1, 2)

MAX_CONTEXT_BYTES = 1024 * 1024  # a public context (public key only) is ~125 KB at N=4096
MAX_QUERY_BYTES = 512 * 1024  # a query is ~64 KB at N=4096, ~128 KB at N=8192


class ValidationError(ValueError):
    """Input refused by validation; the message names the bad field and value."""


# ---------------------------------------------------------------- protobuf wire format (no dependency on TenSEAL)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ValidationError("protobuf: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
    raise ValidationError("protobuf: varint longer than 10 bytes")


def parse_fields(buf: bytes, what: str) -> dict[int, list[bytes | int]]:
    """Parse one protobuf message into ``{field_number: [values]}``; raise on any malformation."""
    out: dict[int, list[bytes | int]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        fno, wtype = key >> 3, key & 7
        if fno == 0 or fno > 64:
            raise ValidationError(f"{what}: bad protobuf field number {fno}")
        if wtype == 0:
            val, pos = _varint(buf, pos)
        elif wtype == 1:
            if pos + 8 > len(buf):
                raise ValidationError(f"{what}: truncated fixed64 field {fno}")
            val, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wtype == 2:
            n, pos = _varint(buf, pos)
            if n > len(buf) - pos:
                raise ValidationError(f"{what}: field {fno} claims {n} bytes, only {len(buf) - pos} left")
            val, pos = buf[pos : pos + n], pos + n
        elif wtype == 5:
            if pos + 4 > len(buf):
                raise ValidationError(f"{what}: truncated fixed32 field {fno}")
            val, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValidationError(f"{what}: unsupported protobuf wire type {wtype} (field {fno})")
        out.setdefault(fno, []).append(val)
    return out


def _single(fields: dict[int, list], fno: int, what: str, kind: type, default=None):
    vals = fields.get(fno)
    if not vals:
        return default
    if len(vals) != 1:
        raise ValidationError(f"{what}: field {fno} appears {len(vals)} times")
    if not isinstance(vals[0], kind):
        raise ValidationError(f"{what}: field {fno} has the wrong wire type")
    return vals[0]


def check_seal_stream(blob: bytes, what: str, max_bytes: int) -> None:
    """Check a SEAL serialisation header: magic, header size, compression mode, and declared == actual size."""
    if len(blob) < SEAL_HEADER_SIZE:
        raise ValidationError(f"{what}: {len(blob)} bytes is shorter than a SEAL header")
    magic, hsize, _vmaj, _vmin, compr, reserved, size = struct.unpack("<HBBBBHQ", blob[:SEAL_HEADER_SIZE])
    if magic != SEAL_MAGIC or hsize != SEAL_HEADER_SIZE or reserved != 0:
        raise ValidationError(f"{what}: not a SEAL stream (magic {magic:#06x})")
    if compr not in SEAL_COMPR_MODES:
        raise ValidationError(f"{what}: unknown SEAL compression mode {compr}")
    if size != len(blob) or size > max_bytes:
        raise ValidationError(f"{what}: SEAL header declares {size} bytes, got {len(blob)} (limit {max_bytes})")


# ---------------------------------------------------------------- TenSEAL context (tensealcontext.proto)


@dataclass
class ContextParts:
    """The pieces of a TenSEAL context serialisation."""

    encryption_parameters: bytes = b""
    public_key: bytes = b""
    relin_keys: bytes = b""
    galois_keys: bytes = b""
    secret_key: bytes = b""
    scale: float = 0.0
    auto_flags: int = 0
    encryption_type: int = 0
    has_private_part: bool = False
    extra: list[int] = field(default_factory=list)


def parse_context_proto(buf: bytes) -> ContextParts:
    """Split a TenSEAL ``TenSEALContextProto`` into its parts (no SEAL parsing)."""
    what = "context"
    top = parse_fields(buf, what)
    parts = ContextParts(extra=sorted(set(top) - {1, 2, 3, 4}))
    parts.encryption_parameters = _single(top, 1, what, bytes, b"")
    parts.encryption_type = _single(top, 4, what, int, 0)
    pub = _single(top, 2, what, bytes, None)
    if pub is not None:
        pf = parse_fields(pub, "context.public_context")
        parts.public_key = _single(pf, 1, what, bytes, b"")
        parts.auto_flags = _single(pf, 2, what, int, 0)
        raw_scale = _single(pf, 3, what, int, 0)
        parts.scale = struct.unpack("<d", raw_scale.to_bytes(8, "little"))[0] if raw_scale else 0.0
        parts.relin_keys = _single(pf, 4, what, bytes, b"")
        parts.galois_keys = _single(pf, 5, what, bytes, b"")
    priv = _single(top, 3, what, bytes, None)
    if priv is not None:
        parts.has_private_part = True
        prf = parse_fields(priv, "context.private_context")
        parts.secret_key = _single(prf, 1, what, bytes, b"")
    return parts


def validate_public_context(buf: bytes, params_name: str) -> ContextParts:
    """Refuse anything but a public, allow-listed, public-key-only context; return its parts."""
    from infrabrain.privacy.he_params import encryption_parameter_blobs, get_params

    try:
        p = get_params(params_name)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if not buf:
        raise ValidationError("context: empty")
    if len(buf) > MAX_CONTEXT_BYTES:
        raise ValidationError(f"context: {len(buf)} bytes exceeds the limit of {MAX_CONTEXT_BYTES}")
    parts = parse_context_proto(buf)
    if parts.extra:
        raise ValidationError(f"context: unexpected protobuf fields {parts.extra}")
    if parts.has_private_part or parts.secret_key:
        raise ValidationError("context: holds a secret key (private part); register the public context only")
    if parts.galois_keys:
        raise ValidationError("context: holds Galois keys; they are refused (no rotations are needed)")
    if parts.relin_keys:
        raise ValidationError("context: holds relinearisation keys; they are refused (the inner-product circuit "
                              "multiplies by plaintexts only)")
    if not parts.public_key:
        raise ValidationError("context: public key is missing")
    if parts.encryption_parameters not in encryption_parameter_blobs(params_name):
        raise ValidationError(f"context: encryption parameters are not the allow-listed set {params_name!r}")
    if parts.scale != p.scale:
        raise ValidationError(f"context: global scale {parts.scale!r} is not 2^{p.scale_bits}")
    check_seal_stream(parts.public_key, "context.public_key", MAX_CONTEXT_BYTES)
    return parts


# ---------------------------------------------------------------- CKKS vector (tensors.proto: CKKSVectorProto)


def validate_query_vector(buf: bytes, params_name: str, n_slots_used: int) -> bytes:
    """Check a ``CKKSVectorProto``: one ciphertext, size ``n_slots_used``, exact scale; return the SEAL blob."""
    from infrabrain.privacy.he_params import get_params

    p = get_params(params_name)
    what = "query"
    if not buf:
        raise ValidationError("query: empty ciphertext")
    if len(buf) > MAX_QUERY_BYTES:
        raise ValidationError(f"query: {len(buf)} bytes exceeds the limit of {MAX_QUERY_BYTES}")
    f = parse_fields(buf, what)
    extra = sorted(set(f) - {1, 2, 3})
    if extra:
        raise ValidationError(f"query: unexpected protobuf fields {extra}")
    sizes = f.get(1, [])
    # repeated uint32 is packed (one bytes value) by proto3 writers
    if len(sizes) == 1 and isinstance(sizes[0], bytes):
        vals, pos, packed = [], 0, sizes[0]
        while pos < len(packed):
            v, pos = _varint(packed, pos)
            vals.append(v)
        sizes = vals
    cts = f.get(2, [])
    if len(cts) != 1 or not isinstance(cts[0], bytes):
        raise ValidationError(f"query: expected exactly one ciphertext, got {len(cts)}")
    if sizes != [n_slots_used]:
        raise ValidationError(f"query: vector size {sizes} must be [{n_slots_used}] (one block of degree + 3 "
                              "slots per metric)")
    raw_scale = _single(f, 3, what, int, 0)
    scale = struct.unpack("<d", raw_scale.to_bytes(8, "little"))[0] if raw_scale else 0.0
    if not math.isfinite(scale) or scale != p.scale:
        raise ValidationError(f"query: scale {scale!r} is not 2^{p.scale_bits}")
    blob = cts[0]
    # an uncompressed 2-polynomial ciphertext at the data level: the hard upper bound on the SEAL stream size
    n_data_primes = len(p.coeff_mod_bit_sizes) - 1
    max_ct = SEAL_HEADER_SIZE + 128 + 2 * p.poly_modulus_degree * n_data_primes * 8
    check_seal_stream(blob, "query.ciphertext", max_ct)
    return blob
