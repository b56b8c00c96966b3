"""TLS (CA, client certificate, host name check) and user name / password against a real
Mosquitto; wrong settings give a clear error and retries, never a crash or a leaked secret."""

from __future__ import annotations

import json
import logging
import time

import pytest
from mosquitto import Mosquitto, Subscriber, agent_config, detections, make_password_file, wait

from agent.errors import PublishError

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_broker(tmp_path, certs):
    broker = Mosquitto(tmp_path / "tls-broker", tls={
        "cafile": str(certs["ca.crt"]), "certfile": str(certs["server.crt"]),
        "keyfile": str(certs["server.key"]), "require_certificate": "true"})
    try:
        yield broker.start()
    finally:
        broker.kill()


def tls_settings(broker, certs, host="localhost", **tls):
    settings = {"enabled": True, "ca_file": str(certs["ca.crt"]), "cert_file": str(certs["client.crt"]),
                "key_file": str(certs["client.key"])}
    settings.update(tls)
    return {"host": host, "port": broker.tls_port, "tls": settings}


def test_tls_with_ca_and_client_certificate(tls_broker, tmp_path, certs, publishers):
    sub = Subscriber(tls_broker, ["detection-agent/+/+/detections"])  # on the plain listener
    pub = publishers(agent_config(tls_broker, tmp_path, mqtt=tls_settings(tls_broker, certs)))
    assert pub.wait_for(lambda c: c["connected"], 10), pub.counters()["last_error"]
    for i in range(5):
        pub.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
    wait(lambda: len(sub.payloads()) >= 5, 10, "messages over TLS")
    assert [json.loads(p)["seq"] for p in sub.payloads()] == [1, 2, 3, 4, 5]
    sub.close()


def test_tls_host_name_is_checked_by_default(tls_broker, tmp_path, certs, publishers):
    # The server certificate names only DNS:localhost; 127.0.0.1 is the same broker, wrong name.
    mqtt = tls_settings(tls_broker, certs, host="127.0.0.1")
    pub = publishers(agent_config(tls_broker, tmp_path, mqtt=mqtt))
    assert pub.wait_for(lambda c: (c["last_error"] or "").startswith("TLS certificate check failed"), 10)
    error = pub.counters()["last_error"]
    assert "127.0.0.1" in error and "mqtt.tls.ca_file" in error
    assert pub.wait_for(lambda c: c["attempts"] >= 3, 10)  # it keeps retrying
    assert not pub.connected


def test_tls_insecure_must_be_set_explicitly_and_then_skips_the_check(tls_broker, tmp_path, certs, publishers,
                                                                     caplog):
    caplog.set_level(logging.WARNING)
    mqtt = tls_settings(tls_broker, certs, host="127.0.0.1", insecure=True)
    pub = publishers(agent_config(tls_broker, tmp_path, mqtt=mqtt))
    assert pub.wait_for(lambda c: c["connected"], 10), pub.counters()["last_error"]
    assert any("NOT checked" in r.getMessage() for r in caplog.records)


def test_tls_without_the_required_client_certificate_fails_clearly(tls_broker, tmp_path, certs, publishers):
    mqtt = tls_settings(tls_broker, certs, cert_file=None, key_file=None)
    pub = publishers(agent_config(tls_broker, tmp_path, mqtt=mqtt))
    assert pub.wait_for(lambda c: c["last_error"] is not None and c["attempts"] >= 2, 10)
    assert not pub.connected


def test_unreadable_tls_files_are_a_config_error(broker, tmp_path, publishers):
    mqtt = {"tls": {"enabled": True, "ca_file": str(tmp_path / "missing-ca.pem")}}
    with pytest.raises(PublishError, match=r"mqtt\.tls\.ca_file"):
        publishers(agent_config(broker, tmp_path, mqtt=mqtt))


@pytest.fixture
def auth_broker(tmp_path):
    folder = tmp_path / "auth-broker"
    folder.mkdir()
    broker = Mosquitto(folder, password_file=make_password_file(folder / "passwd", {
        "agent": "s3cret-Pw!", "reader": "reader-pw"}))
    try:
        yield broker.start()
    finally:
        broker.kill()


def test_user_name_and_password_from_a_file(auth_broker, tmp_path, publishers, caplog):
    caplog.set_level(logging.DEBUG)
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret-Pw!\n")
    sub = Subscriber(auth_broker, ["detection-agent/+/+/detections"], username="reader", password="reader-pw")
    pub = publishers(agent_config(auth_broker, tmp_path, mqtt={"username": "agent",
                                                               "password_file": str(password_file)}))
    assert pub.wait_for(lambda c: c["connected"], 10), pub.counters()["last_error"]
    pub.publish_detections("front", 0, time.time(), 64, 48, detections(1), {})
    wait(lambda: sub.payloads(), 10, "a message")
    assert "s3cret-Pw!" not in caplog.text
    sub.close()


def test_wrong_password_gives_a_clear_error_and_retries_without_leaking_it(auth_broker, tmp_path, publishers,
                                                                           caplog):
    caplog.set_level(logging.DEBUG)
    mqtt = {"username": "agent", "password": "wrong-Pw-42"}
    pub = publishers(agent_config(auth_broker, tmp_path, mqtt=mqtt))
    for i in range(3):
        assert pub.publish_detections("front", i, time.time(), 64, 48, detections(1), {})
    assert pub.wait_for(lambda c: c["attempts"] >= 3 and c["backlog"] == 3, 15)  # refused, retried, alive
    counters = pub.counters()
    assert not counters["connected"] and counters["connects"] == 0
    assert "refused the connection" in counters["last_error"]
    assert "mqtt.username" in counters["last_error"]  # says what to fix
    assert counters["backlog"] == 3  # kept for when the credentials are fixed
    assert "wrong-Pw-42" not in caplog.text
    assert any(r.levelno == logging.ERROR and "refused" in r.getMessage() for r in caplog.records)
