"""CLI for encrypted benchmark queries: ``infrabrain benchmark`` (site) and ``infrabrain benchmark-server``.

Heavy imports (tenseal, grpc, flwr) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add ``benchmark`` and ``benchmark-server`` to the root parser."""
    from infrabrain.privacy.secure_fleet_stats import metric_families

    fams = metric_families()
    p = subparsers.add_parser(
        "benchmark",
        help="ask the coordinator, under encryption, where your failure statistics sit in the fleet",
        description=(
            "Encrypts this site's statistic(s) under a CKKS key that never leaves the site, asks the coordinator "
            "for the fleet percentile and z-score computed on the ciphertext, and decrypts the answer locally. "
            "Without --server, runs the whole exchange on loopback against a simulated 48-site fleet."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("examples:\n  infrabrain benchmark --metric gpu_failure_rate\n"
                "  infrabrain benchmark --server coord:7443 --site-id site-3 --key site-3.pem "
                "--stats stats.json --json"),
    )
    p.add_argument("--metric", default="gpu_failure_rate", choices=[*fams, "all"], help="metric family to report")
    p.add_argument("--json", action="store_true", help="print the answers as JSON instead of sentences")
    p.add_argument("--server", default=None, help="coordinator address host:port (default: loopback demo)")
    p.add_argument("--site-id", default=None, help="this site's enrolled id (with --server)")
    p.add_argument("--key", default=None, help="this site's Ed25519 private key, PEM (with --server)")
    p.add_argument("--stats", default=None, help="JSON file {metric: value} (with --server), e.g. from "
                   "`benchmark-server site-stats`")
    p.add_argument("--threshold", type=float, default=90.0, help="percentile at or above which it is 'abnormal'")
    p.add_argument("--n-sites", type=int, default=48, help="demo fleet size (without --server)")
    p.add_argument("--hours", type=float, default=720.0, help="demo simulated hours per site (without --server)")
    p.add_argument("--seed", type=int, default=0, help="demo seed (without --server)")
    p.set_defaults(handler=_benchmark)

    s = subparsers.add_parser(
        "benchmark-server",
        help="coordinator side of encrypted benchmark queries: build the fleet reference, enrol sites, serve",
        description="Build the secure, DP-noised fleet reference; enrol site signing keys; serve gRPC queries.",
    )
    ss = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = ss.add_parser("build-reference", help="simulate a fleet, secure-aggregate its DP histograms, store them")
    b.add_argument("--out", required=True, help="where to write the aggregate (JSON)")
    b.add_argument("--n-sites", type=int, default=48, help="simulated sites in the fleet (default 48)")
    b.add_argument("--hours", type=float, default=720.0, help="hours simulated per site (default 720)")
    b.add_argument("--seed", type=int, default=0, help="simulation and DP noise seed (default 0)")
    b.add_argument("--epsilon", type=float, default=4.0, help="DP epsilon of the whole reference")
    b.add_argument("--stats-dir", default=None, help="also write each simulated site's stats JSON here (demo)")
    e = ss.add_parser("enrol", help="create a site's Ed25519 key and add its public half to the sites file")
    e.add_argument("--site-id", required=True, help="the site's name, as its queries will give it")
    e.add_argument("--key-out", required=True, help="PEM file for the site (keep it at the site)")
    e.add_argument("--sites", required=True, help="JSON {site_id: public key hex} the server reads")
    v = ss.add_parser("serve", help="serve queries until interrupted")
    v.add_argument("--reference", required=True, help="the fleet reference JSON that build-reference wrote")
    v.add_argument("--sites", required=True, help="the enrolled sites' JSON {site_id: public key hex}")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=7443, help="gRPC port (default 7443)")
    v.add_argument("--budget", type=int, default=100, help="answered queries per site")
    v.add_argument("--ledger", default=None, help="JSON file that persists each site's spent budget")
    v.add_argument("--workers", type=int, default=2,
                   help="worker processes that evaluate queries on ciphertexts, each with its memory and time "
                        "limit (default 2)")
    s.set_defaults(handler=_server)


