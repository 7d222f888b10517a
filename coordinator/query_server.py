"""gRPC service for encrypted benchmark queries (coordinator side).

Order of checks for every request, cheapest first, nothing evaluated before all pass: message size (gRPC
limit) -> signature, timestamp window, nonce (``query_guard``) -> rate limit -> registration and reference
version -> strict validation of the context/ciphertext bytes (``query_validation``) -> budget reservation ->
evaluation in a memory-capped worker (``query_worker``). Every failure is a gRPC status with a message that
names the problem; no input can take the server down.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infrabrain.coordinator.query_guard import AuthError, Guard, GuardConfig, RateLimited, ReplayError, SiteKeys, body_digest
from infrabrain.coordinator.query_layout import block_width, blocks
from infrabrain.coordinator.query_reference import Z_SCALE, FleetReference
from infrabrain.coordinator.query_validation import (
    MAX_CONTEXT_BYTES,
    ValidationError,
    validate_public_context,
    validate_query_vector,
)
from infrabrain.coordinator.query_worker import WorkerError, WorkerPool
from infrabrain.logs import get_logger
from infrabrain.privacy.he_params import ALLOWED_PARAMS

log = get_logger("coordinator.query_server")

#: gRPC limits: a registration (public context) is the largest legitimate message.
MAX_RECEIVE_BYTES = MAX_CONTEXT_BYTES + 64 * 1024
MAX_SEND_BYTES = 1024 * 1024


class QueryServerConfig(BaseModel):
    """Configuration of the benchmark-query coordinator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    workers: int = Field(2, ge=1, le=64, description="evaluation worker processes")
    worker_memory_mb: int = Field(2048, ge=256, description="RLIMIT_AS of each worker")
    worker_timeout_s: float = Field(10.0, gt=0)
    grpc_threads: int = Field(16, ge=1, le=256)
    answer_epsilon: float = Field(1.0, gt=0, description="Laplace DP noise per answer (sensitivity 1/n_sites)")
    flood_sigma: float = Field(1e-3, ge=0, description="Gaussian flooding noise in every slot outside the blocks "
                               "and every imaginary part (circuit privacy)")
    add_noise: bool = Field(True, description="False only for accuracy measurements (bench): no Laplace, no "
                            "flooding; the zero-sum masks and the re-randomisation stay on")
    guard: GuardConfig = Field(default_factory=GuardConfig)


@dataclass
class _Registration:
    context_id: str
    params: str
    blob: bytes


