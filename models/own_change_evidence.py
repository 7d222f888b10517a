"""How far a candidate's own telemetry moved over the window, as evidence of where a failure started (issue 3
follow-up 37).

Every other part of the root-cause ranking (:func:`~infrabrain.models.root_cause_ranking.root_score_parts`) reads the
model: how far occluding a candidate lowers the failed node's logit, how much its other nodes are at risk, which
cause the head names. A cooling unit's fault reaches its nodes only as heat, and the model reads heat at the GPU
that fails first: the unit's own occlusion drop is about 0. Where the training sites never saw a cooling failure
(draw 2 of the goals panel) nothing credits the unit at all, although its supply temperature climbs by up to 14 C
before its nodes fail. This part reads the candidate's own telemetry instead, against the training sites':

- the *own change* of a component (:func:`own_change`) is how far its inputs moved over the window: the largest,
  over its kind's metrics, of ``|mean of the last two bins - mean of the first two|`` of the normalised input
  ``x`` (observed bins only);
- its *surprise* is ``-log((1 + m) / (1 + n))``, where ``m`` of the ``n`` training rows of its kind moved at least
  as far (:class:`OwnChangeTails`, fitted on the training split, kept in the model card): a unit that moved
  further than any training unit scores ``log(1 + n)``;
- the evidence of a candidate of :data:`EVIDENCE_KINDS` is ``max(0, surprise - THRESHOLD)``: only a change rarer
  than one training row in ``e ** THRESHOLD`` counts.

Only cooling units read it (:data:`EVIDENCE_KINDS`): a leaf's port errors move as much when one node's cable fails
as when the leaf does, and a PDU's load as much when one node's supply does (the probe in follow-up 37).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from infrabrain.models.features import KINDS, FeatureSet

if TYPE_CHECKING:
    from infrabrain.models.snapshots import SnapshotDataset

#: Kinds whose own change counts as evidence (see the module docstring for why only cooling units).
EVIDENCE_KINDS: tuple[str, ...] = ("cooling",)
#: Surprise (nats) a change must exceed before it counts: rarer than one training row in about 55.
THRESHOLD = 4.0
#: Bins averaged at each end of the window.
END_BINS = 2
#: The fitted tail keeps the values at these surprise steps (nats) and interpolates between them.
TAIL_STEP = 0.1
#: Card key of the fitted tails.
CARD_KEY = "own_change_tails"


class KindTail(BaseModel):
    """One kind's training own changes: ``values[i]`` is the ``ranks[i]``-th largest of ``n``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1, description="training rows of this kind")
    ranks: tuple[int, ...] = Field(description="1-based ranks from the largest, increasing")
    values: tuple[float, ...] = Field(description="the value at each rank, non-increasing")

    @model_validator(mode="after")
    def _check(self) -> KindTail:
        if not self.ranks or len(self.ranks) != len(self.values):
            raise ValueError(f"ranks ({len(self.ranks)}) and values ({len(self.values)}) must be non-empty and "
                             "of one length")
        r, v = np.asarray(self.ranks), np.asarray(self.values, dtype=np.float64)
        if r[0] < 1 or r[-1] > self.n or np.any(np.diff(r) <= 0):
            raise ValueError(f"ranks must increase within 1..{self.n}, got {list(self.ranks)[:5]}...")
        if not np.all(np.isfinite(v)) or np.any(np.diff(v) > 0):
            raise ValueError("values must be finite and non-increasing with rank")
        return self

    def surprise(self, values: np.ndarray) -> np.ndarray:
        """``-log((1 + m) / (1 + n))`` for each value (``m`` training rows at least as large; interpolated
        between the kept ranks); NaN gives 0."""
        v = np.asarray(values, dtype=np.float64)
        levels = -np.log((1.0 + np.asarray(self.ranks, dtype=np.float64)) / (1.0 + self.n))
        top = np.asarray(self.values, dtype=np.float64)
        # np.interp wants increasing x: values ascend as the rank (and the surprise) falls
        s = np.interp(v, top[::-1], levels[::-1], left=0.0, right=levels[0])
        s = np.where(v > top[0], math.log(1.0 + self.n), s)  # beyond every training row
        return np.where(np.isfinite(v), s, 0.0)


