"""Inspection of every reply the coordinator receives, before anything is aggregated.

A site may send back only what the protocol allows: for training one ArrayRecord whose arrays have exactly the
global model's keys, shapes and dtypes (numpy serialisation, never pickle; finite values) and one MetricRecord with
allow-listed keys (including the DP accounting); for evaluation one MetricRecord with allow-listed keys. No
ConfigRecords, no strings, nothing else: that is how telemetry or identifiers would leak. The Flower-level checks
(record types, serialisation, decoding) are here; the content rules are the privacy area's
:class:`infrabrain.privacy.boundary.BoundarySchema`, the same schema the site applies before sending. A reply that fails is rejected for this round, logged with
the site's pseudonym, never aggregated, and the federation carries on. Each decision is appended to an audit log
(JSON lines) so a test or an auditor can check what the coordinator saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.logs import get_logger

log = get_logger("coordinator.inspection")

from infrabrain.privacy.boundary import EVAL_METRIC_KEYS, TRAIN_METRIC_KEYS, BoundarySchema
from infrabrain.privacy.boundary import ArraySpec as BoundaryArraySpec


@dataclass(frozen=True)
class ArraySpec:
    """Expected key, shape and dtype of one model array."""

    key: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Inspection:
    """Outcome of inspecting one round's replies."""

    accepted: list[Any] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (pseudonym, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # error replies (site could not answer)


def model_spec(arrays: Any) -> list[ArraySpec]:
    """Expected specs from the current global ArrayRecord (key order preserved)."""
    return [ArraySpec(k, tuple(int(d) for d in a.shape), str(a.dtype)) for k, a in arrays.items()]


def site_pseudonym(node_id: int, salt: str = "") -> str:
    """A short stable pseudonym for a SuperNode id in coordinator logs (the id itself is never logged)."""
    digest = hashlib.sha256(f"{salt}:{int(node_id)}".encode()).hexdigest()
    return f"site-{digest[:10]}"


def _decode_arrays(arrays: Any, spec: Sequence[ArraySpec]) -> tuple[str | None, dict[str, np.ndarray]]:
    keys = list(arrays.keys())
    expected = [s.key for s in spec]
    out: dict[str, np.ndarray] = {}
    if keys != expected:
        return f"array keys {keys[:5]} differ from the model's ({len(expected)} arrays)", out
    for s in spec:
        arr = arrays[s.key]
        if getattr(arr, "stype", None) != "numpy.ndarray":
            return f"array {s.key!r} has serialisation {getattr(arr, 'stype', None)!r}, expected 'numpy.ndarray'", out
        if tuple(arr.shape) != s.shape or str(arr.dtype) != s.dtype:
            return f"array {s.key!r} declared {tuple(arr.shape)}/{arr.dtype}, expected {s.shape}/{s.dtype}", out
        try:
            value = arr.numpy()  # np.load(..., allow_pickle=False) inside Flower
        except Exception as exc:  # noqa: BLE001 - any decoding failure rejects the reply
            return f"array {s.key!r} does not decode as numpy: {type(exc).__name__}: {exc}", out
        out[s.key] = value
    return None, out


def check_reply_content(content: Any, kind: str, spec: Sequence[ArraySpec], server_round: int = 0) -> str | None:
    """Return why a reply's RecordDict is not acceptable, or None when it is."""
    if kind not in ("train", "evaluate"):
        raise ValueError(f"kind must be 'train' or 'evaluate', got {kind!r}")
    if len(content.config_records) > 0:
        return f"config records are not allowed in replies: {sorted(content.config_records.keys())}"
    metric_records = content.metric_records
    array_records = content.array_records
    if len(metric_records) != 1:
        return f"expected exactly one MetricRecord, got {len(metric_records)}"
    want_arrays = 1 if kind == "train" else 0
    if len(array_records) != want_arrays:
        return f"expected {want_arrays} ArrayRecord(s) in a {kind} reply, got {len(array_records)}"
    if set(content.keys()) - set(metric_records.keys()) - set(array_records.keys()):
        return "reply carries records of an unknown type"
    arrays: dict[str, np.ndarray] = {}
    if kind == "train":
        problem, arrays = _decode_arrays(next(iter(array_records.values())), spec)
        if problem:
            return problem
    metrics = dict(next(iter(metric_records.values())))
    schema = BoundarySchema([BoundaryArraySpec(name=s.key, shape=s.shape, dtype=s.dtype) for s in spec])
    try:
        schema.check(kind=kind, round=server_round, metrics=metrics, arrays=arrays)
    except ValueError as exc:  # BoundaryViolation
        return str(exc)
    return None


def _describe(content: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"records": sorted(content.keys())}
    try:
        out["arrays"] = [list(a.shape) for ar in content.array_records.values() for a in ar.values()]
        out["dtypes"] = sorted({str(a.dtype) for ar in content.array_records.values() for a in ar.values()})
        out["metric_keys"] = sorted({k for mr in content.metric_records.values() for k in mr.keys()})
    except Exception:  # noqa: BLE001 - description is best effort; the check above decides
        pass
    return out


def _site_of(msg: Any, sent_to: dict[str, int]) -> int:
    """The site a reply belongs to: the destination of the message it answers (error replies that the SuperLink
    generates for an unreachable site carry the SuperLink as their source)."""
    return sent_to.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)


