"""What the site's model says of a past hour, read back from the site's own store (``infrabrain client explain``).

A node failed at 03:14; the operator asks what the daemon's model saw at 03:00: the riskiest nodes of the window
ending then, their sentences, likeliest roots and, with a folder, the pictures of their explanations, beside what
the store recorded on each of those nodes in the hour after (its XIDs and other events): the prediction and what
came of it, side by side. The window
is cut from the store exactly as the daemon cuts it from its buffer (the same grid, counters corrected the same
way) and scored with ``site.yaml``'s checkpoint, so the answer is the one the daemon would have given with that
checkpoint. It reads the store without writing to it, beside a running daemon; nothing leaves the site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infrabrain.client.config import SiteConfig

#: How far past the window the events beside each explained node reach: the model's horizon, the next hour.
AFTER_S = 3600


def _events_on(events: Any, node_id: str) -> list[dict[str, Any]]:
    """The rows of ``events`` (the store's ``read_events`` frame) on node ``node_id`` or its GPUs
    (``<node>-g<i>``, the topology's GPU names), oldest first."""
    if not len(events):
        return []
    comp = events["component_id"].astype(str)
    mine = events[(comp == node_id) | comp.str.startswith(f"{node_id}-g")]
    return [{"t": int(e.t), "component_id": str(e.component_id), "event": str(e.event), "xid": int(e.xid),
             "detail": str(e.detail)} for e in mine.itertuples()]


def explain_stored_window(cfg: SiteConfig, at: int | None = None, top: int = 5,
                          plot_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the window of the site's store ending at ``at`` (epoch seconds; default: the newest stored sample)
    with ``cfg``'s checkpoint and explain its ``top`` riskiest nodes. Returns ``t`` (the window's end), ``site``,
    ``after_until`` (how far past ``t`` the store reaches, at most an hour: where ``after`` stops looking),
    ``scored`` (how many nodes had a score) and ``nodes``: per node, riskiest first, ``node_id``, ``risk``,
    ``cause``, ``cause_source`` and ``cause_part`` (as the daemon gives them), ``explanation``, ``root_causes``,
    ``root_reason``, ``after`` (the events the store holds on the node or its GPUs in the hour after the window:
    ``t``, ``component_id``, ``event``, ``xid``, ``detail``) and, with ``plot_dir``, ``picture``; and, as the
    daemon's ``/alerts`` gives them, ``untrained_causes`` and ``rule_alerts`` (``client.scoring.rule_alert_rows``:
    the incumbent rules of the groups the model did not learn, on any scored node).

    Raises ``ValueError`` naming what is wrong: no checkpoint in ``site.yaml``, an empty store, ``at`` outside the
    stored time, a window with data in fewer than half of the model's steps, or a checkpoint at another cadence."""
    from infrabrain.client.alert_pictures import AlertPictures
    from infrabrain.client.scoring import PredictorScorer, rule_alert_rows
    from infrabrain.client.store import TelemetryStore
    from infrabrain.client.topology_file import load_topology
    from infrabrain.client.window_buffer import WindowBuffer, min_filled_steps
    from infrabrain.models.features import KINDS

    if cfg.model.checkpoint is None:
        raise ValueError("site.yaml has no model.checkpoint: nothing to score the stored window with")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    topology = load_topology(cfg.topology)
    scorer = PredictorScorer(cfg.model.checkpoint, topology, max_explained=top, cadence_s=cfg.cadence_s)
    store = TelemetryStore(cfg.store.path, read_only=True)
    try:
        info = store.info(check=False)
        if info.t_max is None or info.t_min is None:
            raise ValueError(f"the store {str(cfg.store.path)!r} holds no samples yet")
        end = info.t_max if at is None else int(at)
        if not info.t_min <= end <= info.t_max:
            raise ValueError(f"--at {end} is outside the stored time ({info.t_min}..{info.t_max}, epoch seconds)")
        steps = int(scorer.window_steps)
        batch = store.read_batch(end - steps * cfg.cadence_s + 1, end + 1)
        later = store.read_events(end + 1, end + 1 + AFTER_S)
    finally:
        store.close()
    buffer = WindowBuffer({k: topology.ids(k) for k in KINDS},
                          {k: list(scorer.metric_names.get(k, ())) for k in KINDS}, cfg.cadence_s, steps)
    buffer.add(batch)
    own = int(scorer.model_steps)
    filled = buffer.filled_steps(own, end_t=end)  # the daemon's rule, on the window ending at ``end``
    if filled < min_filled_steps(own):
        raise ValueError(f"the window ending at {end} has data in {filled} of the model's {own} steps; the daemon "
                         f"scores a window from {min_filled_steps(own)}")
    _, window = buffer.window(end_t=end, steps=steps)
    risks = sorted(scorer.score(window), key=lambda r: -r.risk)
    pictures = AlertPictures(plot_dir, keep=None) if plot_dir is not None else None
    explained = scorer.explain(risks[:top], pictures=pictures, now=end)
    nodes = [{"node_id": r.node_id, "risk": r.risk, "cause": r.top_cause, "cause_source": r.cause_source,
              "cause_part": r.cause_part or None,
              "explanation": r.explanation, "root_causes": list(r.root_causes), "root_reason": r.root_reason,
              "after": _events_on(later, r.node_id), **({"picture": r.picture} if r.picture else {})}
             for r in explained]
    rules = rule_alert_rows(risks)
    return {"site": cfg.site, "t": end, "after_until": min(int(info.t_max), end + AFTER_S), "scored": len(risks),
            "nodes": nodes, "untrained_causes": list(scorer.untrained_causes), "rule_alerts": rules}
