"""End-to-end experiment: split runs, train the GNN, fit the baselines on the same split, evaluate everything.

Used by ``infrabrain train`` / ``infrabrain evaluate``, by ``bench/predictor.py`` and by the demo
(:func:`demo_train_and_explain`). Everything is computed from simulated or loaded ``SiteRun`` objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from infrabrain.logs import get_logger
from infrabrain.models.calibration import PlattCalibrator, calibrated_ensemble, logit
from infrabrain.models.cause_coverage import CauseCoverage, fit_cause_coverage, untrained_groups
from infrabrain.models.cause_naming import CauseNamingCheck, fit_cause_naming
from infrabrain.models.device import DeviceName
from infrabrain.models.gnn import FailurePredictor, ModelConfig
from infrabrain.models.own_change_evidence import CARD_KEY as OWN_CHANGE_CARD_KEY
from infrabrain.models.own_change_evidence import END_BINS, OwnChangeTails, fit_own_change_tails
from infrabrain.models.published_root_prior import CARD_PUBLISHED_KEY, DEFAULT_FAILURES, deployed_root_prior
from infrabrain.models.root_prior import RootPrior, fit_root_prior
from infrabrain.models.rule_fallback import with_rule_fallback
from infrabrain.models.selection import DEFAULT_SELECTION, Selection
from infrabrain.models.snapshots import Splits, make_splits
from infrabrain.models.training import (TrainConfig, TrainResult, estimate_cause_weights, estimate_pos_weight,
                                       predict_scores, train_model)
from infrabrain.models.uncertainty import DEFAULT_BOOTSTRAP

#: The baselines the GNN's ratio is taken over (the best of them, by PR-AUC).
NONGRAPH_MODELS = ("gbm", "logistic", "iforest", "rules")
#: The GNN with the incumbent rules of the cause groups its training held too few failures of
#: (:mod:`~infrabrain.models.rule_fallback`): a scorer of its own, never the GNN's goals.
RULE_FALLBACK_MODEL = "gnn+rules"

log = get_logger("models.pipeline")


class PipelineConfig(BaseModel):
    """Everything that defines one training run (stored in the model card)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_min: int = Field(60, ge=2, le=24 * 60)
    stride_min: int = Field(10, ge=1, description="minutes between training snapshots")
    eval_stride_min: int = Field(5, ge=1, description="minutes between evaluation snapshots (lead-time resolution)")
    heldout: int | list[str] = Field(0, description="held-out sites: a count (last sites) or names")
    fractions: tuple[float, float] = Field((0.6, 0.8), description="training sites: ends of the training and the "
                                           "validation period as fractions of their run; with val_sites, (1, 1) "
                                           "trains on the whole run (no test_time split)")
    val_sites: int = Field(0, ge=0, description="validate on this many whole sites (not trained on) instead of later time")
    weight_decay: float = Field(1e-4, ge=0)
    hidden: int = Field(32, ge=4)
    layers: int = Field(3, ge=0)
    level_features: bool = Field(True, description="model input: normalised levels (besides peer deviations)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout of the GNN (see ModelConfig.dropout; 0.2 "
                           "since issue 3 follow-up 4)")
    summary_features: bool = Field(True, description="GNN input: window summaries (see ModelConfig)")
    bin_features: bool = Field(False, description="GNN input: every time bin of the window as well as its summaries "
                               "(see ModelConfig; False, the default since issue 3 follow-up 4, feeds summaries only)")
    input_scaling: bool = Field(True, description="GNN: standardise encoder inputs per kind on the training split "
                                "(see ModelConfig.input_scaling; the default since issue 3 follow-up 5)")
    input_scale_floor: float = Field(0.1, gt=0, description="smallest input scale of input_scaling")
    pool_min: int = Field(5, ge=1, description="minutes averaged per time bin of the window")
    pos_weight: float | None = Field(None, gt=0, description="None: negatives/positives of the training set")
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    patience: int = Field(3, ge=1)
    selection: Selection = Field(DEFAULT_SELECTION,
                                 description="validation score that picks the kept epoch (selection.SELECTIONS)")
    max_batches_per_epoch: int | None = Field(None, ge=1)
    seed: int = 0
    progress: bool = True
    device: DeviceName = Field("cpu", description="where to train: cpu, cuda, cuda:N or auto (see models.device)")
    published_prior_failures: int = Field(DEFAULT_FAILURES, ge=0, description="pseudo-failures of the published "
                                          "failure mix, laid on each scored site's topology, that the training "
                                          "sites' root prior is merged with when root causes are ranked "
                                          "(models.published_root_prior; 0: the labels alone; issue 3 follow-up 29)")
    train_on_unpredictable: bool = Field(False, description="train the GNN and the tabular baselines on the "
                                         "failures of the causes no telemetry foretells (software, GSP firmware: "
                                         "evaluation.UNPREDICTABLE_GROUPS) as positives; False, the default since "
                                         "issue 3 follow-up 30, leaves those rows out of the GNN's loss and of the "
                                         "baselines' fit. Evaluation counts them either way")
    lead_weight: float = Field(0.0, ge=0.0, description="weigh a positive row by how far ahead of its failure it "
                               "lies (training.loss_fn; a probe, issue 3 follow-up 45; 0: off)")
    early_band_min: float = Field(0.0, ge=0.0, description="leave out of the GNN's loss the negative rows whose "
                                  "failure comes within this many minutes after the label's hour "
                                  "(training.loss_fn; a probe, issue 3 follow-up 46; 0: off)")
    cause_head: bool = Field(True, description="give the GNN a detached cause head naming the failure's cause "
                             "group (evaluation.TYPED_CAUSE_GROUPS; ModelConfig.cause_groups): the alerts say "
                             "why, and the risk trains exactly as without it (issue 3 follow-up 33)")
    cause_balance: float = Field(0.0, ge=0.0, le=1.0, description="how far the cause head's loss evens out the "
                                 "training sites' cause groups (training.estimate_cause_weights): 0 weighs every "
                                 "failing row alike, 1 every group alike (issue 3 follow-up 35)")
    cause_split: tuple[str, ...] = Field((), description="cause groups whose causes the head tells apart as "
                                         "classes of their own (ModelConfig.cause_split; issue 3 follow-up 42)")

    @model_validator(mode="after")
    def _validate_window_bins(self) -> PipelineConfig:
        """A window of fewer than ``2 x END_BINS`` time bins would train, then fail in the explanations, which
        compare its first and last ``END_BINS`` bins (:func:`~infrabrain.models.own_change_evidence.own_change`)."""
        least = 2 * END_BINS * self.pool_min
        if self.window_min < least:
            finer = self.window_min // (2 * END_BINS)  # the largest pool_min that would do, if any (pool_min >= 1)
            raise ValueError(f"window_min {self.window_min} holds {self.window_min // self.pool_min} time bin(s) of "
                             f"pool_min {self.pool_min} minutes; the explanations compare a window's first and last "
                             f"{END_BINS} bins, so window_min must be at least {least}"
                             + (f" (or pool_min at most {finer})" if finer >= 1 else ""))
        return self


