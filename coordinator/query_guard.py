"""Abuse resistance for benchmark queries: signed requests, replay protection, rate limit, query budget.

Each site holds an Ed25519 key; the coordinator knows the public halves (enrolment). A request carries
``site_id``, a 16-byte nonce, a millisecond timestamp and a signature over
``method | site_id | nonce | timestamp | sha256(body)``. A request is refused when the site is unknown, the
signature does not verify, the timestamp is outside the window, or the nonce was already seen within it.
Authenticated requests then pass a per-site token bucket (rate) and, for answered queries, a per-site budget
that is charged only when an answer is returned (each answer spends ``answer_epsilon``).
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infrabrain.atomic import atomic_write_text

NONCE_BYTES = 16
SIGNATURE_BYTES = 64


class AuthError(PermissionError):
    """Authentication failed (unknown site, bad signature, stale timestamp)."""


class ReplayError(PermissionError):
    """The nonce was already used."""


class RateLimited(RuntimeError):
    """Too many requests (rate) or no budget left."""


class GuardConfig(BaseModel):
    """Limits applied to every site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(60.0, gt=0, description="accepted clock skew and nonce memory")
    rate_per_s: float = Field(20.0, gt=0, description="sustained requests per second per site")
    burst: int = Field(40, ge=1, description="token bucket size")
    budget: int = Field(100, ge=0, description="answered queries per site (each spends answer_epsilon)")
    max_nonces: int = Field(200_000, ge=100, description="replay cache bound; the oldest are evicted")


def signed_bytes(method: str, site_id: str, nonce: bytes, timestamp_ms: int, body_digest: bytes) -> bytes:
    """The exact bytes a site signs (length-prefixed, so fields cannot be shifted into each other)."""
    parts = [method.encode(), site_id.encode(), nonce, struct.pack(">q", timestamp_ms), body_digest]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def body_digest(*fields: bytes | str) -> bytes:
    """SHA-256 over the length-prefixed body fields of a request."""
    h = hashlib.sha256()
    for f in fields:
        b = f.encode() if isinstance(f, str) else f
        h.update(struct.pack(">I", len(b)) + b)
    return h.digest()


class SiteKeys:
    """Enrolled sites: ``site_id`` -> Ed25519 public key (raw 32 bytes)."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self._keys = {sid: Ed25519PublicKey.from_public_bytes(k) for sid, k in (keys or {}).items()}

    def enrol(self, site_id: str, public_key_raw: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if not site_id or len(site_id) > 128:
            raise ValueError(f"site_id {site_id!r} must be 1..128 characters")
        self._keys[site_id] = Ed25519PublicKey.from_public_bytes(public_key_raw)

    def verify(self, site_id: str, message: bytes, signature: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        key = self._keys.get(site_id)
        if key is None:
            raise AuthError(f"unknown site_id {site_id[:64]!r}")
        if len(signature) != SIGNATURE_BYTES:
            raise AuthError(f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise AuthError(f"signature of site {site_id!r} does not verify") from None


class Guard:
    """Thread-safe authentication, replay, rate and budget checks."""

    def __init__(self, keys: SiteKeys, config: GuardConfig | None = None, ledger_path: str | Path | None = None):
        self.keys = keys
        self.cfg = config or GuardConfig()
        self._lock = threading.Lock()
        self._nonces: OrderedDict[bytes, float] = OrderedDict()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._ledger_path = Path(ledger_path) if ledger_path else None
        self._spent: dict[str, int] = {}
        if self._ledger_path and self._ledger_path.exists():
            try:
                self._spent = {str(k): int(v) for k, v in json.loads(self._ledger_path.read_text()).items()}
            except (OSError, ValueError) as exc:
                raise ValueError(f"query ledger {str(self._ledger_path)!r} is unreadable: {exc}") from exc

    def authenticate(self, method: str, site_id: str, nonce: bytes, timestamp_ms: int, signature: bytes,
                     digest: bytes, now: float | None = None) -> None:
        """Verify signature, timestamp window and nonce freshness (in that order); record the nonce."""
        now = time.time() if now is None else now
        if len(nonce) != NONCE_BYTES:
            raise AuthError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
        self.keys.verify(site_id, signed_bytes(method, site_id, nonce, timestamp_ms, digest), signature)
        if abs(now - timestamp_ms / 1000.0) > self.cfg.window_s:
            raise AuthError(f"timestamp {timestamp_ms} is outside the {self.cfg.window_s:.0f} s window")
        key = hashlib.sha256(site_id.encode() + b"\0" + nonce).digest()
        with self._lock:
            while self._nonces:
                oldest, t = next(iter(self._nonces.items()))
                if now - t <= 2 * self.cfg.window_s and len(self._nonces) < self.cfg.max_nonces:
                    break
                self._nonces.popitem(last=False)
            if key in self._nonces:
                raise ReplayError(f"replayed nonce {nonce.hex()} from site {site_id!r}")
            self._nonces[key] = now

    def take_token(self, site_id: str, now: float | None = None) -> None:
        """Token bucket per site; raises ``RateLimited`` when empty."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(site_id, (float(self.cfg.burst), now))
            tokens = min(float(self.cfg.burst), tokens + (now - last) * self.cfg.rate_per_s)
            if tokens < 1.0:
                self._buckets[site_id] = (tokens, now)
                raise RateLimited(f"site {site_id!r} exceeds {self.cfg.rate_per_s:g} requests/s")
            self._buckets[site_id] = (tokens - 1.0, now)

    def budget_left(self, site_id: str) -> int:
        with self._lock:
            return max(0, self.cfg.budget - self._spent.get(site_id, 0))

    def reserve(self, site_id: str) -> None:
        """Reserve one answered query from the budget (refund with ``refund`` if no answer goes out)."""
        with self._lock:
            spent = self._spent.get(site_id, 0)
            if spent >= self.cfg.budget:
                raise RateLimited(f"site {site_id!r} has used its query budget of {self.cfg.budget}")
            self._spent[site_id] = spent + 1
            self._persist()

    def refund(self, site_id: str) -> None:
        with self._lock:
            self._spent[site_id] = max(0, self._spent.get(site_id, 0) - 1)
            self._persist()

    def _persist(self) -> None:
        if self._ledger_path:
            atomic_write_text(self._ledger_path, json.dumps(self._spent, sort_keys=True))
