"""The next-hour failure predictor: a small spatio-temporal graph network over a site's typed topology.

Architecture (all trainable layers are ``nn.Linear`` applied to batch-first tensors ``[B, N, ...]`` so that
Opacus computes exact per-snapshot gradients; batch and component dimensions are never folded into one for a
trainable layer):

1. **Temporal encoder per component.** Parameter-free per-metric window summaries (last, mean, max, min, last
   minus first observed 5-minute bin: what the tabular baseline reads) of the normalised values and of their
   peer deviations, the observed fraction of each metric, plus the one-hot component kind (type encoding, which
   tells the encoder how to read the per-kind feature layout) go through an MLP
   ``Linear(in -> 2H) -> ReLU -> Linear(2H -> H)``. With ``bin_features`` (the encoder before issue 3 follow-up
   4) it reads every time bin of the pooled window ``[B, N, P, F]`` (values, observed fractions, peer
   deviations; ``P = window / pool``) as well as the value summaries: 622 encoder inputs instead of 172 at the
   simulator's 15 metric slots (86 k parameters instead of 57 k at H = 32), which overfit the few training sites.
   With ``input_scaling`` the inputs are first standardised per component kind with a centre and scale fitted on
   training snapshots (:func:`fit_input_scaling`; buffers, not trained), as the tabular baseline's scaler does,
   so that a rare decisive reading (one GPU's XID-63 state) stands out from ordinary excursions.
2. **GPU pooling**: the mean and max of each node's alive GPUs' states (parameter-free) join the node.
3. **Message passing** over the typed topology of the infrastructure (node, leaf, spine, PDU, cooling, rack):
   for every edge type and direction, the mean of the *alive* neighbours' states (parameter-free scatter over
   the flattened edge list: dead components are removed), then ``Linear((3 + 2 T) H -> H)`` with a residual
   connection; ``layers`` rounds (3 reach cooling -> rack -> node and node -> leaf -> spine). GPUs only send
   (pooling), which keeps a 10,000-GPU site cheap.
4. **Head**: per node, ``Linear(4 H -> H) -> ReLU -> Linear(H -> 1)`` on the node's final and initial states and
   its GPU pool: one failure logit per node.
5. **Cause head** (``cause_groups``, issue 3 follow-up 33): ``Linear(4 H -> H) -> ReLU -> Linear(H -> G)`` on the
   same node representation, *detached*: which of the G cause groups a failure of the node would belong to. It
   types the risk (``p(fail, group) = p(fail) x softmax(cause logits)``) without changing it: no gradient of
   its loss reaches the shared layers, and it is built with the random state forked, so the failure logits train
   exactly as without it. ``cause_weights`` weight each group's rows in its cross-entropy (follow-up 35: rare
   groups can count more; by default every row counts alike: evening the groups out named no more failures
   right). ``cause_split`` gives a group one class per contract cause in it, the group's logit their
   log-sum-exp (follow-up 42: "other" split into the GPU bus, host maintenance, SSD and the rest named the groups
   no better; off by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from infrabrain.models.features import KINDS
from infrabrain.models.snapshots import N_EDGE_TYPES


class ModelConfig(BaseModel):
    """Hyper-parameters of :class:`FailurePredictor` (stored in the model card)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(60, ge=2, description="time steps per snapshot")
    pool: int = Field(5, ge=1, description="steps averaged per time bin (window must be a multiple)")
    n_features: int = Field(..., ge=1, description="F_max of the feature set")
    n_kinds: int = Field(len(KINDS), ge=1)
    n_edge_types: int = Field(N_EDGE_TYPES, ge=0)
    hidden: int = Field(32, ge=4, description="H: state width")
    layers: int = Field(3, ge=0, description="message-passing rounds")
    pos_weight: float = Field(10.0, gt=0, description="BCE weight of positive labels (class weighting)")
    level_features: bool = Field(True, description="feed the normalised levels themselves (False: only the "
                                 "deviations from peers and the observed fractions)")
    summary_features: bool = Field(True, description="also feed per-metric window summaries (last bin, mean, max, "
                                   "min, last minus first bin) of the observed values, like the tabular baseline")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the encoder input and on the states "
                           "(training only; regularises towards features that transfer to unseen sites)")
    peer_features: bool = Field(True, description="also feed each value minus the snapshot's mean over alive "
                                "components of the same kind (site-relative inputs that transfer across sites)")
    bin_features: bool = Field(True, description="feed every time bin of the views (observed fraction, level, peer "
                               "deviation); False feeds window summaries of them only (fewer weights)")
    input_scaling: bool = Field(False, description="standardise each encoder input per component kind with a centre "
                                "and scale fitted on training snapshots (fit_input_scaling), as the tabular "
                                "baseline's StandardScaler does: rare decisive readings (an XID) stand out")
    cause_groups: tuple[str, ...] = Field((), description="cause groups (the simulator contract's CAUSE_GROUP "
                                          "values) the detached cause head names; empty: no cause head")
    cause_weights: tuple[float, ...] = Field((), description="per cause group (cause_groups order), the weight of "
                                             "its rows in the cause head's cross-entropy "
                                             "(training.estimate_cause_weights); empty: every group weighs 1")
    cause_split: tuple[str, ...] = Field((), description="cause groups (of cause_groups) whose causes the head "
                                         "tells apart as classes of their own, the group's probability their sum: "
                                         "'other' holds a GPU falling off the bus, host maintenance and SSD "
                                         "failures, which share no signal; empty: one class per group")

    @field_validator("cause_groups")
    @classmethod
    def _validate_cause_groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = set(cause_group_of().values())
        unknown = [g for g in v if g not in known]
        if unknown:
            raise ValueError(f"unknown cause group(s) {unknown}; the contract's groups are {sorted(known)}")
        if len(set(v)) != len(v):
            raise ValueError(f"cause_groups lists a group twice: {list(v)}")
        if len(v) == 1:
            raise ValueError(f"cause_groups needs at least two groups to choose between, got {list(v)}")
        return v

    @field_validator("cause_weights")
    @classmethod
    def _validate_cause_weights(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [w for w in v if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"cause_weights must be finite and positive, got {bad} in {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_cause_weights_match_groups(self) -> ModelConfig:
        if self.cause_weights and len(self.cause_weights) != len(self.cause_groups):
            raise ValueError(f"cause_weights has {len(self.cause_weights)} weights for {len(self.cause_groups)} "
                             f"cause_groups {list(self.cause_groups)}: give one per group, or none")
        bad = [g for g in self.cause_split if g not in self.cause_groups]
        if bad:
            raise ValueError(f"cause_split names {bad}, which cause_groups {list(self.cause_groups)} does not hold")
        return self


def cause_group_of() -> dict[str, str]:
    """The simulator contract's ``CAUSE_GROUP`` (cause name -> group), in ``CAUSES`` order."""
    from infrabrain.simulation.faults import CAUSE_GROUP, CAUSES

    return {c: CAUSE_GROUP.get(c, "other") for c in CAUSES}


def cause_classes(config: ModelConfig) -> tuple[tuple[str, str], ...]:
    """The cause head's classes as ``(group, class)``: one per group of ``cause_groups``, except that a group of
    ``cause_split`` has one per contract cause in it (``("other", "gpu")``, ...), in ``CAUSES`` order."""
    out: list[tuple[str, str]] = []
    for g in config.cause_groups:
        split = [c for c, cg in cause_group_of().items() if cg == g] if g in config.cause_split else []
        out += [(g, c) for c in split] if len(split) > 1 else [(g, g)]
    return tuple(out)


class FailurePredictor(nn.Module):
    """Per-node next-hour failure logits from a batch of snapshots (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.window % c.pool:
            raise ValueError(f"window ({c.window}) must be a multiple of pool ({c.pool})")
        n_in = c.n_kinds + (5 * c.n_features if c.summary_features else 0)
        if c.bin_features:  # observed fractions, levels, peer deviations of every bin
            n_in += (1 + int(c.level_features) + int(c.peer_features)) * self.bins * c.n_features
        else:  # observed fraction over the window, summaries of the peer deviations
            n_in += c.n_features + (5 * c.n_features if c.peer_features else 0)
        if c.input_scaling:  # buffers: saved with the weights, never trained (fit_input_scaling sets them)
            self.register_buffer("in_center", torch.zeros(c.n_kinds, n_in - c.n_kinds))
            self.register_buffer("in_scale", torch.ones(c.n_kinds, n_in - c.n_kinds))
        self.enc1 = nn.Linear(n_in, 2 * c.hidden)
        self.enc2 = nn.Linear(2 * c.hidden, c.hidden)
        n_msg = 3 + 2 * max(c.n_edge_types - 1, 0)  # self, GPU mean+max, both directions of infra edge types
        self.mp = nn.ModuleList([nn.Linear(n_msg * c.hidden, c.hidden) for _ in range(c.layers)])
        self.head1 = nn.Linear(4 * c.hidden, c.hidden)
        self.head2 = nn.Linear(c.hidden, 1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(c.dropout)
        if c.cause_groups:
            classes = cause_classes(c)
            with torch.random.fork_rng(devices=[]):  # the failure head's training draws the same numbers
                self.cause_head = nn.Sequential(nn.Linear(4 * c.hidden, c.hidden), nn.ReLU(),
                                                nn.Linear(c.hidden, len(classes)))
            # index into the contract's CAUSES (-1: no failure, the table's last entry) -> class position or -1
            table = [next((i for i, (g, k) in enumerate(classes) if g == group and k in (cause, group)), -1)
                     for cause, group in cause_group_of().items()]
            self.register_buffer("cause_to_class", torch.tensor(table + [-1], dtype=torch.int64), persistent=False)
            #: per group, its classes' positions (the group's logit is their log-sum-exp)
            self._group_classes = [[i for i, (g, _) in enumerate(classes) if g == grp] for grp in c.cause_groups]
            weights = c.cause_weights or (1.0,) * len(c.cause_groups)
            self.register_buffer("cause_weight", torch.tensor([weights[c.cause_groups.index(g)] for g, _ in classes],
                                                              dtype=torch.float32), persistent=False)

    @property
    def bins(self) -> int:
        """Time bins per snapshot (``window / pool``)."""
        return self.config.window // self.config.pool

    @property
    def pos_weight(self) -> float:
        return float(self.config.pos_weight)

    def encode_components(self, x: torch.Tensor, mask: torch.Tensor, kind: torch.Tensor,
                          peer: torch.Tensor | None = None) -> torch.Tensor:
        """``x``, ``mask`` ``[B, N, P, F]``, ``kind`` ``[B, N]`` -> initial states ``[B, N, H]``; ``peer``
        optionally gives the per-kind peer means ``[B, K, P, F]`` (default: computed from this snapshot)."""
        return self.encode_inputs(self.encoder_inputs(x, mask, kind, peer))

    def encode_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder MLP: inputs ``[B, N, D]`` from :meth:`encoder_inputs` -> states ``[B, N, H]``."""
        return self.act(self.enc2(self.drop(self.act(self.enc1(self.drop(z))))))

    def encoder_inputs(self, x: torch.Tensor, mask: torch.Tensor, kind: torch.Tensor,
                       peer: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        """Parameter-free encoder inputs ``[B, N, D]`` (views of the window, one-hot kind; see module docstring)."""
        b, n, p, f = x.shape
        if p != self.bins or f != self.config.n_features:
            raise ValueError(
                f"snapshot has {p} time bins and {f} features; model expects {self.bins} bins "
                f"(window {self.config.window} / pool {self.config.pool}) and {self.config.n_features} features"
            )
        m = mask.to(x.dtype)
        onehot = nn.functional.one_hot(kind.clamp(0, self.config.n_kinds - 1), self.config.n_kinds).to(x.dtype)
        xm = x * m
        if self.config.bin_features:
            views = [m.reshape(b, n, p * f)]
            if self.config.level_features:
                views.append(xm.reshape(b, n, p * f))
            if self.config.peer_features:
                views.append(self.peer_deviation(xm, m, onehot, peer).reshape(b, n, p * f))
        else:
            views = [m.mean(dim=2)]
            if self.config.peer_features:
                views.append(self.window_summary(self.peer_deviation(xm, m, onehot, peer), m))
        if self.config.summary_features:
            views.append(self.window_summary(xm, m))
        v = torch.cat(views, dim=2)
        if self.config.input_scaling and not raw:
            v = (v - onehot @ self.in_center) / (onehot @ self.in_scale)
        return torch.cat([v, onehot], dim=2)

    @staticmethod
    def window_summary(xm: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Per (component, metric) summaries over the window's observed bins -> ``[B, N, 5 F]``: last, mean, max,
        min, last minus first observed bin (parameter-free; zeros for a metric never observed in the window)."""
        obs = m > 0
        cnt = obs.sum(dim=2).clamp(min=1)
        mean = xm.sum(dim=2) / cnt
        never = ~obs.any(dim=2)
        mx = xm.masked_fill(~obs, float("-inf")).amax(dim=2).masked_fill(never, 0.0)
        mn = xm.masked_fill(~obs, float("inf")).amin(dim=2).masked_fill(never, 0.0)
        last = torch.zeros_like(mean)
        first = torch.zeros_like(mean)
        p = xm.shape[2]
        xp, op = xm.permute(2, 0, 1, 3).contiguous(), obs.permute(2, 0, 1, 3).contiguous()
        for i in range(p):  # P (12) small [B, N, F] selects: cheaper than an index gather over [B, N, P, F]
            last = torch.where(op[i], xp[i], last)
            first = torch.where(op[p - 1 - i], xp[p - 1 - i], first)
        return torch.cat([last, mean, mx, mn, last - first], dim=2)

    @staticmethod
    def peer_mean(xm: torch.Tensor, m: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Mean of each (bin, metric) over the snapshot's observed components of each kind: ``[B, K, P, F]``."""
        s = torch.einsum("bnk,bnpf->bkpf", onehot, xm)
        c = torch.einsum("bnk,bnpf->bkpf", onehot, m).clamp(min=1.0)
        return s / c

    @staticmethod
    def peer_deviation(xm: torch.Tensor, m: torch.Tensor, onehot: torch.Tensor,
                       peer: torch.Tensor | None = None) -> torch.Tensor:
        """Each observed value minus the mean of the same (bin, metric) over the snapshot's components of the same
        kind (parameter-free, within one snapshot, so Opacus per-sample gradients stay exact).

        A site's ambient temperature, load level or fleet age shifts every component alike; the deviation from
        its peers at the same moment is what transfers from the training sites to a new one. ``peer``
        (``[B, K, P, F]``) overrides the means, e.g. the full site's when the snapshot is a subgraph."""
        if peer is None:
            peer = FailurePredictor.peer_mean(xm, m, onehot)
        return xm - torch.einsum("bnk,bkpf->bnpf", onehot, peer) * m

    def propagate(self, h: torch.Tensor, alive: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> list[torch.Tensor]:
        """Mean of alive neighbours per edge type and direction: list of ``[B, M, H]`` (parameter-free)."""
        b, m, hid = h.shape
        flat = (h * alive[..., None]).reshape(b * m, hid)
        a = alive.reshape(b * m)
        out = []
        src, dst = edge_index[:, 0], edge_index[:, 1]
        for t in range(1, self.config.n_edge_types):  # type 0 (gpu_in_node) is the GPU pooling
            sel = edge_type == t
            for s, d in ((src[sel], dst[sel]), (dst[sel], src[sel])):
                agg = torch.zeros_like(flat).index_add(0, d, flat[s])
                deg = torch.zeros_like(a).index_add(0, d, a[s]).clamp(min=1.0)
                out.append((agg / deg[:, None]).view(b, m, hid))
        return out

    def pool_gpus(self, h0: torch.Tensor, alive: torch.Tensor, gpu_edge: torch.Tensor, m: int) -> torch.Tensor:
        """Mean and max of each node's alive GPUs' states -> ``[B, M, 2H]`` on the infrastructure slots."""
        b, n, hid = h0.shape
        flat = (h0 * alive[..., None]).reshape(b * n, hid)
        a = alive.reshape(b * n)
        src, dst = gpu_edge[:, 0], gpu_edge[:, 1]
        s = flat.new_zeros(b * m, hid).index_add(0, dst, flat[src])
        cnt = a.new_zeros(b * m).index_add(0, dst, a[src]).clamp(min=1.0)
        mx = flat.new_zeros(b * m, hid).scatter_reduce(0, dst[:, None].expand(-1, hid), flat[src], "amax",
                                                       include_self=True)
        return torch.cat([s / cnt[:, None], mx], dim=1).view(b, m, 2 * hid)

    def cause_targets(self, cause: torch.Tensor) -> torch.Tensor:
        """Causes (indices into the contract's ``CAUSES``, -1 for none) -> positions of the head's classes
        (:func:`cause_classes`: ``cause_groups``' positions without ``cause_split``); -1 for no failure and for a
        cause whose group the head does not name."""
        if not self.config.cause_groups:
            raise ValueError("model was built without a cause head (ModelConfig.cause_groups is empty)")
        return self.cause_to_class[cause.clamp(min=-1)]

    def forward(self, batch: dict[str, torch.Tensor], with_causes: bool = False,
                cause_classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Batch from :func:`~infrabrain.models.snapshots.collate_snapshots` -> logits ``[B, n_node_max]``; with
        ``with_causes`` also the cause head's logits per group ``[B, n_node_max, G]`` (``cause_classes``: per class
        of :func:`cause_classes`, what the head is trained on)."""
        if with_causes and not self.config.cause_groups:
            raise ValueError("with_causes=True but the model has no cause head (ModelConfig.cause_groups is empty)")
        hn = self.node_representation(batch)
        logits = self.head2(self.drop(self.act(self.head1(self.drop(hn))))).squeeze(-1)
        if not with_causes:
            return logits
        fine = self.cause_head(hn.detach())
        if cause_classes or not self.config.cause_split:
            return logits, fine
        return logits, torch.stack([fine[..., idx].logsumexp(-1) for idx in self._group_classes], dim=-1)

    def node_representation(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the heads read, per node: its final and initial states and its GPU pool ``[B, n_node_max, 4H]``."""
        x, mask, kind, alive = batch["x"], batch["mask"], batch["kind"], batch["alive"]
        hid = self.config.hidden
        h0 = self.encode_components(x, mask, kind, batch.get("peer_mean")) * alive[..., None]
        ia = batch["infra_alive"]
        m = ia.shape[1]
        hi = h0.gather(1, batch["infra_index"][..., None].expand(-1, -1, hid)) * ia[..., None]
        gpu = self.pool_gpus(h0, alive, batch["gpu_edge"], m)
        h = hi
        for layer in self.mp:
            msgs = self.propagate(h, ia, batch["edge_index"], batch["edge_type"])
            h = (h + self.act(layer(torch.cat([h, gpu, *msgs], dim=2)))) * ia[..., None]
        idx = batch["node_slot"][..., None]
        return torch.cat([h.gather(1, idx.expand(-1, -1, hid)), hi.gather(1, idx.expand(-1, -1, hid)),
                          gpu.gather(1, idx.expand(-1, -1, 2 * hid))], dim=2)


def cause_groups_of(model: nn.Module) -> tuple[str, ...]:
    """The cause groups ``model``'s cause head names (an Opacus wrapper is looked through); () without a head."""
    core = model._module if hasattr(model, "_module") else model
    return tuple(getattr(getattr(core, "config", None), "cause_groups", ()))


def risk_and_cause_logits(model: nn.Module, batch: dict[str, torch.Tensor],
                          classes: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model(batch)``'s failure logits and, from the same pass, its cause logits per group (``classes``: per
    class, as trained; None for a model without a cause head). ``model`` may be wrapped by Opacus."""
    if not cause_groups_of(model):
        return model(batch), None
    return model(batch, with_causes=True, cause_classes=True) if classes else model(batch, with_causes=True)


@torch.no_grad()
def fit_input_scaling(model: FailurePredictor, batches: Iterable[dict[str, torch.Tensor]],
                      floor: float = 0.1) -> None:
    """Set ``model``'s input centre and scale (``ModelConfig.input_scaling``) to the mean and standard deviation
    (at least ``floor``) of each encoder input over the alive components of each kind in ``batches``."""
    if not model.config.input_scaling:
        raise ValueError("model was built without input_scaling")
    k = model.config.n_kinds
    d = model.in_center.shape[1]
    s1 = torch.zeros(k, d, dtype=torch.float64)
    s2 = torch.zeros(k, d, dtype=torch.float64)
    cnt = torch.zeros(k, dtype=torch.float64)
    for b in batches:
        z = model.encoder_inputs(b["x"], b["mask"], b["kind"], b.get("peer_mean"), raw=True)[..., :d].double()
        w = nn.functional.one_hot(b["kind"].clamp(0, k - 1), k).double() * b["alive"][..., None].double()
        s1 += torch.einsum("bnk,bnd->kd", w, z)
        s2 += torch.einsum("bnk,bnd->kd", w, z * z)
        cnt += w.sum(dim=(0, 1))
    n = cnt.clamp(min=1.0)[:, None]
    mean = s1 / n
    std = (s2 / n - mean * mean).clamp(min=0.0).sqrt()
    model.in_center.copy_(mean.float())
    model.in_scale.copy_(std.clamp(min=floor).float())


def build_model(n_features: int, window: int, **overrides: object) -> FailurePredictor:
    """Convenience constructor: ``FailurePredictor(ModelConfig(n_features=..., window=..., **overrides))``."""
    return FailurePredictor(ModelConfig(n_features=n_features, window=window, **overrides))