def training_fractions(train_until: float) -> tuple[float, float]:
    """``PipelineConfig.fractions`` for training sites that train until ``train_until`` of their run (1: the whole
    run, for validation on whole sites); the time-validation period, if any room is left, ends at 0.8."""
    return (train_until, max(train_until, 0.8))


@dataclass
class Trained:
    """A trained predictor with the splits it was trained on."""

    model: FailurePredictor
    splits: Splits
    result: TrainResult
    config: PipelineConfig
    train_s: float
    calibration: PlattCalibrator | None = None  # Platt scaling fitted on the validation split
    val_threshold: float | None = None  # alert threshold chosen on the validation split (precision >= 0.5 there)
    root_prior: RootPrior | None = None  # where the training split's failures started (root-cause ranking)
    own_tails: OwnChangeTails | None = None  # how far the training split's components moved (root-cause ranking)
    cause_naming: CauseNamingCheck | None = None  # the head's naming of each group on the validation split
    cause_coverage: CauseCoverage | None = None  # the training split's failures per cause group


def root_prior_card(trained: Trained) -> dict[str, Any]:
    """The model card's root-cause fields of ``trained``: the training sites' pooled labels and how many
    pseudo-failures of the published mix a deployed site merges them with
    (:func:`~infrabrain.models.published_root_prior.deployed_root_prior` reads both), and how far the training
    sites' components moved over a window (:class:`~infrabrain.models.own_change_evidence.OwnChangeTails`)."""
    prior = trained.root_prior.model_dump() if trained.root_prior is not None else None
    tails = trained.own_tails.model_dump() if trained.own_tails is not None else None
    return {"root_prior": prior, CARD_PUBLISHED_KEY: trained.config.published_prior_failures,
            OWN_CHANGE_CARD_KEY: tails}


