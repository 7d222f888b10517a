"""How far a candidate's own telemetry moved, as root-cause evidence (issue 3 follow-up 37)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infrabrain.models.features import KINDS, FeatureSet
from infrabrain.models.own_change_evidence import (CARD_KEY, EVIDENCE_KINDS, THRESHOLD, KindTail, OwnChangeTails,
                                                   fit_own_change_tails, own_change, own_change_evidence)


def _item(x: np.ndarray, mask: np.ndarray, kind: list[int]) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(x, dtype=torch.float32), "mask": torch.tensor(mask, dtype=torch.float32),
            "kind": torch.tensor(kind, dtype=torch.int64), "alive": torch.ones(len(kind))}


def test_own_change_is_the_largest_move_of_a_components_own_metrics():
    """End means of the observed bins, over the kind's own slots only (padding slots never count)."""
    fs = FeatureSet(metrics={"gpu": ("a", "b", "c"), "cooling": ("s", "f")}, kinds=("gpu", "cooling"))
    x = np.zeros((3, 6, 3))
    mask = np.ones((3, 6, 3))
    x[0, :, 1] = [0, 2, 1, 1, 4, 6]  # a GPU: slot b moves from mean(0, 2) = 1 to mean(4, 6) = 5
    x[0, :, 0] = [3, 3, 3, 3, 3, 0.5]  # slot a: -2.75 at the end, the larger move by size is b's 4
    x[1, :, 2] = [0, 0, 0, 0, 9, 9]  # a cooling unit's padding slot: not one of its metrics
    x[1, :, 0] = [1, 1, 0, 0, 0, 2]  # its supply: 0 from 1
    mask[2] = 0.0  # a second cooling unit that reported nothing
    mask[1, -1, 0] = 0.0  # the supply's last bin unobserved: the end mean is its bin before (0)
    moved = own_change(_item(x, mask, [KINDS.index("gpu"), KINDS.index("cooling"), KINDS.index("cooling")]), fs)
    assert moved[0] == pytest.approx(4.0)
    assert moved[1] == pytest.approx(1.0)
    assert np.isnan(moved[2])
    with pytest.raises(ValueError, match="at least 4 bins"):
        own_change(_item(x[:, :3], mask[:, :3], [0, 5, 5]), fs)


def test_a_kind_tail_scores_how_rare_a_move_was_in_training():
    tail = KindTail(n=9, ranks=(1, 2, 5, 9), values=(8.0, 6.0, 2.0, 0.5))
    s = tail.surprise(np.array([8.0, 6.0, 2.0, 0.5, 0.1, 9.0, np.nan]))
    assert s[:4] == pytest.approx([-math.log(2 / 10), -math.log(3 / 10), -math.log(6 / 10), 0.0])
    assert s[4] == 0.0  # below every kept value: as common as the commonest
    assert s[5] == pytest.approx(math.log(10))  # beyond every training row
    assert s[6] == 0.0  # nothing observed: no evidence
    assert -math.log(3 / 10) < tail.surprise(np.array([7.0]))[0] < -math.log(2 / 10)  # interpolated
    with pytest.raises(ValueError, match="non-increasing"):
        KindTail(n=9, ranks=(1, 2), values=(1.0, 2.0))
    with pytest.raises(ValueError, match="ranks must increase"):
        KindTail(n=9, ranks=(1, 12), values=(2.0, 1.0))
    with pytest.raises(ValueError, match="unknown kind"):
        OwnChangeTails(kinds={"chiller": tail})


def test_tails_fitted_on_the_training_split_travel_in_the_card(small_splits):
    """Every fifth training snapshot's alive components, per kind; the card keeps the tails exactly (JSON), and
    a card from before follow-up 37 has none."""
    import json

    tails = fit_own_change_tails(small_splits.train, small_splits.feature_set)
    counts = dict.fromkeys(KINDS, 0)
    for i in range(0, len(small_splits.train), 5):
        item = small_splits.train[i]
        moved = own_change(item, small_splits.feature_set)
        ok = (item["alive"].numpy() > 0) & np.isfinite(moved)
        for k in range(len(KINDS)):
            counts[KINDS[k]] += int((ok & (item["kind"].numpy() == k)).sum())
    assert {k: t.n for k, t in tails.kinds.items()} == {k: n for k, n in counts.items() if n}
    cool = tails.kinds["cooling"]
    assert cool.surprise(np.array([cool.values[0]]))[0] == pytest.approx(math.log((1 + cool.n) / 2))
    card = json.loads(json.dumps({CARD_KEY: tails.model_dump()}))
    assert OwnChangeTails.from_card(card) == tails
    assert OwnChangeTails.from_card({}) is None
    assert fit_own_change_tails([], small_splits.feature_set) is None
    with pytest.raises(ValueError, match="every"):
        fit_own_change_tails(small_splits.train, small_splits.feature_set, every=0)