class BenchmarkQueryService:
    """The servicer; methods are wired into gRPC by :func:`start_server`."""

    def __init__(self, reference: FleetReference, keys: SiteKeys, config: QueryServerConfig,
                 pool: WorkerPool, ledger_path: str | None = None) -> None:
        from infrabrain.coordinator import benchmark_pb2 as pb

        self.pb = pb
        self.cfg = config
        self.reference = reference
        self.guard = Guard(keys, config.guard, ledger_path)
        self.pool = pool
        self._regs: dict[str, _Registration] = {}
        self._lock = threading.Lock()
        slots = max(p.slots for p in ALLOWED_PARAMS.values())
        m, d = reference.n_metrics, reference.degree
        if reference.n_slots_used > min(p.slots for p in ALLOWED_PARAMS.values()):
            raise ValueError(f"reference needs {reference.n_slots_used} slots (degree {d}, {m} metrics): more than "
                             "the smallest allow-listed parameter set holds")
        self._laplace = np.zeros(slots)
        self._pct_noise = np.zeros(m)
        self._z_noise = np.zeros(m)
        for i, (ref, (pb_, zb)) in enumerate(zip(reference.metrics, blocks(m, d), strict=True)):
            if ref.available:  # DP noise on the first slot of each block: it lands in the block's sum
                n = max(1, ref.n_sites)
                self._pct_noise[i] = (1.0 / n) / config.answer_epsilon
                self._z_noise[i] = (2.0 / (n * ref.t_std)) / config.answer_epsilon / Z_SCALE
                self._laplace[pb_.start] = self._pct_noise[i]
                self._laplace[zb.start] = self._z_noise[i]
        self._layout = {
            "coeffs": reference.coefficient_vector(slots), "laplace": self._laplace,
            "blocks": tuple((b.start, b.stop) for pair in blocks(m, d) for b in pair),
            "n_used": reference.n_slots_used, "flood": config.flood_sigma}
        self.stats = {"ok": 0, "refused": 0}

    # ------------------------------------------------------------------ helpers
    def _abort(self, context, code, msg: str):
        import grpc

        with self._lock:
            self.stats["refused"] += 1
        log.info("request refused", extra={"code": code.name, "reason": msg[:200]})
        context.abort(getattr(grpc.StatusCode, code.name), msg)

    def _auth(self, request, context, method: str, *body) -> str:
        import grpc

        a = request.auth
        try:
            self.guard.authenticate(method, a.site_id, a.nonce, a.timestamp_ms, a.signature, body_digest(*body))
            self.guard.take_token(a.site_id)
        except AuthError as exc:
            self._abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except ReplayError as exc:
            self._abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except RateLimited as exc:
            self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return a.site_id

    # ------------------------------------------------------------------ RPCs
    def GetInfo(self, request, context):  # noqa: N802 - gRPC naming
        pb, ref = self.pb, self.reference
        metrics = []
        for r in ref.metrics:
            s = r.spec
            metrics.append(pb.MetricInfo(
                name=s.name, family=s.family, unit=s.unit, log10=s.log10, domain_lo=s.lo, domain_hi=s.hi,
                zoom_lo=r.zoom_lo, zoom_hi=r.zoom_hi, n_sites=r.n_sites if r.available else 0,
                epsilon=ref.aggregate.epsilon, delta=ref.aggregate.delta,
                fleet_median=s.from_t(r.median_t) if r.available else float("nan")))
        return pb.InfoReply(reference_version=ref.version, metrics=metrics, allowed_params=sorted(ALLOWED_PARAMS),
                            z_scale=Z_SCALE, budget_total=self.cfg.guard.budget,
                            answer_epsilon=self.cfg.answer_epsilon, cheb_degree=ref.degree,
                            block_width=block_width(ref.degree))

    def RegisterContext(self, request, context):  # noqa: N802
        import grpc

        site = self._auth(request, context, "RegisterContext", request.params, request.public_context)
        try:
            validate_public_context(request.public_context, request.params)
            cid = hashlib.sha256(request.params.encode() + b"\0" + request.public_context).hexdigest()[:32]
            self.pool.run(cid, request.params, request.public_context, self.reference.version, self._layout, None)
        except ValidationError as exc:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except WorkerError as exc:
            code = grpc.StatusCode.UNAVAILABLE if exc.crashed else grpc.StatusCode.INVALID_ARGUMENT
            self._abort(context, code, str(exc))
        with self._lock:
            self._regs[site] = _Registration(cid, request.params, request.public_context)
        log.info("context registered", extra={"site": site, "params": request.params})
        return self.pb.RegisterReply(context_id=cid)

    def Query(self, request, context):  # noqa: N802
        import grpc

        t0 = time.perf_counter()
        site = self._auth(request, context, "Query", request.context_id, request.reference_version,
                          request.ciphertext)
        t_auth = time.perf_counter()
        with self._lock:
            reg = self._regs.get(site)
        if reg is None or reg.context_id != request.context_id:
            self._abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"context_id {request.context_id[:40]!r} is not registered for site {site!r}")
        if request.reference_version != self.reference.version:
            self._abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"reference_version {request.reference_version[:40]!r} is stale; current is "
                        f"{self.reference.version!r} (call GetInfo)")
        try:
            blob = request.ciphertext
            validate_query_vector(blob, reg.params, self.reference.n_slots_used)
        except ValidationError as exc:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        t_valid = time.perf_counter()
        try:
            self.guard.reserve(site)
        except RateLimited as exc:
            self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            answer, eval_ms, eval_cpu_ms, prof = self.pool.run(reg.context_id, reg.params, reg.blob,
                                                               self.reference.version, self._layout, blob,
                                                               self.cfg.add_noise)
        except WorkerError as exc:
            self.guard.refund(site)
            code = grpc.StatusCode.UNAVAILABLE if exc.crashed else grpc.StatusCode.INVALID_ARGUMENT
            self._abort(context, code, str(exc))
        with self._lock:
            self.stats["ok"] += 1
        noisy = self.cfg.add_noise
        return self.pb.QueryReply(
            answer=answer, server_ms=(time.perf_counter() - t0) * 1000.0, budget_left=self.guard.budget_left(site),
            percentile_noise_std=self.percentile_noise_std if noisy else 0.0,
            z_noise_std=self.z_noise_std if noisy else 0.0,
            eval_ms=eval_ms, eval_cpu_ms=eval_cpu_ms, auth_ms=(t_auth - t0) * 1e3, validate_ms=(t_valid - t_auth) * 1e3,
            load_ms=prof["load_ms"], circuit_ms=prof["eval_ms"], serialise_ms=prof["serialise_ms"])

    @property
    def percentile_noise_std(self) -> float:
        """Largest standard deviation of the Laplace DP noise on a percentile answer (0..1)."""
        return float(np.sqrt(2) * self._pct_noise.max())

    @property
    def z_noise_std(self) -> float:
        """Largest standard deviation of the Laplace DP noise on a z-score answer."""
        return float(np.sqrt(2) * self._z_noise.max() * Z_SCALE)