def deployed_site_priors(trained: Trained, dataset: Any) -> dict[int, RootPrior | None]:
    """Per site of ``dataset`` (by index), the root prior ``predict`` and the daemon would rank its root causes with
    under ``trained``'s card: what the evaluation scores, so that it scores what is deployed."""
    card = root_prior_card(trained)
    return {i: deployed_root_prior(card, site.graph)[0] for i, site in enumerate(dataset.sites)}


def ignored_causes(cfg: PipelineConfig) -> tuple[int, ...]:
    """Cause indices whose positive rows training leaves out (the GNN's loss, the baselines' fit): the
    unpredictable ones (:func:`~infrabrain.models.evaluation.unpredictable_causes`) unless
    ``cfg.train_on_unpredictable``."""
    from infrabrain.models.evaluation import unpredictable_causes

    return () if cfg.train_on_unpredictable else unpredictable_causes()


def typed_cause_groups(cfg: PipelineConfig) -> tuple[str, ...]:
    """The cause groups the GNN's cause head names under ``cfg`` (none without ``cause_head``)."""
    from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS

    return TYPED_CAUSE_GROUPS if cfg.cause_head else ()


def pipeline_splits(runs: Sequence[Any], cfg: PipelineConfig) -> Splits:
    """The site and time splits ``cfg`` asks for (what :func:`train_predictor` trains and evaluates on)."""
    return make_splits(runs, heldout=cfg.heldout, window_min=cfg.window_min, stride_min=cfg.stride_min,
                       eval_stride_min=cfg.eval_stride_min, fractions=cfg.fractions, pool_min=cfg.pool_min,
                       val_sites=cfg.val_sites)


def train_predictor(runs: Sequence[Any], config: PipelineConfig | None = None,
                    on_epoch: Callable[[int, dict[str, float], FailurePredictor], None] | None = None) -> Trained:
    """Split ``runs`` and train a :class:`FailurePredictor` with early stopping on the validation split.

    ``on_epoch(epoch, record, model)`` is called after every epoch with the history record and the model as it is
    then (e.g. to keep every epoch's weights)."""
    cfg = config or PipelineConfig()
    torch.manual_seed(cfg.seed)
    splits = pipeline_splits(runs, cfg)
    if len(splits.train) == 0:
        raise ValueError("no training snapshots: runs are shorter than the window (use more hours)")
    pw = cfg.pos_weight or estimate_pos_weight(splits.train)
    groups = typed_cause_groups(cfg)
    cw = estimate_cause_weights(splits.train, groups, cfg.cause_balance, ignored_causes(cfg)) if groups else ()
    model = FailurePredictor(ModelConfig(window=splits.window, pool=splits.pool, n_features=splits.feature_set.f_max,
                                         hidden=cfg.hidden, layers=cfg.layers, level_features=cfg.level_features,
                                         dropout=cfg.dropout, summary_features=cfg.summary_features, pos_weight=pw,
                                         bin_features=cfg.bin_features, input_scaling=cfg.input_scaling,
                                         cause_groups=groups, cause_weights=cw,
                                         cause_split=cfg.cause_split if groups else ()))
    if cfg.input_scaling:
        from infrabrain.models.gnn import fit_input_scaling
        from infrabrain.models.training import make_loader

        fit_input_scaling(model, make_loader(splits.train, cfg.batch_size), floor=cfg.input_scale_floor)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, patience=cfg.patience,
                       selection=cfg.selection,
                       weight_decay=cfg.weight_decay,
                       max_batches_per_epoch=cfg.max_batches_per_epoch, seed=cfg.seed, progress=cfg.progress,
                       device=cfg.device, ignore_causes=ignored_causes(cfg), lead_weight=cfg.lead_weight,
                       early_band_min=cfg.early_band_min)
    t0 = time.perf_counter()
    hook = (lambda epoch, rec: on_epoch(epoch, rec, model)) if on_epoch is not None else None
    result = train_model(model, splits.train, splits.val if len(splits.val) else None, tcfg, on_epoch=hook)
    train_s = time.perf_counter() - t0
    val_rows = predict_scores(model, splits.val) if len(splits.val) else None
    cal, thr = fit_calibration(model, splits.val, rows=val_rows)
    return Trained(model=model, splits=splits, result=result, config=cfg, train_s=train_s, calibration=cal,
                   val_threshold=thr, root_prior=fit_root_prior(splits.train),
                   own_tails=fit_own_change_tails(splits.train, splits.feature_set),
                   cause_naming=fit_cause_naming(val_rows, "validation") if val_rows is not None else None,
                   cause_coverage=fit_cause_coverage(splits.train))


