"""The part of the machine a "likely other" alert names (issue 3 follow-up 42): read off the first quoted metric,
which then names "other" whatever the cause head says, in the sentence after the group; and the parts against the
simulator's precursors."""

from __future__ import annotations

from infrabrain.models.cause_naming import FAILED, TOO_FEW
from infrabrain.models.cause_part import OTHER_PART_OF_METRIC, PARTED_GROUP, part_of_metric, sentence_cause
from infrabrain.models.explain import Contribution, explanation_sentence
from infrabrain.models.precursor_naming import SIGNAL_METRICS, SIGNAL_PART
from infrabrain.simulation.faults import CAUSE_GROUP, MODES


def test_a_part_is_named_by_its_precursor_metric_whatever_the_head_says() -> None:
    assert sentence_cause("other", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == ("other", "GPU bus")
    assert sentence_cause("other", "node_edac_correctable_errors_total") == ("other", "host memory")
    assert sentence_cause("other", "node_disk_io_time_seconds_total") == ("other", "disk")
    # the head names another group, or none: a GPU's PCIe replays are still its bus
    assert sentence_cause("memory", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == ("other", "GPU bus")
    assert sentence_cause(None, "node_edac_correctable_errors_total") == ("other", "host memory")
    # a first metric that is no part's precursor, or none: the head's word stands, with no part
    assert sentence_cause("other", "cooling_supply_temp_celsius") == ("other", None)
    assert sentence_cause("thermal", "DCGM_FI_DEV_GPU_TEMP") == ("thermal", None)
    assert sentence_cause("other", None) == ("other", None) and sentence_cause(None, "") == (None, None)
    assert part_of_metric("DCGM_FI_DEV_PCIE_REPLAY_COUNTER") == "GPU bus" and part_of_metric(None) is None


def test_the_sentence_names_the_part_after_the_group() -> None:
    pcie = Contribution(0, "g0", "gpu", 2.0, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays +734 over 47 min")
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71, part="GPU bus") == \
        "node n at risk 0.73, likely other (0.71), the GPU bus: GPU g0 PCIe replays +734 over 47 min"
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71) == \
        "node n at risk 0.73, likely other (0.71): GPU g0 PCIe replays +734 over 47 min"
    # the head names another group: the metric names the part, and the sentence says what the head said
    assert explanation_sentence("n", 0.73, [pcie], cause="memory", cause_p=0.55, part="GPU bus") == \
        "node n at risk 0.73, likely other, the GPU bus (the cause head says memory 0.55): GPU g0 PCIe replays " \
        "+734 over 47 min"
    # ... or is too unsure to name one, or its naming of "other" failed the card's check
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.2, part="GPU bus") == \
        "node n at risk 0.73, likely other, the GPU bus: GPU g0 PCIe replays +734 over 47 min"
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71, part="GPU bus",
                                naming_status=FAILED, naming_note="it named other on 2 of 9 rows right").startswith(
        "node n at risk 0.73, likely other, the GPU bus: ")
    assert explanation_sentence("n", 0.73, [pcie], cause="other", cause_p=0.71, part="GPU bus",
                                naming_status=TOO_FEW, naming_note="it named other on no validation row").startswith(
        "node n at risk 0.73, likely other (0.71; unchecked: it named other on no validation row), the GPU bus: ")


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
