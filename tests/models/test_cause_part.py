"""The part of the machine a "likely other" alert names (issue 3 follow-up 42): read off the first quoted metric,
only for the group "other", in the sentence after the group; and the parts against the simulator's precursors."""

from __future__ import annotations

from infrabrain.models.cause_part import OTHER_PART_OF_METRIC, PARTED_GROUP, cause_part
from infrabrain.models.explain import Contribution, explanation_sentence
from infrabrain.models.precursor_naming import SIGNAL_METRICS, SIGNAL_PART
from infrabrain.simulation.faults import CAUSE_GROUP, MODES


def test_a_part_is_named_only_for_other_and_only_by_a_precursor_metric() -> None:
    assert cause_part("other", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == "GPU bus"
    assert cause_part("other", "node_edac_correctable_errors_total") == "host memory"
    assert cause_part("other", "node_disk_io_time_seconds_total") == "disk"
    # the head names another group: its word stands, whatever the metric
    assert cause_part("memory", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") is None
    # "other" quoted by a metric that is no part's precursor, by nothing, or no group named at all
    assert cause_part("other", "cooling_supply_temp_celsius") is None
    assert cause_part("other", None) is None and cause_part("other", "") is None
    assert cause_part(None, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") is None


def test_the_sentence_names_the_part_after_the_group() -> None:
    pcie = Contribution(0, "g0", "gpu", 2.0, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays +734 over 47 min")
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71, part="GPU bus") == \
        "node n at risk 0.73, likely other (0.71) at the GPU bus: GPU g0 PCIe replays +734 over 47 min"
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71) == \
        "node n at risk 0.73, likely other (0.71): GPU g0 PCIe replays +734 over 47 min"
    # a group too unsure to name names no part either
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.2, part="GPU bus") == \
        "node n at risk 0.73: GPU g0 PCIe replays +734 over 47 min"


def test_each_part_is_the_one_precursor_of_the_other_group_its_metrics_show() -> None:
    """Every part's metric is rendered by exactly one precursor signal, that signal's root cause is in the group
    "other", and the evaluation's truth (SIGNAL_PART) names the same part: a part the simulator would never
    plant under "other", or a metric two signals share, would make the naming ambiguous."""
    group_of_signal = {m.signal: CAUSE_GROUP[m.cause] for m in MODES if m.signal is not None}
    for metric, part in OTHER_PART_OF_METRIC.items():
        signals = [s for s, metrics in SIGNAL_METRICS.items() if metric in metrics]
        assert len(signals) == 1, (metric, signals)
        assert group_of_signal[signals[0]] == PARTED_GROUP, (metric, signals)
        assert SIGNAL_PART[signals[0]] == part
    assert set(SIGNAL_PART.values()) == set(OTHER_PART_OF_METRIC.values())