def fit_calibration(model: FailurePredictor, val: Any, min_precision: float = 0.5,
                    rows: pd.DataFrame | None = None) -> tuple[PlattCalibrator | None, float | None]:
    """Platt scaling of ``model``'s logits on the validation split, and the alert threshold (a calibrated
    probability) with the best event recall at alert precision >= ``min_precision`` there. ``rows``:
    ``predict_scores(model, val)``, where the caller has it already.

    (None, None) if the split has no rows or one class only; the threshold is None if no threshold reaches the
    precision on the validation split."""
    from infrabrain.models.evaluation import event_scores, failure_events, recall_at_precision

    if val is None or len(val) == 0:
        return None, None
    rows = predict_scores(model, val) if rows is None else rows
    try:
        cal = PlattCalibrator.fit(rows["logit"].to_numpy(), rows["label"].to_numpy(bool))
    except ValueError as exc:
        log.warning("calibration skipped", extra={"reason": str(exc)})
        return None, None
    rows = rows.assign(score=cal.apply(rows["logit"].to_numpy()))
    r = recall_at_precision(rows, event_scores(rows, failure_events(val)), min_precision)
    thr = r["threshold"]
    return cal, (float(thr) if np.isfinite(thr) else None)


def baseline_tables(splits: Splits, test: Any, truth: pd.DataFrame, seed: int = 0,
                    fitted: dict[str, Any] | None = None,
                    test_features: tuple[np.ndarray, pd.DataFrame] | None = None,
                    ignore_causes: Sequence[int] = ()) -> dict[str, pd.DataFrame]:
    """Fit the tabular baselines and Isolation Forest on ``splits.train``; score ``test`` (plus the rules).
    ``fitted`` (a dict), if given, receives the fitted tabular models by name; ``test_features`` is
    ``feature_table(test)`` if the caller already has it. The tabular baselines are fitted without the positive
    rows of ``ignore_causes`` (:func:`ignored_causes`), as the GNN is trained."""
    from infrabrain.models.baselines import IsolationForestBaseline, TabularBaseline, feature_table, rule_table
    from infrabrain.models.evaluation import attach_truth

    xtr, mtr = feature_table(splits.train)
    xte, mte = test_features if test_features is not None else feature_table(test)
    out: dict[str, pd.DataFrame] = {}
    y = mtr["label"].to_numpy(bool)
    fit_rows = ~(y & np.isin(mtr["cause"].to_numpy(), list(ignore_causes)))
    for kind in ("gbm", "logistic"):
        try:
            base = TabularBaseline(kind, seed=seed).fit(xtr[fit_rows], y[fit_rows])
            if fitted is not None:
                fitted[kind] = base
            out[kind] = attach_truth(mte.assign(score=base.score(xte)), truth)
        except ValueError as exc:
            log.warning("baseline skipped", extra={"baseline": kind, "reason": str(exc)})
    iso = IsolationForestBaseline(seed=seed).fit(xtr)
    out["iforest"] = attach_truth(mte.assign(score=iso.score(xte)), truth)
    out["rules"] = attach_truth(rule_table(test), truth)
    return out


