"""The real local task of a federated round: the failure predictor, trained with DP-SGD on the site's own data.

Data: the site simulates its own telemetry from its partition id and seed (``infrabrain.simulation``); sites
differ in size, ambient temperature, fault rates and firmware quality (non-IID). The first 70 % of the run
(by time) trains, the last 30 % (after a one-hour gap) is the held-out evaluation split. Training windows do
not overlap (one hour each, the privacy unit); evaluation windows are cut every 10 minutes.

Model: the centralised predictor's encoder (window summaries only, inputs standardised per component kind;
docs/predictor.md, issue 3 follow-ups 4 and 5), without dropout (DP-SGD's noise regularises already). Unless the
round's ``cause-head`` is false it also has the centralised predictor's detached cause head (issue 3 follow-up 33),
trained in the same DP-SGD step on the same snapshots: the site's checkpoint then names the likely cause of each
alert, and its root-cause ranking reads that cause as the centralised one does (follow-ups 34 and 37).

Normalisation uses :func:`public_reference`: the feature normaliser and the encoder's per-kind input centre and
scale, all fitted on *public* simulated sites (the coordinator's simulator, partition ids from
:data:`PUBLIC_PARTITION_BASE`), never on this site's telemetry. Statistics fitted on the site's own windows
would be a data-dependent step outside DP-SGD: every trained weight would then depend on all windows at once,
and that release would not be covered by the accounted epsilon. Every party derives the same reference from
the round's settings, so nothing about it travels.

Training: ``infrabrain.privacy.train_dp`` with the site's persistent :class:`PrivacyLedger` under
``<state_dir>/ledger``; the ledger file is re-read every round (each round runs in a fresh process), the run is
reserved before the first step and committed before the update leaves. A round that would exceed the budget
is refused (``BudgetExceededError``). With ``noise-multiplier = 0`` the noise is calibrated so that the
remaining budget covers the rounds this site is still expected to join. FedProx's proximal pull towards the
global model is applied to the already clipped and noised gradient (post-processing: no extra privacy cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from infrabrain.client.local_training import EvalResult, SiteSettings, TrainResult
from infrabrain.logs import get_logger

log = get_logger("client.predictor_task")

WINDOW_MIN = 60
POOL_MIN = 5
TRAIN_FRACTION = 0.7
STRIDE_MIN = 10
DEFAULT_ACCELERATION = 300.0
#: Partition ids of public (simulated) sites start here; real and simulated federation sites are numbered from 0.
PUBLIC_PARTITION_BASE = 1_000_000
#: Public sites and hours the shared normaliser is fitted on (deterministic: every party gets the same one).
PUBLIC_NORMALIZER_SITES = 2
PUBLIC_NORMALIZER_MAX_HOURS = 72.0
#: The federated predictor's architecture beyond ``ModelConfig``'s defaults (the centralised pipeline's encoder).
MODEL_OVERRIDES: dict[str, Any] = {"bin_features": False, "input_scaling": True}
#: Smallest input scale of the public input scaling. 1.0, not the centralised pipeline's 0.1
#: (``PipelineConfig.input_scale_floor``): the scaling is fitted on two small public sites, where a kind's input
#: that barely varies gets a tiny scale and a private site's ordinary values then land far out (measured on 16-GPU
#: demo sites: held-out PR-AUC 0.154 at 0.1, 0.345 at 1.0; docs/predictor.md follow-up 6).
INPUT_SCALE_FLOOR = 1.0
#: What, beyond the shapes, makes two predictors the same model: part of every cache key (site data, public model),
#: so a cache written with another encoder or scaling floor is rebuilt, never loaded.
MODEL_IDENTITY: dict[str, Any] = {"overrides": MODEL_OVERRIDES, "input_scale_floor": INPUT_SCALE_FLOOR}
#: Buffers of the model that hold the input scaling (not weights: they never travel, every party derives them).
SCALING_KEYS = ("in_center", "in_scale")


def feature_set() -> Any:
    """The feature set every site and the coordinator use: every metric the data contract defines.

    No derived metric (:mod:`infrabrain.models.derived_metrics`): the GPU temperature gap that helps the
    centralised predictor did not help this model (issue 3 follow-up 21: federated DP 0.450 against 0.445 on
    the federation bench, but public pretraining 0.241 against 0.287 on the privacy bench)."""
    from infrabrain.models.features import KINDS, FeatureSet
    from infrabrain.simulation.telemetry import METRIC_NAMES

    return FeatureSet(metrics={k: tuple(METRIC_NAMES[k]) for k in KINDS if k in METRIC_NAMES})


def cause_groups(cfg: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The cause groups the federated predictor's cause head names under the round's settings ``cfg``: the
    centralised head's (:data:`~infrabrain.models.evaluation.TYPED_CAUSE_GROUPS`), or none where ``cause-head`` is
    false. Every party reads the same key, so every party builds the same arrays."""
    from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS

    on = (cfg or {}).get("cause-head", True)
    if not isinstance(on, bool):
        raise ValueError(f"cause-head must be true or false, got {on!r}")
    return TYPED_CAUSE_GROUPS if on else ()


