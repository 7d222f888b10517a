"""Benchmark of the datacenter simulator: metric samples generated per second, wall time and peak memory.

Quick default (about 1,000 GPUs for 24 h). The issue's target run:

    .venv/bin/python bench/simulator.py --gpus 10240 --hours 168

Goals (issue 2): >= 5 million samples/s on 2 cores; a 10,000-GPU site for 7 days at 60 s in under 60 s;
streaming (chunks over time) under 2 GiB. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1024, help="approximate GPUs (nodes of 8, 4 nodes per rack)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    ap.add_argument("--cadence", type=int, default=60, help="seconds per step (default 60)")
    ap.add_argument("--acceleration", type=float, default=10.0, help="fault-rate multiplier (default 10)")
    ap.add_argument("--chunk-steps", type=int, default=None, help="steps per streamed chunk (default: ~64 MB)")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed (default %(default)s)")
    ap.add_argument("--fleet-gpu-hours", type=float, default=1e8,
                    help="GPU-hours for the events-only fast-path measurement (0 to skip)")
    args = ap.parse_args(argv)
    if args.gpus < 8 or args.hours <= 0:
        raise SystemExit("--gpus must be >= 8 and --hours > 0")

    from infrabrain.simulation import SiteSimulation, SiteSpec, simulate_faults

    racks = max(1, math.ceil(args.gpus / 32))
    rows = max(1, min(64, round(math.sqrt(racks / 3.2))))
    per_row = math.ceil(racks / rows)
    spec = SiteSpec(name="bench", rows=rows, racks_per_row=per_row, nodes_per_rack=4, cadence_s=args.cadence)
    c0 = time.process_time()
    t0 = time.perf_counter()
    sim = SiteSimulation(spec, args.hours, seed=args.seed, acceleration=args.acceleration)
    t_setup = time.perf_counter() - t0
    samples = 0
    t1 = time.perf_counter()
    for chunk in sim.chunks(args.chunk_steps):
        samples += chunk.n_samples
    t_render = time.perf_counter() - t1
    cpu = time.process_time() - c0
    wall = t_setup + t_render
    gpus = sim.topology.count("gpu")
    sps = samples / wall
    rss = _peak_rss_mib()

    fleet = {}
    if args.fleet_gpu_hours > 0:
        fspec = SiteSpec(name="fleet", rows=16, racks_per_row=32, nodes_per_rack=4)
        hours = args.fleet_gpu_hours / fspec.n_gpus
        t2 = time.perf_counter()
        plan = simulate_faults(fspec, min(hours, 8000.0), seed=args.seed)
        dt = time.perf_counter() - t2
        gh = fspec.n_gpus * min(hours, 8000.0)
        fleet = {"fast_path_gpu_hours": gh, "fast_path_s": round(dt, 3),
                 "fast_path_gpu_hours_per_s": round(gh / dt), "fast_path_interruptions": int(len(plan.interruptions()))}

    print(f"site: {gpus} GPUs, {sim.n_steps} steps of {args.cadence}s ({args.hours}h), "
          f"{sim.samples_per_step} samples/step, chunk {args.chunk_steps or sim.default_chunk} steps")
    print(f"setup (topology, faults, workload, labels): {t_setup:.2f}s; telemetry: {t_render:.2f}s; "
          f"total {wall:.2f}s wall, {cpu:.2f}s CPU (the machine may be shared: CPU time is this process only)")
    print(f"samples/s: {sps / 1e6:.1f} M  (goal >= 5 M: ratio {sps / 5e6:.1f}x)")
    full = gpus >= 10000 and args.hours >= 168 and args.cadence == 60
    if full:
        print(f"10k-GPU 7-day run: {wall:.1f}s (goal < 60 s: ratio {60.0 / wall:.2f}x)")
    print(f"peak RSS: {rss:.0f} MiB (goal < 2048 MiB: ratio {2048.0 / rss:.1f}x)")
    if fleet:
        print(f"events-only fast path: {fleet['fast_path_gpu_hours']:.3g} GPU-hours in {fleet['fast_path_s']}s")
    result = {
        "samples_per_s": round(sps), "gpus": gpus, "hours": args.hours, "peak_rss_mib": round(rss, 1),
        "samples": samples, "wall_s": round(wall, 3), "setup_s": round(t_setup, 3), "render_s": round(t_render, 3),
        "cpu_s": round(cpu, 3), "samples_per_cpu_s": round(samples / cpu),
        "cadence_s": args.cadence, "cores": os.cpu_count(), "goal_samples_per_s": 5_000_000,
        "goal_met_samples_per_s": sps >= 5e6, "goal_met_rss": rss < 2048,
        **({"goal_met_10k_7d_under_60s": wall < 60} if full else {}), **fleet,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
