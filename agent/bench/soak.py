"""Soak test: the real agent for a long run while its broker restarts and its camera is cut.

Run (not part of ``make test``; ``make soak`` runs the 30-minute default)::

    python -m agent.bench.soak [--duration 1800] [--broker-restart-every 180]
                               [--camera-cut-every 240] [--json OUT]

What it sets up, all private to the run (a temporary folder, free loopback ports):

- a looping sample video (``agent.datasets.synthetic.make_video``) served as a live HTTP
  MJPEG camera (``agent.bench.mjpeg``) that is cut for ``--cut-seconds`` every
  ``--camera-cut-every`` seconds, and a second camera reading the same file directly;
- a Mosquitto with persistence (``agent.bench.broker``), stopped gracefully (SIGTERM) every
  ``--broker-restart-every`` seconds and started again ``--broker-down`` seconds later on
  the same port and files;
- a persistent QoS 1 subscriber (clean session off, fixed client id) that records every
  detections message and the agent's stats;
- ``detection-agent run`` as a subprocess with the shipped model and short reconnect times.

It samples the agent's resident memory, open file descriptors and threads (``/proc``) after
a warm-up and until the end, stops the agent with SIGTERM, lets the subscriber drain, and
reports frames, messages, losses (``seq`` gaps per camera and run), duplicates, growth, and
the reconnects the agent counted. Exit status 0 only if nothing was lost, the agent exited
cleanly, memory grew less than ``--rss-growth-limit`` percent and fds and threads did not grow.
No disruption is scheduled during the warm-up or the quiet tail before the end sample, so
both samples see the agent in the same steady state (camera online, broker connected).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

DEFAULT_MODEL = "models/shapes-yolov3-tiny.onnx"
DEVICE_ID = "soak"
PREFIX = "detection-agent"
CLIENT_ID = "detection-agent-soak-recorder"
LIVE, FILE = "live", "file"  # camera names

# -- pure report logic (unit-tested) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the agent process: seconds since its start, RSS (kB), open fds, threads."""

    t: float
    rss_kb: int
    fds: int
    threads: int


def seq_report(records: Iterable[Tuple[str, str, int]]) -> Dict[str, Any]:
    """Losses and duplicates of detections messages, from their (camera, run, seq).

    ``seq`` starts at 1 for each (camera, run) and grows by 1 per message, so every number
    between 1 and the highest seen that never arrived is a lost message (the subscriber's
    session exists before the agent starts, so seq 1 must arrive too). Duplicates (at least
    once delivery after a reconnect) are counted, not failures.
    """
    streams: Dict[Tuple[str, str], List[int]] = {}
    received = 0
    for camera, run, seq in records:
        streams.setdefault((camera, run), []).append(int(seq))
        received += 1
    lost = duplicates = 0
    per_stream: List[Dict[str, Any]] = []
    for (camera, run), seqs in sorted(streams.items()):
        unique = set(seqs)
        top = max(unique)
        missing = sorted(set(range(1, top + 1)) - unique)
        lost += len(missing)
        duplicates += len(seqs) - len(unique)
        per_stream.append({"camera": camera, "run": run, "received": len(seqs), "unique": len(unique),
                           "last_seq": top, "lost": len(missing), "duplicates": len(seqs) - len(unique),
                           "missing_sample": missing[:20]})
    return {"received": received, "unique": received - duplicates, "lost": lost, "duplicates": duplicates,
            "streams": per_stream}


def growth_verdicts(start: Sample, end: Sample, rss_limit_pct: float = 5.0) -> Dict[str, Any]:
    """RSS growth in percent (must stay under ``rss_limit_pct``); fds and threads must not grow."""
    growth = 100.0 * (end.rss_kb - start.rss_kb) / start.rss_kb if start.rss_kb else 0.0
    return {
        "rss_start_kb": start.rss_kb, "rss_end_kb": end.rss_kb, "rss_growth_pct": round(growth, 2),
        "rss_ok": growth < rss_limit_pct,
        "fds_start": start.fds, "fds_end": end.fds, "fds_ok": end.fds <= start.fds,
        "threads_start": start.threads, "threads_end": end.threads,
        "threads_ok": end.threads <= start.threads,
    }


