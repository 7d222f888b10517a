"""CLI of the federation: ``infrabrain federate``, ``infrabrain coordinator serve``, ``infrabrain certs``.

Heavy imports (flwr, torch, ray) happen inside the handlers so that ``infrabrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any


def project_dir() -> Path:
    """The directory holding the Flower app's pyproject.toml (``[tool.flwr.app]``)."""
    import infrabrain

    root = Path(infrabrain.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or "[tool.flwr.app]" not in (root / "pyproject.toml").read_text():
        raise FileNotFoundError(f"no Flower app (pyproject.toml with [tool.flwr.app]) found at {str(root)!r}; "
                                "pass --app-dir")
    return root


def _parse_kv(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        for pair in item.split():
            if "=" not in pair:
                raise ValueError(f"--run-config expects key=value pairs, got {pair!r}")
            k, v = pair.split("=", 1)
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:
                out[k] = v
    return out


# ------------------------------------------------------------------------------------------------ federate
def _federate(args: argparse.Namespace) -> int:
    from infrabrain.coordinator.simulation_run import run_simulated_federation, simulation_config

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="infrabrain-federate-"))
    extra = _parse_kv(args.run_config)
    cfg = simulation_config(
        args.sites, args.rounds, args.sample, work, strategy=args.strategy, secagg=args.secagg or None,
        fleet_prior=args.fleet_prior or None, train_on_unpredictable=args.train_on_unpredictable,
        cause_head=args.cause_head,
        site_gpus=args.site_gpus, site_hours=args.site_hours, eps_budget=args.eps_budget,
        noise_multiplier=args.noise_multiplier, local_epochs=args.local_epochs, lr=args.lr, seed=args.seed,
        data_seed=args.seed, public_sites=args.public_sites, **extra)

    def show(r: dict[str, Any]) -> None:
        ev = r.get("eval", {})
        eps = r.get("eps_max")
        print(f"round {r['round']:>3}  sites {r.get('sites_aggregated', 0):>3}  "
              f"pr-auc {ev.get('pr-auc', float('nan')):.3f}  eval-loss {ev.get('eval-loss', float('nan')):.3f}  "
              f"eps_max {eps if eps is None else round(eps, 3)}  {r.get('round_s', 0):.1f}s", flush=True)

    report = run_simulated_federation(cfg, args.sites, work, on_round=None if args.json else show,
                                      verbose=args.verbose)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"registry: {report.registry_dir}  (report: {work / 'federation.json'})")
        if cfg.fleet_prior:
            from infrabrain.coordinator.fleet_prior_round import REGISTRY_PRIOR_FILE, published_prior

            prior = published_prior(Path(cfg.registry_dir))
            print(f"fleet root prior: {Path(cfg.registry_dir) / REGISTRY_PRIOR_FILE} ({prior.n_sites} sites, epsilon "
                  f"{prior.epsilon:.2f})" if prior is not None else "fleet root prior: not released (see the log)")
    return 0


# ------------------------------------------------------------------------------------------------ certs
def _certs(args: argparse.Namespace) -> int:
    from infrabrain.coordinator.certs import make_supernode_keys, make_tls, verify_server_cert

    out = Path(args.out)
    sans = tuple(args.san) if args.san else ("localhost", "127.0.0.1")
    if not args.keys_only:
        files = make_tls(out, sans=sans, days=args.days, overwrite=args.overwrite)
        print(f"CA certificate:     {files.ca_cert}  (give to every site)")
        print(f"server certificate: {files.server_cert}  SAN: {', '.join(verify_server_cert(files))}")
        print(f"server key:         {files.server_key}  (keep on the coordinator)")
    for name in args.site or []:
        key = make_supernode_keys(out / "supernode-keys", name, overwrite=args.overwrite)
        print(f"site key {name}: private {key.private_key} (give to the site), public {key.public_key} "
              "(register with `infrabrain coordinator serve --register`)")
    return 0


