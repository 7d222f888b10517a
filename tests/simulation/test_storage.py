"""Parquet storage: round trip, duckdb-readable, atomic (a crash leaves no complete-looking dataset)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from infrabrain.simulation import SiteSimulation
from infrabrain.simulation.storage import list_sites, load_dataset, load_site, write_sites


def test_round_trip_and_duckdb(tmp_path, small_run) -> None:
    out = write_sites([small_run], tmp_path / "ds")
    assert (out / "manifest.json").is_file()
    back = load_site(list_sites(out)[0])
    for k, arr in small_run.metrics.items():
        assert np.array_equal(arr, back.metrics[k], equal_nan=True), k
    assert np.array_equal(small_run.timestamps, back.timestamps)
    pd.testing.assert_frame_equal(small_run.events, back.events)
    for f in ("fail_within_1h", "cause", "root_component", "alive"):
        assert np.array_equal(getattr(small_run.labels, f), getattr(back.labels, f)), f
    assert back.spec == small_run.spec
    import duckdb

    n_fail = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/*/events.parquet') "
                        "WHERE event='failure' AND kind='node'").fetchall()[0][0]
    assert n_fail == ((small_run.events["event"] == "failure") & (small_run.events["kind"] == "node")).sum()
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/*/telemetry/kind=gpu/*.parquet')").fetchall()[0][0]
    assert rows == small_run.metrics["gpu"].shape[0] * small_run.metrics["gpu"].shape[1]


def test_streamed_write_equals_in_memory(tmp_path, small_spec) -> None:
    sim = SiteSimulation(small_spec, 3, seed=1, acceleration=40)
    run = SiteSimulation(small_spec, 3, seed=1, acceleration=40).run()
    back = load_dataset(write_sites([sim], tmp_path / "s"))[0]
    assert np.array_equal(run.metrics["gpu"], back.metrics["gpu"], equal_nan=True)


def test_bad_output_paths(tmp_path, small_run) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        write_sites([small_run], f)
    d = tmp_path / "exists"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="already exists"):
        write_sites([small_run], d)
    assert (d / "keep.txt").read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="not a complete"):
        list_sites(d)


def test_a_damaged_dataset_is_refused_by_name(tmp_path, small_run) -> None:
    """A manifest or site description that is not JSON, or a site that lost a file, names the file (a bad
    manifest had given only "Expecting value: line 1 column 1", a lost telemetry file only its path)."""
    import shutil

    out = write_sites([small_run], tmp_path / "ds")
    site = list_sites(out)[0]
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "manifest.json").write_text("garbage")
    with pytest.raises(ValueError, match=r"dataset manifest '.*bad/manifest.json' is not valid JSON"):
        list_sites(bad)
    (bad / "manifest.json").write_text('{"sites": [{"name": "x"}]}')
    with pytest.raises(ValueError, match="has no list of sites with a path each"):
        list_sites(bad)
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    (broken / "telemetry" / "kind=gpu" / "part-00000.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['telemetry/kind=gpu/part-00000.parquet'\] \(an incomplete"):
        load_site(broken)
    (broken / "site.json").write_text("[]")
    with pytest.raises(ValueError, match=r"site description '.*site.json' holds a JSON list, not an object"):
        load_site(broken)
    assert load_site(site).spec == small_run.spec  # the original is untouched


def test_rows_are_placed_by_time_and_component_not_by_position(tmp_path, small_run) -> None:
    """The reader had reshaped each file by row position: telemetry another tool re-sorted was read as a 480 s
    cadence (or, sorted to the same period, as the wrong components' values), and duplicated or foreign rows
    failed with "cannot reshape array of size 69170 into shape (360,192)". Rows now go where their ``t`` and id
    say; a cell no row gives is missing (NaN)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = write_sites([small_run], tmp_path / "ds")
    site = list_sites(out)[0]
    gpu_file = site / "telemetry" / "kind=gpu" / "part-00000.parquet"
    gpu = pd.read_parquet(gpu_file)
    gpu.sample(frac=1.0, random_state=0).to_parquet(gpu_file, index=False)  # another tool's order
    lab_file = site / "labels.parquet"
    pd.read_parquet(lab_file).sort_values(["node_id", "t"]).to_parquet(lab_file, index=False)
    back = load_site(site)
    assert np.array_equal(back.metrics["gpu"], small_run.metrics["gpu"], equal_nan=True)
    assert np.array_equal(back.timestamps, small_run.timestamps)
    for f in ("fail_within_1h", "cause", "root_component", "alive"):
        assert np.array_equal(getattr(small_run.labels, f), getattr(back.labels, f)), f
    first = gpu["component_id"].iloc[0]
    gpu[~((gpu["t"] == 0) & (gpu["component_id"] == first))].to_parquet(gpu_file, index=False)  # one row lost
    lost = load_site(site).metrics["gpu"]
    assert np.isnan(lost[0, 0]).all() and np.array_equal(lost[1:], small_run.metrics["gpu"][1:], equal_nan=True)

    def refused(frame: pd.DataFrame, match: str, path=gpu_file) -> None:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        with pytest.raises(ValueError, match=match):
            load_site(site)

    refused(pd.concat([gpu, gpu.tail(5)]), r"telemetry/kind=gpu has 5 duplicate \(t, component_id\) row\(s\)")
    refused(pd.concat([gpu, gpu.tail(1).assign(component_id="ghost-g9")]),
            r"telemetry/kind=gpu names 1 component\(s\) the site's topology does not have .*'ghost-g9'")
    refused(gpu.assign(DCGM_FI_DEV_GPU_TEMP="hot"),
            r"metric column 'DCGM_FI_DEV_GPU_TEMP' holds \w*string, not numbers")
    refused(gpu.drop(columns="DCGM_FI_DEV_POWER_USAGE"), "lacks the metric column 'DCGM_FI_DEV_POWER_USAGE'")
    refused(gpu.assign(t=gpu["t"] + 0.5), "column 't' holds double, not integer seconds")
    gpu.to_parquet(gpu_file, index=False)
    labels = pd.read_parquet(lab_file)
    refused(labels.iloc[1:], r"labels.parquet gives \d+ of the \d+ \(t, node\) labels", lab_file)
    labels.to_parquet(lab_file, index=False)
    comps_file = site / "topology" / "components.parquet"
    comps = pd.read_parquet(comps_file)
    refused(comps.assign(kind=np.where(comps["component_id"] == first, "tpu", comps["kind"])),
            f"'{first}' is a 'tpu' there, a 'gpu' in the spec", comps_file)
    comps.to_parquet(comps_file, index=False)
    edges_file = site / "topology" / "edges.parquet"
    edges = pd.read_parquet(edges_file)
    refused(edges.iloc[1:], r"edges.parquet does not match the site spec \(edges not in the spec: \[\]; spec edges "
                            r"it lacks: \[\(", edges_file)
    edges.to_parquet(edges_file, index=False)
    assert load_site(site).spec == small_run.spec  # put back, it reads again


def test_exception_mid_write_leaves_nothing(tmp_path, small_spec, monkeypatch) -> None:
    sim = SiteSimulation(small_spec, 6, seed=1)
    calls = {"n": 0}
    real = sim.chunks

    def broken(chunk_steps=None):
        for ch in real(60):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("disk on fire")
            yield ch

    monkeypatch.setattr(sim, "chunks", broken)
    with pytest.raises(RuntimeError):
        write_sites([sim], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_killed_writer_leaves_no_complete_looking_dataset(tmp_path) -> None:
    """SIGKILL a real writer process mid-write: the target never appears, only a hidden *.partial dir."""
    out = tmp_path / "ds"
    code = textwrap.dedent(f"""
        import time
        from infrabrain.simulation import SiteSimulation, SiteSpec
        from infrabrain.simulation import storage
        orig = storage._write_chunks
        def slow(site_dir, topology, chunks):
            def gen():
                for ch in chunks:
                    yield ch
                    time.sleep(0.2)
            return orig(site_dir, topology, gen())
        storage._write_chunks = slow
        sim = SiteSimulation(SiteSpec(name="k"), 24, seed=0)
        sim.default_chunk = 30
        storage.write_sites([sim], {str(out)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
            if parts and list(parts[0].rglob("part-00000.parquet")):
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        list_sites(out)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers and all(not (p / "manifest.json").exists() for p in leftovers)