def end_sample(samples: Sequence[Sample], last: int = 3) -> Sample:
    """The end state from the last ``last`` samples: RSS of the newest, fewest fds and threads.

    A reconnect attempt holds a socket or a thread for a moment; a leak shows in every sample,
    so the minimum over a few samples keeps transients out of the verdict, not leaks.
    """
    tail = list(samples[-last:])
    return Sample(tail[-1].t, tail[-1].rss_kb, min(s.fds for s in tail), min(s.threads for s in tail))


def schedule(duration: float, warmup: float, tail: float, broker_every: float, broker_down: float,
             cut_every: float, cut_seconds: float) -> List[Tuple[float, str]]:
    """(seconds since the agent started, action) in time order.

    Actions: ``broker_stop``/``broker_start`` and ``camera_cut``/``camera_restore``, at every
    multiple of their period that starts after the warm-up and ends before the quiet tail.
    """
    events: List[Tuple[float, str]] = []
    for every, length, down, up in ((broker_every, broker_down, "broker_stop", "broker_start"),
                                    (cut_every, cut_seconds, "camera_cut", "camera_restore")):
        if every <= 0:
            continue
        t = every
        while t + length <= duration - tail:
            if t >= warmup:
                events += [(t, down), (t + length, up)]
            t += every
    return sorted(events)


