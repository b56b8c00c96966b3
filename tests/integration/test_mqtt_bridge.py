"""Site to centre: the agent -> site Mosquitto -> bridge (TLS, client certificate) -> central
Mosquitto -> ``detection-agent record``, with the central broker restarted mid-run."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml
from bridge import add_bridge
from mosquitto import Mosquitto, Subscriber, wait
from test_mqtt_record import Record
from test_run import MODEL, start_agent

from agent.datasets.video import make_video

pytestmark = pytest.mark.integration


@pytest.fixture
def site_and_centre(tmp_path, certs):
    central = Mosquitto(tmp_path / "central", tls={
        "cafile": str(certs["ca.crt"]), "certfile": str(certs["server.crt"]),
        "keyfile": str(certs["server.key"]), "require_certificate": "true"})
    site = Mosquitto(tmp_path / "site")
    add_bridge(site, central, certs=certs)
    try:
        central.start()
        site.start()
        yield site, central
    finally:
        site.kill()
        central.kill()


def bridge_state(site: Mosquitto) -> Subscriber:
    return Subscriber(site, ["$SYS/broker/connection/#"])


def test_nothing_is_lost_end_to_end_while_the_central_broker_restarts(site_and_centre, tmp_path):
    site, central = site_and_centre
    states = bridge_state(site)
    wait(lambda: states.payloads()[-1:] == [b"1"], 15, "the bridge to connect")
    out = tmp_path / "central.jsonl"
    record = Record("--broker", central.address, "--client-id", "central-recorder", "--out", str(out),
                    "--duration", "120")
    local = Subscriber(site, ["detection-agent/+/+/detections"])  # what the agent published, at the site
    video = tmp_path / "clip.mp4"
    make_video(video, frames=30, fps=10, seed=3, width=320, height=240)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "device": {"id": "site-cam-box"},
        "cameras": [{"name": "gate", "source": str(video), "loop": True, "realtime": True, "fps": 10}],
        "model": {"path": str(MODEL), "warmup_runs": 0},
        "mqtt": {"host": site.host, "port": site.port, "keepalive": 5, "reconnect_min": 0.05,
                 "reconnect_max": 0.4, "stats_interval": 3600},
        "spool": {"path": str(tmp_path / "spool.db")},
        "service": {"state_dir": str(tmp_path / "state")},
    }))
    agent = start_agent(config, "--duration", "14")
    try:
        wait(lambda: len(local.payloads()) >= 20, 60, "the agent's first detections at the site")
        central.stop()  # graceful: the central broker keeps the recorder's session and queue
        down = time.monotonic()
        wait(lambda: states.payloads()[-1:] == [b"0"], 15, "the bridge to notice the link is down")
        published_during_outage = len(local.payloads())
        time.sleep(3.0)
        published_during_outage = len(local.payloads()) - published_during_outage
        central.start()
        up = time.monotonic()
        wait(lambda: states.payloads()[-1:] == [b"1"], 30, "the bridge to reconnect")
        reconnect_s = time.monotonic() - up
        _, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, err[-3000:]
        sent = [json.loads(p) for p in local.payloads()]
        wait(lambda: out.exists() and len(out.read_text().splitlines()) >= len(sent), 30,
             f"{len(sent)} messages at the centre")
    finally:
        if agent.poll() is None:
            agent.kill()
        local.close()
        states.close()
    record.proc.send_signal(signal.SIGTERM)
    report = record.finish()
    got = [json.loads(line) for line in out.read_text().splitlines()]
    seqs = [m["seq"] for m in sent]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 60  # the agent's side: contiguous
    assert published_during_outage >= 10  # the link was down while the agent went on publishing
    assert sorted({m["seq"] for m in got}) == seqs, report  # every seq reached the centre
    assert {m["run"] for m in got} == {sent[0]["run"]}
    print(f"bridge: {len(seqs)} messages, {published_during_outage} published while the link was down, "
          f"bridge back {reconnect_s:.1f} s after the central broker (down {up - down:.1f} s); "
          f"{len(got) - len(seqs)} duplicate(s) at the centre")


def test_the_bridge_carries_only_the_agents_topics(site_and_centre, tmp_path):
    site, central = site_and_centre
    states = bridge_state(site)
    wait(lambda: states.payloads()[-1:] == [b"1"], 15, "the bridge to connect")
    states.close()
    centre = Subscriber(central, ["#"])
    try:
        pub = Subscriber(site, ["unused/never"])  # any client: publish two messages at the site
        pub.client.publish("detection-agent/box/cam/detections", b"{}", 1).wait_for_publish(5)
        pub.client.publish("site/private/thing", b"x", 1).wait_for_publish(5)
        wait(lambda: centre.payloads("/detections") == [b"{}"], 10, "the agent's topic at the centre")
        time.sleep(0.5)
        assert not [m for m in centre.messages if m.topic.startswith("site/")]
        pub.close()
    finally:
        centre.close()
