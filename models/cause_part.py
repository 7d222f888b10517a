"""Which part of the machine an alert's "likely other" points at: the GPU bus, the host's memory or its disk.

The cause head names cause *groups* (:data:`infrabrain.simulation.faults.CAUSE_GROUP`). "other" gathers what is
neither memory, network, thermal nor power: in Llama 3's failure mix a GPU falling off the bus (the largest cause
of all, 30 %), unplanned host maintenance and SSD failures, with nothing in common to act on. "likely other"
alone tells an operator nothing, though the sentence's first quoted metric usually says which of them it is: a
GPU's PCIe replays are its bus, a host's EDAC correctable errors its DIMMs, a host's disk busy time its disk.

Where the sentence's first quoted metric is one of :data:`OTHER_PART_OF_METRIC`'s, the alert names that part
(:func:`sentence_cause`): "likely other (0.71), the GPU bus". The part is read off the metric, a physical
statement about where the evidence the risk hangs on lies; there is no model of its own. It also stands where the
cause head names another group or none: a GPU's PCIe replays are no memory fault and a host's EDAC errors no
network one, and on the bench's sixteen draws every such naming of the head was wrong (issue 3 follow-up 42).
"""

from __future__ import annotations

#: Metric (the exporters' names) -> the part of the machine its precursor lies in, for the "other" group.
OTHER_PART_OF_METRIC: dict[str, str] = {
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "GPU bus",
    "node_edac_correctable_errors_total": "host memory",
    "node_disk_io_time_seconds_total": "disk",
}

#: The group whose alerts name a part.
PARTED_GROUP = "other"


def part_of_metric(metric: str | None) -> str | None:
    """The part of the machine ``metric`` is the precursor of (:data:`OTHER_PART_OF_METRIC`); None for another."""
    return OTHER_PART_OF_METRIC.get(metric or "")


def sentence_cause(head_named: str | None, first_metric: str | None) -> tuple[str | None, str | None]:
    """``(group, part)`` an alert names, from ``head_named`` (the group the cause head names, None for none) and
    ``first_metric`` (the metric the sentence quotes first): "other" and its part where that metric is a part's
    precursor, whatever the head says; else the head's group and no part."""
    part = part_of_metric(first_metric)
    return (PARTED_GROUP, part) if part is not None else (head_named, None)
