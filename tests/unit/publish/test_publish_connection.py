"""Connection settings without a broker: backoff with jitter, TLS defaults, credentials that
never show, refusal messages that say what to fix, Home Assistant discovery configs."""

import json
import logging
import random
import ssl

import pytest

from agent.config.loader import AgentConfig
from agent.errors import PublishError
from agent.publish.connection import Endpoint, backoff_delay, describe_refusal, tls_context
from agent.publish.homeassistant import chosen_classes, discovery_messages, slug
from agent.publish.payloads import Topics


def config(**mqtt):
    return AgentConfig.model_validate({"cameras": [{"name": "front", "source": "0"}], "model": {"path": "m"},
                                       "mqtt": mqtt})


def test_backoff_doubles_up_to_the_maximum_with_jitter():
    rng = random.Random(1)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 30.0), (60, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # spread out, not lockstep


def test_tls_checks_certificate_and_host_name_by_default():
    ctx = tls_context(config(tls={"enabled": True}).mqtt.tls)
    assert ctx.check_hostname is True and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_context(config(tls={"enabled": True, "min_version": "1.3"}).mqtt.tls).minimum_version == \
        ssl.TLSVersion.TLSv1_3


def test_tls_insecure_is_explicit_and_loud(caplog):
    caplog.set_level(logging.WARNING)
    ctx = tls_context(config(tls={"enabled": True, "insecure": True}).mqtt.tls)
    assert ctx.check_hostname is False and ctx.verify_mode == ssl.CERT_NONE
    assert "NOT checked" in caplog.text


def test_missing_tls_files_name_the_key(tmp_path):
    with pytest.raises(PublishError, match=r"mqtt\.tls\.ca_file: cannot load"):
        tls_context(config(tls={"enabled": True, "ca_file": str(tmp_path / "nope.pem")}).mqtt.tls)
    cert = tmp_path / "c.pem"
    cert.write_text("garbage")
    with pytest.raises(PublishError, match="cert_file / key_file"):
        tls_context(config(tls={"enabled": True, "cert_file": str(cert), "key_file": str(cert)}).mqtt.tls)


def test_endpoint_keeps_the_password_out_of_sight(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\nsecond line ignored\n")
    endpoint = Endpoint.from_config(config(username="cam", password_file=str(secret), port=8883))
    assert endpoint.password == "hunter2" and "hunter2" not in repr(endpoint)
    assert endpoint.mask("auth failed for hunter2") == "auth failed for ***"
    assert endpoint.url == "mqtt://127.0.0.1:8883" and endpoint.client_id == "detection-agent-jetson-01"


def test_endpoint_errors_name_the_key(tmp_path):
    with pytest.raises(PublishError, match=r"mqtt\.password_file: cannot read"):
        Endpoint.from_config(config(username="u", password_file=str(tmp_path / "missing")))
    with pytest.raises(PublishError, match=r"mqtt\.username is not"):
        Endpoint.from_config(config(password="p"))


def test_refusals_say_what_to_fix():
    endpoint = Endpoint.from_config(config())
    assert "check mqtt.username and mqtt.password" in describe_refusal("Not authorized", endpoint)
    assert "check mqtt.username" in describe_refusal("Bad user name or password", endpoint)
    assert "check mqtt.client_id" in describe_refusal("Client identifier not valid", endpoint)
    plain = describe_refusal("Server unavailable", endpoint)
    assert plain.endswith("refused the connection: Server unavailable")


def test_discovery_configs():
    topics = Topics("detection-agent/jetson-01")
    out = dict(discovery_messages(discovery_prefix="homeassistant", topics=topics, device_id="jetson-01",
                                  cameras=["front", "back yard"], classes=["person", "traffic light"],
                                  model="m", version="1.0", location="garage"))
    assert len(out) == 1 + 2 * 2
    online = json.loads(out["homeassistant/binary_sensor/detection_agent_jetson-01/online/config"])
    assert online["device_class"] == "connectivity" and online["state_topic"] == topics.status
    key = "homeassistant/sensor/detection_agent_jetson-01/back_yard_traffic_light/config"
    sensor = json.loads(out[key])
    assert sensor["state_topic"] == topics.detections("back yard")
    assert sensor["device"]["suggested_area"] == "garage" and sensor["state_class"] == "measurement"
    assert len({json.loads(p)["unique_id"] for p in out.values()}) == len(out)


def test_discovery_class_choice_and_slugs():
    assert chosen_classes(["car"], ["person"], ["a", "b"]) == ["car"]
    assert chosen_classes(None, ["person"], ["a", "b"]) == ["person"]
    assert chosen_classes(None, None, ["a", "b"]) == ["a", "b"]
    assert slug("traffic light/#1") == "traffic_light_1" and slug("///") == "x"


def test_qos_2_is_sent_as_1_and_0_stays_0():
    from agent.publish.connection import wire_qos

    mq = config(qos=2, topic_qos={"snapshot": 0, "stats": 1}).mqtt
    assert [wire_qos(mq, k) for k in ("detections", "status", "snapshot", "stats")] == [1, 1, 0, 1]


def test_discovery_count_sensors_read_the_counts_topic():
    """With tracking, each line gets in/out sensors and each zone an occupancy sensor, their
    templates evaluated here on a real counts/1 payload (as Home Assistant's Jinja does)."""
    jinja2 = pytest.importorskip("jinja2")
    topics = Topics("detection-agent/jetson-01")
    out = dict(discovery_messages(discovery_prefix="homeassistant", topics=topics, device_id="jetson-01",
                                  cameras=["door"], classes=["person"], model="m", version="1.0",
                                  counting={"door": (["front door"], ["porch"])}))
    assert len(out) == 1 + 1 + 3
    counts = {"schema": "counts/1", "lines": {"front door": {"in": 4, "out": 1}},
              "zones": {"porch": {"total": 2, "by_label": {"person": 2}}}}
    values = {}
    for key, payload in out.items():
        config = json.loads(payload)
        if config.get("state_topic") == topics.counts("door"):
            values[key.split("/")[-2]] = jinja2.Template(config["value_template"]).render(value_json=counts)
            assert config["availability_topic"] == topics.status
    assert values == {"door_front_door_in": "4", "door_front_door_out": "1", "door_zone_porch": "2"}
