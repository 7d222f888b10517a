"""The gRPC service end to end on loopback: correctness against plaintext, and every refusal the issue names."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tenseal as ts

from infrabrain.client.benchmark_query import BenchmarkClient


@pytest.fixture(scope="module")
def alice(strict_server, identities):
    c = BenchmarkClient(strict_server.address, identities["alice"])
    c.register()
    yield c
    c.close()


def _code(exc_info) -> grpc.StatusCode:
    return exc_info.value.code()


def test_percentile_matches_plaintext(open_server, identities, reference, fleet_stats):
    """HE answers (noise off) vs the plaintext CDF of the stored reference, over a grid of inputs."""
    c = BenchmarkClient(open_server.address, identities["carol"])
    try:
        c.register()
        m = reference.n_metrics
        avail = [i for i, r in enumerate(reference.metrics) if r.available]
        worst_he, worst_plain = 0.0, 0.0
        for t in np.linspace(-1.0, 1.0, 5):
            vec = np.zeros(2 * m)
            for i in avail:
                vec[i], vec[m + i] = reference.metrics[i].to_u(t), t
            out = c.query_vector(vec)
            for i in avail:
                r = reference.metrics[i]
                worst_he = max(worst_he, abs(out[i] - float(r.poly(vec[i]))))
                worst_plain = max(worst_plain, abs(out[i] - float(r.cdf(t))))
                z = out[m + i] * c.info.z_scale
                assert z == pytest.approx((t - r.t_mean) / r.t_std, abs=1e-3)
        assert worst_he < 1e-4, worst_he  # CKKS error of the circuit
        assert worst_plain <= 0.01, worst_plain  # + Chebyshev fit error
        # the site-facing API: one query, answers for every metric it has
        answers = c.query(fleet_stats[0])
        assert answers and all(0.0 <= a.percentile <= 100.0 for a in answers)
        assert "percentile of" in answers[0].sentence()
    finally:
        c.close()


def test_packed_probes_get_one_answer_per_metric(open_server, identities, reference, proto):
    """A query whose ciphertext fills all 4096 slots (size field forged to 2M) gets zeros outside 2M slots."""
    c = BenchmarkClient(open_server.address, identities["carol"])
    try:
        c.register()
        info = c.fetch_info()
        probes = np.linspace(-1, 1, 4096)
        blob = proto.with_size_field(ts.ckks_vector(c.ctx, probes.tolist()).serialize(), 2 * reference.n_metrics)
        req = c.pb.QueryRequest(auth=c.identity.auth(c.pb, "Query", c.context_id, info.reference_version, blob),
                                context_id=c.context_id, reference_version=info.reference_version, ciphertext=blob)
        reply = c.stub.Query(req)
        from infrabrain.coordinator.query_eval import ciphertext_from_bytes

        out = c.decrypt(ciphertext_from_bytes(c.ctx.seal_context().data, reply.answer), 4096)
        assert np.max(np.abs(out[2 * reference.n_metrics :])) < 1e-3  # flooding noise only (noise is off here)
    finally:
        c.close()


def test_replayed_nonce_is_refused(alice):
    info = alice.fetch_info()
    blob = ts.ckks_vector(alice.ctx, [0.0] * (2 * len(info.metrics))).serialize()
    auth = alice.identity.auth(alice.pb, "Query", alice.context_id, info.reference_version, blob)
    req = alice.pb.QueryRequest(auth=auth, context_id=alice.context_id, reference_version=info.reference_version,
                                ciphertext=blob)
    alice.stub.Query(req)
    with pytest.raises(grpc.RpcError) as e:
        alice.stub.Query(req)
    assert _code(e) == grpc.StatusCode.PERMISSION_DENIED and "replayed nonce" in e.value.details()


def test_over_budget_is_refused(strict_server, identities):
    c = BenchmarkClient(strict_server.address, identities["bob"])
    try:
        c.register()
        vec = np.zeros(2 * len(c.fetch_info().metrics))
        for _ in range(3):
            c.query_vector(vec)
        with pytest.raises(grpc.RpcError) as e:
            c.query_vector(vec)
        assert _code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED and "budget" in e.value.details()
    finally:
        c.close()


def test_secret_key_context_is_refused_over_grpc(alice):
    blob = alice.ctx.serialize(save_secret_key=True)
    req = alice.pb.RegisterRequest(auth=alice.identity.auth(alice.pb, "RegisterContext", alice.params, blob),
                                   params=alice.params, public_context=blob)
    with pytest.raises(grpc.RpcError) as e:
        alice.stub.RegisterContext(req)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "secret key" in e.value.details()


def test_off_list_params_are_refused_over_grpc(alice):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_relin_keys()
    blob = ctx.serialize(save_secret_key=False, save_galois_keys=False)
    for params in ("ckks-n8192-d3", "ckks-n16384-huge"):
        req = alice.pb.RegisterRequest(auth=alice.identity.auth(alice.pb, "RegisterContext", params, blob),
                                       params=params, public_context=blob)
        with pytest.raises(grpc.RpcError) as e:
            alice.stub.RegisterContext(req)
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "allow-list" in e.value.details()


def test_bad_signature_stale_timestamp_and_unknown_site(alice, identities):
    from infrabrain.client.benchmark_query import SiteIdentity

    info = alice.fetch_info()
    blob = ts.ckks_vector(alice.ctx, [0.0] * (2 * len(info.metrics))).serialize()

    def send(auth):
        req = alice.pb.QueryRequest(auth=auth, context_id=alice.context_id,
                                    reference_version=info.reference_version, ciphertext=blob)
        with pytest.raises(grpc.RpcError) as e:
            alice.stub.Query(req)
        return e

    body = (alice.context_id, info.reference_version, blob)
    forged = identities["bob"].auth(alice.pb, "Query", *body)
    forged.site_id = "alice"
    e = send(forged)
    assert _code(e) == grpc.StatusCode.UNAUTHENTICATED and "does not verify" in e.value.details()
    e = send(alice.identity.auth(alice.pb, "Query", *body, timestamp_ms=1_000))
    assert _code(e) == grpc.StatusCode.UNAUTHENTICATED and "window" in e.value.details()
    e = send(SiteIdentity.generate("mallory").auth(alice.pb, "Query", *body))
    assert _code(e) == grpc.StatusCode.UNAUTHENTICATED and "unknown site" in e.value.details()
    # signature over a different ciphertext
    e = send(alice.identity.auth(alice.pb, "Query", alice.context_id, info.reference_version, blob + b"x"))
    assert _code(e) == grpc.StatusCode.UNAUTHENTICATED


def test_stale_reference_version_is_refused(alice):
    info = alice.fetch_info()
    blob = ts.ckks_vector(alice.ctx, [0.0] * (2 * len(info.metrics))).serialize()
    req = alice.pb.QueryRequest(auth=alice.identity.auth(alice.pb, "Query", alice.context_id, "old", blob),
                                context_id=alice.context_id, reference_version="old", ciphertext=blob)
    with pytest.raises(grpc.RpcError) as e:
        alice.stub.Query(req)
    assert _code(e) == grpc.StatusCode.FAILED_PRECONDITION and "stale" in e.value.details()


def test_oversized_message_is_refused(alice):
    from infrabrain.coordinator.query_server import MAX_RECEIVE_BYTES

    blob = b"\0" * (MAX_RECEIVE_BYTES + 10)
    req = alice.pb.RegisterRequest(auth=alice.identity.auth(alice.pb, "RegisterContext", alice.params, blob),
                                   params=alice.params, public_context=blob)
    with pytest.raises(grpc.RpcError) as e:
        alice.stub.RegisterContext(req)
    assert _code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_noise_is_added_when_enabled(reference, identities):
    """With noise on, two identical queries decrypt to different answers around the true one."""
    from infrabrain.coordinator.query_guard import GuardConfig, SiteKeys
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    h = start_server(reference, SiteKeys({"alice": identities["alice"].public_raw}),
                     QueryServerConfig(workers=1, guard=GuardConfig(budget=5)))
    try:
        c = BenchmarkClient(h.address, identities["alice"])
        m = reference.n_metrics
        i = reference.index("gpu_failure_rate.H100")
        vec = np.zeros(2 * m)
        a, b = c.query_vector(vec)[i], c.query_vector(vec)[i]
        assert a != b and abs(a - float(reference.metrics[i].poly(0.0))) < 1.0
        c.close()
    finally:
        h.stop()


def test_killed_worker_is_restarted_and_the_server_keeps_answering(reference, identities):
    import os
    import signal

    from infrabrain.coordinator.query_guard import GuardConfig, SiteKeys
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    h = start_server(reference, SiteKeys({"alice": identities["alice"].public_raw}),
                     QueryServerConfig(workers=1, add_noise=False, guard=GuardConfig(budget=5)))
    try:
        c = BenchmarkClient(h.address, identities["alice"])
        vec = np.zeros(2 * reference.n_metrics)
        c.query_vector(vec)
        os.kill(h.pool.pids()[0], signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as e:
            c.query_vector(vec)
        assert _code(e) == grpc.StatusCode.UNAVAILABLE and "restarted" in e.value.details()
        i = reference.index("gpu_failure_rate.H100")
        assert abs(c.query_vector(vec)[i] - float(reference.metrics[i].poly(0.0))) < 1e-3
        assert h.pool.restarts == 1 and h.service.guard.budget_left("alice") == 3  # the failed one was refunded
        c.close()
    finally:
        h.stop()