def evaluate_predictor(trained: Trained, out_dir: str | Path | None = None, rootcause_events: int = 150,
                       split: str = "test_sites", oracle: bool = False, bootstrap: int = DEFAULT_BOOTSTRAP,
                       keep_tables: bool = False,
                       compare_priors: Mapping[str, RootPrior | Mapping[int, RootPrior | None] | None] | None = None,
                       late_from: Mapping[int, float] | None = None,
                       rootcause_absolute: bool = False) -> dict[str, Any]:
    """Evaluate the GNN and every baseline on ``split`` (``test_sites`` if there are held-out sites, else
    ``test_time``); optionally write ``report.json``, ``pr_curves.png`` and a picture of each of the top five
    alerts' explanations (``report["explanation_pictures"]``; :mod:`~infrabrain.models.explanation_plot`) to
    ``out_dir``.

    ``oracle=True`` also scores the same rows with the simulator-truth oracles of :mod:`infrabrain.models.oracle`
    (``report["oracle"][kind]``: what any model could reach; needs simulated runs). ``bootstrap`` resamples of
    the held-out racks give 90 % intervals (:mod:`infrabrain.models.uncertainty`; 0 skips them) of the ratio
    (``pr_auc_ratio_interval``) and of the GNN's recall at precision 0.5 on hardware-precursor failures and its
    median lead (``gnn_recall_at_p50_precursor_interval``, ``gnn_median_lead_min_interval``). ``keep_tables``
    adds every model's score table (``score_tables``), the racks (``resample_clusters``) and the failures
    (``events``), none written to the JSON. ``compare_priors`` ranks the same root-cause drops with other priors
    too (``report["rootcause"]["compare"]``; with ``late_from`` also over each site's later failures only:
    :func:`~infrabrain.models.root_cause_accuracy.rootcause_accuracy`; ``rootcause_absolute`` also ranks them on the
    raw GPU drops, its ``absolute``). ``report["precursor_naming"]``: how often the sentences of the failures with
    a precursor name it (:func:`~infrabrain.models.precursor_naming.precursor_naming`)."""
    from infrabrain.models.evaluation import (calibration, evaluate_scores, failure_events, node_racks, plot_pr_curves,
                                              root_scope, scope_pr_aucs)
    from infrabrain.models.explain import alert_rows, explain_dataset_alerts
    from infrabrain.models.precursor_naming import precursor_naming
    from infrabrain.models.root_cause_accuracy import rootcause_accuracy

    sp = trained.splits
    test = getattr(sp, split) if getattr(sp, split, None) is not None else sp.test_time
    if test is None or len(test) == 0:
        raise ValueError(f"evaluation split {split!r} has no snapshots")
    gnn = predict_scores(trained.model, test)
    truth = gnn[["site", "t", "node", "label", "cause", "root"]]
    raw_ece = None
    if trained.calibration is not None:  # a monotone map: ranking metrics unchanged, probabilities calibrated
        raw_ece = calibration(gnn["label"].to_numpy(), gnn["score"].to_numpy())["ece"]
        gnn = gnn.assign(raw_score=gnn["score"], score=trained.calibration.apply(gnn["logit"].to_numpy()))
    fitted: dict[str, Any] = {}
    tables = {"gnn": gnn, **baseline_tables(sp, test, truth, trained.config.seed, fitted,
                                            ignore_causes=ignored_causes(trained.config))}
    ens = ensemble_table(trained, gnn, tables.get("logistic"), fitted.get("logistic"))
    if ens is not None:
        tables["ensemble"] = ens
    untrained = untrained_groups(trained.cause_coverage)
    tables[RULE_FALLBACK_MODEL] = with_rule_fallback(gnn, test, untrained)  # the GNN's where no rule watches them
    events = failure_events(test)
    models = {name: evaluate_scores(df, events, probabilistic=name in ("gnn", "gbm", "logistic", "ensemble"))
              for name, df in tables.items()}
    for name, df in tables.items():  # node-rooted failures a per-node model reads too; upstream-rooted ones
        models[name].update(scope_pr_aucs(df, root_scope(df, test)))
    if raw_ece is not None:
        models["gnn"]["ece_uncalibrated"] = raw_ece
    if trained.val_threshold is not None:  # the operating point a site would deploy: chosen without test data
        models["gnn"]["at_val_threshold"] = operating_point(gnn, events, trained.val_threshold)
    oracles, oracle_tables = oracle_reports(test, truth, events) if oracle else ({}, {})
    deployed = deployed_site_priors(trained, test)
    rc = rootcause_accuracy(trained.model, test, sp.feature_set, gnn, events, max_events=rootcause_events,
                            alert_threshold=trained.val_threshold, prior=deployed,
                            compare_priors=compare_priors, late_from=late_from, absolute=rootcause_absolute,
                            own_tails=trained.own_tails)
    naming_of_precursors = precursor_naming(trained.model, test, sp.feature_set, gnn, events,
                                            max_events=rootcause_events, prior=deployed, own_tails=trained.own_tails)
    explained = explain_dataset_alerts(trained.model, test, sp.feature_set, gnn, top_n=5, prior=deployed,
                                       own_tails=trained.own_tails, naming=trained.cause_naming)
    alerts = alert_rows(gnn, 5)  # the rows explained, in order
    expl = _quote_risks(explained, alerts["score"].to_numpy())  # gnn's score is calibrated if possible
    nongraph = [n for n in NONGRAPH_MODELS if n in models]
    best = max(nongraph, key=lambda n: _nz(models[n]["pr_auc"]))
    best_c = max(nongraph, key=lambda n: _nz(models[n]["pr_auc_cascade"]))
    racks = node_racks(test) if bootstrap or keep_tables else None
    intervals: dict[str, Any] = {}
    if bootstrap:
        from infrabrain.models.uncertainty import bootstrap_draw, goal_intervals

        intervals = goal_intervals(bootstrap_draw([(gnn, {n: tables[n] for n in nongraph})], racks,
                                                  events[events["precursor"]], n_boot=bootstrap,
                                                  seed=trained.config.seed))
    report = {
        "split": split if test is getattr(sp, split, None) else "test_time",
        "sites": [s.name for s in test.sites],
        "snapshots": len(test),
        "models": models,
        "best_baseline": best,
        "pr_auc_gnn": models["gnn"]["pr_auc"],
        "pr_auc_best_baseline": models[best]["pr_auc"],
        "pr_auc_ratio": _ratio(models["gnn"]["pr_auc"], models[best]["pr_auc"]),
        "pr_auc_ratio_interval": intervals.get("pr_auc_ratio"),
        "gnn_recall_at_p50_precursor_interval": intervals.get("event_recall"),
        "gnn_median_lead_min_interval": intervals.get("median_lead_min"),
        "best_baseline_cascade": best_c,
        "pr_auc_ratio_cascade": _ratio(models["gnn"]["pr_auc_cascade"], models[best_c]["pr_auc_cascade"]),
        **{f"pr_auc_ratio_{scope}": _ratio(models["gnn"][f"pr_auc_{scope}"],
                                           max(_nz(models[n][f"pr_auc_{scope}"]) for n in nongraph))
           for scope in ("node_rooted", "upstream")},
        "pr_auc_ratio_ensemble": (_ratio(models["ensemble"]["pr_auc"], models[best]["pr_auc"])
                                  if "ensemble" in models else float("nan")),
        "calibration": trained.calibration.model_dump() if trained.calibration is not None else None,
        "cause_coverage": trained.cause_coverage.model_dump() if trained.cause_coverage is not None else None,
        "untrained_causes": list(untrained),
        "rootcause": rc,
        "precursor_naming": naming_of_precursors,
        "explanations": expl,
        "oracle": oracles,
        "train": {"epochs_run": len(trained.result.history), "best_epoch": trained.result.best_epoch,
                  "train_s": trained.train_s, "history": trained.result.history},
    }
    if out_dir is not None:
        import json

        from infrabrain.atomic import atomic_write_text
        from infrabrain.models.checkpoint import _jsonable

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_pr_curves({**tables, **oracle_tables}, out / "pr_curves.png", title=f"{report['split']}: {', '.join(report['sites'][:4])}")
        report["explanation_pictures"] = _draw_explanations(explained, expl, alerts, test, out)
        atomic_write_text(out / "report.json", json.dumps(_jsonable(report), indent=2))
        report["files"] = [str(out / "report.json"), str(out / "pr_curves.png"), *report["explanation_pictures"]]
    if keep_tables:
        report["score_tables"] = tables
        report["resample_clusters"] = racks
        report["events"] = events
    return report


