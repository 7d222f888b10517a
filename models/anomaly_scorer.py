"""``AnomalyScorer``: the one API the failure predictor and the daemon call to get a label-free anomaly score.

Fit on a node's normal history (or adopt a federated global model and calibrate it on that history), then
``score(window)`` returns one float per node-minute: how far each minute is from that node's normal behaviour,
in units of its own normal residual spread (about 1 on normal data; anomalies reach tens to thousands).
``explain`` names the metrics behind it. ``save``/``load`` use a plain ``.npz`` (``allow_pickle=False``) plus
JSON config, so a stored scorer never executes code when read.

Context: a minute's score depends on the ``context`` minutes up to and including it
(``window - 1`` of model input plus ``smooth - 1`` of trailing mean); pass at least that many to
``score_latest``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from infrabrain.atomic import atomic_write_bytes
from infrabrain.models.anomaly_explain import Explanation, explain_segments, find_segments
from infrabrain.models.anomaly_hdc import HDCConfig, HDCDetector
from infrabrain.models.anomaly_neural import NeuralConfig, NeuralDetector, build_model, get_weights, set_weights
from infrabrain.models.anomaly_scoring import contributions, score_from_residuals

Kind = Literal["neural", "hdc"]
_FORMAT = "infrabrain-anomaly-scorer-v1"


class AnomalyScorer:
    """Per-node anomaly scorer backed by the neural autoencoder (default) or the HDC detector."""

    def __init__(self, kind: Kind = "neural", neural: NeuralConfig | None = None, hdc: HDCConfig | None = None,
                 normalise: bool = True) -> None:
        """``normalise``: min-max scale every metric by the node's normal history before the detector (raw
        exporter units -- bytes, degrees, watts -- differ by orders of magnitude; SMD is already in [0, 1])."""
        if kind not in ("neural", "hdc"):
            raise ValueError(f"kind must be 'neural' or 'hdc', got {kind!r}")
        self.kind: Kind = kind
        self.normalise = normalise
        self.lo: np.ndarray | None = None
        self.span: np.ndarray | None = None
        self.neural_config = neural or NeuralConfig()
        self.hdc_config = hdc or HDCConfig()
        self.detector: NeuralDetector | HDCDetector | None = None

    # ---------------------------------------------------------------- fitting
    def fit(self, history: np.ndarray) -> AnomalyScorer:
        """Train on one node's normal history ``[T, F]`` (stays on the node) and calibrate its scale."""
        x = self._fit_scaling(_validate(history, None))
        if self.kind == "neural":
            self.detector = NeuralDetector.fit(x, self.neural_config)
        else:
            self.detector = HDCDetector(self.hdc_config).fit(x)
        return self

    def _fit_scaling(self, x: np.ndarray) -> np.ndarray:
        if self.normalise:
            self.lo = x.min(axis=0)
            self.span = np.maximum(x.max(axis=0) - self.lo, 1e-6).astype(np.float32)
        return self._scale(x)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        if self.lo is None or self.span is None:
            return x
        return ((x - self.lo) / self.span).astype(np.float32)

    @classmethod
    def from_weights(cls, weights: list[np.ndarray], history: np.ndarray, neural: NeuralConfig | None = None
                     ) -> AnomalyScorer:
        """Adopt a (federated) global autoencoder and calibrate it on this node's normal history.

        The global model expects inputs scaled the way every site scaled them in training, so no per-node
        rescaling happens here (``normalise=False``): pass metrics on the federation's agreed scale.
        """
        scorer = cls("neural", neural=neural, normalise=False)
        x = _validate(history, None)
        model = build_model(x.shape[1], scorer.neural_config)
        set_weights(model, weights)
        scorer.detector = NeuralDetector(model, scorer.neural_config).calibrate(x)
        return scorer

    # ---------------------------------------------------------------- scoring
    @property
    def n_metrics(self) -> int:
        return self._det().n_metrics

    @property
    def context(self) -> int:
        """Minutes of history one score depends on."""
        if self.kind == "neural":
            return self.neural_config.window + self.neural_config.smooth - 1
        return self.hdc_config.smooth

    def _det(self) -> NeuralDetector | HDCDetector:
        if self.detector is None:
            raise RuntimeError("AnomalyScorer is not fitted: call fit() or from_weights() first")
        return self.detector

    def _smooth(self) -> int:
        return self.neural_config.smooth if self.kind == "neural" else self.hdc_config.smooth

    def score(self, window: np.ndarray) -> np.ndarray:
        """One float per minute of ``window`` ``[T, F]`` (the first ``context - 1`` use padded history)."""
        det = self._det()
        x = self._scale(_validate(window, det.n_metrics))
        return score_from_residuals(det.residuals(x), det.scale, self._smooth())

    def score_latest(self, recent: np.ndarray) -> float:
        """Score of the last minute of ``recent`` (give at least :attr:`context` minutes)."""
        x = _validate(recent, self._det().n_metrics)
        return float(self.score(x[-self.context :])[-1])

    def score_nodes(self, x: np.ndarray) -> np.ndarray:
        """``[T, N, F] -> [T, N]``: the same scorer applied to N nodes (e.g. a fleet-wide model)."""
        a = np.asarray(x, dtype=np.float32)
        if a.ndim != 3:
            raise ValueError(f"expected [T, N, F], got shape {a.shape}")
        return np.stack([self.score(a[:, i]) for i in range(a.shape[1])], axis=1)

    def contributions(self, window: np.ndarray) -> np.ndarray:
        """Per minute and metric, squared standardised residual ``[T, F]``."""
        det = self._det()
        return contributions(det.residuals(self._scale(_validate(window, det.n_metrics))), det.scale)

    def explain(self, window: np.ndarray, threshold: float, k: int = 3, min_length: int = 1) -> list[Explanation]:
        """Top-``k`` metrics of every run of minutes whose score exceeds ``threshold``."""
        flags = self.score(window) > threshold
        return explain_segments(self.contributions(window), find_segments(flags, min_length), k)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the scorer atomically as ``.npz`` (arrays + JSON config; no pickles)."""
        det = self._det()
        arrays: dict[str, np.ndarray] = {"scale": det.scale}
        if self.lo is not None and self.span is not None:
            arrays.update(in_lo=self.lo, in_span=self.span)
        if isinstance(det, NeuralDetector):
            for i, w in enumerate(get_weights(det.model)):
                arrays[f"w{i}"] = w
            cfg = self.neural_config.model_dump()
        else:
            arrays.update(lo=det.lo, span=det.span, prototypes=det.prototypes.numpy(), decoded=det.decoded)
            cfg = self.hdc_config.model_dump()
        meta = {"format": _FORMAT, "kind": self.kind, "config": cfg, "n_metrics": det.n_metrics}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnomalyScorer:
        """Read a scorer written by :meth:`save` (``allow_pickle=False``)."""
        import torch

        p = Path(path)
        try:
            z = np.load(p, allow_pickle=False)
            meta = json.loads(z["meta"].tobytes().decode())
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{p}: not an anomaly scorer file ({exc})") from exc
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{p}: format {meta.get('format')!r}, expected {_FORMAT!r}")
        if meta["kind"] == "neural":
            cfg = NeuralConfig(**meta["config"])
            scorer = cls("neural", neural=cfg)
            model = build_model(int(meta["n_metrics"]), cfg)
            n = len(model.state_dict())
            set_weights(model, [z[f"w{i}"] for i in range(n)])
            det: NeuralDetector | HDCDetector = NeuralDetector(model, cfg)
        else:
            hcfg = HDCConfig(**meta["config"])
            scorer = cls("hdc", hdc=hcfg)
            det = HDCDetector(hcfg)
            det.n_metrics = int(meta["n_metrics"])
            det.lo, det.span, det.decoded = z["lo"], z["span"], z["decoded"]
            det._build_codebook(det.n_metrics)  # seeded: same codebook as at fit time
            det.prototypes = torch.from_numpy(z["prototypes"])
            det._build_lookup()
            det._fitted = True
        det.scale = z["scale"]
        scorer.detector = det
        scorer.normalise = "in_lo" in z.files
        if scorer.normalise:
            scorer.lo, scorer.span = z["in_lo"], z["in_span"]
        return scorer


def _validate(x: np.ndarray, n_metrics: int | None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"window must be [T>=1, F] metrics, got shape {a.shape}")
    if n_metrics is not None and a.shape[1] != n_metrics:
        raise ValueError(f"window has {a.shape[1]} metrics, the scorer was fitted on {n_metrics}")
    if not np.isfinite(a).all():
        raise ValueError(f"window holds {int((~np.isfinite(a)).sum())} NaN/inf values; fill them first "
                         "(e.g. infrabrain.models.anomaly_data.ffill_nan)")
    return a
