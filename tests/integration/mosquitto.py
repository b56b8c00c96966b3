"""A real Mosquitto broker for tests: its own free loopback port, config and persistence in a
temporary folder, started, waited for, and always stopped.

Never the system broker on 1883: each ``Mosquitto`` listens on a port the kernel picked.
``stop()`` (SIGTERM) is a graceful stop that saves persistence; ``kill()`` is SIGKILL.
``start()`` after either brings the same broker back on the same port and files, so a
persistent subscriber session survives a restart.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import paho.mqtt.client as paho

from agent.bench import broker
from agent.config.loader import AgentConfig
from agent.types import Detections

MOSQUITTO = broker.mosquitto_binary() or "/usr/sbin/mosquitto"
_RUNNING: List[Mosquitto] = []  # stopped at session end by conftest, whatever happened
free_port = broker.free_port


class Mosquitto(broker.Mosquitto):
    """The agent's own private broker (agent/bench/broker.py), tracked so that a crashed test
    never leaves one running (conftest stops them all at the end of the session)."""

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self not in _RUNNING:
            _RUNNING.append(self)
        super().start(timeout)
        return self

    def _signal(self, sig: int, timeout: float) -> None:
        super()._signal(sig, timeout)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def wait_saved(self, since: float, timeout: float = 10.0) -> None:
        """Wait until the broker has written its persistence file after ``since`` (time.time()):
        sessions created before then survive a SIGKILL."""
        db = self.workdir / "mosquitto.db"
        wait(lambda: db.exists() and db.stat().st_mtime >= since, timeout, "mosquitto's autosave")

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(workdir: Path, **kwargs: object) -> Iterator[Mosquitto]:
    instance = Mosquitto(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield instance.start()
    finally:
        instance.stop()


def stop_all() -> None:
    for instance in list(_RUNNING):
        instance.kill()


def make_password_file(path: Path, users: Dict[str, str]) -> Path:
    """A mosquitto password file (hashed by mosquitto_passwd)."""
    path.write_text("", encoding="utf-8")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def make_certificates(folder: Path) -> Dict[str, Path]:
    """A CA, a server certificate for DNS:localhost only, and a client certificate (openssl, EC keys)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    def key(name: str) -> None:
        ssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")

    key("ca")
    ssl("req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=detection-agent test CA",
        "-out", "ca.crt")
    for name, ext in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        key(name)
        ssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(ext, encoding="utf-8")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return {name: folder / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class Subscriber:
    """A real paho subscriber that keeps every message (topic, payload, retain) in order."""

    def __init__(self, broker: Mosquitto, topics: List[str], *, client_id: Optional[str] = None,
                 qos: int = 1, protocol: int = paho.MQTTv311, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        persistent = client_id is not None
        kwargs: dict = {"callback_api_version": paho.CallbackAPIVersion.VERSION2,
                        "client_id": client_id or "", "protocol": protocol}
        if protocol != paho.MQTTv5:
            kwargs["clean_session"] = not persistent
        self.client = paho.Client(**kwargs)
        self.client.reconnect_delay_set(0.05, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        self.messages: List[paho.MQTTMessage] = []
        self._subscribed = False
        self._topics = topics
        self._qos = qos
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: setattr(self, "_subscribed", True)
        if protocol == paho.MQTTv5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if persistent else 0
            self.client.connect(broker.host, broker.port, 5, clean_start=not persistent, properties=props)
        else:
            self.client.connect(broker.host, broker.port, 5)
        self.client.loop_start()
        wait(lambda: self._subscribed, 10, "subscription")

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object,
                    props: object) -> None:
        for topic in self._topics:
            client.subscribe(topic, self._qos)

    def payloads(self, suffix: str = "") -> List[bytes]:
        return [bytes(m.payload) for m in list(self.messages) if m.topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait(predicate, timeout: float, what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- the agent's side ----------------------------------------------------------------------

def agent_config(broker: Mosquitto, tmp_path: Path, *, mqtt: Optional[Dict[str, Any]] = None,
                 spool: Optional[Dict[str, Any]] = None, device: str = "box-1",
                 cameras: Sequence[str] = ("front", "back")) -> AgentConfig:
    """An agent config for ``broker`` with test-speed timings (short backoff and keepalive)."""
    settings: Dict[str, Any] = {"host": broker.host, "port": broker.port, "keepalive": 5,
                                "reconnect_min": 0.05, "reconnect_max": 0.4, "connect_timeout": 3,
                                "stats_interval": 3600}
    settings.update(mqtt or {})
    spool_settings: Dict[str, Any] = {"path": str(tmp_path / "spool.db")}
    spool_settings.update(spool or {})
    return AgentConfig.model_validate({
        "device": {"id": device},
        "cameras": [{"name": name, "source": f"{name}.mp4"} for name in cameras],
        "model": {"path": "model.onnx"},
        "mqtt": settings,
        "spool": spool_settings,
    })


def detections(n: int, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 100, (n, 2))], axis=1)
    return Detections(boxes.astype(np.float32), rng.uniform(0.3, 0.99, n).astype(np.float32),
                      rng.integers(0, 3, n).astype(np.int32))