def test_only_a_cooling_units_rare_move_is_evidence():
    """Past the threshold, in nats; a leaf's or a GPU's move counts nothing, and neither does a card without
    tails."""
    tail = KindTail(n=999, ranks=(1, 10, 100, 999), values=(10.0, 5.0, 1.0, 0.0))
    tails = OwnChangeTails(kinds={"cooling": tail, "leaf": tail, "gpu": tail})
    kind = np.array([KINDS.index(k) for k in ("cooling", "cooling", "leaf", "gpu", "cooling")])
    moved = np.array([20.0, 1.0, 20.0, 20.0, np.nan])
    ev = own_change_evidence(kind, moved, tails)
    assert EVIDENCE_KINDS == ("cooling",)
    assert ev[0] == pytest.approx(math.log(1000) - THRESHOLD)  # further than any training unit
    assert ev[1] == 0.0  # one in 500: below the threshold
    assert not ev[2:].any()
    assert not own_change_evidence(kind, moved, None).any()
    assert own_change_evidence(kind, moved, tails, kinds=("leaf",))[2] == pytest.approx(math.log(1000) - THRESHOLD)
    with pytest.raises(ValueError, match="one value per candidate"):
        own_change_evidence(kind[:-1], moved, tails)


def test_a_cooling_unit_that_moved_outranks_the_failed_node(small_splits):
    """In the ranking: a unit whose supply moved further than any training unit's gains the part, the parts
    still add up, and a bad part is refused by name."""
    from infrabrain.models.occlusion import candidates
    from infrabrain.models.root_cause_ranking import own_change_part, rank_root_causes, root_score_parts
    from infrabrain.models.snapshots import build_snapshot

    test = small_splits.test_sites
    si, ti = test.index[len(test) // 2]
    site = test.sites[si]
    item = build_snapshot(site, ti, test.window, si, pool=test.pool)
    g = site.graph
    cand = candidates(g, int(g.node_global[0]), 3)
    kinds = [KINDS[int(g.kind[c])] for c in cand]
    cool = kinds.index("cooling")
    # a fleet's worth of training units (the fixture's 15 rows could never pass the threshold: log 16 < 4)
    tails = OwnChangeTails(kinds={"cooling": KindTail(n=999, ranks=(1, 10, 100, 999), values=(10.0, 5.0, 1.0, 0.0))})
    hot = {k: v.clone() for k, v in item.items()}
    hot["x"][int(cand[cool]), -2:, 0] += 50.0  # its first metric jumps far past anything in training
    part = own_change_part(hot, g, cand, small_splits.feature_set, tails)
    assert part[cool] == pytest.approx(math.log(1 + tails.kinds["cooling"].n) - THRESHOLD)
    assert np.count_nonzero(part) == 1
    prior = None
    drops = np.zeros(len(cand))
    drops[kinds.index("node")] = 1.5  # the failed node's own drop
    assert rank_root_causes(g, cand, drops, prior)[0] == int(cand[kinds.index("node")])
    assert rank_root_causes(g, cand, drops, prior, own_change=part)[0] == int(cand[cool])
    parts = root_score_parts(g, cand, drops, prior, own_change=part)
    summed = sum(parts[k] for k in ("drop", "rack_credit", "prior", "cause_evidence", "sibling_evidence",
                                    "explained_away", "own_change"))
    np.testing.assert_allclose(parts["total"], summed)
    assert not root_score_parts(g, cand, drops, prior)["own_change"].any()
    with pytest.raises(ValueError, match="own_change"):
        root_score_parts(g, cand, drops, prior, own_change=part[:-1])
    with pytest.raises(ValueError, match="own_change"):
        root_score_parts(g, cand, drops, prior, own_change=np.full(len(cand), np.nan))