# ------------------------------------------------------------------------------------------------ serve
def _serve(args: argparse.Namespace) -> int:
    from infrabrain.coordinator.flower_env import free_port, stop
    from infrabrain.coordinator.superlink import (
        SuperlinkConfig,
        register_supernode,
        start_superlink,
        submit_run,
    )

    work = Path(args.dir)
    tls = Path(args.tls_dir) if args.tls_dir else work / "tls"
    cfg = SuperlinkConfig(host=args.host, port=args.port or free_port(args.host), ca_cert=tls / "ca.crt",
                          server_cert=tls / "server.pem", server_key=tls / "server.key", flwr_home=work / "flwr",
                          database=work / "superlink.db", log_file=work / "superlink.log")
    run_config = {"registry-dir": str((work / "registry").resolve()), **_parse_kv(args.run_config)}
    if args.rounds:
        run_config["num-server-rounds"] = args.rounds
    from infrabrain.coordinator.fed_config import FederationConfig

    FederationConfig.from_run_config(run_config)  # fail before starting anything
    link = start_superlink(cfg)
    run = None
    stopping = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"SuperLink on {cfg.address} (TLS, SuperNode auth on); log: {cfg.log_file}", flush=True)
        for pub in args.register or []:
            node_id = register_supernode(pub, cfg.flwr_home, cfg.connection_name)
            print(f"registered {pub} as node {node_id}", flush=True)
        if args.no_run:
            print("serving until SIGTERM/Ctrl-C (submit runs with `flwr run <app> infrabrain`)", flush=True)
            while not stopping["flag"]:
                time.sleep(0.5)
            return 0
        app = Path(args.app_dir) if args.app_dir else project_dir()
        run = submit_run(app, cfg.flwr_home, cfg.connection_name, run_config, stream=True)
        while run.poll() is None and not stopping["flag"]:
            time.sleep(0.5)
        if stopping["flag"]:
            return 130
        print(f"run finished with exit code {run.returncode}; registry: {run_config['registry-dir']}")
        return int(run.returncode or 0)
    finally:
        stop(run)
        stop(link)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``federate``, ``coordinator serve`` and ``certs`` to the root parser."""
    fed = subparsers.add_parser(
        "federate", help="federated DP training on Flower's simulation engine (Ray), in this process",
        description="Simulate N sites that each generate their own telemetry and train the failure predictor "
                    "with DP-SGD; the coordinator aggregates for R rounds. Prints per-round metrics and writes "
                    "the registry and federation.json under --out.")
    fed.add_argument("--sites", type=int, default=10, help="number of simulated sites (default 10)")
    fed.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    fed.add_argument("--sample", type=int, default=None, help="sites trained per round (default: all)")
    fed.add_argument("--strategy", default=None, choices=["fedavg", "fedprox", "trimmed-mean", "krum", "bulyan"],
                     help="how the coordinator aggregates the sites' updates (default: the run config's, fedavg; "
                          "the robust ones need enough sites: docs/federation.md)")
    fed.add_argument("--secagg", action="store_true", help="SecAgg+ (the coordinator sees only the sum)")
    fed.add_argument("--fleet-prior", action="store_true",
                     help="before the rounds, release the fleet's root prior under DP (a secure sum over Flower "
                          "messages; needs >= 3 sites; epsilon 1 per hour of a site's failure history, set with "
                          "--run-config 'fleet-prior-epsilon=...')")
    fed.add_argument("--train-on-unpredictable", action=argparse.BooleanOptionalAction, default=None,
                     help="train on every failure (the default); --no-train-on-unpredictable leaves the positives "
                          "of software and GSP faults, which no telemetry foretells, out of every party's loss, as "
                          "the centralised predictor does (measured not to help here: docs/federation.md)")
    fed.add_argument("--cause-head", action=argparse.BooleanOptionalAction, default=None,
                     help="train the predictor's cause head too (the default): each site's checkpoint names an "
                          "alert's likely cause (memory, network, thermal, power, other) and ranks its root with "
                          "it; --no-cause-head builds the model without it")
    fed.add_argument("--site-gpus", type=int, default=None, help="GPUs per simulated site (default 16)")
    fed.add_argument("--site-hours", type=float, default=None, help="hours simulated per site (default 24)")
    fed.add_argument("--eps-budget", type=float, default=None, help="per-site total epsilon (default 8)")
    fed.add_argument("--noise-multiplier", type=float, default=None,
                     help="fixed DP noise; 0 (default) calibrates it to the budget")
    fed.add_argument("--local-epochs", type=int, default=None,
                     help="DP-SGD epochs per site per round (default: the run config's, 1)")
    fed.add_argument("--lr", type=float, default=None, help="sites' SGD learning rate (default: the run config's, "
                     "0.03)")
    fed.add_argument("--public-sites", type=int, default=None,
                     help="public simulated sites the coordinator pretrains the starting model on (default 4; 0 = "
                          "random start)")
    fed.add_argument("--seed", type=int, default=0, help="simulation and training seed (default 0)")
    fed.add_argument("--run-config", action="append", help="extra 'key=value ...' federation settings")
    fed.add_argument("--out", default=None, help="work directory (registry, site state); default: a temp dir")
    fed.add_argument("--json", action="store_true", help="print the report as one JSON object")
    fed.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    fed.set_defaults(handler=_federate)

    certs = subparsers.add_parser(
        "certs", help="make a CA, the SuperLink's TLS certificate and SuperNode key pairs",
        description="Creates ca.crt/ca.key and server.pem/server.key (EC P-384, SAN localhost and 127.0.0.1 by "
                    "default) under --out, and one OpenSSH EC key pair per --site under --out/supernode-keys.")
    certs.add_argument("--out", required=True, help="output directory")
    certs.add_argument("--san", action="append", help="server name or IP (repeatable)")
    certs.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    certs.add_argument("--site", action="append", help="make a SuperNode key pair with this name (repeatable)")
    certs.add_argument("--keys-only", action="store_true", help="only make SuperNode keys")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files")
    certs.set_defaults(handler=_certs)

    coord = subparsers.add_parser("coordinator", help="the vendor-side coordinator (Flower SuperLink + ServerApp)")
    csub = coord.add_subparsers(dest="coordinator_command", metavar="ACTION")
    serve = csub.add_parser(
        "serve", help="start the SuperLink (TLS, SuperNode auth) and run the federation",
        description="Starts flower-superlink with TLS and --enable-supernode-auth on --host:--port, registers the "
                    "given site public keys, submits the federation (the ServerApp) and streams its log until it "
                    "finishes. Checkpoints go to DIR/registry; a restart resumes after the last completed round.")
    serve.add_argument("--dir", required=True, help="coordinator directory (tls/, registry/, flwr/, logs)")
    serve.add_argument("--tls-dir", default=None, help="where ca.crt, server.pem, server.key are (default DIR/tls)")
    serve.add_argument("--host", default="127.0.0.1", help="address the SuperLink's Fleet API listens on "
                       "(default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9200, help="Fleet API port the SuperNodes dial (default 9200)")
    serve.add_argument("--register", action="append", help="a site's public key (.pub) to allow (repeatable)")
    serve.add_argument("--rounds", type=int, default=None,
                       help="federated rounds (default: the run config's num-server-rounds, 3)")
    serve.add_argument("--run-config", action="append", help="'key=value ...' federation settings")
    serve.add_argument("--app-dir", default=None, help="the Flower app directory (default: this project)")
    serve.add_argument("--no-run", action="store_true", help="only serve the SuperLink until SIGTERM")
    serve.set_defaults(handler=_serve)
    coord.set_defaults(handler=lambda a: (coord.print_help(), 2)[1])

