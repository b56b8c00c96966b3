"""MQTT publish benchmark: sustained QoS 1 throughput and the publish stage's added latency.

Starts its own Mosquitto on a free loopback port (never the system broker), a real paho
subscriber (QoS 1), and an ``MqttPublisher`` with a real SQLite spool in a temporary folder.

- throughput: ``messages`` detections messages (10 boxes each) offered as fast as the
  publisher takes them; messages/s from the first call until the broker acknowledged the
  last one, and the subscriber's receive rate. Peer: a plain paho client publishing the
  same payloads at QoS 1 with the same in-flight window and no spool (what a publisher
  that can lose messages costs).
- latency, at a steady ``rate`` (default 100 messages/s: three 30 fps cameras): the time
  the pipeline's thread spends in ``publish_detections`` (encode + enqueue), and the time
  from that call until the subscriber has the message (spool write, window, broker,
  delivery), p50 and p99.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

log = logging.getLogger(__name__)


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open: each message leaves at once (no Nagle delay), as the timings assume."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _percentiles(values: List[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(arr.max()), 3), "n": int(arr.size)}


@contextlib.contextmanager
def local_broker(folder: Path) -> Iterator[Tuple[str, int, str]]:
    """A Mosquitto on a free loopback port for the duration; yields (host, port, version)."""
    from agent.bench.broker import Mosquitto
    from agent.errors import BadInputError

    try:
        broker = Mosquitto(folder, persistence=False)
    except RuntimeError:
        raise BadInputError("bench --mqtt needs the mosquitto broker: apt-get install -y mosquitto") from None
    broker.start()
    try:
        yield broker.host, broker.port, broker.version()
    finally:
        broker.stop(5.0)


class _Subscriber:
    """QoS 1 subscriber that notes when each seq arrived."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import json

        import paho.mqtt.client as paho

        self.arrivals: Dict[int, float] = {}
        self.count = 0
        ready = threading.Event()
        self.client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)

        def on_message(c: Any, u: Any, m: Any) -> None:
            now = time.perf_counter()
            self.count += 1
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.arrivals.setdefault(int(json.loads(m.payload)["seq"]), now)

        self.client.on_message = on_message
        self.client.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.on_socket_open = _no_delay
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("the benchmark subscriber could not subscribe")

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.count >= n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _detections(n: int = 10) -> Any:
    from agent.types import Detections

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 200, (n, 2))], axis=1)
    return Detections(boxes.astype(np.float32), rng.uniform(0.3, 0.99, n).astype(np.float32),
                      rng.integers(0, 80, n).astype(np.int32))


def _publisher(host: str, port: int, folder: Path, device: str) -> Any:
    from agent.config.loader import load_text
    from agent.publish.mqtt import MqttPublisher

    cfg = load_text(f"device: {{id: {device}}}\ncameras: [{{name: cam, source: bench.mp4}}]\n"
                    f"model: {{path: bench.onnx}}\n"
                    f"mqtt: {{host: '{host}', port: {port}, stats_interval: 3600, queue_size: 10000}}\n"
                    f"spool: {{path: '{folder / (device + '.db')}'}}\n", environ={})
    pub = MqttPublisher(cfg, "bench", [f"class{i}" for i in range(80)])
    pub.start()
    if not pub.wait_for(lambda c: c["connected"], 10):
        raise RuntimeError("the publisher did not connect to the benchmark broker")
    return pub


def _throughput(host: str, port: int, folder: Path, messages: int) -> Dict[str, Any]:
    det = _detections()
    sub = _Subscriber(host, port, "detection-agent/tput/+/detections")
    pub = _publisher(host, port, folder, "tput")
    try:
        start = time.perf_counter()
        for i in range(messages):
            if i % 200 == 0:
                while pub.counters()["queue"] > 8000:
                    time.sleep(0.001)  # back-pressure for the benchmark only: a full queue would drop
            pub.publish_detections("cam", i, time.time(), 640, 480, det, {"infer": 10.0})
        if not pub.wait_for(lambda c: c["acked"] >= messages, 120):
            raise RuntimeError(f"only {pub.counters()['acked']} of {messages} acknowledged")
        acked_s = time.perf_counter() - start
        sub.wait_count(messages, 60)
        received_s = time.perf_counter() - start
        counters = pub.counters()
    finally:
        pub.stop(5)
        sub.close()
    return {"messages": messages, "acked_per_s": round(messages / acked_s, 1),
            "received_per_s": round(sub.count / received_s, 1), "received": sub.count,
            "dropped": counters["dropped"]}