def agent_counters(stats: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Frames and reconnect counters from one of the agent's ``stats/1`` payloads."""
    stats = stats or {}
    mqtt = stats.get("mqtt") or {}
    cameras = stats.get("cameras") or {}
    return {
        "frames": stats.get("frames"),
        "camera_reconnects": {name: c.get("reconnects") for name, c in cameras.items()},
        "camera_states": {name: c.get("state") for name, c in cameras.items()},
        "mqtt_reconnects": mqtt.get("reconnects"),
        "mqtt_connects": mqtt.get("connects"),
        "mqtt_dropped": mqtt.get("dropped"),
        "mqtt_replayed": mqtt.get("replayed"),
        "mqtt_backlog": mqtt.get("backlog"),
    }


def verdict(report: Dict[str, Any]) -> List[str]:
    """The goals that failed (empty: the soak passed)."""
    failed = []
    if report["messages"]["lost"]:
        failed.append(f"{report['messages']['lost']} messages lost")
    if report["agent"].get("mqtt_dropped"):
        failed.append(f"the agent dropped {report['agent']['mqtt_dropped']} messages")
    if report["agent_exit"] != 0:
        failed.append(f"the agent exited with {report['agent_exit']}")
    growth = report.get("growth")
    if not growth:
        failed.append("no resource samples (the agent ended before the warm-up did)")
    else:
        if not growth["rss_ok"]:
            failed.append(f"RSS grew {growth['rss_growth_pct']}% (limit {report['rss_growth_limit_pct']}%)")
        if not growth["fds_ok"]:
            failed.append(f"open fds grew {growth['fds_start']} -> {growth['fds_end']}")
        if not growth["threads_ok"]:
            failed.append(f"threads grew {growth['threads_start']} -> {growth['threads_end']}")
    return failed


def format_table(report: Dict[str, Any]) -> str:
    """A plain-text summary, one figure per line, with the goal where there is one."""
    m, a, g = report["messages"], report["agent"], report.get("growth") or {}

    def row(name: str, value: object, goal: str = "") -> str:
        return f"  {name:<26} {value!s:<30} {goal}"

    def ok(flag: Optional[bool]) -> str:
        return "" if flag is None else ("ok" if flag else "FAILED")

    lines = [f"soak: {report['duration_s']:.0f} s (asked {report['requested_duration_s']:.0f} s), "
             f"model {report['model']}",
             row("frames processed", a.get("frames")),
             row("messages received", m["received"]),
             row("messages lost (seq gaps)", m["lost"], f"goal 0: {ok(m['lost'] == 0)}"),
             row("duplicates", m["duplicates"], "(at least once: allowed)"),
             row("left in the agent's spool", report.get("left_in_spool"), "(replayed at next start)"),
             row("frames without a message", report.get("frames_without_message"), "(informational)"),
             row("dropped by the agent", a.get("mqtt_dropped"), f"goal 0: {ok(not a.get('mqtt_dropped'))}")]
    if g:
        lines += [
            row("RSS start -> end (MB)", f"{g['rss_start_kb'] / 1024:.1f} -> "
                f"{g['rss_end_kb'] / 1024:.1f} ({g['rss_growth_pct']:+.2f}%)",
                f"goal < {report['rss_growth_limit_pct']}%: {ok(g['rss_ok'])}"),
            row("open fds start -> end", f"{g['fds_start']} -> {g['fds_end']}",
                f"no growth: {ok(g['fds_ok'])}"),
            row("threads start -> end", f"{g['threads_start']} -> {g['threads_end']}",
                f"no growth: {ok(g['threads_ok'])}"),
        ]
    lines += [
        row("broker restarts done", report["broker_restarts"]),
        row("camera cuts done", report["camera_cuts"]),
        row("camera reconnects", a.get("camera_reconnects")),
        row("MQTT reconnects (agent)", a.get("mqtt_reconnects")),
        row("subscriber reconnects", report["subscriber_reconnects"]),
        row("agent exit status", report["agent_exit"], f"goal 0: {ok(report['agent_exit'] == 0)}"),
    ]
    failed = report["failed"]
    lines.append("PASSED" if not failed else "FAILED: " + "; ".join(failed))
    return "\n".join(lines)


# -- the live parts ---------------------------------------------------------------------------


def read_process(pid: int, t: float) -> Optional[Sample]:
    """RSS, fd count and thread count of ``pid`` from /proc; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        return Sample(round(t, 1), int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"]))
    except (KeyError, ValueError, IndexError):
        return None  # a zombie has no VmRSS


class Recorder:
    """A persistent QoS 1 subscriber (paho 2.x): every detections message's (camera, run, seq)
    and the newest stats payload."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as paho

        root = f"{PREFIX}/{DEVICE_ID}"
        self.topics = [(f"{root}/+/detections", 1), (f"{root}/stats", 1)]
        self.records: List[Tuple[str, str, int]] = []
        self.stats: Optional[Dict[str, Any]] = None
        self.connects = 0
        self.bad_payloads = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # clean_session False + fixed id: the broker queues our messages while we are away,
        # and keeps them (persistence) across its own restarts.
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=CLIENT_ID,
                                  clean_session=False)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"the soak subscriber could not subscribe at {host}:{port}")

    def _on_connect(self, client: Any, userdata: object, flags: object, rc: Any, props: object) -> None:
        if not rc.is_failure:
            self.connects += 1
            client.subscribe(self.topics)

    def _on_message(self, client: Any, userdata: object, message: Any) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            self.bad_payloads += 1
            return
        with self._lock:
            if message.topic.endswith("/stats"):
                self.stats = payload
            else:
                self.records.append((str(payload["camera"]), str(payload["run"]), int(payload["seq"])))

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def drain(self, quiet: float = 3.0, timeout: float = 60.0) -> None:
        """Wait until nothing has arrived for ``quiet`` seconds (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_count = self.count
            if now_count != last:
                last, since = now_count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(path: Path, *, broker_port: int, live_url: str, clip: Path, model: str, state: Path,
                 file_fps: float) -> Path:
    """The agent's YAML: the MJPEG camera, optionally the file camera, short reconnect times."""
    cameras: List[Dict[str, Any]] = [
        {"name": LIVE, "source": live_url, "stall_timeout": 5, "reconnect_min": 0.5, "reconnect_max": 2}]
    if file_fps > 0:
        # Paced at file_fps (realtime) so two cameras stay within a 2-core machine's budget.
        cameras.append({"name": FILE, "source": str(clip), "loop": True, "realtime": True, "fps": file_fps})
    cfg = {
        "device": {"id": DEVICE_ID},
        "cameras": cameras,
        "model": {"path": model, "warmup_runs": 1},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "keepalive": 5, "reconnect_min": 0.2,
                 "reconnect_max": 2, "connect_timeout": 3, "stats_interval": 5},
        "spool": {"path": str(state / "spool.db")},
        "service": {"state_dir": str(state), "watchdog": False},
        "logging": {"level": "INFO"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def spooled_detections(spool: Path) -> Optional[int]:
    """Detections messages still in the agent's spool after it stopped (not lost: kept for
    the next start); None when the spool cannot be read."""
    if not spool.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{spool}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT COUNT(*) FROM messages WHERE topic LIKE '%/detections'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return None


def say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_soak(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """Set everything up in ``work``, run the agent for ``args.duration`` s, return the report."""
    from ..datasets.synthetic import make_video
    from .broker import Mosquitto
    from .mjpeg import MjpegCamera, load_jpegs

    duration = float(args.duration)
    warmup = args.warmup if args.warmup is not None else min(60.0, max(5.0, 0.1 * duration))
    tail = args.tail if args.tail is not None else min(30.0, max(15.0, 0.1 * duration))
    events = schedule(duration, warmup, tail, args.broker_restart_every, args.broker_down,
                      args.camera_cut_every, args.cut_seconds)

    clip = work / "clip.mp4"
    make_video(clip, frames=args.clip_frames, fps=args.fps, seed=7, width=320, height=240)
    # Whatever fails, the broker process and the camera server go away with the soak.
    cleanup = contextlib.ExitStack()
    camera = MjpegCamera(load_jpegs(clip), fps=args.fps)
    broker = Mosquitto(work / "broker")
    cleanup.callback(camera.stop)
    cleanup.callback(broker.stop)
    try:
        camera.start()
        broker.start()
    except BaseException:
        cleanup.close()
        raise
    state = work / "state"
    state.mkdir()
    config = write_config(work / "agent.yaml", broker_port=broker.port, live_url=camera.url, clip=clip,
                          model=args.model, state=state, file_fps=args.file_fps)
    log_path = work / "agent.log"
    samples: List[Sample] = []
    start_sample: Optional[Sample] = None
    restarts = cuts = 0
    agent_exit: Optional[int] = None
    say(f"work folder {work}; broker :{broker.port}; camera {camera.url}; {len(events) // 2} disruptions "
        f"planned; warm-up {warmup:.0f} s, quiet tail {tail:.0f} s")
    with cleanup:
        recorder = Recorder(broker.host, broker.port)
        cleanup.callback(recorder.close)
        with log_path.open("w", encoding="utf-8") as log_file:
            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                     stdout=log_file, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            try:
                next_sample = 0.0
                pending = list(events)
                while True:
                    now = time.monotonic() - t0
                    if agent.poll() is not None:
                        agent_exit = agent.returncode
                        say(f"the agent exited on its own with {agent_exit} after {now:.0f} s "
                            f"(see {log_path})")
                        break
                    if now >= duration:
                        break
                    while pending and pending[0][0] <= now:
                        _, action = pending.pop(0)
                        if action == "broker_stop":
                            broker.stop()
                            restarts += 1
                            say(f"broker stopped (restart {restarts})")
                        elif action == "broker_start":
                            broker.start()
                            say("broker started")
                        elif action == "camera_cut":
                            camera.cut()
                            cuts += 1
                            say(f"camera cut ({cuts})")
                        else:
                            camera.restore()
                            say("camera restored")
                    if now >= next_sample:
                        sample = read_process(agent.pid, now)
                        if sample is not None:
                            samples.append(sample)
                            if start_sample is None and now >= warmup:
                                start_sample = sample
                                say(f"start sample: RSS {sample.rss_kb / 1024:.1f} MB, {sample.fds} fds, "
                                    f"{sample.threads} threads; {recorder.count} messages so far")
                        next_sample += args.sample_every
                    wake = min([next_sample, duration] + [t for t, _ in pending[:1]])
                    time.sleep(max(0.05, min(1.0, wake - (time.monotonic() - t0))))
                if agent_exit is None:
                    final = read_process(agent.pid, time.monotonic() - t0)
                    if final is not None:
                        samples.append(final)
                    agent.send_signal(signal.SIGTERM)
                    try:
                        agent_exit = agent.wait(30)
                    except subprocess.TimeoutExpired:
                        say("the agent did not stop within 30 s of SIGTERM: killed")
                        agent.kill()
                        agent_exit = agent.wait(10)
                ran = time.monotonic() - t0
                say(f"agent stopped ({agent_exit}); draining the subscriber")
                broker.start()  # in case the run ended while it was down
                recorder.drain()
            finally:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait(10)

    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    counters = agent_counters(recorder.stats)
    processed = re.findall(r"processed (\d+) frames", log_text)
    if processed:
        counters["frames"] = int(processed[-1])  # the agent's own count at exit, newer than stats
    with recorder._lock:
        records = list(recorder.records)
    report: Dict[str, Any] = {
        "requested_duration_s": duration, "duration_s": round(ran, 1), "model": args.model,
        "cameras": [LIVE] + ([FILE] if args.file_fps > 0 else []), "camera_fps": args.fps,
        "file_fps": args.file_fps, "warmup_s": warmup, "tail_s": tail,
        "messages": seq_report(records), "agent": counters, "agent_exit": agent_exit,
        "left_in_spool": spooled_detections(state / "spool.db"),
        "broker_restarts": restarts, "camera_cuts": cuts, "camera_connections": camera.connections,
        "subscriber_reconnects": max(0, recorder.connects - 1), "bad_payloads": recorder.bad_payloads,
        "rss_growth_limit_pct": args.rss_growth_limit,
        "samples": [dataclasses.asdict(s) for s in samples],
        "agent_log_tail": log_text[-3000:],
    }
    frames, spooled = counters.get("frames"), report["left_in_spool"]
    if isinstance(frames, int) and isinstance(spooled, int):
        # Each processed frame yields one detections message (no skip_empty, no max_rate): a frame
        # neither received nor spooled is one the agent never published (e.g. in flight at SIGTERM).
        report["frames_without_message"] = frames - report["messages"]["unique"] - spooled
    after = [s for s in samples if start_sample is not None and s.t > start_sample.t]
    if start_sample is not None and after:
        report["growth"] = growth_verdicts(start_sample, end_sample(after), args.rss_growth_limit)
    report["failed"] = verdict(report)
    return report


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800, help="seconds the agent runs (default 1800)")
    p.add_argument("--broker-restart-every", type=float, default=180, help="seconds; 0: never")
    p.add_argument("--broker-down", type=float, default=5, help="seconds the broker stays down")
    p.add_argument("--camera-cut-every", type=float, default=240, help="seconds; 0: never")
    p.add_argument("--cut-seconds", type=float, default=10, help="seconds the camera stays cut")
    p.add_argument("--fps", type=float, default=10, help="frames/s of the live MJPEG camera")
    p.add_argument("--file-fps", type=float, default=5, help="frames/s of the file camera; 0: no file camera")
    p.add_argument("--clip-frames", type=int, default=150, help="length of the looping clip")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--warmup", type=float, default=None, help="seconds before the start sample "
                                                               "(default: 10%% of the duration, 5 to 60)")
    p.add_argument("--tail", type=float, default=None, help="quiet seconds before the end "
                                                             "(default: 10%% of the duration, 15 to 30)")
    p.add_argument("--sample-every", type=float, default=5, help="seconds between /proc samples")
    p.add_argument("--rss-growth-limit", type=float, default=5.0, help="percent (default 5)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (kept anyway on failure)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.fps <= 0 or args.sample_every <= 0:
        p.error("--duration, --fps and --sample-every must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not Path(args.model).exists():
        print(f"error: {args.model}: no such model (run from the repository root)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="detection-agent-soak-"))
    try:
        report = run_soak(args, work)
    except KeyboardInterrupt:
        print(f"error: interrupted; work folder kept: {work}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"error: {exc}; work folder kept: {work}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if report["failed"] or args.keep:
        print(f"work folder kept: {work} (agent.log, broker/mosquitto.log)", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
