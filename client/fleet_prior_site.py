"""The site's side of the fleet root prior release over Flower (``privacy.fleet_root_prior``, ``privacy.secure_sum``).

The coordinator (``coordinator.fleet_prior_round``) drives five stages, one ``query.fleet_prior`` message each;
every stage runs in a fresh ClientApp process, so what a site must remember between them (its SecAgg+ secrets,
the public keys, the shares its neighbours sent it, its contribution) lives in a state file under
``<state_dir>/fleet-prior/`` (mode 0600), deleted once the site has revealed its shares:

1. ``keys``: the site counts its contribution (its labelled failures per relation, each hour clipped to the
   release's norm) and checks that its privacy ledger can take the release. It declines if not, or if its
   node config says ``fleet-prior=false`` (the site's word, like its training device). Otherwise it sends two
   public keys, and how many honest sites it counts on (``fleet-prior-min-honest`` in its node config; absent:
   the release's threshold), which sets its noise share;
2. ``shares``: its encrypted Shamir shares, one per neighbour, for the coordinator to forward;
3. ``masked``: it charges its ledger, then sends its masked, noised, quantised contribution;
4. ``unmask``: the shares the coordinator needs to remove the masks (never both kinds for one site);
5. ``publish``: it stores the published prior (``fleet-root-prior.json``), which its predictor checkpoint then
   merges with its local counts, less its own contribution if that reached the sum (``client.site_checkpoint``).

What a site sends is exactly the reply keys of each stage (:data:`REPLY_KEYS`); anything else is refused here.
The noise share follows from the number of sites, the release's parameters and the site's own
``fleet-prior-min-honest``, which the site reads and checks itself. By default the coordinator is trusted to be
honest-but-curious; a site that sets ``fleet-prior-min-honest`` keeps its guarantee against a coordinator that
invents sites, as long as that many honest sites are in the sum (docs/threat-model.md).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.client.local_training import SiteSettings
from infrabrain.logs import get_logger

log = get_logger("client.fleet_prior_site")

#: Directory under the site's state directory for the release's state and its published prior.
FLEET_PRIOR_DIR = "fleet-prior"
#: The published prior (public: the coordinator sends it to every site).
PRIOR_FILE = "fleet-root-prior.json"
#: The site's own contribution to the release it took part in (never sent; subtracted from the fleet counts).
OWN_FILE = "own-contribution.json"
STAGES = ("keys", "shares", "masked", "unmask", "publish")
#: What a site's reply may hold at each stage (``*`` = followed by a site index).
REPLY_KEYS: dict[str, tuple[str, ...]] = {
    "keys": ("pub-c", "pub-s", "min-honest", "declined"),
    "shares": ("to-*",),
    "masked": ("masked", "declined"),
    "unmask": ("b-*", "sk-*"),
    "publish": ("stored",),
}
_RELEASE_ID = re.compile(r"^[0-9a-f]{8,64}$")


def release_config(params: Mapping[str, Any]) -> Any:
    """The release's parameters as sent by the coordinator, validated (``ValueError`` naming a bad one)."""
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig

    keys = {"epsilon": "epsilon", "delta": "delta", "accountant": "accountant", "min-sites": "min_sites",
            "survival": "survival", "clip-norm": "clip_norm", "clip": "clip", "quant-bits": "quant_bits",
            "mod-bits": "mod_bits"}
    return FleetRootPriorConfig.model_validate({v: params[k] for k, v in keys.items() if k in params})


def release_params(config: Any) -> dict[str, Any]:
    """The inverse of :func:`release_config`: what the coordinator sends."""
    d = config.model_dump()
    return {"epsilon": d["epsilon"], "delta": d["delta"], "accountant": d["accountant"], "min-sites": d["min_sites"],
            "survival": d["survival"], "clip-norm": d["clip_norm"], "clip": d["clip"], "quant-bits": d["quant_bits"],
            "mod-bits": d["mod_bits"]}


def _state_path(settings: SiteSettings, release_id: str) -> Path:
    if not isinstance(release_id, str) or not _RELEASE_ID.match(release_id):
        raise ValueError(f"release-id {release_id!r} is not a hex id")
    return settings.state_path / FLEET_PRIOR_DIR / f"release-{release_id}.json"


