import os
import signal
import socket

import pytest

from agent.runtime.service import (
    Notifier,
    install_signal_handlers,
    restore_signal_handlers,
    watchdog_interval,
)


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


def test_a_sighup_held_from_start_up_becomes_one_reload():
    from agent.runtime.service import hold_reload_signal

    hold_reload_signal()
    os.kill(os.getpid(), signal.SIGHUP)  # the default action would end the process here
    os.kill(os.getpid(), signal.SIGHUP)
    calls = []
    previous = install_signal_handlers(lambda: calls.append("stop"), lambda: calls.append("reload"))
    try:
        assert calls == ["reload"]  # held ones applied once: the config is re-read, not twice
        os.kill(os.getpid(), signal.SIGHUP)
        assert calls == ["reload", "reload"]
    finally:
        restore_signal_handlers(previous)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_second_lock_on_one_state_dir_is_refused_with_the_owner(tmp_path):
    from agent.errors import AlreadyRunningError
    from agent.runtime.service import InstanceLock

    first = InstanceLock(tmp_path / "state")
    assert first.acquire("agent.yaml") is True  # creates the folder
    second = InstanceLock(tmp_path / "state")
    with pytest.raises(AlreadyRunningError) as info:
        second.acquire("agent.yaml")
    assert info.value.exit_code == 3
    assert f"(pid {os.getpid()})" in str(info.value) and "service.state_dir of agent.yaml" in str(info.value)
    first.release()
    assert second.acquire() is True  # released with the file: no stale lock
    second.release()


def test_a_state_dir_that_cannot_be_made_only_warns(tmp_path, caplog):
    from agent.runtime.service import InstanceLock

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert InstanceLock(blocker / "state").acquire() is False
    assert "cannot lock" in caplog.text
