"""Real RTSP cameras (H.264 from GStreamer's RTSP server) through ``detection-agent run``:
two cameras, one on TCP and one on UDP; the UDP camera's server is killed and comes back.

Checked: the other camera keeps its frame rate during the outage, the dead one reports
``reconnecting`` then ``online`` on its status topic, no stale picture is processed after it
came back (each picture shows a shape whose position encodes when it was drawn, and the
server draws circles in its first life and squares in its second, so the model's boxes say
how old each processed picture was and which life made it), each camera really used its own
transport (the per-camera FFmpeg options), and the time from the server's return to the
first new frame processed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import List, Tuple

import paho.mqtt.client as paho
import pytest
import yaml
from mosquitto import wait
from rtsp import RtspCamera, missing
from test_run import MODEL, start_agent

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(missing() is not None, reason=f"no RTSP server here: {missing()}")]

RECONNECT_MAX = 2.0


class Tap:
    """Every message of one device with the time it arrived."""

    def __init__(self, broker, device: str) -> None:
        self.messages: List[Tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"detection-agent/{device}/#", 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 10)
        self.client.loop_start()

    def _on_message(self, client, userdata, m) -> None:
        with self._lock:
            self.messages.append((time.time(), m.topic, bytes(m.payload)))

    def detections(self, camera: str) -> List[Tuple[float, dict]]:
        with self._lock:
            return [(t, json.loads(p)) for t, topic, p in self.messages
                    if topic.endswith(f"/{camera}/detections")]

    def states(self, camera: str) -> List[Tuple[float, str]]:
        with self._lock:
            return [(t, p.decode()) for t, topic, p in self.messages if topic.endswith(f"/{camera}/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def shapes(message: dict) -> set:
    return {d["label"] for d in message["detections"]}


def ages(messages: List[Tuple[float, dict]], shape: str) -> List[float]:
    """Picture age at capture of each message (in seq order) where the model found ``shape``."""
    out = []
    for _, m in sorted(messages, key=lambda x: x[1]["seq"]):
        boxes = [d["box"] for d in m["detections"] if d["label"] == shape]
        if len(boxes) == 1:
            out.append(RtspCamera.picture_age(m["ts"], boxes[0]))
    return out


def rate(messages: List[Tuple[float, dict]], start: float, end: float) -> float:
    return sum(1 for t, _ in messages if start <= t < end) / (end - start)


def test_two_rtsp_cameras_one_dies_and_returns(broker, tmp_path):
    steady, flaky = RtspCamera().start("circle"), RtspCamera().start("circle")
    tap = Tap(broker, "rtsp-box")
    camera = {"stall_timeout": 2, "reconnect_min": 0.5, "reconnect_max": RECONNECT_MAX}
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "device": {"id": "rtsp-box"},
        "cameras": [{"name": "steady", "source": steady.url, "rtsp": {"transport": "tcp"}, **camera},
                    {"name": "flaky", "source": flaky.url, "rtsp": {"transport": "udp"}, **camera}],
        "model": {"path": str(MODEL), "warmup_runs": 0},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5, "reconnect_min": 0.05,
                 "reconnect_max": 0.4, "stats_interval": 3600},
        "spool": {"path": str(tmp_path / "spool.db")},
        "service": {"state_dir": str(tmp_path / "state")},
    }))
    agent = start_agent(config)
    try:
        wait(lambda: len(tap.detections("steady")) >= 10 and len(tap.detections("flaky")) >= 10, 90,
             "both cameras' first frames")
        time.sleep(1.0)
        base_start = time.time()
        time.sleep(4.0)
        killed = time.time()
        flaky.kill()
        wait(lambda: any(s == "reconnecting" and t > killed for t, s in tap.states("flaky")), 20,
             "flaky to report reconnecting")
        time.sleep(max(0.0, killed + 5.0 - time.time()))
        back = flaky.start("square").ready_at
        assert back is not None
        wait(lambda: any(t > back and m["ts"] >= back for t, m in tap.detections("flaky")), 30,
             "a new frame of flaky after its server came back")
        first_new = min(t for t, m in tap.detections("flaky") if t > back and m["ts"] >= back)
        wait(lambda: [s for t, s in tap.states("flaky") if t > killed][-1:] == ["online"], 10,
             "flaky to report online again")
        time.sleep(2.0)
        end = time.time()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
        tap.close()
        steady.kill()
        flaky.kill()

    steady_msgs, flaky_msgs = tap.detections("steady"), tap.detections("flaky")
    normal = rate(steady_msgs, base_start, killed)
    during = rate(steady_msgs, killed, back)
    recovery = first_new - back
    fresh = ages(steady_msgs, "circle")
    returned = ages([(t, m) for t, m in flaky_msgs if m["ts"] >= back], "square")
    print(f"rtsp: picture age at capture: steady median {sorted(fresh)[len(fresh) // 2]:.2f} s; flaky after "
          f"its return: first {returned[0]:.2f} s, max {max(returned):.2f} s ({len(returned)} frames)")
    print(f"rtsp: steady {normal:.1f} msg/s before, {during:.1f} msg/s while flaky was down "
          f"({back - killed:.1f} s); flaky's first new frame processed {recovery:.2f} s after its server "
          f"returned (reconnect_max {RECONNECT_MAX:g} s); transports steady {set(steady.transports())}, "
          f"flaky {set(flaky.transports())}")
    # The healthy camera keeps its rate while the other one is gone.
    assert normal >= 5.0 and during >= 0.8 * normal, (normal, during)
    # The dead camera said so and came back: online -> reconnecting -> online, in that order.
    states = [s for _, s in tap.states("flaky")]
    assert "online" in states and states[states.index("online"):][:1] == ["online"]
    after_kill = [s for t, s in tap.states("flaky") if killed < t < end]  # ("stopped" at the end)
    assert after_kill[0] == "reconnecting" and after_kill[-1] == "online", after_kill
    # Back within the reconnect backoff (plus jitter) and 2 s, with slack for a shared CPU.
    assert recovery < RECONNECT_MAX * 1.25 + 2.0 + 3.0, recovery
    # No stale frame: capture times only move forward, and nothing captured before the server's
    # return was processed after the camera reported online again.
    ts = [m["ts"] for _, m in sorted(flaky_msgs, key=lambda x: x[1]["seq"])]
    assert ts == sorted(ts)
    online_again = min(t for t, s in tap.states("flaky") if t > back and s == "online")
    assert all(m["ts"] >= back for t, m in flaky_msgs if t > online_again)
    assert all(t < killed + 3.0 for t, m in flaky_msgs if m["ts"] < killed)
    # What the pictures show: the first life's shape never after the return, and every picture
    # processed after it as fresh as the steady camera's (FFmpeg's probing at open once handed
    # over 3 s of buffered frames, the first of them processed as new).
    old_life = [m for t, m in flaky_msgs if t > back and shapes(m) & {"circle"}]
    assert not old_life, old_life[:2]
    assert len(fresh) >= 10 and len(returned) >= 5, (len(fresh), len(returned))
    assert sorted(fresh)[len(fresh) // 2] < 1.0, sorted(fresh)
    assert max(returned) < 1.0, returned[:10]
    assert [m["seq"] for _, m in flaky_msgs] == list(range(1, len(flaky_msgs) + 1))
    assert max(t for t, _ in steady_msgs) > end - 2.5
    # Each camera used its own transport, on every (re)connection.
    assert set(steady.transports()) == {"tcp"} and set(flaky.transports()) == {"udp"}
    assert len(flaky.setups) >= 2
