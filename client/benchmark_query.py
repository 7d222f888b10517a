"""Site side of encrypted benchmark queries: keys, encryption, decryption, the sentence an operator reads.

The site's CKKS secret key and every decrypted value stay in this process. What leaves: the public context
(parameters + public key, once) and one ciphertext per query, both signed with the site's Ed25519 key. Per
metric the query holds a block ``[T_0(u)..T_D(u), 1, t]`` (``infrabrain.coordinator.query_layout``): ``u`` is the
statistic on the reference polynomial's [-1, 1], ``T_k`` the Chebyshev polynomials (computed here, in
plaintext), ``t`` the statistic on the public domain's [-1, 1]. The coordinator multiplies slot-wise by its
coefficients and masks each block; the site decrypts and sums each block. Metrics the site has no value for are
sent as zero blocks and their answers are ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infrabrain.coordinator.query_guard import NONCE_BYTES, body_digest, signed_bytes
from infrabrain.privacy.he_params import DEFAULT_PARAMS, make_context, public_context_bytes
from infrabrain.privacy.secure_fleet_stats import MetricSpec

#: gRPC client limits (mirror the server's)
MAX_SEND_BYTES = 1024 * 1024 + 64 * 1024
MAX_RECEIVE_BYTES = 1024 * 1024


@dataclass
class MetricAnswer:
    """One decrypted answer, for the site's eyes only."""

    metric: str
    family: str
    unit: str
    value: float
    percentile: float  # 0..100
    z_score: float
    n_sites: int
    fleet_median: float
    epsilon: float
    abnormal: bool

    def sentence(self) -> str:
        """e.g. "Your H100 failure rate 3.1e-5 per GPU-hour is at the 93rd percentile of 48 sites (...)"."""
        label = _LABELS.get(self.family, self.family.replace("_", " "))
        sub = self.metric.split(".", 1)[1] if "." in self.metric else ""
        if self.family == "gpu_failure_rate":
            subject = f"{sub} failure rate"
        elif sub:
            subject = f"{sub} {label}"
        else:
            subject = label
        pct = int(round(min(100.0, max(0.0, self.percentile))))
        verdict = "abnormal" if self.abnormal else "normal"
        return (f"Your {subject} {self.value:.2g} {self.unit} is at the {_ordinal(pct)} percentile of "
                f"{self.n_sites} sites (fleet median {self.fleet_median:.2g}): {verdict}")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"sentence": self.sentence()}


