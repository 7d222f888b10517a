"""Training, weights exchange and evaluation of a :class:`~infrabrain.models.gnn.FailurePredictor`.

These functions are deliberately generic so that the privacy area (Opacus DP-SGD) and the federation area
(Flower clients) can call them:

- :func:`loss_fn` ``(model, batch) -> scalar``: the mean over *snapshots* of each snapshot's masked, class
  weighted BCE over its alive nodes. Each sample's loss depends on that sample only, so Opacus' per-sample
  gradients (``loss_reduction="mean"``) are exact; an empty batch (Poisson sampling) gives a zero loss that
  still has a graph. ``ignore_causes`` leaves the positives of those causes out (:class:`TrainConfig`).
- :func:`get_weights` / :func:`set_weights`: trainable parameters as a list of numpy arrays, in
  ``named_parameters`` order (what Flower sends).
- :func:`train_model`: Adam, early stopping on a validation score (``TrainConfig.selection``), tqdm bar.
- :func:`predict_scores` / :func:`evaluate_model`: per (snapshot, node) probabilities and summary metrics.

The device follows the model (:mod:`~infrabrain.models.device`): batches are moved to the model's parameters.
``TrainConfig.device`` picks where :func:`train_model` trains; it hands the model back on the CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from infrabrain.logs import get_logger
from infrabrain.models.device import DeviceName, batch_to, model_device, resolve_device
from infrabrain.models.gnn import cause_groups_of, risk_and_cause_logits
from infrabrain.models.selection import DEFAULT_SELECTION, EarlyStopping, Selection, selection_score
from infrabrain.models.snapshots import HORIZON_S, collate_snapshots

log = get_logger("models.training")


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor], ignore_causes: Sequence[int] = (),
            lead_weight: float = 0.0, early_band_min: float = 0.0) -> torch.Tensor:
    """Mean over snapshots of the masked, class-weighted BCE of each snapshot's alive nodes.

    ``model.pos_weight`` (from :class:`~infrabrain.models.gnn.ModelConfig`) weights positive labels. Works on a
    model wrapped by Opacus (``GradSampleModule``) too: the weight is read from the wrapped module. A positive
    row whose cause (``batch["cause"]``, an index into the contract's ``CAUSES``) is in ``ignore_causes`` counts
    neither as a positive nor as a negative: it is left out of the loss. A model with a cause head
    (``ModelConfig.cause_groups``) adds, per snapshot, the cross-entropy of the cause logits on its positive rows
    whose group the head names, weighted like a positive row of the BCE (``pos_weight``, per alive node) times its
    group's ``ModelConfig.cause_weights``. The head is detached, so this term trains the head alone
    (:mod:`~infrabrain.models.gnn`). ``lead_weight`` (a probe, issue 3 follow-up 45; 0: off) weighs a positive row
    ``1 + lead_weight x min(lead, 60 min) / 60 min`` by how far ahead of its failure it lies
    (``batch["to_failure_min"]``), so the windows an alert would be earliest on count more. ``early_band_min`` (a
    probe, issue 3 follow-up 46; 0: off) leaves out of the loss the negative rows whose failure comes within that
    many minutes after the label's hour: a precursor's earlier rows, which look like its positive ones.
    """
    core = model._module if hasattr(model, "_module") else model
    batch = batch_to(batch, model_device(core))
    logits, cause_logits = risk_and_cause_logits(model, batch, classes=True)
    y, m = batch["y"], batch["label_mask"]
    if logits.shape[0] == 0:  # every parameter stays in the graph (Opacus expects a per-sample gradient of each)
        return (logits.sum() + (cause_logits.sum() if cause_logits is not None else 0.0)) * 0.0
    if len(ignore_causes):
        ignored = torch.isin(batch["cause"], torch.as_tensor(list(ignore_causes), device=y.device)) & (y > 0)
        m = m * (~ignored).to(m.dtype)
    horizon_min = HORIZON_S / 60.0  # a positive row lies at most this far before its failure
    if early_band_min and "to_failure_min" in batch:
        early = (y == 0) & (batch["to_failure_min"] <= horizon_min + early_band_min)
        m = m * (~early).to(m.dtype)
    pw = torch.tensor(float(getattr(core, "pos_weight", 1.0)), dtype=logits.dtype, device=logits.device)
    per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw, reduction="none") * m
    if lead_weight and "to_failure_min" in batch:
        lead = batch["to_failure_min"].clamp(0.0, horizon_min)
        per = per * (1.0 + lead_weight * (y > 0).to(per.dtype) * lead / horizon_min)
    per_sample = per.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    if cause_logits is not None:
        target = core.cause_targets(batch["cause"])
        pos = ((y > 0) & (m > 0) & (target >= 0)).to(logits.dtype)
        ce = F.cross_entropy(cause_logits.flatten(0, 1), target.clamp(min=0).flatten(), reduction="none",
                             weight=core.cause_weight.to(cause_logits.dtype))
        per_sample = per_sample + (ce.view_as(pos) * pos * pw).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return per_sample.mean()


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Trainable parameters as numpy arrays (copies), in ``named_parameters`` order."""
    core = model._module if hasattr(model, "_module") else model
    return [p.detach().cpu().numpy().copy() for _, p in core.named_parameters()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays from :func:`get_weights` into ``model``; shapes must match exactly (named in the error)."""
    core = model._module if hasattr(model, "_module") else model
    params = list(core.named_parameters())
    if len(weights) != len(params):
        raise ValueError(f"got {len(weights)} weight arrays, model has {len(params)} parameters")
    with torch.no_grad():
        for (name, p), w in zip(params, weights):
            arr = np.asarray(w)
            if tuple(arr.shape) != tuple(p.shape):
                raise ValueError(f"weight {name!r} has shape {tuple(arr.shape)}, model expects {tuple(p.shape)}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"weight {name!r} contains NaN or infinity")
            p.copy_(torch.from_numpy(arr.astype(np.float32)))


class TrainConfig(BaseModel):
    """Optimisation settings for :func:`train_model`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(3, ge=1, description="epochs without a gain of the selection score before stopping")
    selection: Selection = Field(DEFAULT_SELECTION,
                                 description="validation score that picks the kept epoch (selection.SELECTIONS)")
    max_batches_per_epoch: int | None = Field(None, ge=1)
    seed: int = 0
    progress: bool = True
    device: DeviceName = Field("cpu", description="where to train: cpu, cuda, cuda:N or auto (a GPU if torch sees one)")
    ignore_causes: tuple[int, ...] = Field((), description="cause indices (the contract's CAUSES) whose positive "
                                           "rows are left out of the loss (see loss_fn)")
    lead_weight: float = Field(0.0, ge=0.0, description="weight on a positive row's lead to its failure (see "
                               "loss_fn); 0: off")
    early_band_min: float = Field(0.0, ge=0.0, description="minutes after the label's hour whose failures' negative "
                                  "rows are left out of the loss (see loss_fn); 0: off")


@dataclass
class TrainResult:
    """What :func:`train_model` did: per-epoch history, best epoch and its validation metrics."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process ``DataLoader`` with :func:`collate_snapshots` (snapshots are cut on the fly)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_snapshots, generator=gen)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    max_batches: int | None = None,
    progress: bool = False,
    desc: str = "train",
    ignore_causes: Sequence[int] = (),
    lead_weight: float = 0.0,
    early_band_min: float = 0.0,
) -> float:
    """One pass of ``loss_fn`` + ``optimizer.step`` over ``loader``; returns the mean batch loss."""
    from tqdm.auto import tqdm

    model.train()
    total, count = 0.0, 0
    n = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(loader, total=n, desc=desc, disable=not progress, leave=False)
    for i, batch in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch, ignore_causes, lead_weight, early_band_min)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        count += 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def train_model(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None = None,
    config: TrainConfig | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train with Adam; early-stop on the validation score ``config.selection`` (keeps the best epoch's weights); a
    tqdm bar over epochs.

    Without ``val_ds`` it trains for ``config.epochs`` and keeps the last weights. It trains on
    ``config.device`` and hands the model back on the CPU, where checkpoints, calibration and explanations run.
    """
    cfg = config or TrainConfig()
    if len(train_ds) == 0:
        raise ValueError("training dataset is empty (no snapshots: check window, stride and time range)")
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed)
    result = TrainResult()
    best_state, stopper = None, EarlyStopping(cfg.patience)
    bar = tqdm(range(cfg.epochs), desc="epochs", disable=not cfg.progress)
    for epoch in bar:
        t0 = time.perf_counter()
        loss = train_epoch(model, loader, opt, cfg.max_batches_per_epoch, progress=cfg.progress, desc=f"epoch {epoch}",
                           ignore_causes=cfg.ignore_causes, lead_weight=cfg.lead_weight,
                           early_band_min=cfg.early_band_min)
        rec: dict[str, float] = {"epoch": epoch, "loss": loss, "epoch_s": time.perf_counter() - t0}
        if val_ds is not None and len(val_ds):
            val = evaluate_model(model, val_ds, batch_size=cfg.batch_size)
            rec.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
            score = selection_score(val, cfg.selection)
            rec["val_selection_score"] = score
            if stopper.step(score):
                result.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
                result.best_val = {k: v for k, v in val.items() if isinstance(v, (int, float))}
        result.history.append(rec)
        bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items() if k in ("loss", "val_pr_auc")})
        log.info("epoch", extra={k: float(v) for k, v in rec.items()})
        if on_epoch:
            on_epoch(epoch, rec)
        if val_ds is not None and stopper.stop:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history) - 1
    model.to("cpu")
    return result


