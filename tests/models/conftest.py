"""Shared fixtures: a tiny real simulated federation (seconds to make), reused by every predictor test, and a
loader for the bench scripts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_runs():
    """Three small simulated sites (2-3 racks of 2 nodes), 8 h, strongly accelerated so failures occur."""
    from infrabrain.simulation import federation_specs, simulate_federation

    specs = federation_specs(3, seed=1, racks=(2, 3), nodes_per_rack=2)
    return simulate_federation(specs=specs, hours=8, seed=1, acceleration=2000)


@pytest.fixture(scope="session")
def small_splits(small_runs):
    from infrabrain.models.snapshots import make_splits

    return make_splits(small_runs, heldout=1, stride_min=10, eval_stride_min=10)


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench("predictor")`` imports ``bench/predictor.py`` (bench/ is a folder of scripts, not a package)."""
    def load(name: str):
        path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
