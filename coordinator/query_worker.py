"""Evaluation workers: separate processes with a capped address space that hold site contexts and run circuits.

A malformed SEAL stream that slips past the cheap validation, or a pathological context, can at worst exhaust
the worker's ``RLIMIT_AS`` or crash it; the gRPC server notices (EOF or timeout), restarts the worker and
answers with an error. Messages between the server and its workers are built by the server (pickle over a
private pipe); the untrusted bytes inside are only ever parsed by TenSEAL/SEAL in the worker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from infrabrain.logs import get_logger

log = get_logger("coordinator.query_worker")

MAX_CONTEXTS_PER_WORKER = 128  # each ~1.8 MB resident at N=4096 (SEAL context tables + public key)


class WorkerError(RuntimeError):
    """The worker refused the input or failed; the message is safe to return to the site.

    ``crashed`` is True when the worker process died or hung (it has been restarted; a retry can succeed).
    """

    def __init__(self, message: str, crashed: bool = False) -> None:
        super().__init__(message)
        self.crashed = crashed


def _set_memory_cap(cap_bytes: int) -> None:
    import resource

    if cap_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))


def _load_context(blob: bytes, params_name: str):
    """Deserialise a context (already validated cheaply) and re-check what SEAL itself reports."""
    import tenseal as ts
    from tenseal import sealapi  # noqa: F401 - registers the SEAL types (Modulus, ...) with pybind

    from infrabrain.privacy.he_params import get_params

    p = get_params(params_name)
    ctx = ts.context_from(blob, n_threads=1)
    if not ctx.is_public() or ctx.has_secret_key():
        raise WorkerError("context: holds a secret key")
    if ctx.has_galois_keys():
        raise WorkerError("context: holds Galois keys")
    if ctx.has_relin_keys():
        raise WorkerError("context: holds relinearisation keys (the inner-product circuit needs none)")
    if not ctx.has_public_key():
        raise WorkerError("context: public key missing")
    parms = ctx.seal_context().data.key_context_data().parms()
    if parms.poly_modulus_degree() != p.poly_modulus_degree:
        raise WorkerError(f"context: N={parms.poly_modulus_degree()} is not {p.poly_modulus_degree}")
    bits = [m.bit_count() for m in parms.coeff_modulus()]
    if tuple(bits) != p.coeff_mod_bit_sizes:
        raise WorkerError(f"context: coefficient moduli {bits} are not {list(p.coeff_mod_bit_sizes)}")
    sc = ctx.seal_context().data
    return {"ctx": ctx, "seal": sc, "pk": ctx.public_key().data, "params": p}


def _worker_main(conn, cap_bytes: int) -> None:  # pragma: no cover - runs in the child process
    _set_memory_cap(cap_bytes)
    import tenseal as ts

    from infrabrain.coordinator.query_eval import CircuitPlan, NoiseSpec, ciphertext_to_bytes, evaluate, prepare_spare
    from infrabrain.privacy.he_params import make_context

    contexts: OrderedDict[str, dict] = OrderedDict()
    plans: dict[tuple[str, str], Any] = {}
    ref_ctx: dict[str, Any] = {}
    layouts: dict[str, dict] = {}  # version -> {"coeffs", "laplace", "blocks", "flood"}
    rng = np.random.default_rng()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "stop":
                conn.send(("ok", None))
                return
            if op == "layout":  # ("layout", version, {"coeffs", "laplace", "blocks", "flood"})
                layouts[msg[1]] = msg[2]
                conn.send(("ok", None))
            elif op == "ctx":  # ("ctx", context_id, params, blob)
                info = _load_context(msg[3], msg[2])
                contexts[msg[1]] = info
                while len(contexts) > MAX_CONTEXTS_PER_WORKER:
                    contexts.popitem(last=False)
                conn.send(("ok", None))
            elif op == "query":  # ("query", context_id, version, blob, noisy)
                t0, c0 = time.perf_counter(), time.process_time()
                _, cid, version, blob, noisy = msg
                info = contexts.get(cid)
                if info is None:
                    conn.send(("missing", "context"))
                    continue
                contexts.move_to_end(cid)
                p = info["params"]
                lay = layouts[version]
                key = (version, p.name)
                if key not in plans:
                    if p.name not in ref_ctx:
                        ref_ctx[p.name] = make_context(p.name)
                    plans[key] = CircuitPlan(ref_ctx[p.name].seal_context().data, lay["coeffs"][: p.slots],
                                             p.scale, p.coeff_scale)
                plan = plans[key]
                t_load = time.perf_counter()
                try:
                    vec = ts.ckks_vector_from(info["ctx"], blob)
                    cts = vec.ciphertext()
                    ct = cts[0] if isinstance(cts, list) else cts
                except Exception as exc:  # SEAL refuses the stream
                    raise WorkerError(f"query: ciphertext does not load under the registered context ({exc})")
                if ct.size() != 2 or not ct.is_ntt_form():
                    raise WorkerError(f"query: ciphertext has {ct.size()} polynomials (expected 2) or is not NTT")
                if ct.parms_id() != plan.level:
                    raise WorkerError("query: ciphertext is not at the data level of the modulus chain")
                if ct.scale != p.scale:
                    raise WorkerError(f"query: ciphertext scale {ct.scale!r} is not 2^{p.scale_bits}")
                noise_key = (version, bool(noisy))
                noise = NoiseSpec(lay["laplace"][: p.slots] if noisy else np.zeros(p.slots), lay["blocks"],
                                  p.mask_sigma(lay["n_used"]), lay["flood"] if noisy else 0.0)
                spare = info.pop("spare", None)
                t_eval = time.perf_counter()
                if spare is not None and spare[0] != noise_key:
                    spare = None
                out = evaluate(plan, ct, info["pk"], noise, rng, spare[1] if spare else None)
                t_ser = time.perf_counter()
                answer = ciphertext_to_bytes(out)
                t_end = time.perf_counter()
                prof = {"load_ms": (t_eval - t_load) * 1e3, "eval_ms": (t_ser - t_eval) * 1e3,
                        "serialise_ms": (t_end - t_ser) * 1e3, "spare_hit": spare is not None}
                conn.send(("ok", (answer, (t_end - t0) * 1e3, (time.process_time() - c0) * 1e3, prof)))
                # idle time: get the next answer's zero encryption and noise plaintext ready
                info["spare"] = (noise_key, prepare_spare(plan, info["pk"], noise, rng))
            else:
                conn.send(("err", f"unknown worker op {op!r}"))
        except WorkerError as exc:
            conn.send(("err", str(exc)))
        except MemoryError:
            conn.send(("err", "evaluation refused: worker memory cap reached"))
        except Exception as exc:  # noqa: BLE001 - a worker never dies on bad input
            conn.send(("err", f"{type(exc).__name__}: {exc}"[:500]))


@dataclass
class _Handle:
    idx: int
    proc: Any
    conn: Any
    contexts: set
    versions: set


class WorkerPool:
    """A fixed pool of capped worker processes; each call takes a free worker, restarting dead ones."""

    def __init__(self, n_workers: int = 2, memory_cap_mb: int = 2048, timeout_s: float = 10.0) -> None:
        self.cap = int(memory_cap_mb) * 1024 * 1024
        self.timeout_s = timeout_s
        self._free: queue.Queue[_Handle] = queue.Queue()
        self._all: list[_Handle] = []
        self._lock = threading.Lock()
        self.restarts = 0
        for i in range(n_workers):
            h = self._spawn(i)
            self._all.append(h)
            self._free.put(h)

    def _spawn(self, idx: int) -> _Handle:
        # a fresh interpreter (not fork: the gRPC server's threads; not multiprocessing's spawn: it re-imports
        # the caller's __main__) talking over an inherited socketpair
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        proc = subprocess.Popen([sys.executable, "-m", "infrabrain.coordinator.query_worker", str(fd), str(self.cap)],
                                pass_fds=(fd,), stdin=subprocess.DEVNULL)
        child_sock.close()
        conn = Connection(parent_sock.detach())
        return _Handle(idx, _Proc(proc), conn, set(), set())

    def _restart(self, h: _Handle) -> _Handle:
        with self._lock:
            self.restarts += 1
        try:
            h.proc.kill()
            h.proc.join(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        new = self._spawn(h.idx)
        self._all[h.idx] = new
        log.warning("query worker restarted", extra={"worker": h.idx, "exitcode": h.proc.exitcode})
        return new

    def _call(self, h: _Handle, msg: tuple, timeout: float | None = None):
        try:
            h.conn.send(msg)
            if not h.conn.poll(timeout or self.timeout_s):
                raise TimeoutError
            return h.conn.recv()
        except (EOFError, OSError, TimeoutError, BrokenPipeError) as exc:
            raise _Dead(type(exc).__name__) from None

    def pids(self) -> list[int]:
        return [h.proc.pid for h in self._all]

    def run(self, context_id: str, params: str, context_blob: bytes, version: str, layout: dict[str, Any],
            blob: bytes | None, noisy: bool = True):
        """Load (if needed) the context and layout on a worker, then evaluate ``blob`` (None: load only).

        ``layout``: ``coeffs`` [slots], ``laplace`` [slots], ``blocks`` ((lo, hi), ...), ``n_used``, ``flood``
        (built by the server once per reference). Returns (answer bytes, wall ms, CPU ms, profile dict).
        """
        h = self._free.get()
        try:
            for _attempt in range(2):
                try:
                    if context_id not in h.contexts:
                        st, val = self._call(h, ("ctx", context_id, params, context_blob))
                        if st != "ok":
                            raise WorkerError(val)
                        h.contexts.add(context_id)
                    if blob is None:
                        return None
                    if version not in h.versions:
                        st, val = self._call(h, ("layout", version, layout))
                        h.versions.add(version)
                    st, val = self._call(h, ("query", context_id, version, blob, bool(noisy)))
                    if st == "missing":  # evicted from the worker's LRU
                        h.contexts.discard(context_id)
                        continue
                    if st != "ok":
                        raise WorkerError(val)
                    return val
                except _Dead as dead:
                    h = self._restart(h)
                    raise WorkerError(f"evaluation worker failed ({dead}); it was restarted, retry",
                                      crashed=True) from None
            raise WorkerError("context could not be kept loaded")
        finally:
            self._free.put(h)

    def close(self) -> None:
        for h in self._all:
            try:
                h.conn.send(("stop",))
                h.proc.join(timeout=2)
            except Exception:  # noqa: BLE001
                pass
            if h.proc.is_alive():
                h.proc.kill()
                h.proc.join(timeout=2)


class _Dead(Exception):
    pass


class _Proc:
    """Adapter giving a ``subprocess.Popen`` the bits of the ``multiprocessing.Process`` API used here."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid

    @property
    def exitcode(self):
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def worker_rss_bytes(pids: list[int]) -> int:
    """Resident memory of the worker processes (for tests and the benchmark)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


if __name__ == "__main__":  # pragma: no cover - the worker process entry point
    _worker_main(Connection(int(sys.argv[1])), int(sys.argv[2]))
