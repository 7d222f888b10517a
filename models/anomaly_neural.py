"""Small unsupervised neural detector: a window autoencoder that reconstructs each minute's metrics.

Input: the last ``window`` minutes of a node's ``F`` metrics, flattened (``[B, window*F]``, batch first).
Output: the current minute's ``F`` metrics, through a ``bottleneck``-wide code. Only ``nn.Linear`` + ReLU, so
Opacus computes per-sample gradients (DP-SGD via ``infrabrain.privacy.train_dp``). The residual
``x_t - x_hat_t`` per metric is scored like every other detector (:mod:`infrabrain.models.anomaly_scoring`).
Weights travel as lists of numpy arrays (:func:`get_weights` / :func:`set_weights`), never as pickles.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from infrabrain.models.anomaly_scoring import fit_scale, score_from_residuals


class NeuralConfig(BaseModel):
    """Architecture and (non-private) training settings of the window autoencoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window: int = Field(1, ge=1, le=240, description="minutes of history in each input (current one included)")
    hidden: int = Field(64, ge=1, le=4096)
    bottleneck: int = Field(6, ge=1, le=1024)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0, le=1.0)
    smooth: int = Field(5, ge=1, le=240, description="trailing minutes averaged into each score")
    seed: int = 0


class WindowAutoencoder(nn.Module):
    """``[B, window*F] -> [B, F]``: MLP encoder to a narrow code, MLP decoder to the current minute."""

    def __init__(self, n_metrics: int, window: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.n_metrics, self.window = n_metrics, window
        self.net = nn.Sequential(
            nn.Linear(window * n_metrics, hidden), nn.ReLU(),
            nn.Linear(hidden, bottleneck), nn.ReLU(),
            nn.Linear(bottleneck, hidden), nn.ReLU(),
            nn.Linear(hidden, n_metrics),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(n_metrics: int, config: NeuralConfig) -> WindowAutoencoder:
    """A freshly initialised autoencoder (seeded by ``config.seed``, so every site starts alike)."""
    if n_metrics < 1:
        raise ValueError(f"n_metrics must be >= 1, got {n_metrics}")
    torch.manual_seed(config.seed)
    return WindowAutoencoder(n_metrics, config.window, config.hidden, config.bottleneck)


def make_windows(x: np.ndarray, window: int) -> np.ndarray:
    """``[T, F] -> [T, window*F]``: row t holds minutes ``t-window+1..t`` (the start padded by the first row)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"metrics must be [T, F], got shape {x.shape}")
    if window == 1:
        return x
    pad = np.concatenate([np.repeat(x[:1], window - 1, axis=0), x], axis=0)
    v = np.lib.stride_tricks.sliding_window_view(pad, (window, x.shape[1]))[:, 0]
    return np.ascontiguousarray(v.reshape(x.shape[0], window * x.shape[1]))


def reconstruction_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the current minute (the last ``F`` inputs); ``loss_fn`` for ``train_dp``."""
    (x,) = batch
    target = x[:, -_n_metrics(model):]
    return torch.mean((model(x) - target) ** 2)


def _n_metrics(model: nn.Module) -> int:
    inner = getattr(model, "_module", model)  # Opacus' GradSampleModule wraps the model
    return int(inner.n_metrics)


def train_plain(model: WindowAutoencoder, windows: np.ndarray, config: NeuralConfig) -> float:
    """Non-private Adam training in place (local and pooled baselines); returns CPU seconds used."""
    t0 = time.process_time()
    g = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.asarray(windows, dtype=np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(0, x.shape[0], config.batch_size):
            loss = reconstruction_loss(model, (x[perm[s : s + config.batch_size]],))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return time.process_time() - t0


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Model parameters as numpy arrays, in ``state_dict`` order (what travels to the aggregator)."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load numpy arrays into ``model`` (shapes checked, names never taken from the sender)."""
    keys = list(model.state_dict().keys())
    if len(weights) != len(keys):
        raise ValueError(f"expected {len(keys)} weight arrays, got {len(weights)}")
    state = {}
    for k, w in zip(keys, weights):
        ref = model.state_dict()[k]
        if tuple(np.shape(w)) != tuple(ref.shape):
            raise ValueError(f"weight {k!r} has shape {np.shape(w)}, expected {tuple(ref.shape)}")
        state[k] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    model.load_state_dict(state)


class NeuralDetector:
    """A trained autoencoder plus the node's residual scale: ``residuals``/``score`` per minute."""

    def __init__(self, model: WindowAutoencoder, config: NeuralConfig) -> None:
        self.model, self.config = model.eval(), config
        self.scale: np.ndarray | None = None
        self.train_cpu_s = 0.0

    @property
    def n_metrics(self) -> int:
        return self.model.n_metrics

    @classmethod
    def fit(cls, train: np.ndarray, config: NeuralConfig | None = None) -> NeuralDetector:
        """Train on one node's normal history alone (non-private: nothing leaves the node) and calibrate."""
        cfg = config or NeuralConfig()
        x = _validate_history(train)
        model = build_model(x.shape[1], cfg)
        det = cls(model, cfg)
        det.train_cpu_s = train_plain(model, make_windows(x, cfg.window), cfg)
        return det.calibrate(x)

    def calibrate(self, train: np.ndarray) -> NeuralDetector:
        """Fix the per-metric residual scale from the node's own normal history (stays on the node)."""
        self.scale = fit_scale(self.residuals(_validate_history(train)))
        return self

    def residuals(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """``x - reconstruction`` per minute and metric, ``[T, F]`` (first minutes use padded history)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_metrics:
            raise ValueError(f"expected [T, {self.n_metrics}] metrics, got shape {x.shape}")
        out = np.empty_like(x)
        w = self.config.window
        with torch.inference_mode():
            for s in range(0, x.shape[0], chunk):
                lo = max(0, s - (w - 1))
                win = make_windows(x[lo : s + chunk], w)[s - lo :]
                out[s : s + chunk] = x[s : s + chunk] - self.model(torch.from_numpy(win)).numpy()
        return out

    def score(self, x: np.ndarray) -> np.ndarray:
        """One anomaly score per minute of ``x`` ``[T, F]``."""
        if self.scale is None:
            raise RuntimeError("NeuralDetector.calibrate must run before scoring")
        return score_from_residuals(self.residuals(x), self.scale, self.config.smooth)


def _validate_history(train: np.ndarray) -> np.ndarray:
    x = np.asarray(train, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"normal history must be [T>=2, F], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"normal history holds {int((~np.isfinite(x)).sum())} NaN/inf values; fill them first")
    return x
