"""Whether a sentence names the precursor the simulator planted (issue 3 follow-up 40): the precursor read from
the run's events, the signal's metrics against the simulator's, and the verdict on hand-made explanations."""

from __future__ import annotations

import pandas as pd
import pytest

from infrabrain.models.derived_metrics import DERIVED_METRICS
from infrabrain.models.explain import Contribution, Explanation
from infrabrain.models.precursor_naming import SIGNAL_METRICS, names_precursor, precursor_signal
from infrabrain.simulation.faults import SIGNALS
from infrabrain.simulation.telemetry import METRIC_NAMES


def test_every_signal_names_metrics_the_simulator_renders_on_its_root() -> None:
    assert set(SIGNAL_METRICS) == set(SIGNALS)
    derived = {d.name: d.kind for d in DERIVED_METRICS}
    for signal, kind in SIGNALS.items():
        for metric in SIGNAL_METRICS[signal]:
            assert metric in METRIC_NAMES[kind] or derived.get(metric) == kind, (signal, metric)


def test_the_precursor_is_the_latest_real_one_before_the_failure() -> None:
    ev = pd.DataFrame({"t": [100, 200, 300, 900], "component_id": ["g1", "g1", "g2", "g1"],
                       "event": ["degrade", "degrade", "degrade", "degrade"],
                       "detail": ["ecc precursor begins (hbm)", "pcie precursor begins (look-alike, recovers)",
                                  "pcie precursor begins (gpu)", "sram precursor begins (gpu_sram)"]})
    assert precursor_signal(ev, "g1", 800) == "ecc"  # the later look-alike does not count; 900 is after
    assert precursor_signal(ev, "g1", 1000) == "sram"
    assert precursor_signal(ev, "g2", 250) is None and precursor_signal(ev, "g3", 1000) is None
    assert precursor_signal(pd.DataFrame(), "g1", 1000) is None


def test_a_root_quoted_by_another_metric_is_found_but_does_not_name_its_precursor() -> None:
    xid = Contribution(5, "r01-n02-g2", "gpu", 10.2, "DCGM_FI_DEV_XID_ERRORS", "XID 63 raised 25 min ago",
                       metric_drop=9.4)
    power = Contribution(5, "r01-n02-g2", "gpu", 10.2, "DCGM_FI_DEV_POWER_USAGE", "power -1 % over 59 min")
    node = Contribution(9, "r01-n02", "node", 2.0, "node_load1", "load average 57.7 -> 57.3 over 59 min")
    quiet = Contribution(11, "leaf-r01", "leaf", 0.01, "switch_port_errors_total", "port errors +3 over 5 min")
    assert names_precursor(Explanation("r01-n02", 0.98, [xid, node]), 5, "ecc") == (True, True)
    assert names_precursor(Explanation("r01-n02", 0.98, [power, node]), 5, "ecc") == (True, False)
    assert names_precursor(Explanation("r01-n02", 0.98, [power, node]), 9, "edac") == (True, False)
    assert names_precursor(Explanation("r01-n02", 0.98, [power, node]), 7, "ecc") == (False, False)
    # a component the sentence does not quote (its drop is under the floor) is not quoted, whatever its metric
    assert names_precursor(Explanation("r01-n02", 0.98, [power, quiet]), 11, "leaf") == (False, False)
    # the further metric counts too: the GPU quoted by its power, then by its ECC errors
    power.also = [Contribution(5, "r01-n02-g2", "gpu", 1.2, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "+170 over 59 min")]
    assert names_precursor(Explanation("r01-n02", 0.98, [power, node]), 5, "ecc") == (True, True)
    with pytest.raises(ValueError, match="unknown precursor signal 'hbm'"):
        names_precursor(Explanation("r01-n02", 0.98, [xid]), 5, "hbm")
