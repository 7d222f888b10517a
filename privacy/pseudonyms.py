"""Keyed pseudonyms for site identifiers, and timestamps coarsened to the federated round.

Hostnames, serial numbers, job IDs, IPs and rack names become ``<kind>-<16 hex>``: HMAC-SHA256 under a
site-local secret, domain-separated by kind. The same identifier always maps to the same pseudonym at one site
(so a site's own reports stay joinable), but without the secret nobody can invert or confirm a guess: a plain
hash of a hostname could be reversed by hashing a list of likely hostnames; an HMAC cannot.

The secret is a file of at least 32 random bytes that never leaves the site: :class:`Pseudonymizer` refuses to
be pickled (so it cannot ride along in a Ray/Flower message) and never prints its key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from infrabrain.atomic import atomic_write_bytes
from infrabrain.logs import get_logger

IdentifierKind = Literal["hostname", "serial", "job_id", "ip", "rack", "component"]
KINDS: tuple[str, ...] = ("hostname", "serial", "job_id", "ip", "rack", "component")
SECRET_ENV = "INFRABRAIN_SITE_SECRET_FILE"
MIN_SECRET_BYTES = 32
#: Hex digits kept from the HMAC (64 bits: collisions are negligible for any site's number of identifiers).
PSEUDONYM_HEX = 16

_log = get_logger("privacy.pseudonyms")


class MissingSiteSecretError(ValueError):
    """No usable site secret: pseudonyms cannot be made, so nothing identifying may be shared."""


def generate_site_secret(path: str | os.PathLike[str]) -> Path:
    """Create a new random site secret at ``path`` (mode 0600). Refuses to overwrite an existing one, since
    a new secret would change every pseudonym the site has ever issued."""
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"site secret {str(target)!r} already exists; refusing to overwrite it")
    atomic_write_bytes(target, secrets.token_hex(MIN_SECRET_BYTES).encode("ascii") + b"\n")
    os.chmod(target, 0o600)
    return target


def load_site_secret(path: str | os.PathLike[str] | None = None) -> bytes:
    """Read the site secret from ``path`` or ``$INFRABRAIN_SITE_SECRET_FILE``; clear errors when missing."""
    if path is None:
        env = os.environ.get(SECRET_ENV)
        if not env:
            raise MissingSiteSecretError(
                f"no site secret configured: pass its path or set {SECRET_ENV}. Create one with "
                "`infrabrain privacy init-secret PATH`; it must stay on this site"
            )
        path = env
    target = Path(path)
    if not target.is_file():
        raise MissingSiteSecretError(
            f"site secret file {str(target)!r} not found; create one with `infrabrain privacy init-secret "
            f"{target}` (it never leaves this site)"
        )
    raw = target.read_bytes().strip()
    if len(raw) < MIN_SECRET_BYTES:
        raise MissingSiteSecretError(
            f"site secret {str(target)!r} is too short ({len(raw)} bytes, need >= {MIN_SECRET_BYTES})"
        )
    mode = target.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _log.warning("site secret is readable by group/others; chmod 600 it", extra={"path": str(target)})
    return raw


def _normalise(kind: str, value: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"identifier kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    text = value.strip()
    if kind == "hostname":
        return text.lower().rstrip(".")
    if kind == "ip":
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            raise ValueError(f"ip {value!r} is not a valid IPv4/IPv6 address") from None
    return text


class Pseudonymizer:
    """Maps identifiers to stable keyed pseudonyms under one site's secret."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise MissingSiteSecretError(f"site secret must be at least {MIN_SECRET_BYTES} bytes")
        self.__key = secret

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None) -> Pseudonymizer:
        """Load the secret from ``path`` (or ``$INFRABRAIN_SITE_SECRET_FILE``)."""
        return cls(load_site_secret(path))

    def pseudonym(self, kind: IdentifierKind, value: str) -> str:
        """``<kind>-<hex>`` for ``value`` (hostnames are case-insensitive, IPs canonicalised)."""
        norm = _normalise(kind, value)
        mac = hmac.new(self.__key, f"infrabrain/v1/{kind}\x00{norm}".encode(), hashlib.sha256).hexdigest()
        prefix = kind.replace("_", "")
        return f"{prefix}-{mac[:PSEUDONYM_HEX]}"

    def pseudonymize_record(self, record: Mapping[str, Any], fields: Mapping[str, IdentifierKind]) -> dict[str, Any]:
        """Copy of ``record`` with each ``fields`` key replaced by its pseudonym (missing keys are an error)."""
        missing = [k for k in fields if k not in record]
        if missing:
            raise ValueError(f"record lacks identifier field(s) {missing}")
        out = dict(record)
        for key, kind in fields.items():
            out[key] = self.pseudonym(kind, str(record[key]))
        return out

    def __repr__(self) -> str:
        return "Pseudonymizer(<site secret hidden>)"

    def __reduce__(self) -> Any:
        raise TypeError("a Pseudonymizer holds the site secret and must not be pickled or sent anywhere")


def coarsen_to_round(timestamp: float, round_origin: float, round_seconds: float) -> int:
    """The round index a timestamp falls in: the only time information allowed to leave a site."""
    for name, v in (("timestamp", timestamp), ("round_origin", round_origin), ("round_seconds", round_seconds)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if round_seconds <= 0:
        raise ValueError(f"round_seconds must be positive, got {round_seconds!r}")
    if timestamp < round_origin:
        raise ValueError(f"timestamp {timestamp} is before round_origin {round_origin}")
    return int((timestamp - round_origin) // round_seconds)


def coarsen_timestamp(timestamp: float, round_origin: float, round_seconds: float) -> float:
    """``timestamp`` floored to the start of its round (same information as :func:`coarsen_to_round`)."""
    return round_origin + coarsen_to_round(timestamp, round_origin, round_seconds) * round_seconds
