"""A picture of one alert's explanation (``infrabrain predict --plot DIR``): what its sentence quotes, drawn.

The sentence says "GPU r03-n07-g2 single-bit ECC errors +164 over 49 min (3.3/min)"; the picture shows that
climb. One PNG per explained node: the sentence as its title; one panel per contributor the sentence quotes
(:func:`~infrabrain.models.explain.quoted_contributors`) and per further metric it is quoted by
(``Contribution.also``), with the quoted metric over the window in the units
the sentence uses (an event counter as its increase per minute, a violation or busy-time counter as the share
of the time, never a cumulative level); and, at the bottom, the likeliest roots' score parts as stacked bars
(:func:`~infrabrain.models.predict.root_cause_evidence`, what :func:`~infrabrain.models.predict.root_reason`
lists), so that an operator sees why the first root outranks the next.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.models.explain import KIND_LABEL, UNIT_SCALE, Contribution, metric_rendering
from infrabrain.models.features import is_counter

#: One colour per root-score part (``predict.PART_LABELS`` order), so that a part reads alike in every picture.
_PART_COLOURS = {"drop": "tab:blue", "rack_credit": "tab:cyan", "prior": "tab:gray", "cause_evidence": "tab:purple",
                 "sibling_evidence": "tab:orange", "explained_away": "tab:red", "own_change": "tab:green"}


def file_stem(component_id: str) -> str:
    """``component_id`` as a file name part: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, so
    an id from a site's topology never names a path outside the pictures' folder."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", component_id)


def quoted_values(series: np.ndarray, metric: str, cadence_s: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A contributor's raw window ``series`` (one value per step, NaN where missing) as the sentence renders it:
    ``(minutes before the window's end, values, y-axis label)``. An event counter becomes its increase per minute
    (a reset counts as no increase), a violation or busy-time counter the share of each step it moved, a
    utilisation a percentage and a level its unit; anything else is drawn as it is."""
    if cadence_s <= 0:
        raise ValueError(f"cadence_s must be positive, got {cadence_s}")
    v = np.asarray(series, dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"series must be one value per step, got shape {v.shape}")
    minutes = (np.arange(len(v)) - (len(v) - 1)) * cadence_s / 60.0
    label, unit = metric_rendering(metric)
    if "XID" in metric.upper():  # a code, not a count: the sentence says which was raised and when
        return minutes, v, "last XID code"
    if is_counter(metric) or unit in ("rate", "busy", "throttle"):
        step = np.maximum(np.diff(v), 0.0)  # NaN where either end is missing
        if unit == "throttle":  # microseconds of violation per second of wall time
            return minutes[1:], np.minimum(100.0, 100.0 * step / 1e6 / cadence_s), f"{label} (% of the time)"
        if unit == "busy":
            return minutes[1:], np.minimum(100.0, 100.0 * step / cadence_s), f"{label} (% of the time)"
        return minutes[1:], step / (cadence_s / 60.0), f"{label} (per min)"
    if unit.startswith("pct:"):
        return minutes, v * float(unit[4:]), f"{label} (%)"
    if unit.startswith("level:"):
        u = unit[6:]
        return minutes, v * UNIT_SCALE.get(u, 1.0), f"{label} ({u})" if u else label
    if unit.startswith("above:"):
        u, _, what = unit[6:].partition(" ")
        return minutes, v, f"{label} ({u} {what})"
    if unit.startswith("rel:"):
        return minutes, v, f"{label} ({unit[4:]})"
    return minutes, v, f"{label} ({unit})" if unit else label


def _drop_note(c: Contribution, further: bool) -> str:
    """What occluding a panel's component, and its metric alone, does to the node's logit."""
    if further:
        return f"occluding this metric alone lowers the logit by {c.score:.2f}"
    alone = f"; this metric alone by {c.metric_drop:.2f}" if c.metric_drop is not None else ""
    return f"occluding it lowers the logit by {c.score:.2f}{alone}"


def explanation_figure(sentence: str, contributors: Sequence[Contribution], roots: Sequence[Mapping[str, Any]],
                       cadence_s: int) -> Any:
    """The figure: a title with ``sentence``, one panel per quoted contributor that has a raw series
    (``Contribution.series``; one quoted in standard deviations has none), and the ``roots``' score parts
    (:func:`~infrabrain.models.predict.root_cause_evidence` entries) as horizontal stacked bars, each root's total
    marked, and the one the alert's part lies on labelled so (it is first whatever its score). Returns the
    matplotlib figure (the caller saves or closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from infrabrain.models.predict import PART_LABELS

    drawn = [(q, q is not c) for c in contributors for q in (c, *c.also) if q.series is not None]
    rows = len(drawn) + (1 if roots else 0)
    if rows == 0:
        raise ValueError("nothing to draw: no quoted contributor has a raw series and there are no roots")
    title = textwrap.fill(sentence, 110)
    panel_titles = [textwrap.fill(f"{KIND_LABEL.get(c.kind, c.kind)} {c.component_id}: {c.change} "
                                  f"({_drop_note(c, further)})", 115) for c, further in drawn]
    height = (0.3 + 0.15 * (title.count("\n") + sum(t.count("\n") for t in panel_titles)) + 2.0 * len(drawn)
              + (0.6 + 0.5 * len(roots) if roots else 0.0))
    fig, axes = plt.subplots(rows, 1, figsize=(8.0, height), squeeze=False)
    fig.suptitle(title, fontsize=8, ha="left", x=0.02)
    for ax, (c, further), panel_title in zip(axes[: len(drawn), 0], drawn, panel_titles):
        x, y, ylabel = quoted_values(c.series, c.metric, cadence_s)
        ax.plot(x, y, color="tab:red", lw=1.4)
        if ylabel.endswith(("(per min)", "(% of the time)")):  # a rate from 0: a steady 3/min is not a zigzag
            ax.set_ylim(bottom=0.0)
        ax.set_title(panel_title, fontsize=8, loc="left")
        ax.set_ylabel(textwrap.fill(ylabel, 24), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("minutes before the window's end", fontsize=7)
    if roots:
        ax = axes[-1, 0]
        names = [f"{r['component_id']} ({r['kind']})" + (f"\nfirst: the {r['part']}" if r.get("part") else "")
                 for r in roots]  # the part an alert names puts its component first, whatever its score
        seen: set[str] = set()
        for i, r in enumerate(roots):
            right = left = 0.0
            for part, value in r["parts"].items():
                if round(value, 3) == 0:
                    continue
                start = right if value > 0 else left
                ax.barh(i, value, left=start, color=_PART_COLOURS.get(part, "black"), height=0.6,
                        label=PART_LABELS.get(part, part) if part not in seen else None)
                seen.add(part)
                right, left = (right + value, left) if value > 0 else (right, left + value)
            if r.get("score") is not None:
                ax.plot([r["score"]], [i], "D", color="black", ms=5, label="total" if i == 0 else None)
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_yticks(range(len(roots)), names, fontsize=7)
        ax.invert_yaxis()  # the likeliest root on top
        ax.tick_params(labelsize=7)
        ax.set_xlabel("root-cause score (logits): the parts that add up to it", fontsize=7)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.15 * (1 + title.count("\n")) / height))  # room for the title
    return fig


def plot_explanation(sentence: str, contributors: Sequence[Contribution], roots: Sequence[Mapping[str, Any]],
                     cadence_s: int, path: str | Path) -> Path:
    """:func:`explanation_figure` saved as a PNG at ``path`` (written atomically)."""
    from infrabrain.models.evaluation import save_png

    return save_png(explanation_figure(sentence, contributors, roots, cadence_s), path)