def inspect_replies(replies: Iterable[Any], kind: str, spec: Sequence[ArraySpec], server_round: int,
                    audit_path: str | os.PathLike[str] | None = None, salt: str = "",
                    sent: Iterable[Any] = ()) -> Inspection:
    """Split replies into accepted, rejected (malformed) and failed (error) ones; log and audit each.

    ``sent`` (the messages of this round) attributes each reply to its site; sites that never answered
    (timeout) are recorded as failed too.
    """
    result = Inspection()
    lines: list[str] = []
    sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}
    replies = list(replies)
    answered = {m.metadata.reply_to_message_id for m in replies}
    for mid, node in sent_to.items():
        if mid not in answered:
            who = site_pseudonym(node, salt)
            result.failed.append((who, "no reply before the round timeout"))
            lines.append(json.dumps({"ts": round(time.time(), 3), "round": server_round, "kind": kind, "site": who,
                                     "decision": "failed", "reason": "no reply before the round timeout"}))
            log.warning("site did not reply", extra={"site": who, "round": server_round, "kind": kind})
    for msg in replies:
        who = site_pseudonym(_site_of(msg, sent_to), salt)
        record: dict[str, Any] = {"ts": round(time.time(), 3), "round": server_round, "kind": kind, "site": who}
        if msg.has_error():
            reason = f"site error: {str(msg.error.reason)[:300]}"
            result.failed.append((who, reason))
            record.update(decision="failed", reason=reason)
            log.warning("site reply failed", extra={"site": who, "round": server_round, "kind": kind,
                                                    "reason": reason})
        else:
            try:
                problem = check_reply_content(msg.content, kind, spec, server_round)
            except Exception as exc:  # noqa: BLE001 - a reply must never crash the coordinator
                problem = f"unreadable reply: {type(exc).__name__}: {exc}"
            record.update(_describe(msg.content))
            if problem is None:
                result.accepted.append(msg)
                record["decision"] = "accepted"
            else:
                result.rejected.append((who, problem))
                record.update(decision="rejected", reason=problem)
                log.warning("site update rejected", extra={"site": who, "round": server_round, "kind": kind,
                                                           "reason": problem})
        lines.append(json.dumps(record, separators=(",", ":")))
    if audit_path is not None:
        append_audit(audit_path, lines)
    return result


def append_audit(audit_path: str | os.PathLike[str], lines: Sequence[str]) -> None:
    """Append JSON lines to the audit log, fsynced (the record of what every reply held and what was decided)."""
    if not lines:
        return
    path = Path(audit_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
