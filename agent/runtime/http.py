"""The small HTTP servers beside the pipeline (the camera preview, Prometheus metrics).

Each serves from daemon threads, so a stuck client never keeps the agent from exiting, and
binds without the reverse DNS lookup ``HTTPServer`` does by default (which can hang for
seconds on a device without DNS). ``serve`` turns an address that cannot be bound into the
one-line ``ConfigError`` the CLI reports with exit code 2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Tuple, Type

from agent.errors import ConfigError

log = logging.getLogger(__name__)


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the agent from exiting

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang for seconds on a
        # device without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class HttpServer6(HttpServer):
    address_family = socket.AF_INET6


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.strip().lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


def url_of(host: str, port: int, path: str = "/") -> str:
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def handler_class(name: str, route: Callable[[BaseHTTPRequestHandler], None], timeout: float,
                  keep_alive: bool = False) -> Type[BaseHTTPRequestHandler]:
    """A GET-only handler that passes each request to ``route``, logs at DEBUG under ``name``,
    and says nothing when the client leaves mid-answer. ``timeout`` bounds every socket read
    and write; ``keep_alive`` serves many requests per connection (HTTP/1.1)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        server_version = f"detection-agent-{name}"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(f"{name} %s: " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            with contextlib.suppress(ConnectionError, socket.timeout):  # the client left: say nothing
                route(self)

    Handler.timeout = timeout  # type: ignore[assignment]  # socketserver declares it None; a float is what it uses
    return Handler


def serve(host: str, port: int, handler: Type[BaseHTTPRequestHandler], section: str
          ) -> Tuple[HttpServer, threading.Thread]:
    """Bind ``host:port`` and serve in a daemon thread named after the config ``section``.

    ``ConfigError`` (naming ``section``, host and port) when the address cannot be bound.
    """
    server_class = HttpServer6 if ":" in host else HttpServer
    try:
        server = server_class((host, port), handler)
    except OSError as exc:  # in use, no such address, permission denied (ports < 1024)
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{section}: cannot listen on {host}:{port}: {reason}"]) from exc
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name=f"{section}-http", daemon=True)
    thread.start()
    return server, thread


__all__ = ["HttpServer", "HttpServer6", "handler_class", "is_loopback", "serve", "url_of"]
