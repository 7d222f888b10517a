"""The daemon's HTTP endpoints on its metrics address: ``/metrics`` for Prometheus, ``/alerts`` for people and tools.

- ``/metrics`` (and ``/``, as before): the Prometheus exposition of the daemon's own registry.
- ``/alerts``: JSON of the last scoring cycle: the nodes at or above the alert threshold, riskiest first, each with
  what its alert says (risk, cause and where it comes from, the sentence, the three likeliest roots and why the
  first is first, when it was last alerted) and, where the site draws its alerts, the address of its picture.
  The same words as the alert log line, without a log pipeline in between.
- ``/alerts/pictures/<name>``: one of the daemon's own alert pictures (``<UTC time>-<node>.png`` in
  ``alert_pictures.dir``). Any other name, a name with a folder in it, or a file that is not a plain file (a
  symlink planted in the folder) is answered 404: the endpoint serves the daemon's pictures and nothing else.

GET and HEAD only (405 otherwise). What is served is site-local, like the node ids and causes already in
``/metrics``'s labels: ``metrics.host`` (default 127.0.0.1) decides who can read it; nothing here leaves the site
unless that address is opened to another network.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from infrabrain.logs import get_logger

log = get_logger("client.daemon_http")

#: A picture's name as :class:`~infrabrain.client.alert_pictures.AlertPictures` writes it: its UTC time, then the
#: node id made a safe file name part (:func:`~infrabrain.models.explanation_plot.file_stem`).
PICTURE_NAME = re.compile(r"\d{8}T\d{6}Z-[A-Za-z0-9._-]+\.png")
#: Where pictures are served from; ``/alerts`` gives each picture's address under it.
PICTURES_PATH = "/alerts/pictures/"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def picture_url(picture: str | Path) -> str:
    """The address ``/alerts`` gives a picture written by the daemon (its file name under :data:`PICTURES_PATH`)."""
    return PICTURES_PATH + Path(picture).name


def daemon_http_app(registry: CollectorRegistry, alerts: Callable[[], Mapping[str, Any]],
                    pictures: Path | None) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: ``registry`` on ``/metrics``, ``alerts()`` (a JSON-ready mapping) on ``/alerts``,
    the pictures of folder ``pictures`` (None: the site draws none) under :data:`PICTURES_PATH`."""
    metrics_app = make_wsgi_app(registry)

    def reply(start: StartResponse, status: str, body: bytes, content_type: str,
              head: bool) -> Iterable[bytes]:
        start(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       *([("Allow", "GET, HEAD")] if status.startswith("405") else [])])
        return [] if head else [body]

    def error(start: StartResponse, status: str, message: str, head: bool) -> Iterable[bytes]:
        return reply(start, status, json.dumps({"error": message}).encode(), "application/json", head)

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return error(start, "405 Method Not Allowed", f"{method} is not served; GET or HEAD", head)
        if path in ("/", "/metrics"):
            return metrics_app(environ, start)
        if path == "/alerts":
            body = json.dumps(alerts(), allow_nan=False).encode()
            return reply(start, "200 OK", body, "application/json", head)
        if path.startswith(PICTURES_PATH):
            data = _picture(pictures, path[len(PICTURES_PATH):])
            if data is None:
                return error(start, "404 Not Found", f"no alert picture {path[len(PICTURES_PATH):]!r}", head)
            return reply(start, "200 OK", data, "image/png", head)
        return error(start, "404 Not Found", f"nothing at {path!r}; served: /metrics, /alerts, {PICTURES_PATH}<name>",
                     head)

    return app


def _picture(folder: Path | None, name: str) -> bytes | None:
    """The bytes of picture ``name`` in ``folder``; None where it is not one the daemon writes, is gone (pruned),
    or is not a plain file."""
    if folder is None or not PICTURE_NAME.fullmatch(name):
        return None
    try:  # one open that follows no symlink, then its own fstat: nothing can be swapped in between
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None


#: Seconds a connection may stay silent before the server drops it: a client that connects and sends nothing
#: (or sends slowly) holds a thread, and without a limit enough of them would hold the daemon's HTTP for good.
REQUEST_TIMEOUT_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the daemon logs JSON lines there); silent connections dropped after
    :data:`REQUEST_TIMEOUT_S`."""

    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass


def serve_daemon_http(host: str, port: int, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
                      ) -> WSGIServer:
    """Serve ``app`` on ``host:port`` (port 0: a free one) from a background thread, one thread per request;
    ``shutdown()`` and ``server_close()`` stop it. Raises ``OSError`` where the address cannot be bound."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

        def handle_error(self, request: Any, client_address: Any) -> None:
            """A dropped or timed-out connection is the client's business; anything else is logged as one JSON
            line (socketserver would print a traceback among the daemon's log lines)."""
            exc = sys.exc_info()[1]
            if not isinstance(exc, (TimeoutError, ConnectionError)):
                log.warning("daemon HTTP request failed", extra={"client": str(client_address[0]), "error": repr(exc)})

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="daemon-http", daemon=True).start()
    return server
