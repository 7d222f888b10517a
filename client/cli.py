"""``infrabrain client ...``: run the on-prem daemon and inspect what it collected.

Subcommands: ``run`` (the daemon), ``collect-once`` (one pass of every collector into the store),
``alerts`` (the running daemon's nodes at risk now, from its ``/alerts``),
``explain`` (what the site's model says of a past hour, from the store), ``store-info`` (size, counts, integrity
of a store), ``check-topology`` (validate a topology YAML),
``topology-from-sim`` (write the topology YAML of a simulated site, for replay and examples).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``client`` command group to the root parser."""
    parser = subparsers.add_parser(
        "client",
        help="on-prem daemon: collect telemetry, store it locally, score risk, serve /metrics",
        description="The site's daemon and its tools. Raw telemetry never leaves the site.",
    )
    sub = parser.add_subparsers(dest="client_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT",
                         description="Collect on a schedule, store, score risk every minute, serve /metrics.")
    run.add_argument("--config", required=True, help="site.yaml (see docs/daemon.md)")
    run.add_argument("--max-cycles", type=int, default=None, help="stop after N collection cycles (testing)")
    run.set_defaults(handler=_run)

    once = sub.add_parser(
        "collect-once", help="run every configured collector once and store the result",
        description="Run every collector of site.yaml once, store what they give, and print one JSON object: "
                    "samples stored, each collector's health, and what the window now holds of the fields the "
                    "model reads (the checkpoint's, else the federated feature set's): kinds_missing, "
                    "fields_missing (e.g. dcgm-exporter started without deploy/dcgm-exporter-counters.csv) and "
                    "unknown_components (telemetry of components the topology file lacks); the kinds site.yaml "
                    "lists as unmonitored_kinds are not missing. Exit 1 when no "
                    "collector is up; with --strict, 2 when anything the model reads is missing or a component "
                    "is unknown. A check to run before `client run`.")
    once.add_argument("--config", required=True, help="site.yaml")
    once.add_argument("--strict", action="store_true",
                      help="exit 2 when a kind or field the model reads is missing, or a component is unknown")
    once.set_defaults(handler=_collect_once)

    info = sub.add_parser("store-info", help="size, sample counts, time range, integrity and collector positions "
                                             "of a store")
    src = info.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="site.yaml (uses its store.path)")
    src.add_argument("--store", help="path of a store file")
    info.add_argument("--no-check", action="store_true", help="skip the (slow on big stores) integrity check")
    info.set_defaults(handler=_store_info)

    alerts = sub.add_parser(
        "alerts", help="the running daemon's nodes at risk now, with what each alert says",
        description="Read the running daemon's /alerts (site.yaml's metrics address) and print each node at or "
                    "above the alert threshold, riskiest first: its sentence, likeliest roots, when it was last "
                    "alerted and the address of its picture.")
    src = alerts.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="site.yaml (its metrics.host and metrics.port)")
    src.add_argument("--url", help="the daemon's address instead, e.g. http://10.0.0.5:9464")
    alerts.add_argument("--json", action="store_true", help="print /alerts' JSON as it came")
    alerts.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)")
    alerts.set_defaults(handler=_alerts)

    expl = sub.add_parser(
        "explain", help="what the site's model says of a past hour, read back from the site's store",
        description="Score the stored window ending at --at with site.yaml's checkpoint and explain its riskiest "
                    "nodes, as the daemon would have then (a post-mortem: why did a node fail at 03:14? ask at "
                    "03:00). Reads the store without writing; runs beside the daemon; nothing leaves the site.")
    expl.add_argument("--config", required=True, help="site.yaml (its store, topology, cadence and checkpoint)")
    expl.add_argument("--at", type=_epoch_seconds, default=None, metavar="TIME",
                      help="end of the window: epoch seconds or an ISO 8601 time, UTC unless it names its zone "
                           "(2027-01-15T03:00Z, 2027-01-15 03:00+01:00); default: the newest stored sample")
    expl.add_argument("--top", type=int, default=5, help="riskiest nodes explained (default %(default)s)")
    expl.add_argument("--plot", default=None, metavar="DIR",
                      help="also draw each explained node's explanation as a PNG in DIR")
    expl.add_argument("--json", action="store_true", help="print one JSON object instead of sentences")
    expl.set_defaults(handler=_explain)

    topo = sub.add_parser("check-topology", help="validate a topology YAML and print what it holds")
    topo.add_argument("path", help="topology.yaml")
    topo.set_defaults(handler=_check_topology)

    fromsim = sub.add_parser("topology-from-sim", help="write the topology YAML of a simulated dataset's site")
    fromsim.add_argument("dataset", help="simulator output directory (or its site=<name> directory)")
    fromsim.add_argument("--site", default=None, help="site name when the dataset holds several")
    fromsim.add_argument("--out", required=True, help="where to write topology.yaml")
    fromsim.set_defaults(handler=_topology_from_sim)


