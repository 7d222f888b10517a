"""The coordinator's side of the fleet root prior release: a SecAgg+ round over Flower's Message API.

Before the first training round (``fleet-prior=true``) the ServerApp asks every connected site, in five
``query.fleet_prior`` stages (``client.fleet_prior_site``), for its share of the fleet's root prior
(``privacy.fleet_root_prior``): public keys, encrypted Shamir shares (forwarded, never readable here), masked
noisy contributions, and the shares that remove the masks. It learns only the noisy sum, publishes it in the
registry (``fleet-root-prior.json``) and sends it back to every site. Every reply is checked (the stage's reply
keys, sizes, ranges) and audited in the registry's ``audit.jsonl`` like the rounds' replies, the site named by
its pseudonym. Sites that decline, fail or send a reply that does not validate are left out (a dropout after
its shares went out is unmasked with its neighbours' shares); fewer than ``min-sites`` sites, or fewer
survivors than the threshold, abort the release without a prior. A registry that already holds a prior (a
resumed federation) releases nothing again; it sends the published prior to the connected sites once more, so
that sites that joined since have it too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.coordinator.inspection import append_audit, site_pseudonym
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

    return FleetRootPriorConfig(epsilon=cfg.fleet_prior_epsilon, clip_norm=cfg.fleet_prior_clip_norm,
                                survival=cfg.fleet_prior_survival)


def published_prior(registry_root: Path) -> Any | None:
    """The prior this registry published, or None."""
    from infrabrain.privacy.fleet_root_prior import FleetRootPrior

    path = registry_root / REGISTRY_PRIOR_FILE
    if not path.is_file():
        return None
    return FleetRootPrior.model_validate(json.loads(path.read_text())["prior"])


class Declined(Exception):
    """A site declined the release (its budget, or its own choice)."""


def _declined(reply: Mapping[str, Any]) -> None:
    if "declined" in reply:
        raise Declined(str(reply["declined"]))


Validator = Callable[[int, Mapping[str, Any]], Any]


class _Stage:
    """One stage's exchange: send each site its message, check each reply (the stage's reply keys, as the site
    checks them before sending, then ``validate``), and append one line per site to the registry's audit log:
    the site's pseudonym, the stage, what it sent (keys and byte sizes, never the content) and the decision."""

    def __init__(self, grid: Grid, cfg: FederationConfig, audit_path: Path, base: Mapping[str, Any]) -> None:
        self.grid, self.cfg, self.audit_path, self.base = grid, cfg, audit_path, base

    def run(self, stage: str, contents: Mapping[int, tuple[dict[str, Any], dict[str, Any]]], quorum: int,
            validate: Validator) -> dict[int, Any]:
        """Send each node its message (``node -> (params, payload)``); return ``validate``'s value for each reply
        it accepted. Once ``quorum`` replied, the others get ``straggler-timeout-s`` more (a dead site must not
        hold the release for the whole ``round-timeout-s``). ``validate`` raises ``ValueError`` to reject a reply
        and :class:`Declined` where the site declined."""
        from infrabrain.client.fleet_prior_site import check_reply
        from infrabrain.coordinator.server_app import collect_replies

        msgs = []
        for nid, (params, payload) in contents.items():
            content = RecordDict({"config": ConfigRecord(dict(self.cfg.site_config())),
                                  "fleet-prior": ConfigRecord({**self.base, **params, "stage": stage}),
                                  "payload": ConfigRecord(payload)})
            msgs.append(Message(content, nid, MESSAGE_TYPE, group_id=f"fleet-prior-{stage}"))
        replies = collect_replies(self.grid, msgs, self.cfg.round_timeout_s, min(quorum, len(msgs)),
                                  self.cfg.straggler_timeout_s)
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
        by_node = {node_of[r.metadata.reply_to_message_id]: r for r in replies
                   if r.metadata.reply_to_message_id in node_of}
        out: dict[int, Any] = {}
        lines = []
        for nid in contents:
            who = site_pseudonym(nid)
            record: dict[str, Any] = {"ts": round(time.time(), 3), "round": 0, "kind": f"fleet-prior.{stage}",
                                      "site": who}
            msg = by_node.get(nid)
            if msg is None:
                record.update(decision="failed", reason="no reply before the timeout")
            elif msg.has_error():
                record.update(decision="failed", reason=f"site error: {str(msg.error.reason)[:300]}")
            else:
                rec = msg.content.config_records.get("fleet-prior")
                reply = dict(rec) if rec is not None else {}
                record["sent"] = {k: len(v) if isinstance(v, (bytes, str)) else v if isinstance(v, int)
                                  else type(v).__name__ for k, v in reply.items()}
                try:
                    if set(msg.content.keys()) != {"fleet-prior"}:
                        raise ValueError(f"reply records {sorted(msg.content.keys())}, expected ['fleet-prior']")
                    check_reply(stage, reply)
                    out[nid] = validate(nid, reply)
                    record["decision"] = "accepted"
                except Declined as exc:
                    record.update(decision="declined", reason=str(exc)[:300])
                except (ValueError, RuntimeError) as exc:
                    record.update(decision="rejected", reason=str(exc)[:300])
            if record["decision"] != "accepted":
                log.warning("fleet-prior reply not used", extra={k: record[k] for k in ("kind", "site", "decision",
                                                                                        "reason")})
            lines.append(json.dumps(record, separators=(",", ":")))
        append_audit(self.audit_path, lines)
        return out