def oracle_reports(test: Any, truth: pd.DataFrame,
                   events: pd.DataFrame) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Every simulator-truth oracle of :mod:`infrabrain.models.oracle` scored on ``test``'s rows: the metrics per
    kind, and the score tables (named ``oracle (<kind>)``, for the PR-curve plot)."""
    from infrabrain.models.evaluation import attach_truth, evaluate_scores
    from infrabrain.models.oracle import ORACLE_KINDS, oracle_table

    tables = {f"oracle ({kind})": attach_truth(oracle_table(test, kind), truth) for kind in ORACLE_KINDS}
    return {kind: evaluate_scores(tables[f"oracle ({kind})"], events) for kind in ORACLE_KINDS}, tables


def headroom(runs: Sequence[Any], cfg: PipelineConfig) -> dict[str, Any]:
    """How far above the best non-graph model any scorer could go on ``cfg``'s held-out sites, without training a
    GNN: the non-graph baselines and every oracle on the same rows (the oracles need simulated runs).

    ``best_baseline`` is the non-graph model (gbm, logistic, iforest, rules) with the highest PR-AUC;
    ``pr_auc_ceiling`` is the ceiling oracle's (``oracle.CEILING_KIND``); ``best_baseline_cascade`` the one with
    the highest PR-AUC on cascade failures (thermal, network), as the cascade ratio's denominator is chosen."""
    from infrabrain.models.baselines import feature_table
    from infrabrain.models.evaluation import evaluate_scores, failure_events
    from infrabrain.models.oracle import CEILING_KIND

    sp = pipeline_splits(runs, cfg)
    test = sp.test_sites if sp.test_sites is not None and len(sp.test_sites) else None
    if test is None:
        raise ValueError("headroom needs held-out sites (PipelineConfig.heldout >= 1)")
    features = feature_table(test)
    truth = features[1][["site", "t", "node", "label", "cause", "root"]]
    events = failure_events(test)
    models = {name: evaluate_scores(df, events, probabilistic=name in ("gbm", "logistic"))
              for name, df in baseline_tables(sp, test, truth, cfg.seed, test_features=features,
                                              ignore_causes=ignored_causes(cfg)).items()}
    oracles, _ = oracle_reports(test, truth, events)
    best = max(models, key=lambda n: _nz(models[n]["pr_auc"]))
    best_c = max(models, key=lambda n: _nz(models[n]["pr_auc_cascade"]))
    return {"sites": [s.name for s in test.sites], "models": models, "oracle": oracles, "best_baseline": best,
            "pr_auc_best_baseline": models[best]["pr_auc"], "pr_auc_ceiling": oracles[CEILING_KIND]["pr_auc"],
            "best_baseline_cascade": best_c, "pr_auc_best_baseline_cascade": models[best_c]["pr_auc_cascade"]}