@torch.no_grad()
def predict_scores(model: nn.Module, dataset: Dataset, batch_size: int = 16, progress: bool = False) -> pd.DataFrame:
    """Per (snapshot, alive node) predictions: columns ``site``, ``t``, ``node``, ``score``, ``label``, ``cause``,
    ``root``, ``logit``, and for a model with a cause head one ``cause_p_<group>`` column per
    ``ModelConfig.cause_groups`` (the head's probability of that group, given a failure). ``node`` is the
    position in the site's node order (``kind_index['node']``). Runs on the model's device; the table is built on
    the CPU."""
    from tqdm.auto import tqdm

    model.eval()
    device = model_device(model)
    p_cols = [cause_column(g) for g in cause_groups_of(model)]
    rows: list[pd.DataFrame] = []
    for batch in tqdm(make_loader(dataset, batch_size), desc="predict", disable=not progress, leave=False):
        logits, cause_logits = risk_and_cause_logits(model, batch_to(batch, device))
        logits = logits.cpu()
        m = batch["label_mask"] > 0
        b_idx, n_idx = torch.nonzero(m, as_tuple=True)
        lg = logits[m].double().numpy()
        cols = {
            "site": batch["site"][b_idx].numpy(), "t": batch["t"][b_idx].numpy(), "node": n_idx.numpy(),
            "logit": lg, "score": 1.0 / (1.0 + np.exp(-lg)), "label": batch["y"][m].numpy().astype(bool),
            "cause": batch["cause"][m].numpy(), "root": batch["root"][m].numpy(),
        }
        if cause_logits is not None:
            p = torch.softmax(cause_logits.cpu()[m].double(), dim=-1).numpy()
            cols.update({c: p[:, i] for i, c in enumerate(p_cols)})
        rows.append(pd.DataFrame(cols))
    if not rows:
        return pd.DataFrame(columns=["site", "t", "node", "logit", "score", "label", "cause", "root", *p_cols])
    return pd.concat(rows, ignore_index=True)


