"""Fixtures for the MQTT integration tests: a private Mosquitto per test, certificates,
agent configs wired to that broker, and publishers that are always stopped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

import pytest
from mosquitto import MOSQUITTO, Mosquitto, make_certificates, stop_all

from agent.config.loader import AgentConfig


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()  # a broker a crashed test left running


def _need_mosquitto() -> None:
    if not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)):
        pytest.fail("the MQTT tests need the mosquitto broker: run `make test` (installs it as root) or "
                    "`apt-get install -y mosquitto`")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker with persistence, stopped after the test whatever happened."""
    _need_mosquitto()
    instance = Mosquitto(tmp_path / "broker")
    try:
        yield instance.start()
    finally:
        instance.kill()


@pytest.fixture
def idle_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker configured (its port chosen) but not started; the test starts it."""
    _need_mosquitto()
    instance = Mosquitto(tmp_path / "broker")
    try:
        yield instance
    finally:
        instance.kill()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    if not shutil.which("openssl"):
        pytest.fail("the TLS tests need the openssl command")
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def publishers() -> Iterator[Callable[..., Any]]:
    """``publishers(config)`` -> a started MqttPublisher, stopped at teardown."""
    from agent.publish.mqtt import MqttPublisher

    made: List[MqttPublisher] = []

    def make(config: AgentConfig, names: Sequence[str] = ("person", "car", "dog"), start: bool = True
             ) -> MqttPublisher:
        pub = MqttPublisher(config, "test-model", list(names))
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(2.0)