def _write_private(path: Path, payload: Mapping[str, Any]) -> None:
    from infrabrain.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, json.dumps(payload))
    os.chmod(path, 0o600)


def _load_state(settings: SiteSettings, release_id: str, stage: str) -> dict[str, Any]:
    path = _state_path(settings, release_id)
    if not path.is_file():
        raise ValueError(f"stage {stage!r} of release {release_id}: this site holds no state for it (it did not "
                         "send keys, or has already revealed its shares)")
    return json.loads(path.read_text())


def opted_out(node_config: Mapping[str, Any]) -> bool:
    """Whether the site's node config declines the release (``fleet-prior=false``; site.yaml ``fleet_prior``)."""
    v = node_config.get("fleet-prior", node_config.get("fleet_prior", True))
    return str(v).lower() in ("false", "0", "no")


def min_honest_of(node_config: Mapping[str, Any]) -> int:
    """How many honest sites this site counts on in any sum (its node config's ``fleet-prior-min-honest``, a
    positive integer); 0, the release's threshold, when it is not set. ``ValueError`` naming a bad value."""
    v = node_config.get("fleet-prior-min-honest", node_config.get("fleet_prior_min_honest"))
    if v is None:
        return 0
    try:
        h = int(str(v).strip())  # a bool ("True") or a float ("1.5", "2.0") does not parse
    except ValueError:
        h = 0
    if h < 1:
        raise ValueError(f"node config fleet-prior-min-honest={v!r}: expected a positive integer (how many honest "
                         "sites this site counts on in a fleet-prior sum; 1 = its own noise alone)")
    return h


def site_contribution(settings: SiteSettings, cfg: Mapping[str, Any], clip_norm: float) -> np.ndarray:
    """The site's contribution: its labelled failures over both splits, per relation, each hour clipped."""
    import pandas as pd

    from infrabrain.client import predictor_task as pt
    from infrabrain.models.root_prior import root_relations
    from infrabrain.privacy.fleet_root_prior import relation_contribution

    data = pt.site_data(settings, cfg)
    rel = pd.concat([root_relations(data.train), root_relations(data.test)], ignore_index=True)
    return relation_contribution(rel, clip_norm=clip_norm)