def _plain_paho(host: str, port: int, messages: int) -> Dict[str, Any]:
    import paho.mqtt.client as paho

    from agent.publish.payloads import detections_payload, encode

    det = _detections()
    names = [f"class{i}" for i in range(80)]
    payloads = [encode(detections_payload(device="plain", camera="cam", run="r", seq=i + 1, frame=i,
                                          skipped=0, ts=time.time(), width=640, height=480, model="bench",
                                          latency_ms={"infer": 10.0}, detections=det, names=names))
                for i in range(messages)]
    acked = threading.Semaphore(0)
    client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(100)
    client.on_publish = lambda c, u, mid, rc, p: acked.release()
    client.on_socket_open = _no_delay
    client.connect(host, port, 30)
    client.loop_start()
    try:
        start = time.perf_counter()
        for payload in payloads:
            client.publish("detection-agent/plain/cam/detections", payload, 1)
        for _ in range(messages):
            if not acked.acquire(timeout=60):
                raise RuntimeError("plain paho: acknowledgements stopped")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return {"messages": messages, "acked_per_s": round(messages / elapsed, 1)}


def _latency(host: str, port: int, folder: Path, messages: int, rate: float) -> Dict[str, Any]:
    det = _detections()
    sub = _Subscriber(host, port, "detection-agent/lat/+/detections")
    pub = _publisher(host, port, folder, "lat")
    calls: List[float] = []
    sent_at: Dict[int, float] = {}
    try:
        period = 1.0 / rate
        next_t = time.perf_counter()
        for i in range(messages):
            while time.perf_counter() < next_t:
                time.sleep(max(0.0, min(0.001, next_t - time.perf_counter())))
            next_t += period
            t0 = time.perf_counter()
            pub.publish_detections("cam", i, time.time(), 640, 480, det, {"infer": 10.0})
            t1 = time.perf_counter()
            calls.append((t1 - t0) * 1e6)
            sent_at[i + 1] = t0
        sub.wait_count(messages, 60)
    finally:
        pub.stop(5)
        sub.close()
    e2e = [(sub.arrivals[seq] - t) * 1e3 for seq, t in sent_at.items() if seq in sub.arrivals]
    return {"rate_per_s": rate, "messages": messages, "received": len(e2e),
            "caller_us": _percentiles(calls), "end_to_end_ms": _percentiles(e2e)}


def run_mqtt_bench(messages: int = 20000, rate: float = 100.0, latency_messages: int = 2000,
                   peers: bool = True) -> Dict[str, Any]:
    """Run the MQTT benchmark; returns the results and prints a summary."""
    with tempfile.TemporaryDirectory(prefix="da-bench-mqtt-") as tmp, \
            local_broker(Path(tmp)) as (host, port, ver):
        folder = Path(tmp)
        report: Dict[str, Any] = {"broker": ver, "machine": platform.machine(), "qos": 1,
                                  "payload": "detections/1 with 10 boxes"}
        report["throughput"] = _throughput(host, port, folder, messages)
        if peers:
            report["plain_paho"] = _plain_paho(host, port, messages)
        report["latency"] = _latency(host, port, folder, latency_messages, rate)
    _print_report(report)
    return report


def _print_report(report: Dict[str, Any]) -> None:
    tp, lat = report["throughput"], report["latency"]
    print(f"mqtt QoS 1 ({report['broker']}): {tp['acked_per_s']:.0f} msgs/s acknowledged, "
          f"{tp['received_per_s']:.0f} msgs/s received, {tp['messages']} messages, dropped {tp['dropped']}")
    if "plain_paho" in report:
        print(f"  peer, plain paho without spool: {report['plain_paho']['acked_per_s']:.0f} msgs/s")
    call, e2e = lat["caller_us"], lat["end_to_end_ms"]
    print(f"mqtt added latency at {lat['rate_per_s']:g} msgs/s: publish call p50 {call['p50']:.0f} us, "
          f"p99 {call['p99']:.0f} us; to the subscriber p50 {e2e['p50']:.2f} ms, p99 {e2e['p99']:.2f} ms")


__all__ = ["local_broker", "run_mqtt_bench"]