@dataclass
class ServerHandle:
    """A running server: ``address`` to dial, ``stop()`` to shut it and its workers down."""

    server: object
    service: BenchmarkQueryService
    pool: WorkerPool
    address: str

    def stop(self) -> None:
        self.server.stop(grace=1).wait(5)
        self.pool.close()


def start_server(reference: FleetReference, keys: SiteKeys, config: QueryServerConfig | None = None,
                 ledger_path: str | None = None) -> ServerHandle:
    """Start the gRPC server (insecure channel on loopback by default: requests are signed end to end)."""
    import grpc

    from infrabrain.coordinator import benchmark_pb2_grpc as pbg

    cfg = config or QueryServerConfig()
    pool = WorkerPool(cfg.workers, cfg.worker_memory_mb, cfg.worker_timeout_s)
    try:
        service = BenchmarkQueryService(reference, keys, cfg, pool, ledger_path)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.grpc_threads, thread_name_prefix="bq"),
            options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                     ("grpc.max_send_message_length", MAX_SEND_BYTES)],
            maximum_concurrent_rpcs=4 * cfg.grpc_threads,
        )
        pbg.add_BenchmarkQueryServicer_to_server(_Servicer(service), server)
        port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        if port == 0:
            raise ValueError(f"cannot bind {cfg.host}:{cfg.port}")
        server.start()
    except BaseException:
        pool.close()
        raise
    log.info("benchmark query server started", extra={"address": f"{cfg.host}:{port}",
                                                      "reference": reference.version})
    return ServerHandle(server, service, pool, f"{cfg.host}:{port}")


def _servicer_base():
    from infrabrain.coordinator import benchmark_pb2_grpc as pbg

    return pbg.BenchmarkQueryServicer


class _Servicer(_servicer_base()):  # type: ignore[misc]
    """Adapter: gRPC calls into :class:`BenchmarkQueryService`, with a last-resort error guard."""

    def __init__(self, service: BenchmarkQueryService) -> None:
        self.s = service

    def _safe(self, fn, request, context):
        import grpc

        try:
            return fn(request, context)
        except Exception as exc:  # abort() raises too; re-raise those untouched
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                raise
            log.exception("unexpected error in benchmark query handler")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def GetInfo(self, request, context):  # noqa: N802
        return self._safe(self.s.GetInfo, request, context)

    def RegisterContext(self, request, context):  # noqa: N802
        return self._safe(self.s.RegisterContext, request, context)

    def Query(self, request, context):  # noqa: N802
        return self._safe(self.s.Query, request, context)
