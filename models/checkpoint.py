"""Checkpoints: weights as safetensors plus a JSON model card (feature set, normalisation, config, metrics).

Layout of a checkpoint directory (written atomically: a crash never leaves a half checkpoint)::

    CKPT/
      weights.safetensors   # the model's state_dict (tensors only: nothing is unpickled on load)
      model_card.json       # format, feature set + fingerprint, normaliser, ModelConfig, window, metrics

:func:`load_checkpoint` refuses a checkpoint whose feature set differs from the one the caller's telemetry has
(``expected``), with an error that lists the differing metrics, instead of producing silently wrong scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrabrain.atomic import atomic_directory
from infrabrain.models.features import FeatureSet, Normalizer
from infrabrain.models.gnn import FailurePredictor, ModelConfig

FORMAT = "infrabrain-predictor/1"
#: The telemetry step a card written before ``cadence_s`` was recorded is read at (the simulator's default).
DEFAULT_CADENCE_S = 60
WEIGHTS = "weights.safetensors"
CARD = "model_card.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) and what it needs to read telemetry."""

    model: FailurePredictor
    feature_set: FeatureSet
    normalizer: Normalizer
    card: dict[str, Any]

    @property
    def window(self) -> int:
        return self.model.config.window

    @property
    def cadence_s(self) -> int:
        """Seconds between the telemetry steps the model was trained on (its window and pool are counted in
        them). A card written before it was recorded reads as 60 s: the simulator's default step, and the only
        one the federated task trains at."""
        return int(self.card.get("cadence_s", DEFAULT_CADENCE_S))

    def check_cadence(self, cadence_s: int, source: str = "telemetry") -> None:
        """Refuse telemetry whose step differs from the model's: its window of ``window`` steps would span
        another stretch of time, and every rate and lead it learned would be read at the wrong scale."""
        if int(cadence_s) != self.cadence_s:
            raise ValueError(f"{source} has a {int(cadence_s)} s cadence, but the model was trained on "
                             f"{self.cadence_s} s telemetry (its {self.window}-step window is "
                             f"{self.window * self.cadence_s // 60} min); collect at {self.cadence_s} s or train a "
                             "model on this cadence")


def save_checkpoint(
    path: str | Path,
    model: FailurePredictor,
    feature_set: FeatureSet,
    normalizer: Normalizer,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    cadence_s: int = 60,
) -> Path:
    """Write ``model`` and its model card to directory ``path`` atomically; returns the path. ``cadence_s``: the
    step of the telemetry it was trained on, which every reader checks its own against
    (:meth:`Checkpoint.check_cadence`)."""
    from safetensors.torch import save_file

    if model.config.n_features != feature_set.f_max:
        raise ValueError(f"model has {model.config.n_features} features but feature set has f_max {feature_set.f_max}")
    if isinstance(cadence_s, bool) or not isinstance(cadence_s, int) or cadence_s <= 0:
        raise ValueError(f"cadence_s must be a positive whole number of seconds, got {cadence_s!r}")
    card = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": "FailurePredictor",
        "config": model.config.model_dump(),
        "feature_set": feature_set.to_dict(),
        "feature_fingerprint": feature_set.fingerprint(),
        "normalizer": normalizer.to_dict(),
        "cadence_s": cadence_s,
        "metrics": _jsonable(metrics or {}),
        **_jsonable(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT, "feature_fingerprint": card["feature_fingerprint"]})
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    return Path(path)


#: What a model card must hold for its model to be built (the rest is report).
CARD_REQUIRED = ("format", "feature_set", "feature_fingerprint", "config", "normalizer")


def load_checkpoint(path: str | Path, expected: FeatureSet | None = None) -> Checkpoint:
    """Load a checkpoint directory; with ``expected``, refuse one made with another feature set.

    Anything wrong with it (a card that is not JSON or lacks a field, weights that are truncated, of another
    shape or not finite) is a ``ValueError`` naming the file and what is wrong, never a model that scores
    garbage: the daemon then keeps the model it has (``client.daemon``)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from infrabrain.json_file import read_json_object

    p = Path(path)
    if not (p / CARD).is_file() or not (p / WEIGHTS).is_file():
        raise FileNotFoundError(f"{str(p)!r} is not a predictor checkpoint (needs {CARD} and {WEIGHTS})")
    card = read_json_object(p / CARD, "model card")
    lacking = [k for k in CARD_REQUIRED if k not in card]
    if lacking:
        raise ValueError(f"model card {str(p / CARD)!r} lacks {lacking} (truncated or not a predictor card)")
    if card.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {card.get('format')!r} is not {FORMAT!r}")
    fs = FeatureSet.from_dict(card["feature_set"])
    if fs.fingerprint() != card.get("feature_fingerprint"):
        raise ValueError("model card's feature set does not match its recorded fingerprint (edited or corrupt card)")
    if expected is not None and expected.fingerprint() != fs.fingerprint():
        raise ValueError(f"checkpoint was made with another feature set: {describe_difference(fs, expected)}")
    # cards written before ``summary_features`` existed describe models without them
    config = ModelConfig(**{"summary_features": False, **card["config"]})
    model = FailurePredictor(config)
    try:
        state = load_file(str(p / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"weights {str(p / WEIGHTS)!r} are not a readable safetensors file (truncated or "
                         f"corrupt?): {exc}") from exc
    missing = set(model.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"checkpoint weights do not fit the model config (mismatched tensors {sorted(missing)})")
    want = model.state_dict()
    shapes = {k: (tuple(v.shape), tuple(want[k].shape)) for k, v in state.items() if v.shape != want[k].shape}
    if shapes:
        raise ValueError("checkpoint weights do not fit the model config (tensor: stored shape vs the card's "
                         f"model): {shapes}")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise ValueError(f"weights {str(p / WEIGHTS)!r} hold NaN or infinite values in {bad}: every score would "
                         "be NaN")
    model.load_state_dict(state)
    model.eval()
    return Checkpoint(model=model, feature_set=fs, normalizer=Normalizer.from_dict(card["normalizer"]), card=card)


def describe_difference(have: FeatureSet, want: FeatureSet) -> str:
    """Human-readable difference between two feature sets (per kind: missing, extra, reordered)."""
    parts = []
    for kind in sorted(set(have.kinds) | set(want.kinds)):
        a, b = have.metrics_of(kind), want.metrics_of(kind)
        if a == b:
            continue
        only_ckpt = [m for m in a if m not in b]
        only_data = [m for m in b if m not in a]
        if only_ckpt or only_data:
            parts.append(f"{kind}: checkpoint-only {only_ckpt}, telemetry-only {only_data}")
        else:
            parts.append(f"{kind}: same metrics in another order")
    return "; ".join(parts) or "kinds differ"


def _jsonable(obj: Any) -> Any:
    """Make numpy scalars/arrays and NaN JSON-safe (NaN -> None)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
