"""The ``infrabrain`` command line: one entry point, one subcommand group per area.

Each area owns a ``cli.py`` with ``register(subparsers)``; heavy imports (torch, flwr, tenseal) happen inside
the handlers so that ``infrabrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from infrabrain import __version__
from infrabrain.logs import configure_logging

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "infrabrain.demo",
    "infrabrain.simulation.cli",
    "infrabrain.models.cli",
    "infrabrain.privacy.cli",
    "infrabrain.coordinator.cli",
    "infrabrain.coordinator.query_cli",
    "infrabrain.client.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from every area that is present."""
    parser = argparse.ArgumentParser(
        prog="infrabrain",
        description=(
            "Predict which GPU-cluster nodes fail in the next hour, and why, with federated learning under "
            "differential privacy: raw telemetry never leaves a site."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `infrabrain COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"infrabrain {__version__}")
    parser.add_argument("--log-level", default=None, help="debug, info (default), warning or error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        print(f"infrabrain {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
