"""A TCP relay in its own process, for freezing the network path between the agent and its broker.

``Relay(target_port).start()`` listens on a free loopback port and forwards every connection
to ``127.0.0.1:target_port``, both ways. ``freeze()`` sends the relay process SIGSTOP: both
TCP connections stay open, the kernel keeps accepting bytes until the socket buffers are
full, and nothing passes (a switch that hangs, a cellular link in a dead zone); ``thaw()``
(SIGCONT) lets everything through again, late. ``stop()`` closes it for good.

Shared by the fault tests and the soak test. Only the standard library: the relay process
runs this file as a script, so it does not need the package importable.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import subprocess
import sys
from typing import Dict, Optional

_CHUNK = 65536


class Relay:
    """One relay process from ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, int(target_port))
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False

    def start(self, timeout: float = 10.0) -> Relay:
        """Start the process; returns once it listens (it prints its port)."""
        self.proc = subprocess.Popen([sys.executable, __file__, self.target[0], str(self.target[1])],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        line = self._read_port_line(timeout)
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the TCP relay did not start (said {line!r})")
        self.port = int(line)
        return self

    def _read_port_line(self, timeout: float) -> str:
        if self.proc is None or self.proc.stdout is None:
            return ""
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            return self.proc.stdout.readline() if selector.select(timeout) else ""
        finally:
            selector.close()

    def freeze(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.frozen = False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(target_host: str, target_port: int) -> None:
    """The relay process: forward until terminated; a closed side closes its peer."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    peers: Dict[socket.socket, socket.socket] = {}
    print(listener.getsockname()[1], flush=True)

    def close(sock: socket.socket) -> None:
        for s in (sock, peers.pop(sock, None)):
            if s is None:
                continue
            peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(s)
            s.close()

    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection((target_host, target_port), timeout=5)
                except OSError:
                    client.close()  # the broker is down: the client sees a closed connection
                    continue
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.setblocking(True)  # blocking sends: a slow side slows the relay, as a link would
                    selector.register(s, selectors.EVENT_READ)
                peers[client], peers[upstream] = upstream, client
                continue
            if not isinstance(sock, socket.socket):
                continue
            try:
                data = sock.recv(_CHUNK)
                if data:
                    peers[sock].sendall(data)
                    continue
            except (OSError, KeyError):
                pass
            close(sock)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(sys.argv[1], int(sys.argv[2]))