def operating_point(rows: pd.DataFrame, events: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Alert precision, event recall (all failures and those with a hardware precursor) and median lead time of
    ``rows`` at a fixed ``threshold``."""
    from infrabrain.models.evaluation import event_scores, lead_times

    alert = rows["score"].to_numpy() >= threshold
    ev = event_scores(rows, events)
    hw = ev[ev["precursor"]] if len(ev) else ev
    leads = lead_times(rows, hw, threshold) if len(hw) else np.zeros(0)
    return {
        "threshold": float(threshold),
        "alerts": int(alert.sum()),
        "precision": float(rows["label"].to_numpy()[alert].mean()) if alert.any() else float("nan"),
        "recall": float((ev["max_score"] >= threshold).mean()) if len(ev) else float("nan"),
        "recall_precursor": float((hw["max_score"] >= threshold).mean()) if len(hw) else float("nan"),
        "median_lead_min": float(np.median(leads)) if len(leads) else float("nan"),
    }


def ensemble_table(trained: Trained, gnn: pd.DataFrame, logistic: pd.DataFrame | None,
                   model: Any) -> pd.DataFrame | None:
    """Rows of ``gnn`` (calibrated) with the score of :func:`calibrated_ensemble` of the GNN and the logistic
    baseline, whose probabilities are Platt-scaled on the same validation split; None if either is missing."""
    from infrabrain.models.baselines import feature_table

    val = trained.splits.val
    if trained.calibration is None or logistic is None or model is None or val is None or len(val) == 0:
        return None
    xva, mva = feature_table(val)
    try:
        cal = PlattCalibrator.fit(logit(model.score(xva)), mva["label"].to_numpy(bool))
    except ValueError as exc:
        log.warning("ensemble skipped", extra={"reason": str(exc)})
        return None
    keys = ["site", "t", "node"]
    m = gnn.merge(logistic[keys + ["score"]].rename(columns={"score": "_lr"}), on=keys, how="inner")
    p_lr = cal.apply(logit(m["_lr"].to_numpy()))
    return m.drop(columns=["_lr"]).assign(score=calibrated_ensemble(m["score"].to_numpy(), p_lr))


def _nz(x: float) -> float:
    return x if x is not None and np.isfinite(x) else -1.0


def _ratio(a: float, b: float) -> float:
    if not (np.isfinite(a) and np.isfinite(b)) or b <= 0:
        return float("nan")
    return float(a / b)


class DemoAlerts(NamedTuple):
    """What ``make demo`` prints of its briefly trained model."""

    note: str  # the cause groups the model did not learn, as ``predict`` says it (:func:`coverage_note`); or ""
    sentences: list[str]  # the top alerts' explanations, riskiest first


def demo_train_and_explain(runs: Sequence[Any], top_n: int = 5, epochs: int = 3, progress: bool = True) -> DemoAlerts:
    """Train briefly on ``runs`` (last site held out if there are several) and return sentences for the
    ``top_n`` highest-risk nodes of the evaluation split, e.g.
    ``node r03-n07 at risk 0.82: cooling unit crac-2 airflow -35 % over 40 min; ...``, with the note on the
    cause groups its training sites held too few failures of."""
    from infrabrain.models.explain import alert_rows, explain_dataset_alerts
    from infrabrain.models.rule_fallback import coverage_note

    # Demo budget (~1 min of CPU on 4 sites x 48 h): 30 batches of 16 snapshots per epoch, and validation and
    # scoring every 15 min instead of 5 (a third of the forward passes; the alerts are the same kind).
    cfg = PipelineConfig(heldout=1 if len(runs) > 1 else 0, epochs=epochs, patience=epochs, progress=progress,
                         max_batches_per_epoch=30, eval_stride_min=15)
    trained = train_predictor(runs, cfg)
    test = trained.splits.test_sites if trained.splits.test_sites is not None else trained.splits.test_time
    rows = predict_scores(trained.model, test)
    explained = explain_dataset_alerts(trained.model, test, trained.splits.feature_set, rows, top_n,
                                       prior=deployed_site_priors(trained, test), own_tails=trained.own_tails,
                                       naming=trained.cause_naming)
    note = coverage_note(trained.cause_coverage)
    if trained.calibration is None:
        return DemoAlerts(note, [e.sentence for e in explained])
    return DemoAlerts(note, _quote_risks(explained,
                                         trained.calibration.apply(alert_rows(rows, top_n)["logit"].to_numpy())))


def _draw_explanations(explained: Sequence[Any], sentences: Sequence[str], rows: pd.DataFrame, test: Any,
                       out: Path) -> list[str]:
    """Each explained alert (``rows``: the alerts ``explained`` explains, in order) drawn beside the report as
    ``alert-<rank>-<site>-<node>.png`` (:mod:`~infrabrain.models.explanation_plot`), with its ``sentences``."""
    from infrabrain.models.explanation_plot import file_stem, plot_explanation
    from infrabrain.models.predict import root_cause_evidence

    paths = []
    for rank, (e, said, r) in enumerate(zip(explained, sentences, rows.itertuples(), strict=True), start=1):
        site = test.sites[int(r.site)]
        name = f"alert-{rank:02d}-{file_stem(site.name)}-{file_stem(e.node_id)}.png"
        paths.append(str(plot_explanation(said, e.quoted(),
                                          root_cause_evidence(e, site.graph), site.cadence_s, out / name)))
    return paths


def _quote_risks(explained: Sequence[Any], risks: np.ndarray) -> list[str]:
    """Sentences quoting ``risks`` (the calibrated risk, what ``predict`` reports) instead of the raw sigmoid."""
    return [e.quoting(float(r)) for e, r in zip(explained, risks, strict=True)]