_LABELS = {"xid_rate": "XID rate", "thermal_violation_hours": "thermal-violation time",
           "repair_time_hours": "mean repair time"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass
class SiteIdentity:
    """A site's long-term signing key (Ed25519); the coordinator enrols ``public_raw``."""

    site_id: str
    signing_key: Any = field(repr=False)

    @classmethod
    def generate(cls, site_id: str) -> SiteIdentity:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(site_id, Ed25519PrivateKey.generate())

    @property
    def public_raw(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def auth(self, pb, method: str, *body, nonce: bytes | None = None, timestamp_ms: int | None = None):
        """A signed ``Auth`` message for ``method`` over ``body``."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        sig = self.signing_key.sign(signed_bytes(method, self.site_id, nonce, ts, body_digest(*body)))
        return pb.Auth(site_id=self.site_id, nonce=nonce, timestamp_ms=ts, signature=sig)


class BenchmarkClient:
    """Talks to the coordinator: fetch the public reference info, register once, ask encrypted queries."""

    def __init__(self, address: str, identity: SiteIdentity, params: str = DEFAULT_PARAMS,
                 timeout_s: float = 30.0) -> None:
        import grpc

        from infrabrain.coordinator import benchmark_pb2 as pb
        from infrabrain.coordinator import benchmark_pb2_grpc as pbg

        self.pb = pb
        self.identity = identity
        self.params = params
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
        self.stub = pbg.BenchmarkQueryStub(self.channel)
        self.ctx = make_context(params)  # the secret key lives here and nowhere else
        self.info = None
        self.context_id: str | None = None
        self.last_query_bytes = 0
        self.last_answer_bytes = 0
        self.last_server_ms = 0.0
        self.last_eval_cpu_ms = 0.0
        self.last_reply = None

    def close(self) -> None:
        self.channel.close()

    def fetch_info(self):
        self.info = self.stub.GetInfo(self.pb.InfoRequest(), timeout=self.timeout_s)
        return self.info

    def register(self) -> str:
        """Send the public context (public key only: no secret, relinearisation or Galois keys); returns its id."""
        blob = public_context_bytes(self.ctx)
        req = self.pb.RegisterRequest(auth=self.identity.auth(self.pb, "RegisterContext", self.params, blob),
                                      params=self.params, public_context=blob)
        self.context_id = self.stub.RegisterContext(req, timeout=self.timeout_s).context_id
        return self.context_id

    def encode_inputs(self, stats: Mapping[str, float | None]) -> np.ndarray:
        """The plaintext query vector: per metric ``[T_0(u)..T_D(u), 1, t]`` or zeros (stays on site)."""
        from infrabrain.coordinator.query_layout import encode_site_inputs

        info = self.info or self.fetch_info()
        m = len(info.metrics)
        u, t, present = np.zeros(m), np.zeros(m), np.zeros(m, dtype=bool)
        for i, mi in enumerate(info.metrics):
            v = stats.get(mi.name)
            if v is None:
                continue
            t[i] = _spec(mi).to_t(float(v))
            mid, half = (mi.zoom_hi + mi.zoom_lo) / 2.0, (mi.zoom_hi - mi.zoom_lo) / 2.0
            u[i] = min(1.0, max(-1.0, (t[i] - mid) / half))
            present[i] = True
        return encode_site_inputs(u, t, present, int(info.cheb_degree))

    def query_vector(self, vec: np.ndarray) -> np.ndarray:
        """Encrypt ``vec``, ask, decrypt: returns the raw decrypted slots (masked; only block sums mean anything)."""
        import tenseal as ts

        from infrabrain.coordinator.query_eval import ciphertext_from_bytes

        info = self.info or self.fetch_info()
        if self.context_id is None:
            self.register()
        blob = ts.ckks_vector(self.ctx, np.asarray(vec, dtype=np.float64).tolist()).serialize()
        req = self.pb.QueryRequest(
            auth=self.identity.auth(self.pb, "Query", self.context_id, info.reference_version, blob),
            context_id=self.context_id, reference_version=info.reference_version, ciphertext=blob)
        reply = self.stub.Query(req, timeout=self.timeout_s)
        self.last_query_bytes, self.last_answer_bytes = req.ByteSize(), len(reply.answer)
        self.last_server_ms = reply.server_ms
        self.last_eval_cpu_ms = reply.eval_cpu_ms
        self.last_reply = reply
        return self.decrypt(ciphertext_from_bytes(self.ctx.seal_context().data, reply.answer), len(vec))

    def query_sums(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ask with ``vec``; return per metric (percentile 0..1, z / z_scale): the sums of the answer's blocks."""
        from infrabrain.coordinator.query_layout import block_sums

        info = self.info or self.fetch_info()
        return block_sums(self.query_vector(vec), len(info.metrics), int(info.cheb_degree))

    def decrypt(self, ct, n: int) -> np.ndarray:
        from tenseal import sealapi

        sc = self.ctx.seal_context().data
        pt = sealapi.Plaintext()
        sealapi.Decryptor(sc, self.ctx.secret_key().data).decrypt(ct, pt)
        return np.asarray(sealapi.CKKSEncoder(sc).decode_double(pt)[:n])

    def query(self, stats: Mapping[str, float | None], threshold_pct: float = 90.0) -> list[MetricAnswer]:
        """Ask for every metric the site has a value for; decrypt; return the answers."""
        info = self.info or self.fetch_info()
        pcts, zs = self.query_sums(self.encode_inputs(stats))
        answers = []
        for i, mi in enumerate(info.metrics):
            v = stats.get(mi.name)
            if v is None or mi.n_sites == 0:
                continue
            pct = 100.0 * min(1.0, max(0.0, float(pcts[i])))
            z = float(zs[i]) * info.z_scale
            answers.append(MetricAnswer(mi.name, mi.family, mi.unit, float(v), pct, z, int(mi.n_sites),
                                        float(mi.fleet_median), float(mi.epsilon),
                                        abnormal=pct >= threshold_pct))  # every metric here: higher is worse
        return answers


def _spec(mi) -> MetricSpec:
    return MetricSpec(name=mi.name, family=mi.family, unit=mi.unit, log10=mi.log10, lo=mi.domain_lo,
                      hi=mi.domain_hi)