def _run(args: argparse.Namespace) -> int:
    from infrabrain.client.config import load_site_config
    from infrabrain.client.daemon import Daemon

    cfg = load_site_config(args.config)
    daemon = Daemon(cfg)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    daemon.run(stop, max_cycles=args.max_cycles)
    return 0


def _epoch_seconds(text: str) -> int:
    """``--at``: epoch seconds, or an ISO 8601 time (UTC where it names no zone)."""
    from datetime import datetime, timezone

    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch seconds nor an ISO 8601 time "
                                         "(e.g. 2027-01-15T03:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp())


def _daemon_url(args: argparse.Namespace) -> str:
    """The running daemon's address: ``--url``, or site.yaml's metrics address (a wildcard host read locally)."""
    if args.url:
        if not args.url.startswith(("http://", "https://")):
            raise ValueError(f"--url must start with http:// or https://, got {args.url!r}")
        return args.url.rstrip("/")
    from infrabrain.client.config import load_site_config

    m = load_site_config(args.config).metrics
    if m.port == 0:
        raise ValueError("site.yaml's metrics.port is 0 (a free port picked at start, logged as 'serving /metrics'): "
                         "give that port with --url http://HOST:PORT")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(m.host, m.host)
    return f"http://[{host}]:{m.port}" if ":" in host else f"http://{host}:{m.port}"


def _alerts(args: argparse.Namespace) -> int:
    import time
    import urllib.error
    import urllib.request

    if not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    url = _daemon_url(args)
    try:
        with urllib.request.urlopen(f"{url}/alerts", timeout=args.timeout) as r:
            view = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ValueError(f"no /alerts from the daemon at {url} ({exc}); is `infrabrain client run` running there?") \
            from exc
    if args.json:
        print(json.dumps(view))
        return 0
    if view.get("scored_at") is None:
        print(f"site {view.get('site')}: nothing scored yet"
              + ("" if view.get("model_loaded") else " (no predictor checkpoint loaded)"))
        return 0
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(view["scored_at"]))
    nodes = view.get("nodes", [])
    print(f"site {view['site']}, scored {when}: {len(nodes)} of {view['scored']} node(s) at or above the alert "
          f"threshold {view['threshold']:.2f}")
    if view.get("unobserved_kinds"):  # issue 3 follow-up 46: an exporter gone quiet
        print(f"no {' or '.join(view['unobserved_kinds'])} telemetry in the scored window: every such component "
              "counts as down in these scores")
    if view.get("unmonitored_kinds"):
        print(f"this site sends no {', '.join(view['unmonitored_kinds'])} telemetry (site.yaml's unmonitored_kinds): "
              "every such component counts as down in these scores")
    for kind, names in (view.get("unobserved_metrics") or {}).items():
        print(f"no value of {', '.join(names)} ({kind}) in the scored window: scored as missing, where the "
              "training data held them")
    if view.get("unknown_component_count"):
        listed = view.get("unknown_components", [])
        more = view["unknown_component_count"] - len(listed)
        print(f"telemetry of {view['unknown_component_count']} component(s) the topology does not have, not scored: "
              f"{', '.join(listed)}" + (f" and {more} more" if more > 0 else ""))
    for n in nodes:
        print(n["explanation"])
        if n["root_causes"]:
            print(f"  likeliest roots: {', '.join(n['root_causes'])}; first because {n['root_reason']}")
        if n.get("alerted_at") is not None:
            print(f"  alerted {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(n['alerted_at']))}")
        if n.get("picture"):
            print(f"  picture: {url}{n['picture']}")
    _print_rule_alerts(view)
    return 0


