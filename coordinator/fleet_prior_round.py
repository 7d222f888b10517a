"""The coordinator's side of the fleet root prior release: a SecAgg+ round over Flower's Message API.

Before the first training round (``fleet-prior=true``) the ServerApp asks every connected site, in five
``query.fleet_prior`` stages (``client.fleet_prior_site``), for its share of the fleet's root prior
(``privacy.fleet_root_prior``): public keys, encrypted Shamir shares (forwarded, never readable here), masked
noisy contributions, and the shares that remove the masks. It learns only the noisy sum, publishes it in the
registry (``fleet-root-prior.json``) and sends it back to every site. Sites that decline, fail or send a reply
that does not validate are left out (a dropout after its shares went out is unmasked with its neighbours'
shares); fewer than ``min-sites`` sites, or fewer survivors than the threshold, abort the release without a
prior. A registry that already holds a prior (a resumed federation) releases nothing again; it sends the
published prior to the connected sites once more, so that sites that joined since have it too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.logs import get_logger

log = get_logger("coordinator.fleet_prior_round")

#: The published prior in the registry directory.
REGISTRY_PRIOR_FILE = "fleet-root-prior.json"
MESSAGE_TYPE = "query.fleet_prior"
#: Largest encrypted share a site may send (a Fernet token of two Shamir shares of a DER key: ~1 kB).
MAX_SHARE_BYTES = 4096


class ReleaseAborted(RuntimeError):
    """The release could not complete; nothing was published."""


def release_settings(cfg: FederationConfig) -> Any:
    """The release's parameters from the federation's config."""
    from infrabrain.privacy.fleet_root_prior import FleetRootPriorConfig

    return FleetRootPriorConfig(epsilon=cfg.fleet_prior_epsilon, clip_norm=cfg.fleet_prior_clip_norm)


def published_prior(registry_root: Path) -> Any | None:
    """The prior this registry published, or None."""
    from infrabrain.privacy.fleet_root_prior import FleetRootPrior

    path = registry_root / REGISTRY_PRIOR_FILE
    if not path.is_file():
        return None
    return FleetRootPrior.model_validate(json.loads(path.read_text())["prior"])


def _exchange(grid: Grid, cfg: FederationConfig, stage: str, contents: Mapping[int, tuple[dict[str, Any],
              dict[str, Any]]], base: Mapping[str, Any], quorum: int) -> dict[int, dict[str, Any]]:
    """Send each node its stage message (``node -> (params, payload)``); return the replies that arrived without
    error, as plain dicts, by node. Once ``quorum`` replied, the others get ``straggler-timeout-s`` more (a dead
    site must not hold the release for the whole ``round-timeout-s``). A site that errs is logged and left out."""
    from infrabrain.coordinator.server_app import collect_replies

    msgs, by_id = [], {}
    for nid, (params, payload) in contents.items():
        content = RecordDict({"config": ConfigRecord(dict(cfg.site_config())),
                              "fleet-prior": ConfigRecord({**base, **params, "stage": stage}),
                              "payload": ConfigRecord(payload)})
        msgs.append(Message(content, nid, MESSAGE_TYPE, group_id=f"fleet-prior-{stage}"))
    replies = collect_replies(grid, msgs, cfg.round_timeout_s, min(quorum, len(msgs)), cfg.straggler_timeout_s)
    for m in msgs:
        by_id[m.metadata.message_id] = m.metadata.dst_node_id
    out: dict[int, dict[str, Any]] = {}
    for r in replies:
        nid = by_id.get(r.metadata.reply_to_message_id)
        if nid is None:
            continue
        if r.has_error():
            log.warning("site failed a fleet-prior stage", extra={"stage": stage, "node": nid,
                                                                   "error": r.error.reason[:300]})
            continue
        rec = r.content.config_records.get("fleet-prior")
        out[nid] = dict(rec) if rec is not None else {}
    return out


def _bytes(reply: Mapping[str, Any], key: str, size: int | None = None, limit: int = MAX_SHARE_BYTES) -> bytes:
    v = reply.get(key)
    if not isinstance(v, bytes) or (size is not None and len(v) != size) or len(v) > limit:
        raise ValueError(f"{key!r} is not {'%d' % size if size else 'at most %d' % limit} bytes")
    return v


def release_fleet_root_prior(grid: Grid, cfg: FederationConfig, registry_root: Path) -> Any:
    """Run one release among the connected sites and publish it; returns the :class:`FleetRootPrior`. Raises
    :class:`ReleaseAborted` when too few sites take part or survive."""
    from infrabrain.client.fleet_prior_site import release_params
    from infrabrain.privacy.fleet_root_prior import prior_from_sum, release_noise_multiplier
    from infrabrain.privacy.secure_fleet_stats import dequantise_sum, noise_share_sigma
    from infrabrain.privacy.secure_sum import PUBLIC_KEY_BYTES, load_public_key, neighbours, unmask_sum

    t0 = time.monotonic()
    release = release_settings(cfg)
    release_id = uuid.uuid4().hex
    base = {"release-id": release_id, **release_params(release), "round": 0}
    nodes = sorted(grid.get_node_ids())
    # 1. keys
    replies = _exchange(grid, cfg, "keys", {nid: ({}, {}) for nid in nodes}, base, release.min_sites)
    keys: dict[int, tuple[bytes, bytes]] = {}
    for nid, r in sorted(replies.items()):
        if "declined" in r:
            log.info("site declined the fleet root prior", extra={"node": nid, "reason": str(r["declined"])[:200]})
            continue
        try:
            pc, ps = _bytes(r, "pub-c", PUBLIC_KEY_BYTES), _bytes(r, "pub-s", PUBLIC_KEY_BYTES)
            load_public_key(pc, f"node {nid}"), load_public_key(ps, f"node {nid}")
        except ValueError as exc:
            log.warning("fleet-prior keys rejected", extra={"node": nid, "reason": str(exc)})
            continue
        keys[nid] = (pc, ps)
    order = sorted(keys)
    n = len(order)
    if n < release.min_sites:
        raise ReleaseAborted(f"{n} site(s) sent keys; a release needs min-sites={release.min_sites}")
    threshold, _ = noise_share_sigma(1.0, n, release.min_sites, release.survival)
    pubs = {f"pub-c-{i}": keys[nid][0] for i, nid in enumerate(order)}
    pubs |= {f"pub-s-{i}": keys[nid][1] for i, nid in enumerate(order)}
    nbrs = neighbours(n)
    # 2. shares (the coordinator forwards ciphertexts it cannot read)
    replies = _exchange(grid, cfg, "shares", {nid: ({"index": i, "n": n}, pubs) for i, nid in enumerate(order)},
                        base, threshold)
    inbox: dict[int, dict[str, bytes]] = {i: {} for i in range(n)}
    active: set[int] = set()
    for i, nid in enumerate(order):
        r = replies.get(nid)
        try:
            if r is None:
                raise ValueError("no reply")
            cts = {j: _bytes(r, f"to-{j}") for j in nbrs[i]}
        except ValueError as exc:
            log.warning("fleet-prior shares rejected", extra={"node": nid, "reason": str(exc)})
            continue
        active.add(i)
        for j, ct in cts.items():
            inbox[j][f"from-{i}"] = ct
    if len(active) < threshold:
        raise ReleaseAborted(f"{len(active)} site(s) shared their keys; the threshold is {threshold}")
    act = sorted(active)
    # 3. masked inputs (each site charges its ledger first)
    modulus = 2**release.mod_bits
    replies = _exchange(grid, cfg, "masked", {order[i]: ({"index": i, "n": n, "active": act},
                                                         {k: v for k, v in inbox[i].items()
                                                          if int(k[5:]) in active})
                                              for i in act}, base, threshold)
    masked: dict[int, np.ndarray] = {}
    for i in act:
        r = replies.get(order[i], {})
        if "declined" in r:
            log.info("site declined at the masked stage", extra={"node": order[i], "reason": str(r["declined"])})
            continue
        try:
            raw = _bytes(r, "masked", 8 * len(_relations()))
        except ValueError as exc:
            log.warning("fleet-prior masked input rejected", extra={"node": order[i], "reason": str(exc)})
            continue
        y = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        if (y >= np.uint64(modulus)).any():
            log.warning("fleet-prior masked input rejected", extra={"node": order[i], "reason": "out of range"})
            continue
        masked[i] = y
    survivors = sorted(masked)
    if len(survivors) < threshold:
        raise ReleaseAborted(f"{len(survivors)} site(s) sent masked inputs; the threshold is {threshold}")
    dropped = sorted(active - set(survivors))
    # 4. unmask
    replies = _exchange(grid, cfg, "unmask", {order[i]: ({"index": i, "n": n, "survivors": survivors,
                                                          "dropped": dropped}, {}) for i in survivors}, base,
                        threshold)
    b_sh: dict[int, list[bytes]] = {}
    sk_sh: dict[int, list[bytes]] = {}
    for i in survivors:
        for k, v in replies.get(order[i], {}).items():
            kind, _, owner = k.partition("-")
            if not owner.isdigit() or not isinstance(v, bytes) or len(v) > MAX_SHARE_BYTES:
                continue
            o = int(owner)
            if kind == "b" and o in masked:
                b_sh.setdefault(o, []).append(v)
            elif kind == "sk" and o in dropped:
                sk_sh.setdefault(o, []).append(v)
    pub_s = {i: keys[nid][1] for i, nid in enumerate(order)}
    try:
        total = unmask_sum(masked, b_sh, sk_sh, pub_s, n, modulus, survival=release.survival, active=active)
    except ValueError as exc:
        raise ReleaseAborted(str(exc)) from None
    summed = dequantise_sum(total, len(survivors), clip=release.clip, quant_bits=release.quant_bits)
    z = release_noise_multiplier(release)
    _, sigma_site = noise_share_sigma(z * release.clip_norm, n, release.min_sites, release.survival)
    prior = prior_from_sum(summed, len(survivors), sigma_site * len(survivors) ** 0.5, release)
    _publish(registry_root, release_id, prior)
    # 5. publish to every connected site (a DP release: post-processing is free)
    stored = _exchange(grid, cfg, "publish", {nid: ({"prior": prior.model_dump_json()}, {}) for nid in nodes},
                       base, n)
    log.info("fleet root prior released", extra={
        "sites": len(survivors), "dropped": len(dropped), "declined_or_failed": len(nodes) - n,
        "epsilon": round(prior.epsilon, 4), "noise_multiplier": round(prior.noise_multiplier, 4),
        "stored_at": sum(1 for r in stored.values() if r.get("stored") == 1),
        "seconds": round(time.monotonic() - t0, 1)})
    return prior


def republish(grid: Grid, cfg: FederationConfig, registry_root: Path) -> int:
    """Send the registry's published prior to every connected site again (a resumed federation: sites that joined
    since the release get it; the others overwrite it with the same). Returns how many stored it."""
    path = registry_root / REGISTRY_PRIOR_FILE
    stored = json.loads(path.read_text())
    prior = published_prior(registry_root)
    base = {"release-id": str(stored["release-id"]), "round": 0}
    replies = _exchange(grid, cfg, "publish", {nid: ({"prior": prior.model_dump_json()}, {})
                                               for nid in sorted(grid.get_node_ids())}, base, 1)
    return sum(1 for r in replies.values() if r.get("stored") == 1)


def _relations() -> tuple[str, ...]:
    from infrabrain.models.root_prior import RELATIONS

    return tuple(RELATIONS)


def _publish(registry_root: Path, release_id: str, prior: Any) -> None:
    from infrabrain.atomic import atomic_write_text

    registry_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(registry_root / REGISTRY_PRIOR_FILE,
                      json.dumps({"release-id": release_id, "prior": prior.model_dump()}, indent=1))
