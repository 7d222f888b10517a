"""Benchmark of the daemon's hot paths on a simulated 1,024-GPU site (128 nodes x 8 GPUs).

- ``samples_per_s``: local store ingestion (SQLite WAL, one transaction per minute of the whole site), measured
  over ``--minutes`` minute-batches of simulator telemetry. Goal >= 100,000/s on 2 cores.
- ``bytes_per_gpu_day``: store size on disk (after a WAL checkpoint) per GPU per day, all component kinds of
  the site included (GPUs, nodes, switches, PDUs, cooling, racks), at the simulator's 60 s cadence.
- ``score_cycle_s``: one minute-cycle of scoring: the dense window from the in-memory ring, the real predictor
  (``infrabrain.models`` checkpoint, default config, window 60) and the per-node explanation. Goal <= 1 s.
  The checkpoint holds untrained weights: cost does not depend on the weight values. Also reported: CPU
  seconds of the cycle (robust on a shared machine) and the predictor's occlusion explanations of 5 alerts.

Run: ``.venv/bin/python bench/ingest.py`` (prints ratios, then one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _minute_batches(run, t0: int) -> list:  # noqa: ANN001
    from infrabrain.client.records import SampleBatch

    batches = []
    for step, ts in enumerate(run.timestamps):
        batch = SampleBatch()
        for kind, arr in run.metrics.items():
            ids = run.topology.ids[kind]
            batch.extend(SampleBatch.from_wide([t0 + int(ts)] * len(ids), ids, kind, run.metric_names[kind],
                                               arr[step]))
        batches.append(batch)
    return batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=60, help="minute-batches to ingest (default 60)")
    parser.add_argument("--score-cycles", type=int, default=5, help="scoring cycles to time (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for scoring (daemon default: 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from infrabrain.client.scoring import PredictorScorer
    from infrabrain.client.store import TelemetryStore
    from infrabrain.client.topology_file import site_topology_of_run
    from infrabrain.client.window_buffer import WindowBuffer
    from infrabrain.models.checkpoint import save_checkpoint
    from infrabrain.models.features import FeatureSet
    from infrabrain.models.gnn import build_model
    from infrabrain.models.snapshots import fit_normalizer
    from infrabrain.simulation.engine import simulate_site
    from infrabrain.simulation.spec import SiteSpec

    spec = SiteSpec(name="bench", rows=2, racks_per_row=8, nodes_per_rack=8, gpus_per_node=8)
    hours = max(args.minutes, 61) / 60.0 + 1 / 60
    run = simulate_site(spec, hours, seed=1)
    n_gpu = spec.n_gpus
    t0 = 1_800_000_000
    batches = _minute_batches(run, t0)
    ingest_batches = batches[: args.minutes]
    n_samples = sum(len(b) for b in ingest_batches)

    with tempfile.TemporaryDirectory() as tmp:
        store = TelemetryStore(Path(tmp) / "store.db", retention_s=10**9)
        start, cpu0 = time.perf_counter(), time.process_time()
        for b in ingest_batches:
            store.ingest(b)
        ingest_s = time.perf_counter() - start
        ingest_cpu_s = time.process_time() - cpu0
        store.checkpoint()
        size = store.info(check=False).bytes_on_disk
        store.close()
    samples_per_s = n_samples / ingest_s
    gpu_days = n_gpu * len(ingest_batches) * 60 / 86400
    bytes_per_gpu_day = size / gpu_days

    # scoring: real predictor checkpoint on the same site
    topo = site_topology_of_run(run)
    fs = FeatureSet.from_run(run)
    torch.manual_seed(0)
    model = build_model(fs.f_max, window=60)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        save_checkpoint(ckpt, model, fs, fit_normalizer([run], fs))
        scorer = PredictorScorer(ckpt, topo)
    kinds = list(run.metrics)
    buffer = WindowBuffer({k: topo.ids(k) for k in kinds}, scorer.metric_names, 60, scorer.window_steps)
    add_s = []
    for b in batches:
        s = time.perf_counter()
        buffer.add(b)
        add_s.append(time.perf_counter() - s)
    cycle_s, cycle_cpu_s = [], []
    for _ in range(args.score_cycles):
        s, c = time.perf_counter(), time.process_time()
        _, window = buffer.window(steps=scorer.window_steps)
        risks = scorer.score(window)
        cycle_s.append(time.perf_counter() - s)
        cycle_cpu_s.append(time.process_time() - c)
    assert len(risks) == spec.n_nodes
    score_cycle_s = statistics.median(cycle_s)
    explain_s = time.perf_counter()
    top = sorted(risks, key=lambda r: -r.risk)[:5]
    explained = scorer.explain(top)
    explain_s = time.perf_counter() - explain_s
    assert len(explained) == len(top)

    print(f"site: {n_gpu} GPUs, {spec.n_nodes} nodes, {len(batches[0])} samples per minute", file=sys.stderr)
    print(f"store ingestion: {n_samples} samples in {ingest_s:.2f} s = {samples_per_s:,.0f}/s "
          f"({samples_per_s / 100_000:.2f}x the 100,000/s goal)", file=sys.stderr)
    print(f"store size: {size / 1e6:.1f} MB for {gpu_days:.2f} GPU-days = {bytes_per_gpu_day / 1e6:.2f} MB/GPU-day "
          f"({size / n_samples:.1f} bytes/sample)", file=sys.stderr)
    print(f"window buffer add: {statistics.median(add_s) * 1e3:.1f} ms per site-minute", file=sys.stderr)
    print(f"score cycle (window + predictor + signal attribution, {spec.n_nodes} nodes): {score_cycle_s:.3f} s "
          f"wall, {statistics.median(cycle_cpu_s):.3f} s CPU ({score_cycle_s / 1.0:.2f}x the 1 s budget)",
          file=sys.stderr)
    print(f"model explanations of 5 alerted nodes (occlusion): {explain_s:.3f} s", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} CPUs (shared machine)", file=sys.stderr)
    print(json.dumps({
        "samples_per_s": round(samples_per_s),
        "samples_per_cpu_s": round(n_samples / ingest_cpu_s),
        "bytes_per_gpu_day": round(bytes_per_gpu_day),
        "bytes_per_sample": round(size / n_samples, 2),
        "score_cycle_s": round(score_cycle_s, 4),
        "score_cycle_cpu_s": round(statistics.median(cycle_cpu_s), 4),
        "explain_5_alerts_s": round(explain_s, 4),
        "load_average_1m": round(load, 2),
        "buffer_add_s_per_minute": round(statistics.median(add_s), 4),
        "n_gpus": n_gpu,
        "samples_ingested": n_samples,
        "torch_threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
