"""Shared fixtures: small slices of the real SMD files (``../shared/data/smd`` beside the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infrabrain.models.anomaly_data import default_smd_dir

SMD = default_smd_dir()
SLICE = 1500  # test minutes kept
TRAIN_SLICE = 4000  # normal-history minutes kept (the detectors need a few thousand)
SLICE_MACHINES = ("machine-1-6", "machine-2-7")  # both have labelled anomalies in their first 1500 minutes


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smd_dir() -> Path:
    if not (SMD / "machine-1-6.npz").exists():
        pytest.fail(f"SMD data not found at {SMD} (expected ../shared/data/smd beside the repository)")
    return SMD


def write_machine(directory: Path, name: str, train: np.ndarray, test: np.ndarray, label: np.ndarray) -> Path:
    """Write one machine file laid out like SMD (for bad-input tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.npz"
    np.savez(path, train=train, test=test, test_label=label)
    return path


@pytest.fixture()
def slice_dir(tmp_path: Path, smd_dir: Path) -> Path:
    """Two real machines cut to ``SLICE`` minutes each, with the interpretation labels inside the cut."""
    out = tmp_path / "smd"
    (out / "interpretation_label").mkdir(parents=True)
    for name in SLICE_MACHINES:
        z = np.load(smd_dir / f"{name}.npz")
        write_machine(out, name, z["train"][:TRAIN_SLICE], z["test"][:SLICE], z["test_label"][:SLICE])
        lines = (smd_dir / "interpretation_label" / f"{name}.txt").read_text().splitlines()
        keep = [ln for ln in lines if ln.strip() and int(ln.split(":")[0].split("-")[1]) <= SLICE]
        (out / "interpretation_label" / f"{name}.txt").write_text("\n".join(keep) + "\n")
    return out