def _benchmark(args) -> int:
    if args.server is None:
        from infrabrain.coordinator.query_demo import run_demo

        res = run_demo(None if args.metric == "all" else args.metric, args.n_sites, args.hours, args.seed)
        answers, sentences = res.answers, res.sentences
    else:
        answers, sentences = _remote(args)
    if args.json:
        print(json.dumps({"answers": answers}, indent=1, default=float))
    else:
        print("\n".join(sentences))
    return 0


def _remote(args):
    from cryptography.hazmat.primitives import serialization

    from infrabrain.client.benchmark_query import BenchmarkClient, SiteIdentity

    for name in ("site_id", "key", "stats"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name.replace('_', '-')} is required with --server")
    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    stats = json.loads(Path(args.stats).read_text())
    if not isinstance(stats, dict):
        raise ValueError(f"--stats {args.stats!r} must hold a JSON object {{metric: value}}")
    import grpc

    client = BenchmarkClient(args.server, SiteIdentity(args.site_id, key))
    try:
        client.register()
        got = client.query(stats, threshold_pct=args.threshold)
    except grpc.RpcError as exc:
        raise ValueError(f"coordinator {args.server} refused: {exc.code().name}: {exc.details()}") from None
    finally:
        client.close()
    got = [a for a in got if args.metric == "all" or a.family == args.metric]
    return [a.as_dict() for a in got], [a.sentence() for a in got]


def _server(args) -> int:
    if args.action == "build-reference":
        from infrabrain.atomic import atomic_write_text
        from infrabrain.coordinator.query_demo import build_reference, fleet_statistics

        stats = fleet_statistics(args.n_sites, args.hours, args.seed, progress=True)
        ref = build_reference(stats, epsilon=args.epsilon, seed=args.seed)
        ref.save(args.out)
        if args.stats_dir:
            for i, st in enumerate(stats):
                atomic_write_text(Path(args.stats_dir) / f"site-{i}.json", json.dumps(st))
        print(json.dumps({"out": args.out, "n_sites": ref.aggregate.n_sites, "epsilon": ref.aggregate.epsilon,
                          "delta": ref.aggregate.delta, "version": ref.version}))
        return 0
    if args.action == "enrol":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from infrabrain.atomic import atomic_write_bytes, atomic_write_text

        sites_path = Path(args.sites)
        sites = json.loads(sites_path.read_text()) if sites_path.exists() else {}
        if Path(args.key_out).exists():
            raise FileExistsError(f"--key-out {args.key_out!r} exists; refusing to overwrite a site key")
        key = Ed25519PrivateKey.generate()
        atomic_write_bytes(args.key_out, key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        sites[args.site_id] = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw).hex()
        atomic_write_text(sites_path, json.dumps(sites, indent=1, sort_keys=True))
        print(json.dumps({"site_id": args.site_id, "key": args.key_out, "sites": str(sites_path)}))
        return 0
    # serve
    import signal
    import time

    from infrabrain.coordinator.query_guard import GuardConfig, SiteKeys
    from infrabrain.coordinator.query_reference import FleetReference
    from infrabrain.coordinator.query_server import QueryServerConfig, start_server

    ref = FleetReference.load(args.reference)
    try:
        raw = json.loads(Path(args.sites).read_text())
        keys = SiteKeys({k: bytes.fromhex(v) for k, v in raw.items()})
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"--sites {args.sites!r} must be JSON {{site_id: ed25519 public key hex}}: {exc}") from exc
    cfg = QueryServerConfig(host=args.host, port=args.port, workers=args.workers,
                            guard=GuardConfig(budget=args.budget))
    handle = start_server(ref, keys, cfg, ledger_path=args.ledger)

    def _term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    print(json.dumps({"address": handle.address, "reference": ref.version}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    from infrabrain.cli import main

    sys.exit(main())
