"""Structured (JSON-lines) logging shared by every infrabrain process.

Every record is one JSON object on stderr: ``ts``, ``level``, ``logger``, ``msg`` and any ``extra=`` fields,
so that an operator can grep or ship the logs without parsing prose.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a log record as a single JSON line with its extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, separators=(",", ":"))


def configure_logging(level: str | None = None) -> None:
    """Install the JSON formatter on the root logger once; level from argument or ``INFRABRAIN_LOG``."""
    root = logging.getLogger()
    lvl = (level or os.environ.get("INFRABRAIN_LOG", "info")).upper()
    if any(getattr(h, "_infrabrain", False) for h in root.handlers):
        root.setLevel(lvl)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._infrabrain = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(lvl)


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the ``infrabrain`` namespace."""
    return logging.getLogger(name if name.startswith("infrabrain") else f"infrabrain.{name}")
