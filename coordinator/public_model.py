"""The vendor's public starting point: the predictor pretrained on simulated sites, without any site's data.

The coordinator owns the simulator, and the sites it simulates are public data, so a model trained on them
costs no privacy. The federation starts from that model instead of random weights; DP rounds then fine-tune it
on the sites' private data. Measured with ``bench/federation.py``: from random weights, three DP rounds at
epsilon 8 left the federated model far below centralised training, because ~100 windows per site buy only a
dozen noisy steps (docs/federation.md).

Public sites are simulated exactly like the federation's own simulated sites (same size, hours, acceleration
and climate spread), under partition ids from :data:`PUBLIC_PARTITION_BASE` up, which no real partition uses, so
public and private data never coincide. The result is cached next to the registry (``public-init.npz``: arrays
only, loaded with ``allow_pickle=False``; ``public-init.json``: what it was made from), so a coordinator
restart does not pretrain again.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.atomic import atomic_write_bytes, atomic_write_text
from infrabrain.client.predictor_task import PUBLIC_PARTITION_BASE, data_identity
from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.logs import get_logger

log = get_logger("coordinator.public_model")

#: 3: the summaries-only encoder with the public input scaling (issue 3 follow-up 6); 4: the key also names the
#: public sites' data (feature set, simulator version, normaliser rule: ``predictor_task.data_identity``; issue 3
#: follow-up 17). Older caches retrain.
CACHE_VERSION = 4


@dataclass(frozen=True)
class PublicModel:
    """Pretrained arrays (``get_weights`` order) and how they were made."""

    arrays: list[np.ndarray]
    meta: dict[str, Any]


def _cache_key(cfg: FederationConfig, shapes: list[list[int]]) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "task": cfg.task, "public-sites": cfg.public_sites,
            "train-on-unpredictable": cfg.train_on_unpredictable, "cause-head": cfg.cause_head,
            "public-epochs": cfg.public_epochs, "site-gpus": cfg.site_gpus, "site-hours": cfg.site_hours,
            "acceleration": cfg.acceleration, "data-seed": cfg.data_seed, "seed": cfg.seed,
            "data": data_identity(), "shapes": shapes}


def pretrain_public_model(cfg: FederationConfig, work_dir: str | Path) -> PublicModel:
    """Simulate ``cfg.public_sites`` public sites and train the predictor on them without DP (Adam).

    ``work_dir`` holds the public sites' simulated data (never a real site's). Deterministic in ``cfg.seed``
    and ``cfg.data_seed``.
    """
    import torch
    from torch.utils.data import ConcatDataset

    from infrabrain.client.predictor_task import build_predictor, public_site_settings, site_data, task_loss
    from infrabrain.models.snapshots import collate_snapshots
    from infrabrain.models.training import get_weights
    from infrabrain.privacy.dp_training import DPConfig
    from infrabrain.privacy.nonprivate import train_nonprivate

    if cfg.public_sites < 1:
        raise ValueError(f"public-sites must be >= 1 to pretrain, got {cfg.public_sites}")
    torch.set_num_threads(1)
    t0 = time.monotonic()
    site_cfg = cfg.site_config()
    root = Path(work_dir)
    data = [site_data(public_site_settings(i, cfg.data_seed, cfg.site_gpus, cfg.site_hours,
                                           str(root / f"public-{i:04d}")), site_cfg)
            for i in range(cfg.public_sites)]
    pooled = ConcatDataset([d.train for d in data])
    model = build_predictor(site_cfg, data[0].input_scaling)
    train_cfg = DPConfig(optimizer="adam", lr=3e-3, expected_batch_size=min(32, len(pooled)),
                         epochs=float(cfg.public_epochs))
    res = train_nonprivate(model, pooled, task_loss(site_cfg), collate_snapshots, config=train_cfg, seed=cfg.seed)
    meta = {"public_sites": cfg.public_sites, "windows": len(pooled), "epochs": cfg.public_epochs,
            "steps": res.steps, "seconds": round(time.monotonic() - t0, 1)}
    log.info("pretrained the public model", extra=meta)
    return PublicModel([w.astype(np.float32) for w in get_weights(model)], meta)


def public_initial_weights(cfg: FederationConfig, fresh: list[np.ndarray], cache_dir: str | Path) -> PublicModel:
    """The pretrained public model, from ``cache_dir`` when it was made with the same settings, else trained.

    ``fresh`` (the randomly initialised arrays) fixes the expected shapes: a cached model of other shapes or
    settings is retrained, never loaded into a mismatched model.
    """
    cache = Path(cache_dir)
    key = _cache_key(cfg, [list(a.shape) for a in fresh])
    arrays_path, meta_path = cache / "public-init.npz", cache / "public-init.json"
    if arrays_path.exists() and meta_path.exists():
        try:
            stored = json.loads(meta_path.read_text())
            if stored.get("key") == key:
                with np.load(arrays_path, allow_pickle=False) as z:
                    arrays = [z[f"a{i}"] for i in range(len(fresh))]
                if [list(a.shape) for a in arrays] == key["shapes"]:
                    return PublicModel(arrays, stored.get("meta", {}))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("public model cache unreadable; retraining", extra={"error": f"{type(exc).__name__}: {exc}"})
    model = pretrain_public_model(cfg, cache / "public-sites")
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": a for i, a in enumerate(model.arrays)})
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(arrays_path, buf.getvalue())
    atomic_write_text(meta_path, json.dumps({"key": key, "meta": model.meta}))
    return model


def starting_weights(cfg: FederationConfig, cache_dir: str | Path) -> list[np.ndarray]:
    """The arrays a fresh federation starts from: the public pretrained model (cached in ``cache_dir``, the
    registry's folder) when ``public-sites`` > 0, else the seeded random initialisation."""
    from infrabrain.client.local_training import initial_weights

    fresh = initial_weights(cfg.task, cfg.model_dump(by_alias=True))
    if cfg.public_sites == 0:
        return fresh
    public = public_initial_weights(cfg, fresh, cache_dir)
    log.info("starting from the public pretrained model", extra=public.meta)
    return public.arrays
