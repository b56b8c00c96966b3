"""``detection-agent record``: subscribe to detection topics and save the messages as JSON lines.

Each line of the output is exactly one message's payload (the agent's payloads are
one-line JSON), written and flushed as it arrives, so an interrupted recording leaves
only whole lines. ``eval`` reads such a file as predictions (agent/evaluate/recordings.py).

At the end the command reports, per ``(device, camera, run)``, the ``seq`` range seen,
the messages missing (from seq 1, since every run starts there) and the duplicates
(docs/mqtt.md explains the rule).
With ``--client-id`` the subscription is a persistent session: messages published while
the recorder is away are delivered when it comes back.

With ``--share GROUP`` the recorder joins the shared subscription ``$share/GROUP/FILTER``
(MQTT 5 by default): the broker hands each message to one member of the group, so several
recorders split one fleet's traffic and their files together hold every message (``eval``
reads several recordings as one). ``--summary`` writes the report as JSON, with the
end-to-end latency (receive time minus the message's ``ts``) as a histogram that adds up
across the members of a group (latency.py).

Only the standard library is imported at module level; paho when the recording starts.
The command's arguments are agent/cli/record.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Set, Tuple

from agent.publish.latency import LatencyHistogram

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "detection-agent/+/+/detections"

StreamKey = Tuple[str, str, str]  # (device, camera, run)


def shared_filters(group: Optional[str], topics: Sequence[str]) -> List[str]:
    """``$share/GROUP/FILTER`` for each filter (unchanged without a group); ``BadInputError``
    for a group name MQTT forbids (empty, or with ``/``, ``+`` or ``#``)."""
    from agent.errors import BadInputError

    if group is None:
        return list(topics)
    if not group or set(group) & {"/", "+", "#"}:
        raise BadInputError(f"--share {group!r}: a group name is not empty and has no '/', '+' or '#'")
    for topic in topics:
        if topic.startswith("$share/"):
            raise BadInputError(f"--topic {topic!r} is already a shared subscription; drop --share or "
                                "give the plain filter")
    return [f"$share/{group}/{topic}" for topic in topics]


def parse_broker(text: str) -> Tuple[str, int]:
    """``host:port`` (``[::1]:1883`` for IPv6; the port defaults to 1883)."""
    from agent.errors import BadInputError

    host, port = text, "1883"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadInputError(f"--broker {text!r}: expected [IPV6]:PORT")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            port = rest.lstrip(":")
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(f"--broker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


class SeqTracker:
    """Gaps and duplicates of ``seq`` per ``(device, camera, run)``."""

    def __init__(self) -> None:
        self.seen: Dict[StreamKey, Set[int]] = {}
        self.received: Dict[StreamKey, int] = {}

    def add(self, message: Dict[str, Any]) -> None:
        seq = message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        key = (str(message.get("device", "")), str(message.get("camera", "")), str(message.get("run", "")))
        self.seen.setdefault(key, set()).add(seq)
        self.received[key] = self.received.get(key, 0) + 1

    def summary(self) -> List[Dict[str, Any]]:
        """One dict per stream: first, last, received, unique, missing (count and ranges), duplicates.

        Every run's ``seq`` starts at 1, so the numbers below the first one received are missing
        too (``missing_before_first`` of them): the agent's spool may have dropped its oldest
        messages during an outage, and a gap is a gap wherever it is. A recording that began
        after the run did sees the same; the report line says both causes.
        """
        out = []
        for key in sorted(self.seen):
            seqs = self.seen[key]
            first, last = min(seqs), max(seqs)
            missing = _ranges(sorted(set(range(1, last + 1)) - seqs))
            out.append({"device": key[0], "camera": key[1], "run": key[2], "first": first, "last": last,
                        "received": self.received[key], "unique": len(seqs),
                        "missing": sum(b - a + 1 for a, b in missing), "missing_ranges": missing,
                        "missing_before_first": first - 1, "duplicates": self.received[key] - len(seqs)})
        return out

    def report_lines(self) -> List[str]:
        lines = []
        for s in self.summary():
            line = (f"{s['device']}/{s['camera']} run {s['run']}: seq {s['first']}..{s['last']}, "
                    f"{s['received']} received, {s['missing']} missing, {s['duplicates']} duplicate(s)")
            if s["missing"]:
                shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in s["missing_ranges"][:10])
                more = " ..." if len(s["missing_ranges"]) > 10 else ""
                line += f"; missing seq: {shown}{more}"
            if s["missing_before_first"]:
                line += (f" ({s['missing_before_first']} before the first received: dropped by the agent's "
                         "spool bounds, or published before this recording began)")
            lines.append(line)
        return lines


def _ranges(values: Sequence[int]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


class Recorder:
    """Writes payloads as lines and tracks sequences; fed from paho's network thread."""

    def __init__(self, out: IO[str], count: Optional[int]) -> None:
        self.out = out
        self.limit = count
        self.tracker = SeqTracker()
        self.latency = LatencyHistogram()  # receive time - ts, for messages that carry a ts
        self.recorded = 0
        self.skipped = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def feed(self, payload: bytes) -> None:
        received = time.time()
        try:
            text = payload.decode("utf-8")
            message = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError):
            message = None
        with self._lock:
            if self.done.is_set():
                return
            if not isinstance(message, dict):
                self.skipped += 1  # snapshots and other non-JSON payloads are not predictions
                return
            if "\n" in text:  # keep one message per line whatever the sender did
                text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            self.out.write(text + "\n")
            self.out.flush()
            self.recorded += 1
            self.tracker.add(message)
            ts = message.get("ts")
            if isinstance(ts, (int, float)) and not isinstance(ts, bool):
                self.latency.add(received - ts)
            if self.limit is not None and self.recorded >= self.limit:
                self.done.set()


@dataclasses.dataclass(frozen=True)
class RecordOptions:
    """What to record and how; the fields are ``record``'s options (agent/cli/record.py)."""

    broker: str  # HOST:PORT
    out: str
    topic: Optional[Sequence[str]] = None  # topic filters; None: DEFAULT_TOPIC
    append: bool = False
    duration: Optional[float] = None
    count: Optional[int] = None
    qos: int = 1
    client_id: Optional[str] = None
    protocol: Optional[str] = None  # "3.1.1" | "5"; None: 5 with ``share``, else 3.1.1
    share: Optional[str] = None
    session_expiry: int = 86400
    summary: Optional[str] = None
    username: Optional[str] = None
    password_file: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    tls: bool = False


def run_record(args: RecordOptions) -> int:
    """Record until ``duration``, ``count``, SIGTERM or Ctrl-C; prints the report, returns 0."""
    import ssl

    import paho.mqtt.client as paho

    from agent.errors import AgentError, BadInputError

    host, port = parse_broker(args.broker)
    topics = args.topic or [DEFAULT_TOPIC]
    if args.count is not None and args.count < 1:
        raise BadInputError("--count must be at least 1")
    password = os.environ.get("MQTT_PASSWORD") or None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as handle:
                password = handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise BadInputError(f"--password-file {args.password_file}: {exc.strerror or exc}") from None
    topics = shared_filters(args.share, topics)
    v5 = (args.protocol or ("5" if args.share else "3.1.1")) == "5"
    if args.session_expiry < 0:
        raise BadInputError("--session-expiry must be 0 or more seconds")
    kwargs: Dict[str, Any] = {"callback_api_version": paho.CallbackAPIVersion.VERSION2,
                              "client_id": args.client_id or "",
                              "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
    if not v5:
        kwargs["clean_session"] = args.client_id is None
    client = paho.Client(**kwargs)
    client.reconnect_delay_set(1, 10)
    if args.username:
        client.username_pw_set(args.username, password)
    if args.ca_file or args.tls or args.cert_file:
        ctx = ssl.create_default_context(cafile=args.ca_file)
        try:
            if args.cert_file:
                ctx.load_cert_chain(args.cert_file, args.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise BadInputError(f"--cert-file/--key-file: {exc}") from None
        client.tls_set_context(ctx)

    mode = "a" if args.append else "w"
    try:
        out = open(args.out, mode, encoding="utf-8")  # noqa: SIM115 (closed in finally)
    except OSError as exc:
        raise BadInputError(f"--out {args.out}: {exc.strerror or exc}") from None
    recorder = Recorder(out, args.count)
    state: Dict[str, Any] = {"connected": False, "error": None}

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            state["error"] = f"{host}:{port} refused the connection: {rc}"
            log.error("%s", state["error"])
            return
        state["connected"] = True
        for topic in topics:
            c.subscribe(topic, args.qos)
        print(f"record: connected to {host}:{port}, subscribed to {', '.join(topics)}", file=sys.stderr)

    client.on_connect = on_connect
    client.on_message = lambda c, u, m: recorder.feed(bytes(m.payload))
    client.on_connect_fail = lambda c, u: log.warning("cannot connect to %s:%d; retrying", host, port)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *a: recorder.done.set())
    started = time.monotonic()
    try:
        if v5 and args.client_id:  # a session the broker keeps while we are away, resumed each time
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = args.session_expiry
            client.connect_async(host, port, 30, clean_start=False, properties=props)
        else:
            client.connect_async(host, port, 30)
        client.loop_start()
        while not recorder.done.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            recorder.done.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.done.set()
        client.disconnect()
        client.loop_stop()
        out.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"record: {recorder.recorded} message(s) -> {args.out}"
          + (f" ({recorder.skipped} non-JSON payload(s) skipped)" if recorder.skipped else ""))
    for line in recorder.tracker.report_lines():
        print(line)
    if recorder.latency.count:
        lat = recorder.latency.summary_ms()
        print(f"end-to-end latency (receive - ts): p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
              f"max {lat['max']} ms")
    if args.summary:
        from agent.fileio import atomic_write_text

        atomic_write_text(args.summary, json.dumps({
            "out": args.out, "recorded": recorder.recorded, "skipped": recorder.skipped,
            "streams": recorder.tracker.summary(), "latency": recorder.latency.to_dict(),
            "latency_ms": recorder.latency.summary_ms()}) + "\n")
    if not state["connected"] and recorder.recorded == 0:
        raise AgentError(state["error"] or f"never connected to {host}:{port}")
    return 0


__all__ = ["DEFAULT_TOPIC", "RecordOptions", "Recorder", "SeqTracker", "parse_broker", "run_record",
           "shared_filters"]