def _window() -> int:
    from infrabrain.models.snapshots import window_steps

    return window_steps(WINDOW_MIN, 60, POOL_MIN)


def build_predictor(cfg: Mapping[str, Any] | None, input_scaling: Mapping[str, np.ndarray] | None) -> Any:
    """A fresh FailurePredictor for the shared feature set (seeded, so every party builds the same one), with a
    cause head unless ``cfg``'s ``cause-head`` is false (:func:`cause_groups`).

    ``input_scaling`` is the public reference's centre and scale (:attr:`SiteData.input_scaling` or
    :func:`public_reference`). None leaves the identity scaling: right only where the parameters alone matter
    (the coordinator's initial arrays), never for training or scoring."""
    import torch

    from infrabrain.models.gnn import build_model

    seed = int((cfg or {}).get("seed", 0))
    torch.manual_seed(seed)
    model = build_model(feature_set().f_max, _window(), pool=POOL_MIN, cause_groups=cause_groups(cfg),
                        **MODEL_OVERRIDES)
    if input_scaling is not None:
        missing = [k for k in SCALING_KEYS if k not in input_scaling]
        if missing:
            raise ValueError(f"input_scaling lacks {missing}; expected {list(SCALING_KEYS)}")
        state = model.state_dict()
        for k in SCALING_KEYS:
            arr = torch.as_tensor(np.asarray(input_scaling[k], dtype=np.float32))
            if tuple(arr.shape) != tuple(state[k].shape):
                raise ValueError(f"input_scaling[{k!r}] has shape {tuple(arr.shape)}, the model needs "
                                 f"{tuple(state[k].shape)} (another feature set or encoder)")
            getattr(model, k).copy_(arr)
    return model


def predictor_initial_weights(cfg: Mapping[str, Any]) -> list[np.ndarray]:
    """Initial global arrays (the coordinator calls this; no site data needed: the input scaling is a buffer,
    not one of the arrays)."""
    from infrabrain.models.training import get_weights

    return get_weights(build_predictor(cfg, None))


def site_spec(settings: SiteSettings) -> Any:
    """This site's simulated hardware: ``site_gpus`` GPUs (8 per node, 4 nodes per rack) and its own climate."""
    from infrabrain.simulation.spec import FaultSpec, SiteSpec

    rng = np.random.default_rng([settings.data_seed, settings.partition_id, 7])
    nodes = max(1, math.ceil(settings.site_gpus / 8))
    racks = max(1, math.ceil(nodes / 4))
    return SiteSpec(
        name=f"site-{settings.partition_id:04d}", rows=1, racks_per_row=racks, nodes_per_rack=min(4, nodes),
        gpus_per_node=8, ambient_temp_c=float(rng.uniform(19.0, 27.0)),
        faults=FaultSpec(rate_scale=float(rng.uniform(0.6, 1.6)), firmware_quality=float(rng.uniform(0.6, 0.95))),
    )


@dataclass
class SiteData:
    """The site's training and held-out snapshot datasets (stay in this process) and the public input scaling
    its model needs (``build_predictor(cfg, data.input_scaling)``)."""

    train: Any
    test: Any
    input_scaling: dict[str, np.ndarray]