def handle_stage(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
                 params: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run one stage at the site: ``params`` (``stage``, ``release-id``, the release's parameters, indices),
    ``payload`` (keys and ciphertexts from the other sites, forwarded). Returns the reply, checked against
    :data:`REPLY_KEYS`."""
    stage = params.get("stage")
    if stage not in STAGES:
        raise ValueError(f"unknown fleet-prior stage {stage!r}; expected one of {STAGES}")
    release_id = str(params.get("release-id", ""))
    handler = {"keys": _keys, "shares": _shares, "masked": _masked, "unmask": _unmask, "publish": _publish}[stage]
    reply = handler(settings, node_config, cfg, params, payload, release_id)
    check_reply(stage, reply)
    return reply


def check_reply(stage: str, reply: Mapping[str, Any]) -> None:
    """Refuse a reply holding anything the stage does not send (fail closed, at the site)."""
    allowed = REPLY_KEYS[stage]
    for k, v in reply.items():
        ok = any(k == a or (a.endswith("*") and k.startswith(a[:-1]) and k[len(a) - 1 :].isdigit())
                 for a in allowed)
        if not ok:
            raise RuntimeError(f"refusing to send fleet-prior {stage} reply key {k!r}: not one of {allowed}")
        if not isinstance(v, (bytes, str, int)):
            raise RuntimeError(f"refusing to send fleet-prior {stage} reply {k!r} of type {type(v).__name__}")


def _ledger(settings: SiteSettings, cfg: Mapping[str, Any]) -> Any:
    from infrabrain.client.predictor_task import site_ledger

    return site_ledger(settings, cfg)


def _hours(settings: SiteSettings) -> int:
    return max(1, int(round(settings.site_hours)))


def _keys(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
          params: Mapping[str, Any], payload: Mapping[str, Any], release_id: str) -> dict[str, Any]:
    from infrabrain.privacy.fleet_root_prior import release_noise_multiplier, validate_contribution
    from infrabrain.privacy.secure_sum import advertise

    path = _state_path(settings, release_id)
    if opted_out(node_config):
        return {"declined": "the site's node config sets fleet-prior=false"}
    release = release_config(params)
    min_honest = min_honest_of(node_config)
    vec = validate_contribution(site_contribution(settings, cfg, release.clip_norm), release.clip)
    ledger = _ledger(settings, cfg)
    if ledger.would_exceed(noise_multiplier=release_noise_multiplier(release), sample_rate=1.0, steps=1,
                           num_samples=_hours(settings)):
        log.warning("declining the fleet root prior: the privacy budget cannot take it",
                    extra={"epsilon_remaining": ledger.epsilon_remaining})
        return {"declined": "privacy budget exhausted"}
    secrets, pub_c, pub_s = advertise()
    _write_private(path, {"release": release.model_dump(), "secrets": secrets.to_json(),
                          "contribution": vec.tolist(), "min_honest": min_honest})
    return {"pub-c": pub_c, "pub-s": pub_s, "min-honest": min_honest}


def _indexed(payload: Mapping[str, Any], prefix: str, n: int, what: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for k, v in payload.items():
        if not k.startswith(prefix):
            continue
        tail = k[len(prefix) :]
        if not tail.isdigit() or not 0 <= int(tail) < n or not isinstance(v, bytes):
            raise ValueError(f"{what}: bad entry {k!r}")
        out[int(tail)] = v
    return out


def _index_and_n(params: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> tuple[int, int]:
    idx, n = params.get("index"), params.get("n")
    if not isinstance(idx, int) or not isinstance(n, int) or not 0 <= idx < n:
        raise ValueError(f"fleet-prior stage needs 0 <= index < n, got index={idx!r} n={n!r}")
    if state is not None and (state.get("index"), state.get("n")) != (idx, n):
        raise ValueError(f"index/n changed within the release: {state.get('index')}/{state.get('n')} -> {idx}/{n}")
    return idx, n


def _shares(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
            params: Mapping[str, Any], payload: Mapping[str, Any], release_id: str) -> dict[str, Any]:
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig
    from infrabrain.privacy.secure_sum import SiteSecrets, load_public_key, neighbours, public_keys, share_keys

    state = _load_state(settings, release_id, "shares")
    release = FleetRootPriorConfig.model_validate(state["release"])
    idx, n = _index_and_n(params)
    if n < release.min_sites:
        raise ValueError(f"a release among n={n} sites is below min-sites={release.min_sites}: refusing")
    pub_c = _indexed(payload, "pub-c-", n, "public keys")
    pub_s = _indexed(payload, "pub-s-", n, "public keys")
    for j in [idx, *neighbours(n)[idx]]:
        if j not in pub_c or j not in pub_s:
            raise ValueError(f"public keys of site {j} (a neighbour) are missing")
        load_public_key(pub_c[j], f"site {j}"), load_public_key(pub_s[j], f"site {j}")
    secrets = SiteSecrets.from_json(state["secrets"])
    if (pub_c[idx], pub_s[idx]) != public_keys(secrets):
        raise ValueError(f"the public keys at this site's index {idx} are not the ones it sent: refusing")
    out = share_keys(secrets, idx, n, pub_c, survival=release.survival)
    state.update(index=idx, n=n, secrets=secrets.to_json(), pub_c={str(k): v.hex() for k, v in pub_c.items()},
                 pub_s={str(k): v.hex() for k, v in pub_s.items()})
    _write_private(_state_path(settings, release_id), state)
    return {f"to-{j}": ct for j, ct in out.items()}


def _masked(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
            params: Mapping[str, Any], payload: Mapping[str, Any], release_id: str) -> dict[str, Any]:
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig, charge_release, site_share
    from infrabrain.privacy.secure_sum import SiteSecrets, mask_input

    state = _load_state(settings, release_id, "masked")
    release = FleetRootPriorConfig.model_validate(state["release"])
    idx, n = _index_and_n(params, state)
    active = params.get("active")
    if not isinstance(active, list) or idx not in active or len(active) < release.min_sites:
        raise ValueError(f"active sites {active!r} must list this site and at least min-sites={release.min_sites}")
    secrets = SiteSecrets.from_json(state["secrets"])
    secrets.received.update(_indexed(payload, "from-", n, "forwarded shares"))
    share = site_share(np.asarray(state["contribution"]), release, n, min_honest=int(state.get("min_honest", 0)))
    if not charge_release(_ledger(settings, cfg), release, _hours(settings), int(params.get("round", 0))):
        _state_path(settings, release_id).unlink(missing_ok=True)
        return {"declined": "privacy budget exhausted"}
    _write_private(settings.state_path / FLEET_PRIOR_DIR / OWN_FILE,
                   {"release-id": release_id, "contribution": state["contribution"]})
    pub_s = {int(k): bytes.fromhex(v) for k, v in state["pub_s"].items()}
    y = mask_input(secrets, idx, n, share, pub_s, 2**release.mod_bits, active=set(active))
    state.update(secrets=secrets.to_json())
    _write_private(_state_path(settings, release_id), state)
    return {"masked": y.astype("<u8").tobytes()}


def _unmask(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
            params: Mapping[str, Any], payload: Mapping[str, Any], release_id: str) -> dict[str, Any]:
    from infrabrain.privacy.secure_sum import SiteSecrets, reveal_shares

    state = _load_state(settings, release_id, "unmask")
    idx, n = _index_and_n(params, state)
    survivors, dropped = params.get("survivors"), params.get("dropped")
    if not isinstance(survivors, list) or not isinstance(dropped, list):
        raise ValueError("unmask needs the survivors and dropped lists")
    secrets = SiteSecrets.from_json(state["secrets"])
    pub_c = {int(k): bytes.fromhex(v) for k, v in state["pub_c"].items()}
    b, sk = reveal_shares(secrets, idx, n, pub_c, survivors, dropped)
    _state_path(settings, release_id).unlink()  # revealed once: a second request finds nothing to reveal
    return {**{f"b-{k}": v for k, v in b.items()}, **{f"sk-{k}": v for k, v in sk.items()}}


def _publish(settings: SiteSettings, node_config: Mapping[str, Any], cfg: Mapping[str, Any],
             params: Mapping[str, Any], payload: Mapping[str, Any], release_id: str) -> dict[str, Any]:
    from infrabrain.atomic import atomic_write_text
    from infrabrain.privacy.fleet_root_prior import FleetRootPrior

    raw = params.get("prior")
    if not isinstance(raw, str):
        raise ValueError("publish carries no prior")
    prior = FleetRootPrior.model_validate_json(raw)
    _state_path(settings, release_id).unlink(missing_ok=True)  # a site that dropped out keeps no secrets
    directory = settings.state_path / FLEET_PRIOR_DIR
    directory.mkdir(parents=True, exist_ok=True)
    own = directory / OWN_FILE
    if params.get("included") is False and own.is_file() and json.loads(own.read_text()).get("release-id") == \
            release_id:
        own.unlink()  # its share did not reach the sum (it dropped, or the coordinator rejected it)
    atomic_write_text(directory / PRIOR_FILE, json.dumps({"release-id": release_id, "prior": prior.model_dump()}))
    log.info("fleet root prior stored", extra={"sites": prior.n_sites, "epsilon": round(prior.epsilon, 4)})
    return {"stored": 1}


def stored_fleet_prior(settings: SiteSettings) -> tuple[Any, np.ndarray | None] | None:
    """The published fleet prior this site stored and its own contribution to that release (None if it did not
    take part); None when it has none. A file that does not validate is ignored with a warning."""
    from infrabrain.privacy.fleet_root_prior import FleetRootPrior

    directory = settings.state_path / FLEET_PRIOR_DIR
    if not (directory / PRIOR_FILE).is_file():
        return None
    try:
        stored = json.loads((directory / PRIOR_FILE).read_text())
        prior = FleetRootPrior.model_validate(stored["prior"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable fleet root prior", extra={"error": f"{type(exc).__name__}: {exc}"})
        return None
    own = None
    if (directory / OWN_FILE).is_file():
        mine = json.loads((directory / OWN_FILE).read_text())
        if mine.get("release-id") == stored.get("release-id"):
            own = np.asarray(mine["contribution"], dtype=np.float64)
    return prior, own
