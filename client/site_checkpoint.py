"""The site's own predictor checkpoint of the federation's global model, calibrated on the site's own labels.

Every round a site evaluates the new global model (``flower_client_app.evaluate``). It then keeps that model
twice under its state directory:

- ``global-model.npz``: the global arrays as they arrived (numpy, no pickle; ``coordinator.registry`` format);
- ``predictor/`` (:data:`SITE_CHECKPOINT_DIR`): a predictor checkpoint (``models.checkpoint``: safetensors weights
  and a model card) that ``infrabrain models predict`` and the daemon (``model.checkpoint`` in site.yaml) load.
  Its card holds the feature set and the public normaliser and input scaling every party derives
  (``predictor_task.public_reference``), and Platt scaling with an alert threshold fitted on this site's
  labelled held-out split (``models.pipeline.fit_calibration``).

Why calibrate at the site: the federated model is trained with class weighting, so its raw sigmoid is several
times too high, and the coordinator has no labels to calibrate it with. Each site has its own labels and its own
base rate. The calibration is local: it is fitted on the site's data, written only into the site's checkpoint,
and never sent (the evaluate reply carries only the allow-listed aggregate metrics, ``privacy.boundary``). A split
without a failing row, or one where the model ranks failures below healthy rows, gets no calibration: the card
says why, and the daemon falls back to the raw sigmoid and a 0.5 threshold (docs/daemon.md).

The card also holds the site's root prior (``models.root_prior``: where its labelled failures started, counted
over both splits), so the daemon and ``models predict`` rank root causes as the centralised pipeline does. It is
local like the calibration: counted at the site and never sent. Where the federation released the fleet's root
prior (``client.fleet_prior_site``), the card's prior adds the fleet's expected counts less the site's own.
It also holds how far the site's own components moved over a window in its training split
(``models.own_change_evidence``: a cooling unit that moves further than they did is a likelier root), fitted and
kept at the site like the prior, and how often the cause head named each group right on the site's held-out split
(``models.cause_naming``: an alert flags a cause whose naming failed there, or was made too rarely to tell),
local like the calibration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.client.local_training import SiteSettings
from infrabrain.logs import get_logger

log = get_logger("client.site_checkpoint")

#: Directory under the site's state directory that holds its predictor checkpoint of the latest global model.
SITE_CHECKPOINT_DIR = "predictor"
#: File under the site's state directory that holds the latest global arrays.
GLOBAL_MODEL_FILE = "global-model.npz"


def keep_global_model(settings: SiteSettings, keys: Sequence[str], weights: Sequence[np.ndarray],
                      cfg: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> Path:
    """Write ``global-model.npz`` and the calibrated predictor checkpoint of ``weights``; returns the checkpoint
    directory. ``metrics`` (the round's evaluation on this site) go into the model card."""
    from infrabrain.coordinator.registry import save_site_model

    round_ = int(cfg.get("server-round", 0))
    settings.state_path.mkdir(parents=True, exist_ok=True)
    save_site_model(settings.state_path / GLOBAL_MODEL_FILE, list(keys), list(weights), {"round": round_})
    return write_site_checkpoint(settings, weights, cfg, metrics)


def write_site_checkpoint(settings: SiteSettings, weights: Sequence[np.ndarray], cfg: Mapping[str, Any],
                          metrics: Mapping[str, float] | None = None) -> Path:
    """The predictor checkpoint of ``weights`` in ``<state_dir>/predictor``, calibrated on the site's held-out
    split (atomically replaced, so the daemon never reads half a checkpoint)."""
    from infrabrain.client import predictor_task as pt
    from infrabrain.models.cause_naming import CARD_KEY as CAUSE_NAMING_KEY
    from infrabrain.models.cause_naming import fit_cause_naming
    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.own_change_evidence import CARD_KEY as OWN_CHANGE_CARD_KEY
    from infrabrain.models.own_change_evidence import fit_own_change_tails
    from infrabrain.models.pipeline import fit_calibration
    from infrabrain.models.published_root_prior import CARD_PUBLISHED_KEY
    from infrabrain.models.root_prior import fit_root_prior, merge_root_priors
    from infrabrain.models.training import predict_scores, set_weights

    data = pt.site_data(settings, cfg)
    model = pt.build_predictor(cfg, data.input_scaling)
    set_weights(model, list(weights))
    model.eval()
    held_rows = predict_scores(model, data.test)
    calibration, threshold = fit_calibration(model, data.test, rows=held_rows)
    if calibration is not None:
        note = (f"Platt scaling fitted at the site on its held-out split ({calibration.n} rows, "
                f"{calibration.positives} failing); never sent")
    else:
        labels = data.test.labels()
        note = (f"not calibrated: the site's held-out split has {int(labels.sum())} failing rows of {len(labels)}"
                if labels.all() or not labels.any() else
                "not calibrated: the model ranks the site's failing rows below its healthy ones (Platt slope <= 0)")
        log.warning("site checkpoint without calibration", extra={"reason": note})
    prior, prior_note = _root_prior(settings, merge_root_priors(fit_root_prior(data.train), fit_root_prior(data.test)),
                                    data.train.sites[0].graph)
    reference = pt.public_reference(settings, float(cfg.get("acceleration", pt.DEFAULT_ACCELERATION)))
    round_ = int(cfg.get("server-round", 0))
    extra = {
        "source": {"kind": "federated-global-model", "round": round_,
                   "normalizer": "public reference (predictor_task.public_reference)"},
        "calibration": calibration.model_dump() if calibration is not None else None,
        "calibration_note": note,
        "alert_threshold": threshold,
        "root_prior": prior.model_dump() if prior is not None else None,
        "root_prior_note": prior_note,
        # the published mix is merged in above (or left out by the site): a deployed site adds none of it again,
        # and a site without a prior ranks without one, as its note says (models.published_root_prior)
        CARD_PUBLISHED_KEY: 0,
        # how far the site's own components moved over its training windows: local, never sent
        OWN_CHANGE_CARD_KEY: _dump(fit_own_change_tails(data.train, pt.feature_set())),
        # whether the head's naming of each cause held up on the site's held-out split: local, never sent
        CAUSE_NAMING_KEY: _dump(fit_cause_naming(held_rows, "site held-out")),
    }
    out = save_checkpoint(settings.state_path / SITE_CHECKPOINT_DIR, model, pt.feature_set(), reference.normalizer,
                          dict(metrics or {}), extra, overwrite=True, cadence_s=int(data.train.sites[0].cadence_s))
    log.info("site checkpoint written", extra={"path": str(out), "round": round_,
                                               "calibrated": calibration is not None, "alert_threshold": threshold})
    return out


def _dump(obj: Any) -> dict[str, Any] | None:
    return obj.model_dump() if obj is not None else None


def _root_prior(settings: SiteSettings, local: Any, graph: Any) -> tuple[Any, str]:
    """The prior the site ranks root causes with, and a note saying what it holds: its local counts, plus the
    fleet's released prior less its own contribution where the site stored one
    (:func:`infrabrain.privacy.fleet_root_prior.site_root_prior`, its counts read against the published mix's
    shares), plus the published failure mix laid on the site's topology as ``published_prior_failures``
    pseudo-failures (:mod:`infrabrain.models.published_root_prior`; 0 leaves out both)."""
    from infrabrain.client.fleet_prior_site import stored_fleet_prior
    from infrabrain.models.published_root_prior import DEFAULT_FAILURES, relation_shares, shares_as_prior
    from infrabrain.models.root_prior import merge_root_priors
    from infrabrain.privacy.fleet_root_prior import site_root_prior

    notes = [("counted at the site from its own labelled failures (both splits); never sent" if local is not None
              else "no labelled failure roots at the site")]
    weight = DEFAULT_FAILURES if settings.published_prior_failures is None else settings.published_prior_failures
    base = relation_shares(graph) if weight else None
    prior = local
    stored = stored_fleet_prior(settings)
    if stored is not None:
        fleet, own = stored
        prior = site_root_prior(local, fleet, own, base=base)
        notes.append(f"plus the fleet's root prior released under DP (epsilon {fleet.epsilon:.2f} per hour of a site's "
                     f"failure history, {fleet.n_sites} sites, noise std {fleet.sigma:.1f}) read as expected counts"
                     + (" against the published mix's shares" if base else "")
                     + (", less this site's own contribution" if own is not None else " (this site did not take part)"))
    published = shares_as_prior(base, weight) if weight else None
    if published is not None:
        prior = merge_root_priors(prior, published)
        notes.append(f"plus the published failure mix (Llama 3) laid on the site's topology as {published.failures} "
                     "pseudo-failures")
    if prior is None:
        notes.append("root causes are ranked without a prior")
    return prior, "; ".join(notes)
