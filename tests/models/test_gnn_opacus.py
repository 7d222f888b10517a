"""The GNN is Opacus-compatible: per-snapshot gradients equal gradients of micro-batches of one."""

from __future__ import annotations

import warnings

import pytest
import torch

from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS
from infrabrain.models.gnn import build_model
from infrabrain.models.snapshots import collate_snapshots
from infrabrain.models.training import loss_fn


def _double(batch):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}


@pytest.mark.parametrize(("bin_features", "scaled", "causes", "split"),
                         [(True, False, (), ()), (False, False, (), ()), (False, True, (), ()),
                          (False, True, TYPED_CAUSE_GROUPS, ()), (False, True, TYPED_CAUSE_GROUPS, ("other",))],
                         ids=["per-bin", "summaries", "summaries+input-scaling", "summaries+input-scaling+cause-head",
                              "summaries+input-scaling+cause-head-split"])
def test_per_sample_gradients_equal_microbatches(small_splits, bin_features, scaled, causes, split):
    from opacus import GradSampleModule

    sp = small_splits
    torch.manual_seed(0)
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, pos_weight=4.0, hidden=8,
                        bin_features=bin_features, input_scaling=scaled, cause_groups=causes,
                        cause_split=split).double()
    if scaled:
        from infrabrain.models.gnn import fit_input_scaling
        from infrabrain.models.training import make_loader

        fit_input_scaling(model, ({k: (v.double() if v.is_floating_point() else v) for k, v in b.items()}
                                  for b in make_loader(sp.train, 8)))
    # snapshots of two different sites (different sizes -> padding) and one with a positive label
    pos = next(i for i in range(len(sp.train)) if sp.train[i]["y"].sum() > 0)
    items = [sp.train[0], sp.test_sites[0], sp.train[pos]]
    gsm = GradSampleModule(model, loss_reduction="mean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_fn(gsm, _double(collate_snapshots(items))).backward()
    per_sample = {n: p.grad_sample.detach().clone() for n, p in model.named_parameters()}
    for i, it in enumerate(items):
        for p in model.parameters():
            p.grad = None
            p.grad_sample = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss_fn(gsm, _double(collate_snapshots([it]))).backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(per_sample[n][i], p.grad, rtol=1e-6, atol=1e-9, msg=f"{n} sample {i}")
        assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("causes", [(), TYPED_CAUSE_GROUPS], ids=["risk", "risk+cause-head"])
def test_empty_batch_gives_zero_loss_with_graph(small_splits, causes):
    sp = small_splits
    model = build_model(sp.feature_set.f_max, sp.window, pool=sp.pool, hidden=8, cause_groups=causes)
    batch = collate_snapshots([sp.train[0]])
    empty = {k: v[:0] if k not in ("edge_index", "edge_type", "gpu_edge") else v[:0] for k, v in batch.items()}
    loss = loss_fn(model, empty)
    loss.backward()  # every parameter, the cause head's too, gets a (zero) gradient
    assert float(loss.detach()) == 0.0
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0.0 for p in model.parameters())


def test_wrong_feature_width_is_an_error(small_splits):
    sp = small_splits
    model = build_model(sp.feature_set.f_max + 1, sp.window, pool=sp.pool, hidden=8)
    batch = collate_snapshots([sp.train[0]])
    try:
        model(batch)
    except ValueError as exc:
        assert "features" in str(exc)
    else:
        raise AssertionError("a snapshot with another feature width must be refused")
