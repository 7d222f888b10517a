"""Hyperdimensional-computing (HDC) anomaly detector: far cheaper to train than the neural one.

Encoding: every metric f has a random bipolar identity hypervector ``ID_f`` (dimension ``dim``); its value,
scaled to [0, 1] by the node's normal min/max and quantised into ``levels`` bins, picks a level hypervector
from a chain in which neighbouring levels share most components (so similar values get similar vectors).
A minute is the bundle (sign of the sum) of ``ID_f * LEVEL[q_f]`` over metrics.

Normal behaviour = ``n_prototypes`` bipolar prototypes found by a few rounds of HD k-means (bundling the
minutes assigned to each prototype) on a subsample of the normal history. A minute's anomaly is its distance
to the nearest prototype; to explain and to score it like the other detectors, every prototype is decoded
back to metric values once at fit time (unbind ``ID_f``, nearest level), so the residual of a minute is
``x - decoded[nearest prototype]``. Training is one embedding pass over a few thousand minutes plus ``iters``
matrix products: no gradients.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from infrabrain.models.anomaly_scoring import fit_scale, score_from_residuals


class HDCConfig(BaseModel):
    """HDC detector settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dim: int = Field(1024, ge=256, le=65536, description="hypervector dimension")
    levels: int = Field(32, ge=2, le=1024, description="quantisation levels per metric")
    n_prototypes: int = Field(64, ge=1, le=4096, description="normal prototypes")
    iters: int = Field(2, ge=0, le=50, description="HD k-means rounds")
    fit_sample: int = Field(2000, ge=16, description="minutes of normal history used to learn prototypes")
    smooth: int = Field(5, ge=1, le=240, description="trailing minutes averaged into each score")
    seed: int = 0


class HDCDetector:
    """Prototype-based HDC detector with per-metric residuals (see module docstring)."""

    def __init__(self, config: HDCConfig | None = None) -> None:
        self.config = config or HDCConfig()
        self._fitted = False

    # -- encoding ---------------------------------------------------------------------------------------
    def _build_codebook(self, n_metrics: int) -> None:
        c = self.config
        g = np.random.default_rng(c.seed)
        ids = g.choice(np.array([-1, 1], dtype=np.int8), size=(n_metrics, c.dim))
        # level chain: level 0 random, each next level flips a fresh block of dim/(2*(levels-1)) components,
        # so level 0 and the last level are ~orthogonal and similarity falls linearly with level distance
        base = g.choice(np.array([-1, 1], dtype=np.int8), size=c.dim)
        order = g.permutation(c.dim)
        per = c.dim // (2 * max(c.levels - 1, 1))
        lv = np.empty((c.levels, c.dim), dtype=np.int8)
        cur = base.copy()
        for i in range(c.levels):
            lv[i] = cur
            flip = order[i * per : (i + 1) * per]
            cur = cur.copy()
            cur[flip] *= -1
        self.ids, self.level_hv = ids, lv
        table = (ids[:, None, :] * lv[None, :, :]).reshape(n_metrics * c.levels, c.dim)
        self._table = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(table.astype(np.float32)), mode="sum")
        self._offsets = torch.arange(n_metrics, dtype=torch.int64) * c.levels

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.lo) / self.span
        return np.clip(np.rint(z * (self.config.levels - 1)), 0, self.config.levels - 1).astype(np.int64)

    def encode(self, x: np.ndarray) -> torch.Tensor:
        """Bipolar hypervectors ``[T, dim]`` (float32 of -1/+1) of the minutes in ``x`` ``[T, F]``."""
        q = torch.from_numpy(self._quantise(x)) + self._offsets
        with torch.no_grad():
            acc = self._table(q)
        return torch.where(acc >= 0, 1.0, -1.0)

    # -- training ---------------------------------------------------------------------------------------
    def fit(self, train: np.ndarray) -> HDCDetector:
        """Learn prototypes and the residual scale from a node's normal history ``[T, F]``."""
        x = np.asarray(train, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"train must be [T>=2, F], got shape {x.shape}")
        c = self.config
        self.n_metrics = x.shape[1]
        self.lo = x.min(axis=0)
        self.span = np.maximum(x.max(axis=0) - self.lo, 1e-6)
        self._build_codebook(self.n_metrics)
        g = np.random.default_rng(c.seed)
        idx = np.sort(g.choice(x.shape[0], size=min(c.fit_sample, x.shape[0]), replace=False))
        hv = self.encode(x[idx])
        k = min(c.n_prototypes, hv.shape[0])
        protos = hv[torch.from_numpy(g.choice(hv.shape[0], size=k, replace=False))].clone()
        for _ in range(c.iters):
            assign = torch.argmax(hv @ protos.T, dim=1)
            sums = torch.zeros_like(protos).index_add_(0, assign, hv)
            used = torch.bincount(assign, minlength=k) > 0
            protos[used] = torch.where(sums[used] >= 0, 1.0, -1.0)
        self.prototypes = protos
        self._build_lookup()
        self.decoded = self._decode(protos)
        self._fitted = True
        self.scale = fit_scale(self.residuals(x[idx]))
        return self

    def _build_lookup(self) -> None:
        """Item-to-prototype similarity table ``[F*levels, K]`` used by :meth:`nearest`."""
        sim = self._table.weight @ self.prototypes.T
        self._lookup = torch.nn.EmbeddingBag.from_pretrained(sim, mode="sum")

    def _decode(self, protos: torch.Tensor) -> np.ndarray:
        """Metric values ``[K, F]`` each prototype stands for (unbind identity, nearest level)."""
        ids = torch.from_numpy(self.ids.astype(np.float32))
        lv = torch.from_numpy(self.level_hv.astype(np.float32))
        unbound = protos[:, None, :] * ids[None, :, :]  # [K, F, D]
        level = torch.argmax(unbound @ lv.T, dim=2).numpy()  # [K, F]
        return (self.lo + level / (self.config.levels - 1) * self.span).astype(np.float32)

    # -- scoring ----------------------------------------------------------------------------------------
    def _check(self, x: np.ndarray) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("HDCDetector.fit must run before scoring")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_metrics:
            raise ValueError(f"expected [T, {self.n_metrics}] metrics, got shape {x.shape}")
        return x

    def nearest(self, x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Index of the most similar prototype and that similarity (normalised to [-1, 1]), per minute.

        Associative-memory lookup: the query bundle is ``sum_f ID_f * LEVEL[q_f]`` (kept integer, not
        binarised), so its dot product with every prototype is ``sum_f <ID_f * LEVEL[q_f], P_k>``; those item
        similarities are precomputed at fit time into a ``[F*levels, K]`` table and scoring is a table sum.
        """
        x = self._check(x)
        idx, sims = [], []
        with torch.no_grad():
            for s in range(0, x.shape[0], chunk):
                q = torch.from_numpy(self._quantise(x[s : s + chunk])) + self._offsets
                sim = self._lookup(q)
                best, arg = sim.max(dim=1)
                idx.append(arg.numpy())
                sims.append((best / (self.n_metrics * self.config.dim)).numpy())
        return np.concatenate(idx), np.concatenate(sims)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """``x`` minus the decoded nearest prototype, ``[T, F]``."""
        near, _ = self.nearest(x)
        return np.asarray(x, dtype=np.float32) - self.decoded[near]

    def score(self, x: np.ndarray) -> np.ndarray:
        """One anomaly score per minute of ``x`` ``[T, F]``."""
        return score_from_residuals(self.residuals(x), self.scale, self.config.smooth)
