"""The picture of an alert's explanation (``predict --plot``): each quoted metric drawn in the sentence's units,
the roots' score parts as bars that add up to their totals, and bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from infrabrain.models.explain import Contribution, describe_change
from infrabrain.models.explanation_plot import explanation_figure, file_stem, plot_explanation, quoted_values


def test_a_counter_is_drawn_as_its_increase_per_minute_and_a_level_as_it_is() -> None:
    cum = np.array([100.0, 100.0, 103.0, np.nan, 120.0, 50.0])  # a missing scrape, then a reset
    x, y, label = quoted_values(cum, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 60)
    np.testing.assert_allclose(x, [-4, -3, -2, -1, 0])
    np.testing.assert_allclose(y, [0.0, 3.0, np.nan, np.nan, 0.0])
    assert label == "single-bit ECC errors (per min)"
    x, y, label = quoted_values(np.array([2.0, 4.0, 8.0]), "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 120)
    np.testing.assert_allclose(x, [-2, 0])
    np.testing.assert_allclose(y, [1.0, 2.0])  # per minute, at a 2-minute cadence
    x, y, label = quoted_values(np.array([0.0, 3e7, 6e7]), "DCGM_FI_DEV_THERMAL_VIOLATION", 60)
    np.testing.assert_allclose(y, [50.0, 50.0])
    assert label.endswith("(% of the time)")
    x, y, label = quoted_values(np.array([60.0, 61.5, 66.0]), "DCGM_FI_DEV_GPU_TEMP", 60)
    np.testing.assert_allclose(y, [60.0, 61.5, 66.0])
    assert label == "temperature (C)"
    _, y, label = quoted_values(np.array([0.5, 0.92]), "switch_port_util", 60)  # a share drawn in %
    np.testing.assert_allclose(y, [50.0, 92.0])
    assert label == "port utilisation (%)"
    _, y, label = quoted_values(np.array([64.0, 2.0]) * 2**30, "node_memory_MemAvailable_bytes", 60)
    np.testing.assert_allclose(y, [64.0, 2.0])  # bytes drawn in GiB, as the sentence quotes them
    assert label == "free memory (GiB)"
    _, y, label = quoted_values(np.r_[np.zeros(3), np.full(3, 63.0)], "DCGM_FI_DEV_XID_ERRORS", 60)
    np.testing.assert_allclose(y, [0, 0, 0, 63, 63, 63])  # a code, drawn as it is, never differenced
    assert label == "last XID code"
    with pytest.raises(ValueError, match="cadence_s"):
        quoted_values(cum, "DCGM_FI_DEV_GPU_TEMP", 0)
    with pytest.raises(ValueError, match="one value per step"):
        quoted_values(np.zeros((3, 2)), "DCGM_FI_DEV_GPU_TEMP", 60)


def test_the_figure_draws_each_quoted_series_and_the_roots_parts(tmp_path) -> None:
    ecc = np.concatenate([np.full(20, 10.0), 10.0 + np.cumsum(np.full(40, 4.0))])
    temp = np.linspace(30.0, 36.0, 60)
    contribs = [Contribution(7, "r00-n01-g2", "gpu", 4.1, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
                             describe_change(ecc, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 60), ecc),
                Contribution(3, "r00", "rack", 0.9, "rack_inlet_temp", describe_change(temp, "rack_inlet_temp", 60),
                             temp),
                Contribution(2, "r00-n01", "node", 0.5, "node_load1", "load average +0.3 sd")]  # no raw series
    roots = [{"component_id": "r00-n01-g2", "kind": "gpu", "score": 3.5,
              "parts": {"drop": 4.1, "prior": -0.4, "explained_away": -0.2}},
             {"component_id": "crac-0", "kind": "cooling", "score": 1.0,
              "parts": {"drop": 0.0, "rack_credit": 0.9, "prior": 0.1}}]
    replays = np.cumsum(np.full(60, 2.0))
    contribs[0].metric_drop = 3.2  # the GPU is quoted by its ECC errors and, after them, by its PCIe replays
    contribs[0].also = [Contribution(7, "r00-n01-g2", "gpu", 1.1, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
                                     describe_change(replays, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 60), replays,
                                     metric_drop=1.1)]
    fig = explanation_figure("node r00-n01 at risk 0.82: GPU r00-n01-g2 " + contribs[0].change, contribs, roots, 60)
    axes = fig.axes
    assert len(axes) == 4  # three series (the node's change is quoted in sd: nothing raw to draw) and the roots
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), np.maximum(np.diff(ecc), 0.0))
    assert axes[0].get_ylim()[0] == 0.0  # a rate is drawn from 0
    title = axes[0].get_title(loc="left")
    assert title.startswith("GPU r00-n01-g2: single-bit ECC errors +160 over 40 min")
    assert title.replace("\n", " ").endswith("(occluding it lowers the logit by 4.10; this metric alone by 3.20)")
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), np.diff(replays))
    further = axes[1].get_title(loc="left").replace("\n", " ")
    assert further.startswith("GPU r00-n01-g2: PCIe replays +118 over 59 min")
    assert further.endswith("(occluding this metric alone lowers the logit by 1.10)")
    np.testing.assert_allclose(axes[2].lines[0].get_ydata(), temp)
    bars = axes[3].patches
    widths = {round(b.get_y() + b.get_height() / 2): [] for b in bars}
    for b in bars:
        widths[round(b.get_y() + b.get_height() / 2)].append(b.get_width())
    assert sorted(widths[0]) == pytest.approx([-0.4, -0.2, 4.1]) and sum(widths[0]) == pytest.approx(3.5)
    assert sorted(widths[1]) == pytest.approx([0.1, 0.9])  # a part that is 0 draws no bar
    assert [t.get_text() for t in axes[3].get_yticklabels()] == ["r00-n01-g2 (gpu)", "crac-0 (cooling)"]
    import matplotlib.pyplot as plt

    plt.close(fig)
    # the root an alert's part lies on is first whatever its score, and says so (issue 3 follow-up 43)
    fig = explanation_figure("s", contribs, [{**roots[0], "score": 0.5, "part": "GPU bus"}, roots[1]], 60)
    assert [t.get_text() for t in fig.axes[3].get_yticklabels()] == ["r00-n01-g2 (gpu)\nfirst: the GPU bus",
                                                                     "crac-0 (cooling)"]
    plt.close(fig)
    out = plot_explanation("s", contribs[:1], [], 60, tmp_path / "deep" / "a.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nothing to draw"):
        explanation_figure("s", contribs[2:], [], 60)


def test_a_component_id_never_names_a_path_outside_the_pictures_folder() -> None:
    assert file_stem("r03-n07") == "r03-n07"
    assert file_stem("../../etc/passwd") == ".._.._etc_passwd" and "/" not in file_stem("a/b\\c d")