#: Prefix of the score table's cause-probability columns (:func:`predict_scores`).
CAUSE_COLUMN_PREFIX = "cause_p_"


def cause_column(group: str) -> str:
    """The score table's column of the cause head's probability of ``group`` (:func:`predict_scores`)."""
    return CAUSE_COLUMN_PREFIX + group


def summary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """PR-AUC (average precision), ROC-AUC, positives, Brier score; NaN where undefined (one class only)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    out: dict[str, float] = {"n": float(len(labels)), "positives": float(labels.sum())}
    two = 0 < labels.sum() < len(labels)
    out["pr_auc"] = float(average_precision_score(labels, scores)) if two else float("nan")
    out["roc_auc"] = float(roc_auc_score(labels, scores)) if two else float("nan")
    if len(labels) and np.all((scores >= 0) & (scores <= 1)):
        out["brier"] = float(brier_score_loss(labels, scores))
    return out


def evaluate_model(model: nn.Module, dataset: Dataset, batch_size: int = 16) -> dict[str, Any]:
    """Per-node metrics of ``model`` on ``dataset``: ``pr_auc``, ``pr_auc_cascade`` (thermal and network failures
    against every negative), ``pr_auc_causes`` (mean of the per-cause-group PR-AUCs, software excepted), ``roc_auc``,
    ``loss`` (weighted BCE), ``brier``, ``n`` and ``positives``."""
    from infrabrain.models.evaluation import cascade_pr_auc, cause_macro_pr_auc

    df = predict_scores(model, dataset, batch_size)
    out: dict[str, Any] = summary_metrics(df["label"].to_numpy(), df["score"].to_numpy())
    out["pr_auc_cascade"] = cascade_pr_auc(df) if len(df) else float("nan")
    out["pr_auc_causes"] = cause_macro_pr_auc(df) if len(df) else float("nan")
    core = model._module if hasattr(model, "_module") else model
    pw = float(getattr(core, "pos_weight", 1.0))
    if len(df):
        y = df["label"].to_numpy(float)
        lg = torch.tensor(df["logit"].to_numpy())
        out["loss"] = float(F.binary_cross_entropy_with_logits(lg, torch.tensor(y), pos_weight=torch.tensor(pw)))
    else:
        out["loss"] = float("nan")
    return out


#: The largest ratio of a group's cause weight to the weight a group of average size gets
#: (:func:`estimate_cause_weights`): a group with a handful of training rows (one thermal incident) does not
#: outweigh the rest of the head's training.
CAUSE_WEIGHT_CAP = 10.0


def estimate_cause_weights(dataset: Any, groups: Sequence[str], balance: float,
                           ignore_causes: Sequence[int] = (), cap: float = CAUSE_WEIGHT_CAP) -> tuple[float, ...]:
    """Per group of ``groups``, the weight of its failing rows in the cause head's cross-entropy: ``(mean count /
    count) ** balance`` over the dataset's alive failing rows of each group (those of ``ignore_causes`` left out,
    as the loss leaves them), clipped to ``[1 / cap, cap]`` and scaled so the rows' mean weight is 1 (the
    head's loss keeps its size). ``balance`` 0 weighs every row alike (the head learns the training mix); 1
    weighs every group alike, so the head does not lean to the commonest group. A group without rows gets
    the largest weight (it is never a target there). () where no row has a named group."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must lie in [0, 1], got {balance}")
    if cap < 1.0:
        raise ValueError(f"cap must be at least 1, got {cap}")
    from infrabrain.models.gnn import cause_group_of

    group_of = list(cause_group_of().values())
    counts = dict.fromkeys(groups, 0)
    ignored = set(int(c) for c in ignore_causes)
    for cause in dataset.failing_causes():
        g = group_of[int(cause)] if int(cause) >= 0 and int(cause) not in ignored else None
        if g in counts:
            counts[g] += 1
    n = np.array([counts[g] for g in groups], dtype=np.float64)
    if n.sum() == 0:
        return ()
    present = n > 0
    raw = np.where(present, np.clip((n[present].mean() / np.maximum(n, 1.0)) ** balance, 1.0 / cap, cap), 0.0)
    raw /= float((raw * n).sum() / n.sum())
    raw[~present] = raw[present].max()
    return tuple(float(w) for w in raw)


def estimate_pos_weight(dataset: Any, cap: float = 50.0) -> float:
    """``negatives / positives`` of the dataset's alive node labels, clipped to ``[1, cap]`` (class weighting)."""
    labels = dataset.labels()
    pos = float(labels.sum())
    if pos == 0:
        return cap
    return float(np.clip((len(labels) - pos) / pos, 1.0, cap))
