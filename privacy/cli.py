"""``infrabrain privacy``: inspect a site's privacy ledger and create its pseudonym secret.

Subcommands:
  status [--ledger DIR] [--json]   print the cumulative epsilon, budget, delta and every run of a site
  init-secret PATH                 create the site-local HMAC secret for pseudonyms (never leaves the site)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import Any

LEDGER_DIR_ENV = "INFRABRAIN_PRIVACY_DIR"


def register(subparsers: Any) -> None:
    """Add the ``privacy`` command group to the root parser."""
    parser = subparsers.add_parser(
        "privacy", help="privacy ledger status and site secret",
        description="Differential-privacy ledger and pseudonym secret of one site. Every epsilon reported "
                    "comes from the site's Opacus accountant state, persisted in its ledger.",
    )
    sub = parser.add_subparsers(dest="privacy_command", metavar="SUBCOMMAND")
    status = sub.add_parser(
        "status", help="print the site's privacy ledger",
        description="Print the cumulative epsilon spent (all rounds, all restarts), the budget, delta and the "
                    "runs recorded in a site's privacy ledger. Exit code 2 if the ledger is missing or corrupted.",
    )
    status.add_argument("--ledger", metavar="DIR", default=os.environ.get(LEDGER_DIR_ENV),
                        help=f"ledger directory (default: ${LEDGER_DIR_ENV})")
    status.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    status.set_defaults(handler=_status)
    secret = sub.add_parser(
        "init-secret", help="create the site's pseudonym secret",
        description="Create a random 32-byte site secret (mode 0600) used to turn hostnames, serials, job ids, "
                    "IPs and rack names into keyed pseudonyms. It must never leave the site; an existing "
                    "secret is never overwritten (that would change every pseudonym).",
    )
    secret.add_argument("path", help="where to write the secret file")
    secret.set_defaults(handler=_init_secret)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _status(args: argparse.Namespace) -> int:
    from infrabrain.privacy.ledger import PrivacyLedger

    if not args.ledger:
        raise ValueError(f"--ledger: no ledger directory given (pass --ledger DIR or set ${LEDGER_DIR_ENV})")
    ledger = PrivacyLedger.load(args.ledger)
    summary = ledger.summary()
    if args.json:
        summary["runs_detail"] = [r.model_dump() for r in ledger.runs]
        print(json.dumps(summary, indent=2))
        return 0
    print(format_status(summary, ledger.runs))
    return 0


def format_status(summary: dict[str, Any], runs: Any) -> str:
    """Human-readable ledger report."""
    delta = summary["delta"]
    lines = [
        f"privacy ledger  {summary['path']}",
        f"site            {summary['site'] or '-'}",
        f"accountant      {summary['accountant']}",
        f"epsilon spent   {summary['epsilon_spent']:.4f} of {summary['epsilon_total_budget']:g} "
        f"(remaining {summary['epsilon_remaining']:.4f})" + (f" at delta={delta:.3g}" if delta else ""),
        f"runs            {summary['runs']} ({summary['uncommitted_runs']} not committed: interrupted or running, "
        "counted as spent)",
    ]
    if runs:
        lines.append("")
        lines.append(f"{'round':>5}  {'status':<9}  {'steps':>6}  {'sigma':>8}  {'q':>8}  {'n':>7}  {'eps after':>9}  when (UTC)")
        for r in runs:
            when = dt.datetime.fromtimestamp(r.reserved_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{r.round:>5}  {r.status:<9}  {r.steps:>6}  {r.noise_multiplier:>8.4f}  "
                         f"{r.sample_rate:>8.5f}  {r.num_samples:>7}  {r.epsilon_after:>9.4f}  {when}")
    return "\n".join(lines)


def _init_secret(args: argparse.Namespace) -> int:
    from infrabrain.privacy.pseudonyms import generate_site_secret

    path = generate_site_secret(args.path)
    print(f"created site secret {path} (mode 0600); keep it on this site and back it up")
    return 0
