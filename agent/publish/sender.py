"""The sender thread: bounded queue -> spool -> in-flight window -> broker, and back on PUBACK.

One thread owns the spool and the paho client of the current connection; paho's network
thread only reports (CONNACK, PUBACK, SUBACK, disconnects) into an event list and wakes
the sender. So nothing is shared but that list, the bounded queue and the counters.

- Every QoS 1/2 message is appended to the spool, then sent from it in id order through a
  window of ``mqtt.inflight_max`` unacknowledged messages; its PUBACK deletes it.
- A new connection starts the cursor at 0: every message still in the spool (sent and
  unacknowledged, or waiting) goes out again in order before anything newer.
- With ``mqtt.hold_unrouted_s`` (MQTT 5), a PUBACK saying "no matching subscribers" keeps the
  message in the spool for a resend after that delay (see unrouted.py). The window and its
  cursor are window.py; the counters, sender_stats.py.
- QoS 0 messages are sent when connected, dropped (and counted) otherwise.
- Connected means a successful CONNACK of the current client, nothing less; on connect the
  retained ``online`` goes out and ``hooks.connected(client)`` runs (subscriptions,
  discovery). See connection.py for the one-client-per-connection loop.
- The thread never stops on an error of its own while messages wait: each part of a step
  (queue, events, connection, window, hooks) is guarded on its own, so a bug in one cannot
  starve the others; messages taken from the queue are kept until the spool has them. Such
  errors are counted (``internal_errors``, ``last_internal_error`` in ``counters()`` and
  so in the stats message) and logged: the first with its traceback, then a summary a
  minute. Any non-zero count is a bug to report.
- ``drain(True)`` (the run's input ended): reconnect at once and at most every second
  instead of backing off, so the owner can wait for the spool to empty before exiting.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import queue
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import paho.mqtt.client as paho

from agent.config.schema import MqttConfig, SpoolConfig
from agent.errors import PublishError
from agent.publish import connection
from agent.publish.payloads import STATUS_OFFLINE, STATUS_ONLINE
from agent.publish.sender_stats import SenderStats
from agent.publish.spool import Message, spool_from_config
from agent.publish.window import InflightWindow

log = logging.getLogger(__name__)

_TICK = 0.1  # seconds the sender sleeps when nothing happens
_HOUSEKEEPING_S = 10.0  # spool age bound, drop-log summaries, totals audit
_AUDIT_MAX = 10000  # audit the spool's totals only while it is this small: it reads every row
_DRAIN_RETRY_S = 1.0  # longest wait between connection attempts while draining
_BATCH = 256  # messages per spool transaction
_OLDEST_S = 1.0  # how often the age of the spool's oldest message is looked up (for metrics)
PUT_TIMEOUT = 0.05  # seconds a caller may wait for room in a full queue


class Hooks:
    """What the owner does at the sender's moments: ``connected(client)`` after CONNACK and the
    ``online`` status, ``tick()`` once per sender step (both on the sender thread), and
    ``message(msg)`` for an incoming PUBLISH (on paho's network thread: return at once)."""

    def __init__(self, connected: Callable[[paho.Client], None], message: Callable[[Any], None],
                 tick: Callable[[], None]) -> None:
        self.connected = connected
        self.message = message
        self.tick = tick


class Sender:
    """Moves messages to the broker without losing them; see the module docstring."""

    def __init__(self, mq: MqttConfig, spool_cfg: SpoolConfig, status_topic: str, hooks: Hooks) -> None:
        self.mq = mq
        self.spool_cfg = spool_cfg
        self.status_topic = status_topic
        self.status_qos = connection.wire_qos(mq, "status")
        self.hooks = hooks
        self.queue: queue.Queue = queue.Queue(maxsize=mq.queue_size)  # of Message
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # the event list
        self._progress = threading.Condition(self._lock)
        self._events: Deque[Tuple[Any, ...]] = collections.deque()
        self.stats = SenderStats(log)
        self.oldest_created: Optional[float] = None  # the spool's oldest message, refreshed each _OLDEST_S
        self.subscribed = False
        # Sender-thread state.
        self.endpoint: Optional[connection.Endpoint] = None
        self.spool: Any = None
        self.client: Optional[paho.Client] = None
        self.attempt = 0
        self._gen = 0
        self._next_attempt = 0.0
        self._connect_started = 0.0
        self.window = InflightWindow(mq.inflight_max, mq.hold_unrouted_s, self.stats)
        self._status_mid: Optional[int] = None
        self._status_acked = False
        self._deadline = 0.0
        self._thread: Optional[threading.Thread] = None
        self._teardowns: List[threading.Thread] = []
        self._last_fail_log: Tuple[float, str] = (0.0, "")
        self._unstored: List[Message] = []  # taken from the queue, not in the spool yet
        self.draining = False
        self.backlog_reported = False  # the owner said what stays in the spool: no warning at stop

    @property
    def state(self) -> str:
        """``down`` | ``connecting`` | ``up`` (after a successful CONNACK of the current client)."""
        return self.stats.state

    # -- called from other threads ---------------------------------------------------------------

    def start(self, endpoint: connection.Endpoint) -> None:
        self.endpoint = endpoint
        self.spool = spool_from_config(self.spool_cfg)
        self.window.replay_upto = self.spool.last_id() if len(self.spool) else 0  # an earlier run's backlog
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._thread.start()

    def submit(self, msg: Message) -> bool:
        """Queue a message; False (and counted) when the queue stays full or we are stopping."""
        if self.stopping.is_set() or self.spool is None:
            return False
        try:
            self.queue.put(msg, timeout=PUT_TIMEOUT)
        except queue.Full:
            self.drop("queue_full", f"publish queue full ({self.mq.queue_size}); the spool cannot keep up")
            return False
        self.wake.set()
        return True

    def drop(self, reason: str, why: str, count: int = 1) -> None:
        self.stats.drop(reason, why, count)

    def counters(self) -> Dict[str, Any]:
        return self.stats.report(self.attempt, self.window.unrouted.counters(), self.spool,
                                 self.oldest_created, len(self.window.inflight),
                                 self.queue.qsize() + len(self._unstored))

    def drain(self, on: bool) -> None:
        """While on, a lost broker is retried at once and then every second at most (the owner
        waits for the backlog to be acknowledged before exiting); off restores the backoff."""
        self.draining = on
        self.wake.set()

    def wait_progress(self, timeout: float) -> None:
        with self._progress:
            self._progress.wait(timeout)

    def stop(self, deadline: float) -> bool:
        """Ask the thread to finish by ``deadline`` (monotonic); True if it did.

        Closing old clients (paho may sit in a TCP connect) is waited for only while time is
        left; those threads are daemons and hold nothing of ours.
        """
        self._deadline = deadline
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        for thread in list(self._teardowns):
            thread.join(max(0.0, deadline - time.monotonic()))
        return self._thread is None or not self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        steps = (self._drain_queue, self._handle_events, self._maintain_connection, self._send_window,
                 self.hooks.tick)
        next_housekeeping = time.monotonic() + _HOUSEKEEPING_S
        next_oldest = 0.0
        while not self.stopping.is_set():
            self.wake.wait(_TICK)
            self.wake.clear()
            failed = False
            for step in steps:  # one at a time: a bug in one part must not starve the others
                failed = not self._guarded(step) or failed
            if time.monotonic() >= next_housekeeping:
                failed = not self._guarded(self._housekeeping) or failed
                next_housekeeping = time.monotonic() + _HOUSEKEEPING_S
            if time.monotonic() >= next_oldest:
                failed = not self._guarded(self._note_oldest) or failed
                next_oldest = time.monotonic() + _OLDEST_S
            with self._progress:
                self._progress.notify_all()
            if failed:
                self.stopping.wait(_TICK)  # no busy loop on an error that repeats
        self._shutdown()

    def _guarded(self, step: Callable[[], None]) -> bool:
        """Run one part of a sender step; an exception is counted and logged, never raised."""
        try:
            step()
            return True
        except Exception as exc:
            self._internal_error(getattr(step, "__name__", "step"), exc)
            return False

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self.stats.internal_error(f"{where.lstrip('_')}: {type(exc).__name__}: {exc}", exc)
        if self.spool is not None and len(self.spool) <= _AUDIT_MAX:
            with contextlib.suppress(Exception):  # the totals may be what went wrong
                self.spool.audit()

    def _housekeeping(self) -> None:
        self.spool.trim(self.window.cursor, check_age=True, held=self.window.unrouted)
        self.spool.flush_log()
        self.stats.internal_log.flush()
        if len(self.spool) <= _AUDIT_MAX and not self.spool.audit():
            raise RuntimeError("the spool's running totals differed from its store")

    def _note_oldest(self) -> None:
        self.oldest_created = self.spool.oldest_created()

    def _drain_queue(self, limit: int = 100 * _BATCH) -> None:
        # Messages a failed step took from the queue come first: taken means ours to keep.
        batch, self._unstored = [m for m in self._unstored if not m.id], []
        while len(batch) < limit:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        self._unstored = batch
        stored = [m for m in batch if m.qos > 0]
        for msg in [m for m in batch if m.qos == 0]:
            self._unstored.remove(msg)  # not worth keeping: send if we can, else drop
            if self.state == "up" and self.client is not None:
                self.client.publish(msg.topic, msg.payload, 0, msg.retain)
                self.stats.bump("sent")
                self.stats.bump_published(msg.topic)
            else:
                self.drop("qos0_offline", "QoS 0 messages are not kept while the broker is away")
        if not stored:
            self._unstored = []
            return
        window = self.window
        must_wait = (self.state != "up" or self.spool.has_after(window.cursor)
                     or len(window.inflight) + len(stored) > self.mq.inflight_max)
        if must_wait:  # counted first: whoever sees them in the backlog sees them counted
            self.stats.bump("spooled", len(stored))
        for start in range(0, len(stored), _BATCH):
            self.spool.add(stored[start:start + _BATCH], inflight_above=window.cursor, held=window.unrouted)
        self._unstored = []
        if must_wait:
            window.replay_upto = max(window.replay_upto, max(m.id for m in stored))

    def _handle_events(self) -> None:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        acked: List[Message] = []
        try:
            for event in events:
                if event[1] == self._gen:  # else from a client already thrown away
                    self._guarded(functools.partial(self._handle_event, event, acked))
        finally:
            if acked:  # even after an error: what the broker acknowledged leaves the spool
                self.spool.remove(acked)

    def _handle_event(self, event: Tuple[Any, ...], acked: List[Message]) -> None:
        kind = event[0]
        if kind == "puback":
            mid = event[2]
            if self.window.acknowledged(mid, event[3], acked) is None:  # not the window's: the status?
                self._status_acked = self._status_acked or mid == self._status_mid
        elif kind == "suback":
            self.subscribed = not any(getattr(code, "is_failure", False) for code in event[2])
            if not self.subscribed:
                log.error("the broker refused a subscription (%s): commands will not arrive; check the "
                          "broker's ACL", event[2])
        elif kind == "connack":
            self._on_connack(event[2], event[3])
        else:  # disconnect, fail
            self._on_down(event[2])

    def _maintain_connection(self) -> None:
        now = time.monotonic()
        if self.draining:
            self._next_attempt = min(self._next_attempt, now + _DRAIN_RETRY_S)
        if self.state == "down" and now >= self._next_attempt and not self.stopping.is_set():
            self._connect()
        elif self.state == "connecting" and now - self._connect_started > self.mq.connect_timeout:
            self._on_down(f"no CONNACK from {self.endpoint_url} within {self.mq.connect_timeout:g} s")

    def _send_window(self) -> None:
        if self.client is not None:
            self.window.send(self.client, self.spool, self.state == "up")

    # -- connection state ------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return self.endpoint.url if self.endpoint else "the broker"

    def _connect(self) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            raise PublishError("the MQTT sender connects only after start()")
        self._gen += 1
        gen = self._gen
        client = connection.new_client(endpoint, will_topic=self.status_topic, will_qos=self.status_qos,
                                       inflight_max=self.mq.inflight_max)
        client.on_connect = lambda c, u, flags, rc, props: self._event("connack", gen, rc, flags)
        client.on_connect_fail = lambda c, u: self._event("fail", gen,
                                                          connection.describe_failure(c, endpoint))
        client.on_disconnect = lambda c, u, flags, rc, props: self._event("disconnect", gen,
                                                                          f"disconnected: {rc}")
        client.on_publish = lambda c, u, mid, rc, props: self._event("puback", gen, mid, rc)
        client.on_subscribe = lambda c, u, mid, codes, props: self._event("suback", gen, codes)
        client.on_message = lambda c, u, message: self.hooks.message(message)
        self.client = client
        self.stats.set_state("connecting")
        self._connect_started = time.monotonic()
        try:
            connection.connect_async(client, endpoint)
        except (OSError, ValueError) as exc:
            self._on_down(f"cannot start connecting to {endpoint.url}: {endpoint.mask(str(exc))}")

    def _event(self, *event: Any) -> None:
        with self._lock:
            self._events.append(event)
        self.wake.set()

    def _on_connack(self, reason: Any, flags: Any) -> None:
        endpoint, client = self.endpoint, self.client
        if endpoint is None or client is None:  # events of a client already gone are filtered out
            raise PublishError("a CONNACK without a current client")
        if getattr(reason, "is_failure", False):
            self._on_down(connection.describe_refusal(reason, endpoint), refused=True)
            return
        self.stats.connected()
        self.attempt = 0
        self.window.cursor = 0  # resend everything not yet acknowledged, oldest first
        log.info("connected to %s as %s (session present: %s); %d message(s) waiting", endpoint.url,
                 endpoint.client_id, bool(getattr(flags, "session_present", False)), len(self.spool))
        info = client.publish(self.status_topic, STATUS_ONLINE, self.status_qos, retain=True)
        self._status_mid, self._status_acked = info.mid, False
        self.hooks.connected(client)

    def _on_down(self, reason: str, refused: bool = False) -> None:
        was_up = self.state == "up"
        client, self.client = self.client, None
        self._gen += 1  # ignore whatever that client still reports
        self.stats.set_state("down", reason)
        self.window.lost()
        self.subscribed = False
        if client is not None:
            self._teardown(client)
        delay = connection.backoff_delay(self.attempt, self.mq.reconnect_min, self.mq.reconnect_max)
        self.attempt += 1
        now = time.monotonic()
        self._next_attempt = now + delay
        last_time, last_reason = self._last_fail_log
        if was_up:
            log.warning("lost the connection to %s (%s); %d message(s) not acknowledged yet will be sent "
                        "again; reconnecting in %.1f s", self.endpoint_url, reason, len(self.spool), delay)
        elif reason != last_reason or now - last_time > 60.0:
            (log.error if refused else log.warning)("%s; retrying in %.1f s (attempt %d)", reason, delay,
                                                      self.attempt)
            self._last_fail_log = (now, reason)
        else:
            log.debug("%s; retrying in %.1f s (attempt %d)", reason, delay, self.attempt)

    def _teardown(self, client: paho.Client) -> None:
        thread = connection.close_in_background(client)
        self._teardowns = [t for t in self._teardowns if t.is_alive()] + [thread]

    # -- shutdown --------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        deadline = self._deadline or time.monotonic() + 5.0
        try:
            self._guarded(lambda: self._drain_queue(limit=self.mq.queue_size + 1))
            self._guarded(self._handle_events)
            client = self.client
            if self.state == "up" and client is not None:
                # What was queued last (each camera's final retained status) goes out now and its
                # PUBACK is waited for, within the bound: a retained "online" must not outlive a
                # clean stop. Acknowledged messages are also not sent again after a restart.
                self._wait_events(lambda: self.window.idle(self.spool), deadline, share=0.6, send=True)
                info = client.publish(self.status_topic, STATUS_OFFLINE, self.status_qos, retain=True)
                self._status_mid, self._status_acked = info.mid, False
                self._wait_events(lambda: self._status_acked or self.state != "up", deadline, share=0.8)
            if client is not None:
                self.client = None
                self._teardown(client)  # a clean DISCONNECT: the broker discards the will
            self.stats.set_state("down")
            left = len(self.spool)
            if left and not self.backlog_reported:
                where = "kept in the spool for the next start" if self.spool.mode == "disk" else \
                    "LOST (the spool is in memory)"
                log.warning("%d unacknowledged message(s) %s", left, where)
        except Exception:
            log.exception("MQTT publisher shutdown failed")
        finally:
            self.stats.internal_log.close()
            self.spool.close()
            with self._progress:
                self._progress.notify_all()

    def _wait_events(self, done: Callable[[], bool], deadline: float, share: float,
                     send: bool = False) -> None:
        """Handle events (and send the window with ``send``) until ``done()`` or ``share`` of the
        time left before ``deadline`` has passed."""
        until = time.monotonic() + max(0.0, deadline - time.monotonic()) * share
        while True:
            if send:
                self._guarded(self._send_window)
            if done() or time.monotonic() >= until:
                return
            self.wake.wait(min(_TICK, max(0.0, until - time.monotonic())))
            self.wake.clear()
            self._guarded(self._handle_events)


__all__ = ["PUT_TIMEOUT", "Hooks", "Sender"]
