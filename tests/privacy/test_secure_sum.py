"""SecAgg+ run step by step, as the sites and the coordinator run it over the network: only bytes and integer
vectors cross between parties, secrets survive a JSON round trip (a ClientApp process ends between steps), and
every step refuses what would let the aggregator unmask one site."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infrabrain.privacy.secure_sum import (
    SiteSecrets,
    advertise,
    load_public_key,
    mask_input,
    neighbours,
    reveal_shares,
    share_keys,
    unmask_sum,
)

MOD = 2**40


def _round(vectors, *, silent=(), dropped=(), half=2, survival=0.8):
    """Run every party's steps; ``silent`` sites send keys but no shares, ``dropped`` ones shares but no input."""
    n = len(vectors)
    state = {}
    pub_c, pub_s = {}, {}
    for i in range(n):
        secrets, pub_c[i], pub_s[i] = advertise()
        state[i] = json.dumps(secrets.to_json())  # what the site's state file holds
    inbox: dict[int, dict[int, bytes]] = {i: {} for i in range(n)}
    active = set()
    for i in range(n):
        if i in silent:
            continue
        secrets = SiteSecrets.from_json(json.loads(state[i]))
        for j, ct in share_keys(secrets, i, n, pub_c, survival=survival, half=half).items():
            inbox[j][i] = ct
        state[i] = json.dumps(secrets.to_json())
        active.add(i)
    masked = {}
    for i in sorted(active - set(dropped)):
        secrets = SiteSecrets.from_json(json.loads(state[i]))
        secrets.received.update({k: v for k, v in inbox[i].items() if k in active})
        masked[i] = mask_input(secrets, i, n, vectors[i], pub_s, MOD, active=active, half=half)
        state[i] = json.dumps(secrets.to_json())
    survivors = sorted(masked)
    gone = sorted(active - set(survivors))
    b_sh: dict[int, list[bytes]] = {}
    sk_sh: dict[int, list[bytes]] = {}
    for h in survivors:
        b, sk = reveal_shares(SiteSecrets.from_json(json.loads(state[h])), h, n, pub_c, survivors, gone, half=half)
        for o, s in b.items():
            b_sh.setdefault(o, []).append(s)
        for o, s in sk.items():
            sk_sh.setdefault(o, []).append(s)
    total = unmask_sum(masked, b_sh, sk_sh, pub_s, n, MOD, survival=survival, active=active, half=half)
    return total, survivors, masked


def test_steps_sum_the_survivors_with_a_silent_and_a_dropped_site() -> None:
    rng = np.random.default_rng(0)
    vecs = [rng.integers(0, 2**24, 30).astype(np.uint64) for _ in range(8)]
    total, survivors, masked = _round(vecs, silent=[2], dropped=[5], survival=0.6)
    assert survivors == [0, 1, 3, 4, 6, 7]
    assert np.array_equal(total, sum(vecs[i] for i in survivors) % MOD)
    # what the aggregator received from a site is not its input
    assert all(not np.array_equal(masked[i], vecs[i]) for i in survivors)
    # one more failure in site 3's neighbourhood (1, 2, 4, 5 and itself) leaves too few holders of its secrets
    with pytest.raises(ValueError, match="share"):
        _round(vecs, silent=[2], dropped=[4, 5], survival=0.6)


def test_a_site_never_reveals_both_shares_of_one_site() -> None:
    n = 3
    keys = [advertise() for _ in range(n)]
    pub_c = {i: k[1] for i, k in enumerate(keys)}
    for i in range(n):
        for j, ct in share_keys(keys[i][0], i, n, pub_c, survival=0.8).items():
            keys[j][0].received[i] = ct
    with pytest.raises(ValueError, match="both as survivors and as dropped"):
        reveal_shares(keys[0][0], 0, n, pub_c, [0, 1, 2], [1])
    with pytest.raises(ValueError, match="not among the survivors"):
        reveal_shares(keys[0][0], 0, n, pub_c, [1, 2], [0])
    # a share tampered with on its way names its owner
    keys[0][0].received[1] = keys[0][0].received[1][:-4] + b"AAAA"
    with pytest.raises(ValueError, match="share from site 1"):
        reveal_shares(keys[0][0], 0, n, pub_c, [0, 1, 2], [])


def test_bad_public_keys_and_too_few_shares_are_named() -> None:
    with pytest.raises(ValueError, match="site 3: public key must be 97 bytes"):
        load_public_key(b"\x04" * 10, "site 3")
    with pytest.raises(ValueError, match="site 4: public key is not a point"):
        load_public_key(b"\x04" + b"\x01" * 96, "site 4")
    vecs = [np.ones(4, dtype=np.uint64) for _ in range(3)]
    keys = [advertise() for _ in range(3)]
    pub_c = {i: k[1] for i, k in enumerate(keys)}
    pub_s = {i: k[2] for i, k in enumerate(keys)}
    for i in range(3):
        for j, ct in share_keys(keys[i][0], i, 3, pub_c, survival=0.8).items():
            keys[j][0].received[i] = ct
    masked = {i: mask_input(keys[i][0], i, 3, vecs[i], pub_s, MOD) for i in range(3)}
    one = {o: [s] for o, s in reveal_shares(keys[0][0], 0, 3, pub_c, [0, 1, 2], [])[0].items()}
    with pytest.raises(ValueError, match=r"site \d: 1 share\(s\) revealed, 3 needed"):
        unmask_sum(masked, one, {}, pub_s, 3, MOD, survival=0.8)


def test_neighbourhoods_are_symmetric_rings() -> None:
    for n, half in ((5, 2), (12, 4), (30, 4)):
        nb = neighbours(n, half)
        assert all(i not in nb[i] and len(nb[i]) == min(n - 1, 2 * half) for i in range(n))
        assert all(i in nb[j] for i in range(n) for j in nb[i])
