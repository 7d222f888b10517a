"""The coordinator's inspection of incoming replies: only the model's arrays and allow-listed metrics pass."""

from __future__ import annotations

import io
import json
import pickle
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from infrabrain.coordinator.inspection import check_reply_content, inspect_replies, model_spec, site_pseudonym

GLOBAL = ArrayRecord({"0": Array(np.zeros((4, 3), np.float32)), "1": Array(np.zeros((3,), np.float32))})
SPEC = model_spec(GLOBAL)
GOOD_TRAIN_METRICS = {"num-examples": 40, "train-loss": 0.5, "epsilon": 1.2, "delta": 1e-5}


def _reply(node: int, content: RecordDict | None = None, error: Error | None = None, reply_to: str = ""):
    md = Metadata(run_id=1, message_id=f"r{node}{time.monotonic_ns()}", src_node_id=node, dst_node_id=0,
                  reply_to_message_id=reply_to or f"m{node}", group_id="1", created_at=time.time(), ttl=60.0,
                  message_type="train")
    return make_message(md, content=content, error=error)


def _train(arrays: dict[str, Array] | None = None, metrics: dict | None = None, **extra) -> RecordDict:
    arrs = arrays if arrays is not None else {"0": Array(np.ones((4, 3), np.float32)),
                                              "1": Array(np.ones((3,), np.float32))}
    rec = {"arrays": ArrayRecord(arrs), "metrics": MetricRecord(metrics or GOOD_TRAIN_METRICS)}
    rec.update(extra)
    return RecordDict(rec)


def test_good_train_and_eval_replies_pass() -> None:
    assert check_reply_content(_train(), "train", SPEC) is None
    ev = RecordDict({"metrics": MetricRecord({"num-examples": 10, "pr-auc": 0.4, "eval-loss": 0.3})})
    assert check_reply_content(ev, "evaluate", SPEC) is None


@pytest.mark.parametrize("content, needle", [
    (_train({"0": Array(np.ones((4, 4), np.float32)), "1": Array(np.ones((3,), np.float32))}), "expected (4, 3)"),
    (_train({"0": Array(np.ones((4, 3), np.float64)), "1": Array(np.ones((3,), np.float32))}), "float32"),
    (_train({"0": Array(np.ones((4, 3), np.float32))}), "differ from the model"),
    (_train({"1": Array(np.ones((3,), np.float32)), "0": Array(np.ones((4, 3), np.float32))}), "differ"),
    (_train({"0": Array(np.full((4, 3), np.nan, np.float32)), "1": Array(np.ones((3,), np.float32))}), "NaN"),
    (_train(metrics={**GOOD_TRAIN_METRICS, "hostname-hash": 3.0}), "may not leave"),
    (_train(metrics={"num-examples": 40, "train-loss": 0.5}), "epsilon"),
    (_train(metrics={**GOOD_TRAIN_METRICS, "num-examples": 0}), "num-examples"),
    (_train(config=ConfigRecord({"site": "r03-n07"})), "config records are not allowed"),
])
def test_malformed_train_replies_are_rejected(content: RecordDict, needle: str) -> None:
    problem = check_reply_content(content, "train", SPEC)
    assert problem is not None and needle in problem, problem


def test_pickle_payload_is_refused_without_unpickling() -> None:
    class Boom:
        def __reduce__(self):  # pragma: no cover - must never run
            raise AssertionError("unpickled!")

    evil = Array(dtype="float32", shape=(4, 3), stype="pickle", data=pickle.dumps(Boom.__name__))
    content = _train({"0": evil, "1": Array(np.ones((3,), np.float32))})
    assert "serialisation 'pickle'" in check_reply_content(content, "train", SPEC)
    # Declared as numpy but carrying a pickled object array: numpy refuses (allow_pickle=False).
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    sneaky = Array(dtype="float32", shape=(4, 3), stype="numpy.ndarray", data=buf.getvalue())
    problem = check_reply_content(_train({"0": sneaky, "1": Array(np.ones((3,), np.float32))}), "train", SPEC)
    assert problem is not None and "does not decode" in problem


def test_eval_reply_with_arrays_or_unknown_metric_is_rejected() -> None:
    with_arrays = RecordDict({"arrays": GLOBAL, "metrics": MetricRecord({"num-examples": 3})})
    assert "ArrayRecord" in check_reply_content(with_arrays, "evaluate", SPEC)
    per_node = RecordDict({"metrics": MetricRecord({"num-examples": 3, "score-r03-n07": 0.9})})
    assert "may not leave" in check_reply_content(per_node, "evaluate", SPEC)


def test_inspect_replies_splits_logs_and_audits(tmp_path) -> None:
    good, bad = _reply(11, _train()), _reply(12, _train(metrics={**GOOD_TRAIN_METRICS, "gpu-serial": 1.0}))
    failed = _reply(1, error=Error(code=5, reason="node unavailable"), reply_to="m13")
    sent = [_reply(n, RecordDict(), reply_to="x") for n in (11, 12, 13, 14)]
    for node, m in zip((11, 12, 13, 14), sent, strict=True):
        m.metadata.__dict__["_message_id"] = f"m{node}"
        m.metadata.__dict__["_dst_node_id"] = node
    audit = tmp_path / "audit.jsonl"
    res = inspect_replies([good, bad, failed], "train", SPEC, 2, audit, sent=sent)
    assert res.accepted == [good]
    assert [w for w, _ in res.rejected] == [site_pseudonym(12)]
    # The error reply is attributed to the site it was for (13), the silent one (14) is recorded too.
    assert sorted(w for w, _ in res.failed) == sorted([site_pseudonym(13), site_pseudonym(14)])
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert sorted(x["decision"] for x in lines) == ["accepted", "failed", "failed", "rejected"]
    assert all(x["round"] == 2 and x["site"].startswith("site-") for x in lines)
    assert "12" not in json.dumps([x["site"] for x in lines])  # node ids are not logged
