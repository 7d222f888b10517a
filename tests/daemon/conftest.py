"""Shared fixtures of the daemon tests: one small simulated site, its dataset on disk, a predictor checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def small_run() -> Any:
    import torch

    torch.set_num_threads(1)
    from _simdata import simulate_small_site

    return simulate_small_site(hours=2.0)


@pytest.fixture(scope="session")
def small_dataset(small_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infrabrain.simulation.storage import write_sites

    out = tmp_path_factory.mktemp("sim") / "dataset"
    write_sites([small_run], out)
    return out


@pytest.fixture(scope="session")
def small_checkpoint(small_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real predictor checkpoint (untrained weights, normaliser fitted on the run): plumbing, not accuracy."""
    import torch

    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.gnn import build_model
    from infrabrain.models.snapshots import fit_normalizer

    torch.manual_seed(0)
    fs = FeatureSet.from_run(small_run)
    model = build_model(fs.f_max, window=10)
    out = tmp_path_factory.mktemp("model") / "ckpt"
    # a root prior as training writes it (where the training failures started): ranks an alert's root causes
    prior = {"counts": {"node@0": 6, "gpu@1": 8, "leaf@1": 2}, "failures": 16}
    save_checkpoint(out, model, fs, fit_normalizer([small_run], fs), extra={"root_prior": prior})
    return out
