"""Registry (versioned checkpoints, resume), TLS/key material, typed federation config and strategy choice."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from infrabrain.coordinator.certs import make_supernode_keys, make_tls, verify_server_cert
from infrabrain.coordinator.fed_config import FederationConfig
from infrabrain.coordinator.registry import ModelRegistry, fetch_latest, load_site_model
from infrabrain.coordinator.strategies import build_strategy, validate_combination


def test_registry_versions_resume_and_fetch(tmp_path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.latest() is None
    a = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    reg.save(1, a, {"sites": 3, "eval": {"pr-auc": 0.2}})
    reg.save(2, [x * 2 for x in a], {"sites": 2, "eval": {"pr-auc": 0.3}})
    # A crash while writing version 3 leaves only a hidden partial directory, never a version.
    (tmp_path / "reg" / ".v000003.abc.partial").mkdir()
    latest = ModelRegistry(tmp_path / "reg").latest()
    assert latest is not None and latest.round == 2 and latest.meta["sites"] == 2
    np.testing.assert_array_equal(latest.arrays[0], a[0] * 2)
    assert [h["round"] for h in reg.history()] == [1, 2]
    dest = fetch_latest(tmp_path / "reg", tmp_path / "site" / "global.npz")
    keys, arrays, meta = load_site_model(dest)
    assert keys == ["0", "1"] and meta["round"] == 2 and arrays[1].tolist() == [2.0, 2.0, 2.0]


def test_registry_refuses_bad_input(tmp_path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(ValueError, match="dtype object"):
        reg.save(1, [np.array([object()], dtype=object)], {})
    with pytest.raises(ValueError, match="one unique key"):
        reg.save(1, [np.ones(2)], {}, keys=["a", "b"])
    assert reg.versions() == []
    with pytest.raises(ValueError, match="not found"):
        reg.load(7)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ModelRegistry(tmp_path / "file")


def test_a_damaged_version_or_site_model_is_refused_by_name_and_left_as_it_is(tmp_path) -> None:
    """A registry version whose arrays or metadata were damaged on disk, and a site's global-model file cut
    short, are a ValueError naming the version or file (a zip error or KeyError had escaped)."""
    reg = ModelRegistry(tmp_path / "reg")
    reg.save(1, [np.ones((2, 3), np.float32)], {})
    v1 = tmp_path / "reg" / "v000001"
    good = (v1 / "arrays.npz").read_bytes()
    (v1 / "arrays.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"registry version 1 under '.*v000001' is damaged \(BadZipFile"):
        reg.latest()
    assert (v1 / "arrays.npz").read_bytes() == good[: len(good) // 2]  # left for the operator to look at
    (v1 / "arrays.npz").write_bytes(good)
    (v1 / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match=r"registry version 1 .* is damaged \(KeyError"):
        reg.load(1)
    dest = tmp_path / "site" / "global.npz"
    reg.save(2, [np.ones(3, np.float32)], {})
    fetch_latest(tmp_path / "reg", dest)
    dest.write_bytes(dest.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"site model '.*global.npz' is damaged"):
        load_site_model(dest)
    with pytest.raises(FileNotFoundError):
        load_site_model(tmp_path / "none.npz")


def test_tls_material_and_supernode_keys(tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    files = make_tls(tmp_path / "tls")
    assert set(verify_server_cert(files)) == {"localhost", "127.0.0.1"}
    assert stat.S_IMODE(os.stat(files.server_key).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        make_tls(tmp_path / "tls")
    key = make_supernode_keys(tmp_path / "keys", "site0")
    priv = load_ssh_private_key(key.private_key.read_bytes(), password=None)
    pub = load_ssh_public_key(key.public_key.read_bytes())
    assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp384r1"
    assert pub.public_numbers() == priv.public_key().public_numbers()
    with pytest.raises(ValueError, match="key name"):
        make_supernode_keys(tmp_path / "keys", "../evil")
    with pytest.raises(ValueError, match="subject alternative name"):
        make_tls(tmp_path / "tls2", sans=("bad name",))


def test_federation_config_names_bad_values() -> None:
    assert FederationConfig.from_run_config({}).strategy == "fedavg"
    with pytest.raises(ValueError, match="unknown federation config key"):
        FederationConfig.from_run_config({"num-rounds": 3})
    with pytest.raises(ValueError, match="fraction-train"):
        FederationConfig.from_run_config({"fraction-train": 1.5})
    with pytest.raises(ValueError, match="dp=false is not allowed"):
        FederationConfig.from_run_config({"dp": False})


@pytest.mark.parametrize("rule", ["trimmed-mean", "krum", "bulyan"])
def test_robust_rules_refuse_secagg(rule: str) -> None:
    with pytest.raises(ValueError, match="SecAgg"):
        FederationConfig.from_run_config({"strategy": rule, "secagg": True})
    with pytest.raises(ValueError, match="secagg"):
        validate_combination(rule, True)


def test_strategies_by_config() -> None:
    from flwr.serverapp import strategy as S

    def make(**kw):
        return build_strategy(FederationConfig.from_run_config(kw))

    assert type(make()) is S.FedAvg
    prox = make(strategy="fedprox", **{"proximal-mu": 0.1})
    assert isinstance(prox, S.FedProx) and prox.proximal_mu == 0.1
    assert isinstance(make(strategy="trimmed-mean"), S.FedTrimmedAvg)
    assert isinstance(make(strategy="krum", **{"min-train-sites": 3}), S.Krum)
    with pytest.raises(ValueError, match="min-train-sites >= 7"):
        make(strategy="bulyan", **{"num-malicious": 1, "min-train-sites": 4})
    assert isinstance(make(strategy="bulyan", **{"min-train-sites": 3}), S.Bulyan)
    site = FederationConfig.from_run_config({"strategy": "fedprox"}).site_config()
    assert site["proximal-mu"] == 0.01 and "registry-dir" not in site


def test_pyproject_run_config_matches_federation_config() -> None:
    """`flwr run . --run-config k=v` can only override keys listed in pyproject: keep both in sync."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    app = pyproject["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "infrabrain.coordinator.server_app:app",
                                 "clientapp": "infrabrain.client.flower_client_app:app"}
    cfg = FederationConfig.from_run_config(app["config"])
    assert set(cfg.model_dump(by_alias=True)) == set(app["config"])
    assert "federations" not in pyproject["tool"]["flwr"]  # flwr 1.42 would rewrite pyproject.toml
