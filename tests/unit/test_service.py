import os
import signal
import socket

import pytest

from agent.service import Notifier, install_signal_handlers, restore_signal_handlers, watchdog_interval


@pytest.fixture
def systemd_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_notifier_speaks_the_sd_notify_protocol(systemd_socket):
    path, sock = systemd_socket
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.ready("model loaded")
    assert sock.recv(1024) == b"READY=1\nSTATUS=model loaded"
    notifier.watchdog()
    assert sock.recv(1024) == b"WATCHDOG=1"
    notifier.status("12.5 fps")
    assert sock.recv(1024) == b"STATUS=12.5 fps"
    notifier.close()


def test_abstract_socket_addresses(tmp_path):
    name = f"detection-agent-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).stopping()
        assert sock.recv(64) == b"STOPPING=1"
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()


def test_a_vanished_systemd_is_not_fatal(tmp_path):
    assert Notifier(str(tmp_path / "gone")).watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_signals_become_callbacks():
    calls = []
    previous = install_signal_handlers(lambda: calls.append("stop"), lambda: calls.append("reload"))
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        restore_signal_handlers(previous)
    assert calls == ["reload", "stop"]