def _bytes(reply: Mapping[str, Any], key: str, size: int | None = None, limit: int = MAX_SHARE_BYTES) -> bytes:
    v = reply.get(key)
    want = f"{size} bytes" if size is not None else f"at most {limit} bytes"
    if not isinstance(v, bytes):
        raise ValueError(f"{key!r} is {'missing' if v is None else type(v).__name__}, expected {want}")
    if (size is not None and len(v) != size) or len(v) > limit:
        raise ValueError(f"{key!r} has {len(v)} bytes, expected {want}")
    return v


def release_fleet_root_prior(grid: Grid, cfg: FederationConfig, registry_root: Path) -> Any:
    """Run one release among the connected sites and publish it; returns the :class:`FleetRootPrior`. Raises
    :class:`ReleaseAborted` when too few sites take part or survive."""
    from infrabrain.client.fleet_prior_site import release_params
    from infrabrain.models.root_prior import RELATIONS
    from infrabrain.privacy.fleet_root_prior import prior_from_sum, release_noise_std, release_shares
    from infrabrain.privacy.secure_fleet_stats import dequantise_sum
    from infrabrain.privacy.secure_sum import PUBLIC_KEY_BYTES, load_public_key, neighbours, unmask_sum

    t0 = time.monotonic()
    release = release_settings(cfg)
    release_id = uuid.uuid4().hex
    stage = _Stage(grid, cfg, registry_root / "audit.jsonl", {"release-id": release_id, **release_params(release),
                                                              "round": 0})
    nodes = sorted(grid.get_node_ids())

    def keys_of(nid: int, r: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
        _declined(r)
        pc, ps = _bytes(r, "pub-c", PUBLIC_KEY_BYTES), _bytes(r, "pub-s", PUBLIC_KEY_BYTES)
        load_public_key(pc, "pub-c"), load_public_key(ps, "pub-s")
        h = r.get("min-honest")
        if isinstance(h, bool) or not isinstance(h, int) or h < 0:
            raise ValueError(f"'min-honest' is {h!r}, expected a non-negative integer (0: the threshold)")
        return pc, ps, h

    keys = stage.run("keys", {nid: ({}, {}) for nid in nodes}, release.min_sites, keys_of)
    order = sorted(keys)
    n = len(order)
    if n < release.min_sites:
        raise ReleaseAborted(f"{n} site(s) sent keys; a release needs min-sites={release.min_sites}")
    threshold, _ = release_shares(release, n)
    index = {nid: i for i, nid in enumerate(order)}
    pubs = {f"pub-c-{i}": keys[nid][0] for i, nid in enumerate(order)}
    pubs |= {f"pub-s-{i}": keys[nid][1] for i, nid in enumerate(order)}
    nbrs = neighbours(n)
    # 2. shares (the coordinator forwards ciphertexts it cannot read)
    shares = stage.run("shares", {nid: ({"index": i, "n": n}, pubs) for i, nid in enumerate(order)}, threshold,
                       lambda nid, r: {j: _bytes(r, f"to-{j}") for j in nbrs[index[nid]]})
    active = {index[nid] for nid in shares}
    if len(active) < threshold:
        raise ReleaseAborted(f"{len(active)} site(s) shared their keys; the threshold is {threshold}")
    inbox: dict[int, dict[str, bytes]] = {i: {} for i in range(n)}
    for nid, cts in shares.items():
        for j, ct in cts.items():
            if j in active:
                inbox[j][f"from-{index[nid]}"] = ct
    # 3. masked inputs (each site charges its ledger first)
    modulus = 2**release.mod_bits

    def masked_of(nid: int, r: Mapping[str, Any]) -> np.ndarray:
        _declined(r)
        y = np.frombuffer(_bytes(r, "masked", 8 * len(RELATIONS)), dtype="<u8").astype(np.uint64)
        if (y >= np.uint64(modulus)).any():
            raise ValueError(f"masked input outside [0, 2^{release.mod_bits})")
        return y

    got = stage.run("masked", {order[i]: ({"index": i, "n": n, "active": sorted(active)}, inbox[i])
                               for i in sorted(active)}, threshold, masked_of)
    masked = {index[nid]: y for nid, y in got.items()}
    survivors = sorted(masked)
    if len(survivors) < threshold:
        raise ReleaseAborted(f"{len(survivors)} site(s) sent masked inputs; the threshold is {threshold}")
    dropped = sorted(active - set(survivors))
    # 4. unmask

    def shares_of(nid: int, r: Mapping[str, Any]) -> list[tuple[str, int, bytes]]:
        out = []
        for k, v in r.items():
            kind, _, owner = k.partition("-")
            if (kind == "b" and int(owner) not in masked) or (kind == "sk" and int(owner) not in dropped):
                raise ValueError(f"{k!r}: a share the coordinator did not ask for")
            out.append((kind, int(owner), _bytes(r, k)))
        return out

    revealed = stage.run("unmask", {order[i]: ({"index": i, "n": n, "survivors": survivors, "dropped": dropped}, {})
                                    for i in survivors}, threshold, shares_of)
    b_sh: dict[int, list[bytes]] = {}
    sk_sh: dict[int, list[bytes]] = {}
    for items in revealed.values():
        for kind, owner, share in items:
            (b_sh if kind == "b" else sk_sh).setdefault(owner, []).append(share)
    pub_s = {i: keys[nid][1] for i, nid in enumerate(order)}
    try:
        total = unmask_sum(masked, b_sh, sk_sh, pub_s, n, modulus, survival=release.survival, active=active)
    except ValueError as exc:
        raise ReleaseAborted(str(exc)) from None
    summed = dequantise_sum(total, len(survivors), clip=release.clip, quant_bits=release.quant_bits)
    # each survivor's noise share follows from n and the min-honest it sent: the sum holds all of them
    sigma = release_noise_std(release, n, [keys[order[i]][2] for i in survivors])
    prior = prior_from_sum(summed, len(survivors), sigma, release)
    _publish(registry_root, release_id, prior)
    # 5. publish to every connected site (a DP release: post-processing is free)
    included = {order[i] for i in survivors}
    stored = stage.run("publish", {nid: ({"prior": prior.model_dump_json(), "included": nid in included}, {})
                                   for nid in nodes}, n, lambda nid, r: r.get("stored") == 1)
    log.info("fleet root prior released", extra={
        "sites": len(survivors), "dropped": len(dropped), "declined_or_failed": len(nodes) - n,
        "epsilon": round(prior.epsilon, 4), "noise_multiplier": round(prior.noise_multiplier, 4),
        "sites_counting_on_fewer": sum(1 for i in survivors if 0 < keys[order[i]][2] < threshold),
        "stored_at": sum(stored.values()), "seconds": round(time.monotonic() - t0, 1)})
    return prior


def republish(grid: Grid, cfg: FederationConfig, registry_root: Path) -> int:
    """Send the registry's published prior to every connected site again (a resumed federation: sites that joined
    since the release get it; the others overwrite it with the same). Returns how many stored it."""
    stored = json.loads((registry_root / REGISTRY_PRIOR_FILE).read_text())
    prior = published_prior(registry_root)
    stage = _Stage(grid, cfg, registry_root / "audit.jsonl", {"release-id": str(stored["release-id"]), "round": 0})
    done = stage.run("publish", {nid: ({"prior": prior.model_dump_json()}, {}) for nid in sorted(grid.get_node_ids())},
                     1, lambda nid, r: r.get("stored") == 1)
    return sum(done.values())


def _publish(registry_root: Path, release_id: str, prior: Any) -> None:
    from infrabrain.atomic import atomic_write_text

    registry_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(registry_root / REGISTRY_PRIOR_FILE,
                      json.dumps({"release-id": release_id, "prior": prior.model_dump()}, indent=1))
