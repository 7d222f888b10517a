"""Keyed pseudonyms: stable, domain-separated, secret-dependent; the secret never travels; clear errors."""

from __future__ import annotations

import os
import pickle
import re
import stat

import pytest

from infrabrain.privacy.pseudonyms import (
    SECRET_ENV,
    MissingSiteSecretError,
    Pseudonymizer,
    coarsen_timestamp,
    coarsen_to_round,
    generate_site_secret,
    load_site_secret,
)


@pytest.fixture
def secret_path(tmp_path):
    return generate_site_secret(tmp_path / "site.secret")


def test_secret_file_is_private_and_never_overwritten(secret_path):
    assert stat.S_IMODE(os.stat(secret_path).st_mode) == 0o600
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_site_secret(secret_path)


def test_missing_or_short_secret_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(MissingSiteSecretError, match="no site secret configured"):
        load_site_secret()
    with pytest.raises(MissingSiteSecretError, match="not found.*init-secret"):
        Pseudonymizer.from_file(tmp_path / "nope")
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(MissingSiteSecretError, match="too short"):
        load_site_secret(short)


def test_env_variable_locates_the_secret(secret_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, str(secret_path))
    assert Pseudonymizer.from_file().pseudonym("hostname", "gpu-a01") == \
        Pseudonymizer.from_file(secret_path).pseudonym("hostname", "gpu-a01")


def test_pseudonyms_are_stable_keyed_and_domain_separated(secret_path, tmp_path):
    p = Pseudonymizer.from_file(secret_path)
    other = Pseudonymizer.from_file(generate_site_secret(tmp_path / "other.secret"))
    a = p.pseudonym("hostname", "gpu-a01.dc1.example.com")
    assert a == p.pseudonym("hostname", "GPU-A01.dc1.example.com.")  # hostnames are case-insensitive
    assert a.startswith("hostname-") and len(a) == len("hostname-") + 16
    # nothing of the name survives: the suffix is hex digest only ("a01" alone can occur in random hex: 0.3 % of runs)
    assert re.fullmatch(r"hostname-[0-9a-f]{16}", a) and "gpu" not in a
    assert a != other.pseudonym("hostname", "gpu-a01.dc1.example.com")  # depends on the secret
    assert p.pseudonym("rack", "r03") != p.pseudonym("serial", "r03")  # kinds are separated
    assert p.pseudonym("ip", "10.0.0.1") == p.pseudonym("ip", " 10.0.0.1 ")
    assert p.pseudonym("ip", "2001:db8::1") == p.pseudonym("ip", "2001:0db8:0000::0001")
    ids = [f"job-{i}" for i in range(5000)]
    assert len({p.pseudonym("job_id", j) for j in ids}) == 5000


def test_record_pseudonymisation_and_bad_input(secret_path):
    p = Pseudonymizer.from_file(secret_path)
    rec = p.pseudonymize_record({"host": "n1", "serial": "1324", "temp": 71.5},
                                {"host": "hostname", "serial": "serial"})
    assert rec["temp"] == 71.5 and rec["host"].startswith("hostname-") and rec["serial"].startswith("serial-")
    with pytest.raises(ValueError, match="lacks identifier"):
        p.pseudonymize_record({"host": "n1"}, {"rack": "rack"})
    with pytest.raises(ValueError, match="kind must be one of"):
        p.pseudonym("mac", "x")
    with pytest.raises(ValueError, match="not a valid IPv4/IPv6"):
        p.pseudonym("ip", "10.0.0.300")
    with pytest.raises(ValueError, match="non-empty"):
        p.pseudonym("serial", "  ")


def test_secret_cannot_be_pickled_or_printed(secret_path):
    p = Pseudonymizer.from_file(secret_path)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(p)
    assert secret_path.read_text().strip() not in repr(p)


def test_timestamps_are_coarsened_to_the_round():
    assert coarsen_to_round(1000.0, 0.0, 3600.0) == 0
    assert coarsen_to_round(7300.0, 100.0, 3600.0) == 2
    assert coarsen_timestamp(7300.0, 100.0, 3600.0) == 7300.0 - (7200.0 % 3600.0)
    with pytest.raises(ValueError, match="round_seconds"):
        coarsen_to_round(10.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="before round_origin"):
        coarsen_to_round(10.0, 20.0, 5.0)
