"""The MQTT publisher: detections, stats, status, snapshots and commands, losing nothing.

API (the pipeline's publish thread calls it; every method is thread-safe)::

    pub = MqttPublisher(config, model_name="yolov3-tiny", class_names=names)
    pub.start()                                   # returns at once; connects in the background
    pub.commands.register("pause", callback)      # when mqtt.commands.enabled (see commands.py)
    pub.set_stats_provider(lambda: {"cameras": {...}})   # merged into every stats message
    pub.publish_detections(camera, frame_index, capture_ts, width, height, detections, latency_ms)
    pub.publish_events(camera, events)            # tracking: events/1, own seq per camera
    pub.publish_counts(camera, ts, counts)        # tracking: retained counts/1
    pub.publish_snapshot(camera, jpeg_bytes)      # see runtime/draw.py snapshot_jpeg
    pub.publish_stats(extra)                      # now; also every mqtt.stats_interval by itself
    pub.counters()                                # sent, acked, spooled, replayed, dropped, ...
    pub.wait_for(lambda c: c["connected"], 10)    # wait for a condition on the counters
    left = pub.drain(30, abort=stop_event)        # input ended: wait until all is acknowledged
    pub.stop(timeout=5.0)                         # offline (retained), disconnect, spool kept

``publish_*`` never wait for the network: they encode the message and put it on a bounded
queue (``mqtt.queue_size``). If that queue stays full for 50 ms (the disk cannot keep up)
the message is dropped and counted, and a detections message's ``seq`` is used anyway so
consumers see the gap. They return whether the message was accepted (False also for
frames that ``skip_empty`` / ``max_rate`` skip, and after ``stop``).

``seq`` is per camera topic, +1 per published message (detections and events count
separately); ``run`` is new at each start;
``skipped`` says how many frames were skipped since the previous message (payloads.py).

Delivery (sender.py, spool.py, connection.py): every QoS 1/2 message is kept in the spool
(SQLite, WAL, in the state directory) until the broker's PUBACK; after a reconnect, or a
restart of the agent, unacknowledged messages are resent in order before new ones;
duplicates are possible and visible through ``seq``.

``counters()`` keys: ``sent``, ``acked``, ``spooled``, ``replayed``, ``dropped`` (and
``dropped_by`` reason), ``published_by`` (delivered messages by topic kind: acknowledged, or
sent for QoS 0), ``reconnects``, ``connects``, ``attempts`` (failed since the last
success), ``connected``, ``state``, ``last_error``, ``backlog`` (and ``backlog_bytes``,
``backlog_age_s``: the age of the oldest waiting message), ``inflight``, ``queue``,
``spool`` (disk | memory), ``internal_errors`` and ``last_internal_error`` (bugs inside the
sender, which goes on: a health signal), ``commands`` (handled, failed, subscribed),
``unrouted``, ``unrouted_held``, ``unrouted_resent`` (MQTT 5 PUBACKs saying no subscriber
matched, and what ``mqtt.hold_unrouted_s`` keeps and resends of those: unrouted.py).
docs/mqtt.md has the topic contract.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import paho.mqtt.client as paho

from agent.config.schema import AgentConfig
from agent.publish import connection, homeassistant
from agent.publish.commands import Commands, request_id, response_topic_allowed
from agent.publish.connection import wire_qos
from agent.publish.payloads import (
    FrameGate,
    Topics,
    counts_payload,
    detections_payload,
    encode,
    event_payload,
    new_run_id,
    result_payload,
    stats_payload,
)
from agent.publish.sender import PUT_TIMEOUT, Hooks, Sender
from agent.publish.spool import Message
from agent.types import Detections

log = logging.getLogger(__name__)


class MqttPublisher:
    """Publishes one agent's messages to one broker; see the module docstring for the API."""

    def __init__(self, config: AgentConfig, model_name: str, class_names: Sequence[str]) -> None:
        self.config = config
        self.mq = config.mqtt
        self.model_name = model_name
        self.class_names = list(class_names)
        self.topics = Topics(config.topic_root)
        self.run = new_run_id()
        self.started = time.time()
        self.commands = Commands([c.name for c in config.enabled_cameras], self.class_names,
                                 self.mq.commands.max_payload)
        classes = ("detections", "stats", "status", "snapshot", "result", "events", "counts")
        self._qos = {name: wire_qos(self.mq, name) for name in classes}
        downgraded = [name for name in classes if self.mq.qos_for(name) == 2]
        if downgraded:
            log.warning("QoS 2 (%s) is sent as QoS 1: delivery stays at least once with the spool, "
                        "duplicates are marked by seq (see docs/mqtt.md)", ", ".join(downgraded))
        hooks = Hooks(connected=self._on_connected, message=self._on_message, tick=self._on_tick)
        self._sender = Sender(self.mq, config.spool, self.topics.status, hooks)
        self._pub_lock = threading.Lock()  # seq order = queue order
        self._gates: Dict[str, FrameGate] = {}
        self._seq: Dict[str, int] = {}
        self._event_seq: Dict[str, int] = {}
        self._stats_provider: Optional[Callable[[], Mapping[str, Any]]] = None
        self._next_stats = 0.0
        self._cmd_queue: queue.Queue = queue.Queue(maxsize=16)  # of (name, payload, retained, props)
        self._cmd_thread: Optional[threading.Thread] = None
        self._started = False

    # -- public API --------------------------------------------------------------------------

    def start(self) -> None:
        """Resolve credentials and TLS, open the spool, start the threads.

        Raises ``PublishError`` for what the user must fix (unreadable password file, bad TLS
        files). A broker that cannot be reached is no error: it is retried with backoff.
        """
        if self._started:
            return
        endpoint = connection.Endpoint.from_config(self.config)
        self._next_stats = time.monotonic() + self.mq.stats_interval
        self._sender.start(endpoint)
        self._started = True
        log.info("MQTT publisher for %s (client id %s, run %s), spool %s", endpoint.url, endpoint.client_id,
                 self.run, self._sender.spool.mode)
        if self.mq.commands.enabled:
            self._cmd_thread = threading.Thread(target=self._command_loop, name="mqtt-commands", daemon=True)
            self._cmd_thread.start()

    def publish_detections(self, camera: str, frame_index: int, capture_ts: float, width: int, height: int,
                           detections: Detections, latency_ms: Mapping[str, float],
                           zones: Optional[Sequence[Sequence[str]]] = None,
                           track_ids: Optional[Sequence[Optional[int]]] = None) -> bool:
        """Queue the detections message of one processed frame; False if skipped or dropped.

        ``zones``: per detection, the names of the camera's zones it is in (cameras with zones).
        ``track_ids``: per detection, its confirmed track's id or None (tracking on).
        """
        if not self._started or self._sender.stopping.is_set():
            return False
        now = time.monotonic()
        with self._pub_lock:
            gate = self._gates.get(camera)
            if gate is None:
                gate = self._gates[camera] = FrameGate(self.mq.skip_empty, self.mq.max_rate)
            if not gate.admit(len(detections), now):
                return False
            seq = self._seq.get(camera, 0) + 1
            self._seq[camera] = seq  # used even if the message is dropped, so consumers see the loss
            payload = detections_payload(
                device=self.config.device.id, camera=camera, run=self.run, seq=seq, frame=frame_index,
                skipped=gate.take_skipped(), ts=capture_ts, width=width, height=height, model=self.model_name,
                latency_ms=latency_ms, detections=detections, names=self.class_names, zones=zones,
                track_ids=track_ids)
            try:
                data = encode(payload)
            except ValueError as exc:  # NaN or infinity from a broken model: not JSON
                self._sender.drop("invalid", f"frame {frame_index} of {camera} cannot be encoded: {exc}")
                return False
            return self._sender.submit(Message(self.topics.detections(camera), data, self._qos["detections"]))

    def publish_events(self, camera: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Queue one ``events/1`` message per event, in order; returns how many were accepted.

        The events topic has its own ``seq`` per camera (+1 per message, from 1), taken even
        by a message that is dropped, so a consumer sees the loss. No gate applies: events are
        never skipped (``skip_empty`` and ``max_rate`` are for detections).
        """
        if not self._started or self._sender.stopping.is_set():
            return 0
        accepted = 0
        topic = self.topics.events(camera)
        with self._pub_lock:
            for event in events:
                seq = self._event_seq.get(camera, 0) + 1
                self._event_seq[camera] = seq
                payload = event_payload(device=self.config.device.id, camera=camera, run=self.run, seq=seq,
                                        event=event)
                try:
                    data = encode(payload)
                except ValueError as exc:
                    self._sender.drop("invalid", f"event {seq} of {camera} cannot be encoded: {exc}")
                    continue
                accepted += bool(self._sender.submit(Message(topic, data, self._qos["events"])))
        return accepted

    def publish_counts(self, camera: str, ts: float, counts: Mapping[str, Any]) -> bool:
        """Queue the retained ``counts/1`` of ``camera``; only the newest unsent one waits in the spool."""
        if not self._started or self._sender.stopping.is_set():
            return False
        payload = counts_payload(device=self.config.device.id, camera=camera, run=self.run, ts=ts,
                                 counts=counts)
        return self._sender.submit(Message(self.topics.counts(camera), encode(payload), self._qos["counts"],
                                           retain=True, key=f"counts/{camera}"))

    def publish_snapshot(self, camera: str, jpeg: bytes) -> bool:
        """Queue a JPEG for ``{camera}/snapshot`` (QoS ``topic_qos.snapshot``, 0 by default)."""
        return self._sender.submit(Message(self.topics.snapshot(camera), bytes(jpeg), self._qos["snapshot"]))

    def publish_stats(self, extra: Optional[Mapping[str, Any]] = None) -> bool:
        """Queue a retained stats message now: ``extra`` merged with the publisher's counters.

        Only the newest stats message waits in the spool; older unsent ones are replaced.
        """
        payload = stats_payload(device=self.config.device.id, run=self.run, started=self.started,
                                mqtt=self.counters(), extra=extra)
        return self._sender.submit(Message(self.topics.stats, encode(payload), self._qos["stats"],
                                           retain=True, key="stats"))

    def publish_camera_status(self, camera: str, state: str) -> bool:
        """Retained ``{camera}/status``: ``online``, ``reconnecting``, ``failed: reason``, ``finished``.

        Only the newest state of a camera waits in the spool; an older unsent one is replaced.
        """
        return self._sender.submit(Message(self.topics.camera_status(camera), state.encode("utf-8"),
                                           self._qos["status"], retain=True, key=f"camera-status/{camera}"))

    def set_stats_provider(self, provider: Optional[Callable[[], Mapping[str, Any]]]) -> None:
        """``provider()`` (called on the sender thread) adds its keys to each periodic stats message."""
        self._stats_provider = provider

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._sender.state == "up"

    def counters(self) -> Dict[str, Any]:
        """The publisher's counters (module docstring), for stats and tests."""
        out = self._sender.counters()
        out["commands"] = {"handled": self.commands.handled, "failed": self.commands.failed,
                           "subscribed": self._sender.subscribed}
        return out

    def wait_for(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float) -> bool:
        """Wait until ``predicate(counters())`` holds (checked after each sender step)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.counters()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sender.wait_progress(min(remaining, 0.1))
        return True

    def drain(self, timeout: float, abort: Optional[threading.Event] = None) -> int:
        """Wait until the broker has acknowledged every message queued so far, for at most
        ``timeout`` seconds or until ``abort`` is set; returns how many are left (0: all).

        Meanwhile a lost broker is retried at once and then every second, not with the usual
        backoff (the run's input ended: this is the last chance before exiting).
        """
        if not self._started:
            return 0
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        self._sender.drain(True)
        announced = False
        try:
            while True:
                counters = self.counters()
                left = int(counters["backlog"]) + int(counters["queue"])
                if left and not announced:
                    log.info("input ended: waiting up to %g s (mqtt.drain_timeout) for %s to acknowledge "
                             "%d message(s)", timeout, self._sender.endpoint_url, left)
                    announced = True
                remaining = deadline - time.monotonic()
                if left == 0 or remaining <= 0 or (abort is not None and abort.is_set()):
                    break
                self._sender.wait_progress(min(remaining, 0.1))
        finally:
            self._sender.drain(False)
        if left:
            where = ("stay in the spool and go first at the next start" if counters["spool"] == "disk"
                     else "are LOST (the spool is in memory)")
            why = "stopped by a signal" if abort is not None and abort.is_set() else \
                f"mqtt.drain_timeout {timeout:g} s"
            log.error("input ended: %d message(s) not acknowledged by %s after %.1f s (%s); they %s",
                      left, self._sender.endpoint_url, time.monotonic() - started, why, where)
            self._sender.backlog_reported = True  # this line says it: no second one at stop
        elif time.monotonic() - started > 1.0:
            log.info("input ended: every message acknowledged after %.1f s", time.monotonic() - started)
        return left

    def stop(self, timeout: float = 5.0) -> bool:
        """Publish ``offline`` (retained), disconnect, keep what is unacknowledged in the spool.

        Returns within ``timeout`` seconds; True if everything shut down cleanly.
        """
        deadline = time.monotonic() + max(0.1, timeout)
        if not self._started:
            return True
        clean = self._sender.stop(deadline)
        if self._cmd_thread is not None:
            self._cmd_thread.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not self._cmd_thread.is_alive()
        if not clean:
            log.warning("MQTT publisher did not stop within %.1f s; abandoning its threads", timeout)
        return clean

    # -- sender hooks (sender thread, except message) ------------------------------------------

    def _on_connected(self, client: paho.Client) -> None:
        if self.mq.homeassistant.enabled:
            names = homeassistant.chosen_classes(self.mq.homeassistant.classes, self.config.inference.classes,
                                                 self.class_names)
            for topic, payload in homeassistant.discovery_messages(
                    discovery_prefix=self.mq.homeassistant.discovery_prefix, topics=self.topics,
                    device_id=self.config.device.id, cameras=[c.name for c in self.config.enabled_cameras],
                    classes=names, model=self.model_name, version=_version(),
                    location=self.config.device.location, counting=self._counting()):
                client.publish(topic, payload, 1, retain=True)
        if self.mq.commands.enabled:
            if self.mq.protocol == "5":
                # noLocal: our own answers on cmd/result do not come back. retainAsPublished: the
                # broker keeps the retain flag on live delivery too, so a retained command sent
                # while we are connected is refused like one found at subscribe time (MQTT 3.1.1
                # brokers clear the flag on live delivery: docs/mqtt.md says what that means).
                client.subscribe(self.topics.cmd_filter, options=paho.SubscribeOptions(
                    qos=1, noLocal=True, retainAsPublished=True))
            else:
                client.subscribe(self.topics.cmd_filter, qos=1)

    def _counting(self) -> Dict[str, Any]:
        """Per camera that tracks: its line and zone names (Home Assistant count sensors)."""
        top = bool(self.config.tracking.enabled)
        out: Dict[str, Any] = {}
        for camera in self.config.enabled_cameras:
            own = camera.tracking.enabled if camera.tracking is not None else None
            if (top if own is None else own) and self.mq.events:
                out[camera.name] = ([line.name for line in camera.lines],
                                    [zone.name for zone in camera.zones])
        return out

    def _on_tick(self) -> None:
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + self.mq.stats_interval
        extra: Optional[Mapping[str, Any]] = None
        provider = self._stats_provider
        if provider is not None:
            try:
                extra = provider()
            except Exception:
                log.exception("stats provider failed; publishing the publisher's own counters only")
        self.publish_stats(extra)

    def _on_message(self, message: Any) -> None:
        # paho's network thread: hand over and return at once.
        result = self.topics.cmd_result
        if not message.topic.startswith(self.topics.cmd_prefix) or message.topic == result \
                or message.topic.startswith(result + "/"):
            return  # answers (ours, or another agent's on a shared response topic) are no commands
        name = message.topic[len(self.topics.cmd_prefix):]
        item = (name, bytes(message.payload), bool(message.retain), getattr(message, "properties", None))
        try:
            self._cmd_queue.put(item, timeout=PUT_TIMEOUT)
        except queue.Full:
            self._answer(name, item[1], item[3], {"ok": False, "error": "busy: too many commands at once"})

    # -- commands --------------------------------------------------------------------------------

    def _command_loop(self) -> None:
        while not self._sender.stopping.is_set():
            try:
                name, payload, retained, props = self._cmd_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            refusal = None
            response = self._response_topic(props)
            if response is not None and not response_topic_allowed(response, self.topics.cmd_result,
                                                                    self.mq.commands.response_prefix):
                refusal = (f"response topic {response[:128]!r} is not allowed: answers go to "
                           f"{self.topics.cmd_result}[/...] or under mqtt.commands.response_prefix")
            self._answer(name, payload, props, self.commands.handle(name, payload, retained, refusal))

    @staticmethod
    def _response_topic(props: Any) -> Optional[str]:
        response = getattr(props, "ResponseTopic", None)
        return response if isinstance(response, str) and response else None

    def _answer(self, name: str, payload: bytes, props: Any, outcome: Dict[str, Any]) -> None:
        body = result_payload(device=self.config.device.id, command=name[:64], ok=outcome["ok"],
                              request_id=request_id(payload, self.mq.commands.max_payload),
                              result=outcome.get("result"), error=outcome.get("error"))
        topic = self.topics.cmd_result
        response = self._response_topic(props)
        if response is not None and response_topic_allowed(response, self.topics.cmd_result,
                                                           self.mq.commands.response_prefix):
            topic = response  # MQTT 5 request/response, to a topic this device may answer on
        correlation = getattr(props, "CorrelationData", None)
        extra = {"correlation_data": bytes(correlation).hex()} if correlation else None
        self._sender.submit(Message(topic, encode(body), self._qos["result"], props=extra))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("detection-agent")
    except Exception:
        return "unknown"


__all__ = ["MqttPublisher"]