@lru_cache(maxsize=4)
def _site_data_cached(settings: SiteSettings, acceleration: float) -> SiteData:
    from infrabrain.models.snapshots import SnapshotDataset

    tensors, meta = _site_tensors(settings, acceleration)
    w, pool = int(meta["window"]), int(meta["pool"])
    train = SnapshotDataset([tensors], w, int(meta["train_stride"]), (0.0, TRAIN_FRACTION), pool=pool)
    test = SnapshotDataset([tensors], w, int(meta["eval_stride"]), (TRAIN_FRACTION + 0.02, 1.0),
                           gap_steps=int(meta["gap"]), pool=pool)
    if len(train) < 4 or len(test) == 0:
        raise ValueError(f"site-hours={settings.site_hours} gives {len(train)} non-overlapping training "
                         "windows; simulate at least 48 hours per site")
    scaling = {k: np.asarray(meta["input_scaling"][k], dtype=np.float32) for k in SCALING_KEYS}
    return SiteData(train, test, scaling)


def public_site_settings(index: int, data_seed: int, site_gpus: int, site_hours: float,
                         state_dir: str = "") -> SiteSettings:
    """Settings of public simulated site ``index`` (partition id ``PUBLIC_PARTITION_BASE + index``)."""
    pid = PUBLIC_PARTITION_BASE + index
    return SiteSettings(partition_id=pid, num_partitions=pid + 1, data_seed=data_seed, site_gpus=site_gpus,
                        site_hours=site_hours, state_dir=state_dir)


@dataclass(frozen=True)
class PublicReference:
    """What every party fits on the public sites: the feature normaliser and the encoder's input scaling."""

    normalizer: Any
    input_scaling: dict[str, np.ndarray]


@lru_cache(maxsize=8)
def _public_reference_cached(site_gpus: int, site_hours: float, data_seed: int, acceleration: float) -> PublicReference:
    import dataclasses

    import torch

    from infrabrain.models.gnn import fit_input_scaling
    from infrabrain.models.snapshots import make_splits
    from infrabrain.models.training import make_loader
    from infrabrain.simulation.engine import simulate_site

    hours = min(site_hours, PUBLIC_NORMALIZER_MAX_HOURS)
    runs = []
    for i in range(PUBLIC_NORMALIZER_SITES):
        ps = public_site_settings(i, data_seed, site_gpus, hours)
        runs.append(simulate_site(site_spec(ps), hours, seed=ps.data_seed * 1000 + ps.partition_id,
                                  acceleration=acceleration))
    splits = make_splits(runs, heldout=0, window_min=WINDOW_MIN, stride_min=WINDOW_MIN,
                         fractions=(TRAIN_FRACTION, TRAIN_FRACTION + 0.02), feature_set=feature_set(),
                         pool_min=POOL_MIN)
    with torch.random.fork_rng(devices=[]):  # the scaling needs the encoder's layout, not its random weights
        model = build_predictor(None, None)
    fit_input_scaling(model, make_loader(splits.train, 16), floor=INPUT_SCALE_FLOOR)
    scaling = {k: getattr(model, k).detach().numpy().copy() for k in SCALING_KEYS}
    # every site trains every field under DP: one the public sites lack is learned in the rounds, not unlearned
    return PublicReference(dataclasses.replace(splits.normalizer, unlearned={}), scaling)


def public_reference(settings: SiteSettings, acceleration: float) -> PublicReference:
    """The shared feature normaliser and input scaling, fitted on public simulated sites only (see the module
    docstring).

    Deterministic in (site size, hours, data seed, acceleration): the coordinator, every site and every
    evaluation build the identical reference without exchanging anything.
    """
    return _public_reference_cached(settings.site_gpus, float(settings.site_hours), settings.data_seed,
                                    float(acceleration))


def data_identity() -> dict[str, Any]:
    """What a site's encoded tensors, and any model trained on them, depend on besides the site's settings: the
    feature set, the window, the model, the simulator version and how the public normaliser is fitted (its clip
    and a counter's scale floor). A cache keyed on it is rebuilt after a code change there, never reused."""
    from infrabrain.models import features
    from infrabrain.simulation import engine

    return {"feature_set": feature_set().fingerprint(), "window_min": WINDOW_MIN, "pool_min": POOL_MIN,
            "model": MODEL_IDENTITY, "simulator": engine.SIMULATOR_VERSION,
            "normalizer": {"fitted_on": "public", "clip": features.CLIP,
                           "counter_scale_floor": features.COUNTER_SCALE_FLOOR}}


