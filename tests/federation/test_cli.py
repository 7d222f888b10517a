"""CLI surface: `infrabrain certs`, and clear errors from `federate` / `coordinator serve` on bad input."""

from __future__ import annotations

from infrabrain.cli import main


def test_certs_command_makes_ca_server_and_site_keys(tmp_path, capsys) -> None:
    assert main(["certs", "--out", str(tmp_path / "pki"), "--site", "site-a", "--site", "site-b"]) == 0
    for name in ("ca.crt", "ca.key", "server.pem", "server.key", "supernode-keys/site-a",
                 "supernode-keys/site-b.pub"):
        assert (tmp_path / "pki" / name).is_file(), name
    assert "127.0.0.1" in capsys.readouterr().out
    # Refuses to overwrite a CA silently.
    assert main(["certs", "--out", str(tmp_path / "pki")]) == 2
    assert "already exist" in capsys.readouterr().err


def test_federate_and_serve_name_bad_values(tmp_path, capsys) -> None:
    assert main(["federate", "--sites", "3", "--sample", "5", "--out", str(tmp_path / "f")]) == 2
    assert "--sample must be in 1..3" in capsys.readouterr().err
    assert main(["federate", "--sites", "3", "--strategy", "krum", "--secagg", "--out", str(tmp_path / "f")]) == 2
    assert "SecAgg" in capsys.readouterr().err
    assert main(["coordinator", "serve", "--dir", str(tmp_path / "c")]) == 2
    assert "infrabrain certs" in capsys.readouterr().err


def test_fab_is_built_from_the_project_without_venv(tmp_path) -> None:
    """`flwr run .` packs the project dir into a FAB: it must hold the apps and nothing like .venv."""
    import subprocess
    import zipfile
    from pathlib import Path

    from infrabrain.coordinator.flower_env import flower_app_dir, flower_bin, flower_env

    root = flower_app_dir(Path(__file__).resolve().parents[2])  # the checkout itself when its name is valid
    res = subprocess.run([flower_bin("flwr"), "build", "--app", str(root)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=flower_env(tmp_path / "flwr"))
    assert res.returncode == 0, res.stdout + res.stderr
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    assert "client/flower_client_app.py" in names and "coordinator/server_app.py" in names
    assert not [n for n in names if n.startswith((".venv/", "build/")) or "__pycache__" in n]
    assert fab.stat().st_size < 10 * 1024 * 1024


def test_an_app_dir_flower_refuses_is_staged_under_a_valid_name(tmp_path) -> None:
    """A checkout named e.g. ``infra_brain`` can still be run: its app files are staged as ``infrabrain``."""
    from pathlib import Path

    from infrabrain.coordinator.flower_env import flower_app_dir

    good = tmp_path / "my-app"
    good.mkdir()
    assert flower_app_dir(good) == good.resolve()
    bad = tmp_path / "infra_brain"
    (bad / "client").mkdir(parents=True)
    (bad / ".venv" / "lib").mkdir(parents=True)
    (bad / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (bad / "client" / "app.py").write_text("x = 1\n")
    (bad / "client" / "blob.bin").write_bytes(b"\0" * 10)
    (bad / ".venv" / "lib" / "big.py").write_text("y = 2\n")
    staged = flower_app_dir(bad)
    assert staged.name == "infrabrain" and staged != bad
    files = sorted(str(p.relative_to(staged)) for p in Path(staged).rglob("*") if p.is_file())
    assert files == ["client/app.py", "pyproject.toml"]


def test_the_staged_app_is_removed_when_its_process_exits(tmp_path) -> None:
    """Each run from a checkout Flower refuses the name of had left an ``infrabrain-app-*`` in the temp dir."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "infra_brain"
    bad.mkdir()
    (bad / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    code = ("import sys; from infrabrain.coordinator.flower_env import flower_app_dir; "
            "d = flower_app_dir(sys.argv[1]); assert (d / 'pyproject.toml').is_file(); print(d)")
    res = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TMPDIR": str(temp)})
    assert res.returncode == 0, res.stderr
    staged = Path(res.stdout.strip().splitlines()[-1])
    assert staged.parent.parent == temp and staged.parent.name.startswith("infrabrain-app-")
    assert not staged.parent.exists() and list(temp.iterdir()) == []
