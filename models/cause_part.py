"""Which part of the machine an alert's "likely other" points at: the GPU bus, the host's memory or its disk.

The cause head names cause *groups* (:data:`infrabrain.simulation.faults.CAUSE_GROUP`). "other" gathers what is
neither memory, network, thermal nor power: in Llama 3's failure mix a GPU falling off the bus (the largest cause
of all, 30 %), unplanned host maintenance and SSD failures, with nothing in common to act on. "likely other"
alone tells an operator nothing, though the sentence's first quoted metric usually says which of them it is: a
GPU's PCIe replays are its bus, a host's EDAC correctable errors its DIMMs, a host's disk busy time its disk.

Where the sentence names "other" and its first quoted metric is one of :data:`OTHER_PART_OF_METRIC`'s, it names
that part too: "likely other (0.71) at the GPU bus". The part is read off the metric (no model of its own): it says
where the evidence the risk hangs on lies, within the group the head named. Where the head names another group, or
the first quoted metric is no such precursor, nothing is added.
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


def cause_part(cause_named: str | None, first_metric: str | None) -> str | None:
    """The part an alert names beside ``cause_named`` (the group its sentence names, None for none), read off
    ``first_metric`` (the metric it quotes first); None where the group is not "other" or the metric is no
    precursor of a part."""
    if cause_named != PARTED_GROUP or not first_metric:
        return None
    return OTHER_PART_OF_METRIC.get(first_metric)