class OwnChangeTails(BaseModel):
    """Per kind, how far the training split's components moved over a window (:func:`own_change`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(1, ge=1, le=1)
    end_bins: int = Field(END_BINS, ge=1)
    kinds: dict[str, KindTail]

    @model_validator(mode="after")
    def _check_kinds(self) -> OwnChangeTails:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"own-change tails for unknown kind(s) {unknown}; kinds are {list(KINDS)}")
        return self

    @classmethod
    def from_card(cls, card: Mapping) -> OwnChangeTails | None:
        """The card's tails (``card[CARD_KEY]``), None for a card from before follow-up 37."""
        raw = card.get(CARD_KEY)
        return None if raw is None else cls.model_validate(raw)

    def surprise(self, kind: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per component (``kind`` indexes :data:`KINDS`), the surprise of its own change; 0 for a kind not
        fitted."""
        kind, values = np.asarray(kind, dtype=np.int64), np.asarray(values, dtype=np.float64)
        out = np.zeros(len(values), dtype=np.float64)
        for name, tail in self.kinds.items():
            sel = kind == KINDS.index(name)
            if sel.any():
                out[sel] = tail.surprise(values[sel])
        return out


def _slot_counts(feature_set: FeatureSet) -> np.ndarray:
    return np.array([len(feature_set.metrics_of(k)) if k in feature_set.kinds else 0 for k in KINDS])


def own_change(item: Mapping[str, torch.Tensor], feature_set: FeatureSet, end_bins: int = END_BINS) -> np.ndarray:
    """Per component of snapshot ``item``, the largest ``|mean of the last end_bins bins - mean of the first|`` over
    its kind's metric slots of the normalised input (observed bins only); NaN where no slot was observed at both
    ends. Refuses a window shorter than two ends."""
    x = item["x"].detach().cpu().numpy().astype(np.float64)
    ok = item["mask"].detach().cpu().numpy() > 0
    if x.shape[1] < 2 * end_bins:
        raise ValueError(f"own change needs at least {2 * end_bins} bins, the snapshot has {x.shape[1]}")

    def end_mean(sl: slice) -> np.ndarray:
        v, m = x[:, sl, :], ok[:, sl, :]
        with np.errstate(invalid="ignore"):
            return np.where(m.any(axis=1), (v * m).sum(axis=1) / m.sum(axis=1), np.nan)

    moved = np.abs(end_mean(slice(-end_bins, None)) - end_mean(slice(0, end_bins)))
    slots = np.arange(x.shape[2])[None, :] < _slot_counts(feature_set)[item["kind"].cpu().numpy()][:, None]
    moved = np.where(slots & np.isfinite(moved), moved, -np.inf).max(axis=1)
    return np.where(np.isfinite(moved), moved, np.nan)


def fit_own_change_tails(dataset: SnapshotDataset | Sequence[Mapping[str, torch.Tensor]], feature_set: FeatureSet,
                         every: int = 5,
                         end_bins: int = END_BINS) -> OwnChangeTails | None:
    """:class:`OwnChangeTails` of the alive components in every ``every``-th snapshot of ``dataset`` (a
    :class:`~infrabrain.models.snapshots.SnapshotDataset`, the training split); None when it has no snapshot."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    seen: dict[int, list[np.ndarray]] = {}
    for i in range(0, len(dataset), every):
        item = dataset[i]
        moved = own_change(item, feature_set, end_bins)
        kind = item["kind"].numpy()
        keep = (item["alive"].numpy() > 0) & np.isfinite(moved)
        for k in np.unique(kind[keep]):
            seen.setdefault(int(k), []).append(moved[keep & (kind == k)])
    if not seen:
        return None
    tails = {}
    for k, parts in sorted(seen.items()):
        desc = np.sort(np.concatenate(parts))[::-1]
        n = len(desc)
        steps = np.arange(0.0, math.log(1.0 + n) + TAIL_STEP, TAIL_STEP)
        ranks = np.unique(np.clip(np.round((1.0 + n) * np.exp(-steps) - 1.0), 1, n).astype(np.int64))
        tails[KINDS[k]] = KindTail(n=n, ranks=tuple(int(r) for r in ranks),
                                   values=tuple(float(desc[r - 1]) for r in ranks))
    return OwnChangeTails(end_bins=end_bins, kinds=tails)


def own_change_evidence(kind: np.ndarray, moved: np.ndarray, tails: OwnChangeTails | None,
                        kinds: tuple[str, ...] = EVIDENCE_KINDS, threshold: float = THRESHOLD) -> np.ndarray:
    """Per candidate (``kind`` and ``moved``: its kind and :func:`own_change`), ``max(0, surprise - threshold)``
    for the kinds that read it, else 0; all 0 without ``tails``."""
    moved = np.asarray(moved, dtype=np.float64)
    kind = np.asarray(kind, dtype=np.int64)
    if kind.shape != moved.shape:
        raise ValueError(f"kind {kind.shape} and moved {moved.shape} must hold one value per candidate")
    if tails is None:
        return np.zeros(len(moved), dtype=np.float64)
    reads = np.isin(kind, [KINDS.index(k) for k in kinds])
    return np.where(reads, np.maximum(tails.surprise(kind, moved) - threshold, 0.0), 0.0)
