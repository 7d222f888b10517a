"""`infrabrain simulate`: simulate a federation of sites (or one site, or a what-if) and write Parquet."""

from __future__ import annotations

import argparse
import json
import time

HELP = """Simulate GPU datacenter sites: topology, DCGM/node_exporter telemetry, jobs, faults with precursors and
cascades, and per-node ground truth (fails within 1 h, cause, root component).

examples:
  infrabrain simulate --sites 5 --hours 72 --out data/fed          # 5 differing sites, Parquet dataset
  infrabrain simulate --sites 3 --hours 24 --acceleration 50       # summary only, many failures
  infrabrain simulate --spec site.yaml --hours 168 --out data/site # one site from a YAML SiteSpec
  infrabrain simulate --what-if "cooling crac-2 fails at 3h" --hours 12 --plot whatif.png
  infrabrain simulate --scenario scenario.yaml --out data/whatif

--acceleration multiplies every fault rate; 1 is the calibrated, realistic rate (about 2e-5 unexpected
interruptions per GPU-hour, Llama 3 cause mix), so short runs need 20-200 to hold enough failures.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `simulate` subcommand."""
    p = subparsers.add_parser("simulate", help="simulate datacenter sites and write a Parquet dataset",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=5, help="number of generated sites (default 5)")
    p.add_argument("--hours", type=float, default=72.0, help="simulated hours (default 72)")
    p.add_argument("--out", default=None, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--acceleration", type=float, default=1.0,
                   help="fault-rate multiplier; 1 = realistic (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data (default 0)")
    p.add_argument("--spec", default=None, help="YAML SiteSpec of one site (instead of --sites)")
    p.add_argument("--federation", default=None, help="YAML FederationSpec (sites: [...]) instead of --sites")
    p.add_argument("--what-if", dest="what_if", default=None,
                   help="'[kind] COMPONENT fails at TIME', e.g. 'cooling crac-2 fails at 3h'")
    p.add_argument("--scenario", default=None, help="YAML scenario: site, hours, seed, acceleration, events")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw a picture: the what-if comparison, or an overview of the first site")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_simulate)


def _validate_args(args: argparse.Namespace) -> None:
    if args.sites < 1 or args.sites > 1000:
        raise ValueError(f"--sites must be in 1..1000, got {args.sites}")
    if not (args.hours > 0):
        raise ValueError(f"--hours must be positive, got {args.hours}")
    if not (args.acceleration > 0):
        raise ValueError(f"--acceleration must be positive, got {args.acceleration}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.what_if and args.scenario:
        raise ValueError("give either --what-if or --scenario, not both")
    if args.spec and args.federation:
        raise ValueError("give either --spec or --federation, not both")
    if args.out:
        from infrabrain.simulation.storage import _validate_out

        _validate_out(args.out, args.overwrite)
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise ValueError(f"--plot must name a .png file, got {args.plot!r}")


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of `infrabrain simulate`."""
    _validate_args(args)
    from infrabrain.simulation.engine import SiteSimulation
    from infrabrain.simulation.federation import federation_specs, load_federation_spec
    from infrabrain.simulation.spec import load_site_spec
    from infrabrain.simulation.storage import write_sites
    from infrabrain.simulation.summary import format_summary, summarize

    progress = not args.no_progress
    t0 = time.perf_counter()
    if args.what_if or args.scenario:
        return _run_what_if(args, progress)
    if args.spec:
        specs = [load_site_spec(args.spec)]
    elif args.federation:
        specs = load_federation_spec(args.federation).sites
    else:
        specs = federation_specs(args.sites, args.seed)
    sims = [SiteSimulation(s, args.hours, args.seed, args.acceleration) for s in specs]
    samples = sum(s.samples_per_step * s.n_steps for s in sims)
    if args.out:
        write_sites(sims, args.out, overwrite=args.overwrite, progress=progress)
    else:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.n_steps for s in sims), desc="simulate", unit="step", disable=not progress)
        for s in sims:
            for ch in s.chunks():
                bar.update(len(ch.timestamps))
        bar.close()
    elapsed = time.perf_counter() - t0
    if args.plot:
        from infrabrain.simulation.plots import plot_site

        plot_site(sims[0].run(), args.plot)
    summary = summarize(sims)
    summary.update({"samples": samples, "seconds": round(elapsed, 2), "out": args.out})
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        print(f"{samples:,} metric samples in {elapsed:.1f}s" + (f", written to {args.out}" if args.out else "")
              + (f"; picture of {sims[0].spec.name}: {args.plot}" if args.plot else ""))
    return 0


def _run_what_if(args: argparse.Namespace, progress: bool) -> int:
    from infrabrain.simulation.spec import SiteSpec, load_site_spec
    from infrabrain.simulation.storage import write_sites
    from infrabrain.simulation.whatif import load_scenario, parse_what_if, run_what_if

    if args.scenario:
        sc = load_scenario(args.scenario)
        spec, hours, seed, acc, inj = sc.site, sc.hours, sc.seed, sc.acceleration, sc.injections()
    else:
        spec = load_site_spec(args.spec) if args.spec else SiteSpec()
        hours, seed, acc, inj = args.hours, args.seed, args.acceleration, (parse_what_if(args.what_if),)
    result = run_what_if(spec, hours, inj, seed=seed, acceleration=acc)
    report, text = result.report(), result.format()
    if args.plot:
        from infrabrain.simulation.plots import plot_what_if

        plot_what_if(result, args.plot)
    if args.out:
        base, scen = result.baseline, result.scenario
        # same streams, two names on disk: <site>-baseline and <site>-whatif
        base.spec = base.spec.model_copy(update={"name": f"{spec.name}-baseline"})
        scen.spec = scen.spec.model_copy(update={"name": f"{spec.name}-whatif"})
        write_sites([base, scen], args.out, overwrite=args.overwrite, progress=progress,
                    extra_manifest={"what_if": report})
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text + (f"\npicture: {args.plot}" if args.plot else ""))
    return 0
