"""Shared fixtures: a small real fleet (simulator -> site statistics -> SecAgg+ DP aggregate) and live servers."""

from __future__ import annotations

import pytest

N_SITES = 24
HOURS = 720.0
EPSILON = 8.0


@pytest.fixture(scope="session")
def fleet_stats():
    from infrabrain.coordinator.query_demo import fleet_statistics

    return fleet_statistics(N_SITES, HOURS, seed=3)


@pytest.fixture(scope="session")
def reference(fleet_stats):
    from infrabrain.coordinator.query_demo import build_reference

    return build_reference(fleet_stats, epsilon=EPSILON, seed=3)


def _server(reference, keys, **guard):
    from infrabrain.coordinator.query_guard import GuardConfig
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    cfg = QueryServerConfig(workers=1, add_noise=False, worker_memory_mb=2048, guard=GuardConfig(**guard))
    return start_server(reference, keys, cfg)


@pytest.fixture(scope="session")
def identities():
    from infrabrain.client.benchmark_query import SiteIdentity

    return {name: SiteIdentity.generate(name) for name in ("alice", "bob", "carol", "fuzzer")}


@pytest.fixture(scope="session")
def strict_server(reference, identities):
    """Budget 3 answered queries per site, default rate limit, no deliberate noise (accuracy checks)."""
    from infrabrain.coordinator.query_guard import SiteKeys

    h = _server(reference, SiteKeys({k: v.public_raw for k, v in identities.items()}), budget=3)
    yield h
    h.stop()


@pytest.fixture(scope="session")
def open_server(reference, identities):
    """No practical rate limit or budget: the fuzz target."""
    from infrabrain.coordinator.query_guard import SiteKeys

    h = _server(reference, SiteKeys({k: v.public_raw for k, v in identities.items()}), budget=10**6,
                rate_per_s=1e6, burst=10**6)
    yield h
    h.stop()


# ----------------------------------------------------------------- protobuf crafting helpers (as a fixture)
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(fno: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(fno << 3 | 2) + varint(len(payload)) + payload


def with_size_field(vector_blob: bytes, size: int) -> bytes:
    """Rewrite a TenSEAL CKKSVectorProto's ``sizes`` (what a malicious site could send)."""
    from infrabrain.coordinator.query_validation import parse_fields

    f = parse_fields(vector_blob, "v")
    out = ld(1, varint(size)) + ld(2, f[2][0])
    if 3 in f:
        out += varint(3 << 3 | 1) + int(f[3][0]).to_bytes(8, "little")
    return out


@pytest.fixture(scope="session")
def proto():
    """``varint``, ``ld`` and ``with_size_field`` for crafting raw/forged messages."""
    from types import SimpleNamespace

    return SimpleNamespace(varint=varint, ld=ld, with_size_field=with_size_field)