def site_cache_key(settings: SiteSettings, acceleration: float) -> dict[str, Any]:
    """The key of the site's cached tensors: its settings and :func:`data_identity`. The tensors are stored
    *normalised*: until issue 3 follow-up 17 the key did not name the normaliser's rule, so a site would have
    kept training on tensors clipped the old way beside a public reference fitted the new way."""
    return {"partition_id": settings.partition_id, "data_seed": settings.data_seed, "site_gpus": settings.site_gpus,
            "site_hours": settings.site_hours, "acceleration": acceleration, **data_identity(), "version": 3}


def _site_tensors(settings: SiteSettings, acceleration: float) -> tuple[Any, dict[str, Any]]:
    """The site's encoded telemetry, from its on-site cache (memory-mapped) or simulated and cached.

    The cache lives in ``<state_dir>/local-data/`` (raw site data: it never leaves the site). Each ClientApp
    process re-opens it instead of re-simulating, which for a 512-GPU week takes about a minute.
    """
    from infrabrain.models.snapshots import make_splits
    from infrabrain.simulation.engine import simulate_site

    key = site_cache_key(settings, acceleration)
    cache = settings.data_path
    if settings.state_dir or settings.data_dir:
        try:
            loaded = _load_tensors(cache, key)
            if loaded is not None:
                return loaded
        except Exception as exc:  # noqa: BLE001 - a stale or partial cache is rebuilt, never trusted
            log.warning("site data cache unreadable; rebuilding", extra={"error": f"{type(exc).__name__}: {exc}"})
    run = simulate_site(site_spec(settings), settings.site_hours, seed=settings.data_seed * 1000 + settings.partition_id,
                        acceleration=acceleration)
    reference = public_reference(settings, acceleration)
    # Training windows do not overlap (stride = window): one snapshot window is the DP privacy unit.
    splits = make_splits([run], heldout=0, window_min=WINDOW_MIN, stride_min=WINDOW_MIN, eval_stride_min=STRIDE_MIN,
                         fractions=(TRAIN_FRACTION, TRAIN_FRACTION + 0.02), feature_set=feature_set(),
                         pool_min=POOL_MIN, normalizer=reference.normalizer)
    if splits.window != _window() or splits.pool != POOL_MIN:
        raise ValueError(f"site telemetry cadence gives window {splits.window}/pool {splits.pool}; the federation's "
                         f"model expects {_window()}/{POOL_MIN} (60 s cadence)")
    tensors = splits.train_sites[0]
    meta = {"window": splits.window, "pool": splits.pool, "train_stride": splits.train.stride,
            "eval_stride": splits.test_time.stride, "gap": round(3600 / tensors.cadence_s),
            "input_scaling": {k: v.tolist() for k, v in reference.input_scaling.items()}}
    if settings.state_dir or settings.data_dir:
        _save_tensors(cache, key, tensors, meta)
    return tensors, meta


def _save_tensors(path: Any, key: dict[str, Any], tensors: Any, meta: dict[str, Any]) -> None:
    import dataclasses
    import json

    from infrabrain.atomic import atomic_directory

    scalars: dict[str, Any] = {}

    def dump(obj: Any, prefix: str, out: Any) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            name = prefix + f.name
            if isinstance(v, np.ndarray):
                np.save(out / f"{name}.npy", v, allow_pickle=False)
            elif dataclasses.is_dataclass(v):
                dump(v, name + ".", out)
            elif isinstance(v, dict) and all(isinstance(x, np.ndarray) for x in v.values()):
                scalars[name + "@keys"] = list(v.keys())
                for i, x in enumerate(v.values()):
                    np.save(out / f"{name}@{i}.npy", x, allow_pickle=False)
            elif isinstance(v, (int, float, str, bool)) or v is None:
                scalars[name] = v
            # anything else (the raw SiteRun) is not needed for training and is not cached

    with atomic_directory(path, overwrite=True) as tmp:
        dump(tensors, "", tmp)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "meta": meta, "scalars": scalars}))