def _print_rule_alerts(out: dict[str, Any]) -> None:
    """The incumbent rules kept for the cause groups the model did not learn (issue 3 follow-up 44), from
    ``/alerts`` or ``client explain``'s ``untrained_causes`` and ``rule_alerts``; nothing for a model that says
    it learned every group."""
    if not out.get("untrained_causes"):
        return
    rules = out.get("rule_alerts", [])
    print(f"the model's training held too few {' or '.join(out['untrained_causes'])} failures to foretell them: "
          f"{len(rules)} incumbent rule alert(s) for those")
    for a in rules:
        print(f"  rule alert ({a['group']}): node {a['node']}: {a['text']}")


def _explain(args: argparse.Namespace) -> int:
    import time

    from infrabrain.client.config import load_site_config
    from infrabrain.client.stored_window_explain import explain_stored_window

    out = explain_stored_window(load_site_config(args.config), at=args.at, top=args.top, plot_dir=args.plot)
    if args.json:
        print(json.dumps(out))
        return 0
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(out["t"]))
    print(f"site {out['site']}, window ending {when} ({out['t']}): {out['scored']} node(s) scored")
    for n in out["nodes"]:
        print(n["explanation"])
        if n["root_causes"]:
            print(f"  likeliest roots: {', '.join(n['root_causes'])}; first because {n['root_reason']}")
        for e in n["after"]:
            what = f"XID {e['xid']}" if e["event"] == "xid" and e["xid"] >= 0 else e["event"]
            print(f"  then, {(e['t'] - out['t']) / 60:.0f} min later: {what} on {e['component_id']}"
                  + (f" ({e['detail']})" if e["detail"] else ""))
        if not n["after"]:
            waited = (out["after_until"] - out["t"]) / 60
            print(f"  then: no event on this node in the next {waited:.0f} min" if waited >= 1 else
                  "  then: the store holds nothing after this window yet")
        if n.get("picture"):
            print(f"  picture: {n['picture']}")
    _print_rule_alerts(out)
    return 0


def _collect_once(args: argparse.Namespace) -> int:
    from infrabrain.client.config import load_site_config
    from infrabrain.client.daemon import Daemon

    daemon = Daemon(load_site_config(args.config))
    try:
        stored = daemon.collect_once()
        health = {name: {"up": h.up, "samples": h.samples_total, "error": h.last_error}
                  for name, h in daemon.health.items()}
        coverage = daemon.window_coverage()
    finally:
        daemon.close()
    print(json.dumps({"stored": stored, "collectors": health, "window": coverage}))
    if not any(h["up"] for h in health.values()):
        return 1
    lacking = coverage["kinds_missing"] or coverage["fields_missing"] or coverage["unknown_component_count"]
    return 2 if args.strict and lacking else 0


def _store_info(args: argparse.Namespace) -> int:
    from infrabrain.client.store import TelemetryStore

    if args.config:
        from infrabrain.client.config import load_site_config

        path = load_site_config(args.config).store.path
    else:
        path = args.store
    with TelemetryStore(path, read_only=True) as store:
        info = store.info(check=not args.no_check)
    print(json.dumps(info.as_dict(), indent=2))
    return 0 if info.integrity in ("ok", "not checked") else 1


def _check_topology(args: argparse.Namespace) -> int:
    from infrabrain.client.topology_file import KINDS, load_topology

    topo = load_topology(args.path)
    counts = {k: len(topo.ids(k)) for k in KINDS}
    print(json.dumps({"site": topo.site, "components": counts, "edges": int(len(topo.edges))}))
    return 0


def _topology_from_sim(args: argparse.Namespace) -> int:
    import pandas as pd

    from infrabrain.client.collectors.replay import site_dir
    from infrabrain.client.topology_file import build_site_topology, dump_topology, topology_from_components

    sdir = site_dir(args.dataset, args.site)
    comps = pd.read_parquet(sdir / "topology" / "components.parquet")
    edges = pd.read_parquet(sdir / "topology" / "edges.parquet")
    spec = topology_from_components(sdir.name.removeprefix("site="), comps, edges)
    build_site_topology(spec)  # validate before writing
    dump_topology(spec, args.out)
    print(json.dumps({"wrote": args.out, "nodes": sum(len(r.nodes) for r in spec.racks)}))
    return 0
