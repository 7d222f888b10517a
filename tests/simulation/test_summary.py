"""summarize(): the numbers `make demo` prints agree with the events."""

from __future__ import annotations

from infrabrain.simulation.summary import format_summary, summarize


def test_summary_counts_match_events(small_run) -> None:
    s = summarize([small_run])
    ev = small_run.events
    node_fail = ev[(ev["event"] == "failure") & (ev["kind"] == "node")]
    assert s["sites"] == 1 and s["gpus"] == small_run.topology.count("gpu")
    assert s["gpu_hours"] == small_run.topology.count("gpu") * 24
    assert s["node_failures"] == len(node_fail) == sum(s["failures_by_cause"].values())
    assert 0 < s["interruptions"] <= s["node_failures"]
    assert s["failures_by_cause"] == {c: int(k) for c, k in node_fail["cause"].value_counts().items()}
    assert sum(s["failures_by_group"].values()) == s["node_failures"]
    text = format_summary(s)
    assert "t0" in text and "failures by cause" in text