def _load_tensors(path: Any, key: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    import dataclasses
    import json

    from infrabrain.models.snapshots import SiteTensors

    if not (path / "meta.json").is_file():
        return None
    stored = json.loads((path / "meta.json").read_text())
    if stored.get("key") != key:
        return None
    scalars = stored["scalars"]

    def build(cls: Any, prefix: str) -> Any:
        hints = __import__("typing").get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            typ = hints.get(f.name)
            if (path / f"{name}.npy").exists():
                big = (path / f"{name}.npy").stat().st_size > 8 * 1024 * 1024  # memory-map the telemetry only
                kwargs[f.name] = np.load(path / f"{name}.npy", mmap_mode="r" if big else None, allow_pickle=False)
            elif name + "@keys" in scalars:
                kwargs[f.name] = {k: np.load(path / f"{name}@{i}.npy", allow_pickle=False)
                                  for i, k in enumerate(scalars[name + "@keys"])}
            elif name in scalars:
                kwargs[f.name] = scalars[name]
            elif dataclasses.is_dataclass(typ):
                kwargs[f.name] = build(typ, name + ".")
        return cls(**kwargs)

    return build(SiteTensors, ""), stored["meta"]


def site_data(settings: SiteSettings, cfg: Mapping[str, Any]) -> SiteData:
    """Simulate (deterministically from partition id and seed) and window this site's data."""
    return _site_data_cached(settings, float(cfg.get("acceleration", DEFAULT_ACCELERATION)))


def site_ledger(settings: SiteSettings, cfg: Mapping[str, Any]) -> Any:
    """The site's persistent privacy ledger under ``<state_dir>/ledger`` (training and releases charge it)."""
    from infrabrain.privacy.budget import BudgetConfig
    from infrabrain.privacy.ledger import PrivacyLedger

    return PrivacyLedger.open(settings.state_path / "ledger",
                              BudgetConfig(epsilon_total=float(cfg.get("eps-budget", 8.0))),
                              site=f"partition-{settings.partition_id}")


def task_loss(cfg: Mapping[str, Any] | None) -> Callable[[Any, dict[str, Any]], Any]:
    """The training loss of the federated predictor: :func:`~infrabrain.models.training.loss_fn` on every
    failure, or, where ``train-on-unpredictable`` is false, without the positives of the failures no telemetry
    foretells (software, GSP firmware: :func:`~infrabrain.models.evaluation.unpredictable_causes`), as the
    centralised pipeline trains since issue 3 follow-up 30.

    Every failure by default: leaving them out did not help this model (follow-up 31: level on the federation
    bench, its public pretraining lower on five draws of five of the privacy bench). Whether a row counts depends
    only on that snapshot's own label and cause, which the site holds, so DP-SGD's per-sample bound is the same
    either way. Every party training this model (sites, the coordinator's public pretraining, the comparisons)
    uses this one."""
    from functools import partial

    from infrabrain.models.evaluation import unpredictable_causes
    from infrabrain.models.training import loss_fn

    keep_all = bool((cfg or {}).get("train-on-unpredictable", True))
    return partial(loss_fn, ignore_causes=() if keep_all else unpredictable_causes())


def predictor_train(settings: SiteSettings, weights: list[np.ndarray], cfg: Mapping[str, Any]) -> TrainResult:
    """One DP-SGD run on the site's training split, starting from the global ``weights``."""
    import torch

    from infrabrain.models.device import resolve_device
    from infrabrain.models.snapshots import collate_snapshots
    from infrabrain.models.training import get_weights, set_weights

    torch.set_num_threads(1)
    device = resolve_device(settings.device)  # a GPU that is not there fails before any budget is reserved
    data = site_data(settings, cfg)
    model = build_predictor(cfg, data.input_scaling)
    set_weights(model, weights)
    model.to(device)
    n = len(data.train)
    batch = min(int(cfg.get("batch-size", 16)), n)
    mu = float(cfg.get("proximal-mu", 0.0))
    global_params = [p.detach().clone() for p in model.parameters()]

    def proximal(optimizer: Any, step: int) -> None:
        # Post-processing of the privatised gradient with public values (the global model): no privacy cost.
        if mu > 0:
            for p, g in zip(optimizer.params, global_params, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - g, alpha=mu)

    server_round = int(cfg.get("server-round", 0))
    if not bool(cfg.get("dp", True)):
        raise ValueError("dp=false is not allowed for federated training: every update that leaves a site is "
                         "trained with DP-SGD")
    from infrabrain.privacy.dp_training import DPConfig, train_dp

    sigma = float(cfg.get("noise-multiplier", 0.0))
    dp_cfg = DPConfig(
        max_grad_norm=float(cfg.get("max-grad-norm", 1.0)), noise_multiplier=sigma if sigma > 0 else None,
        expected_batch_size=batch, max_physical_batch_size=max(batch, 32), epochs=float(cfg.get("local-epochs", 1)),
        lr=float(cfg.get("lr", 0.03)), optimizer=str(cfg.get("optimizer", "sgd")),
        momentum=float(cfg.get("momentum", 0.0)) if str(cfg.get("optimizer", "sgd")) == "sgd" else 0.0,
    )
    ledger = site_ledger(settings, cfg)
    rounds_left = max(1, int(cfg.get("rounds-left", 1)))
    if dp_cfg.noise_multiplier is None:
        dp_cfg = dp_cfg.model_copy(update={"noise_multiplier": _calibrated_noise(settings, dp_cfg, ledger, n,
                                                                                 rounds_left)})
    res = train_dp(model, data.train, task_loss(cfg), collate_snapshots, config=dp_cfg, ledger=ledger,
                   round=server_round, rounds_left=rounds_left, on_step=proximal)
    metrics = {"train-loss": res.mean_loss if math.isfinite(res.mean_loss) else 0.0, "epsilon": res.epsilon_total,
               "delta": res.delta, "dp-steps": float(res.steps), "noise-multiplier": res.noise_multiplier}
    return TrainResult([w.astype(np.float32) for w in get_weights(model)], n, metrics)


def _calibrated_noise(settings: SiteSettings, dp_cfg: Any, ledger: Any, n: int, rounds_left: int) -> float:
    """Noise multiplier calibrated once per site (on its first round) and then kept fixed.

    Calibration searches sigma so that the remaining budget covers ``rounds_left`` runs; with Opacus' PRV
    accountant that takes tens of seconds on two cores, too long to repeat every round. The result is stored
    in ``<state_dir>/dp-noise.json`` with what it depends on; the ledger still accounts and enforces every run.
    """
    import json

    from infrabrain.atomic import atomic_write_text
    from infrabrain.privacy.dp_training import resolve_noise_multiplier

    path = settings.state_path / "dp-noise.json"
    key = {"num_samples": n, "batch": dp_cfg.expected_batch_size, "epochs": dp_cfg.epochs,
           "epsilon_total": ledger.budget.epsilon_total, "max_grad_norm": dp_cfg.max_grad_norm}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key and float(stored["noise_multiplier"]) > 0:
                return float(stored["noise_multiplier"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable dp-noise.json; recalibrating", extra={"path": str(path)})
    sigma = resolve_noise_multiplier(dp_cfg, ledger, num_samples=n, rounds_left=rounds_left)
    atomic_write_text(path, json.dumps({"key": key, "noise_multiplier": sigma, "rounds_left": rounds_left}))
    return float(sigma)


def predictor_evaluate(settings: SiteSettings, weights: list[np.ndarray], cfg: Mapping[str, Any]) -> EvalResult:
    """Aggregate metrics of ``weights`` on the site's held-out split (no per-node scores leave)."""
    import torch

    from infrabrain.models.device import resolve_device
    from infrabrain.models.training import evaluate_model, set_weights

    torch.set_num_threads(1)
    device = resolve_device(settings.device)
    data = site_data(settings, cfg)
    model = build_predictor(cfg, data.input_scaling)
    set_weights(model, weights)
    m = evaluate_model(model.to(device), data.test)
    metrics: dict[str, float] = {"positives": float(m.get("positives", 0.0))}
    for src, dst in (("loss", "eval-loss"), ("pr_auc", "pr-auc"), ("roc_auc", "roc-auc"), ("brier", "brier")):
        v = m.get(src)
        if v is not None and math.isfinite(float(v)):
            metrics[dst] = float(v)
    return EvalResult(len(data.test), metrics)
