"""``make demo``: the whole product on one machine, checked end to end.

1. a sample video with exact ground truth (``make-video``: boxes, identities in MOT form,
   and the true crossings of the demo's counting line), made once;
2. a broker: the configured one if it answers, else a private Mosquitto on a free port;
3. ``detection-agent run`` on the video with the shipped model, tracking on and a counting
   line down the middle of the picture, writing an annotated copy (track ids, trails, the
   line and its counts);
4. meanwhile a subscriber prints each frame's detections and each event as they arrive and
   records them;
5. a summary: frames, FPS, latency, messages, ``seq`` gaps, the mAP of what arrived against
   the video's ground truth (``detection-agent eval``, with a PR-curve PNG), the line counts
   against the true crossings and MOTA/IDF1 of the tracks (``eval --track``).

Exit status 0 only if every frame arrived exactly once, without gaps, and was scored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import paho.mqtt.client as paho

from agent.bench.broker import Mosquitto
from agent.config import loader as config_module
from agent.datasets.video import make_video
from agent.tracking.lines import CountingLine

FRAMES, FPS, SEED = 150, 15, 5  # seed 5: all three classes on screen
#: The demo's counting line: the picture's vertical middle, top to bottom, so ``in`` is
#: right-to-left on the screen (the positive side of A->B; agent/tracking/lines.py).
LINE = {"name": "middle", "points": [[0.5, 0.0], [0.5, 1.0]], "units": "fraction"}


def broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class Listener:
    """Prints one line per detections message and keeps them, in arrival order."""

    def __init__(self, host: str, port: int, prefix: str, device: str, record: Path, tracks: Path) -> None:
        self.messages: List[Dict[str, object]] = []
        self.events: List[Dict[str, object]] = []
        self.counts: Optional[Dict[str, object]] = None
        self.stats: Optional[Dict[str, object]] = None
        self._record = record.open("w", encoding="utf-8")
        self._tracks = tracks.open("w", encoding="utf-8")  # detections and events, for eval --track
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="")
        root = f"{prefix}/{device}"
        topics = [(f"{root}/+/{kind}", 1) for kind in ("detections", "events", "counts")]
        topics.append((f"{root}/stats", 1))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit(f"error: could not subscribe at {host}:{port}")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        if message.topic.endswith("/stats"):
            self.stats = payload
            return
        if message.topic.endswith("/counts"):
            self.counts = payload
            return
        line = json.dumps(payload) + "\n"
        with self._lock:
            self._tracks.write(line)
            if message.topic.endswith("/events"):
                self.events.append(payload)
            else:
                self.messages.append(payload)
                self._record.write(line)
                self._record.flush()
        if message.topic.endswith("/events"):
            extra = f" {payload['line']} {payload['direction']}" if payload["type"] == "line_cross" else ""
            print(f"{payload['camera']} frame {payload['frame']:>4}: event {payload['type']} "
                  f"#{payload['track_id']} {payload['label']}{extra}", flush=True)
            return
        found = ", ".join(f"#{d['track_id']} {d['label']} {d['score']:.2f}" if d.get("track_id") is not None
                          else f"{d['label']} {d['score']:.2f}" for d in payload["detections"]) or "-"
        print(f"{payload['camera']} frame {payload['frame']:>4}: {found}", flush=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._record.close()
        self._tracks.close()


def seq_gaps(messages: Sequence[Dict[str, Any]]) -> Tuple[int, int]:
    """(missing seq numbers, duplicates) per (camera, run), summed."""
    missing = duplicates = 0
    by_stream: Dict[Tuple[object, object], List[int]] = {}
    for m in messages:
        by_stream.setdefault((m["camera"], m["run"]), []).append(int(m["seq"]))
    for seqs in by_stream.values():
        unique = sorted(set(seqs))
        duplicates += len(seqs) - len(unique)
        missing += unique[-1] - unique[0] + 1 - len(unique)
    return missing, duplicates


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="the detection-agent demo")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default="demo-output")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video, truth = out / "sample.mp4", out / "sample.json"
    if not all(p.exists() for p in (video, truth, out / "sample.mot.txt", out / "sample.lines.json")):
        print(f"making the sample video {video} ({FRAMES} frames, ground truth in {truth})")
        line = CountingLine.from_mapping(LINE, ["circle", "square", "triangle"], "demo line")
        make_video(video, frames=FRAMES, fps=FPS, seed=SEED, lines=[line])
    cfg = config_module.load(args.config)
    host, port = cfg.mqtt.host, cfg.mqtt.port
    broker: Optional[Mosquitto] = None
    workdir = tempfile.mkdtemp(prefix="demo-broker-")
    if not broker_answers(host, port):
        try:
            broker = Mosquitto(Path(workdir)).start()
        except RuntimeError as exc:
            raise SystemExit(f"error: no MQTT broker answers at {host}:{port} and none could be "
                             f"started: {exc}") from None
        host, port = broker.host, broker.port
        print(f"no broker at {cfg.mqtt.host}:{cfg.mqtt.port}; started a private mosquitto on port {port}")
    record, tracks = out / "received.jsonl", out / "tracks.jsonl"
    line_set = f"cameras.0.lines=[{json.dumps(LINE)}]"
    try:
        listener = Listener(host, port, cfg.mqtt.topic_prefix, cfg.device.id, record, tracks)
        started = time.monotonic()
        agent = subprocess.run(
            [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "--config", args.config,
             "--set", f"cameras.0.source={video}", "--set", f"mqtt.host={host}", "--set", f"mqtt.port={port}",
             "--set", "mqtt.stats_interval=1", "--set", "tracking.enabled=true", "--set", line_set,
             "--save-video", str(out / "annotated")], check=False)
        elapsed = time.monotonic() - started
        expected = len(json.loads(truth.read_text())["images"])
        deadline = time.monotonic() + 10
        while len(listener.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        listener.close()
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(listener, agent.returncode, expected, elapsed, truth, record, out, tracks)


def report(listener: Listener, agent_rc: int, expected: int, elapsed: float, truth: Path, record: Path,
           out: Path, tracks: Path) -> int:
    messages = listener.messages
    missing, duplicates = seq_gaps(messages)
    stats = listener.stats or {}
    latency = stats.get("latency_ms", {}) if isinstance(stats, dict) else {}
    ev = subprocess.run([sys.executable, "-m", "agent", "eval", "--gt", str(truth), "--pred", str(record),
                         "--json", str(out / "eval.json"), "--plots", str(out / "plots"), "--quiet"],
                        capture_output=True, text=True, check=False)
    scores = json.loads((out / "eval.json").read_text())["stats"] if ev.returncode == 0 else {}
    def row(label: str, text: str) -> None:
        print(f"{label:<24}{text}")

    print("\n== demo summary ==")
    row("frames published", f"{len(messages)} of {expected} (agent exit code {agent_rc})")
    row("agent run time", f"{elapsed:.1f} s; pipeline {stats.get('fps', '?')} fps (last stats)")
    for stage in ("inference", "capture_to_publish"):
        figures = latency.get(stage, {}) if isinstance(latency, dict) else {}
        row(f"{stage} ms", f"p50 {figures.get('p50', '?')}, p99 {figures.get('p99', '?')}")
    row("seq gaps", f"{missing} missing, {duplicates} duplicates")
    if scores:
        row("mAP vs ground truth", f"AP50 {scores['AP50']:.3f}, AP50:95 {scores['AP']:.3f} "
                                   f"(PR curves in {out / 'plots'})")
    else:
        row("mAP vs ground truth", f"failed: {ev.stderr.strip()}")
    tracking = track_report(listener, truth, tracks, row)
    row("annotated video", str(out / "annotated"))
    ok = agent_rc == 0 and len(messages) == expected and missing == 0 and bool(scores) and tracking
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1


def track_report(listener: Listener, truth: Path, tracks: Path, row: Callable[[str, str], None]) -> bool:
    """Counts (the last retained message) against the true crossings, and MOTA/IDF1 of the
    tracks that arrived against the clip's identities; False if something is missing."""
    from agent.evaluate.mot import evaluate_tracks

    kinds: Dict[str, int] = {}
    for event in listener.events:
        kinds[str(event["type"])] = kinds.get(str(event["type"]), 0) + 1
    row("events", f"{len(listener.events)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    lines_truth = json.loads(truth.with_name(truth.stem + ".lines.json").read_text())
    counts = listener.counts or {}
    for name, totals in dict(counts.get("lines", {})).items():  # type: ignore[call-overload]  # JSON
        true = lines_truth["counts"].get(name, {})
        row(f"line {name}", f"in {totals['in']} (true {true.get('in')}), out {totals['out']} "
                            f"(true {true.get('out')})")
    try:
        result = evaluate_tracks(truth.with_name(truth.stem + ".mot.txt"), tracks)
    except Exception as exc:  # a report line, not a crash: the summary says what failed
        row("tracks vs ground truth", f"failed: {exc}")
        return False
    s = result["scores"]
    row("tracks vs ground truth", f"IDF1 {s['idf1']:.3f}, MOTA {s['mota']:.3f}, ID switches "
                                  f"{s['num_switches']} ({s['num_unique_objects']} objects)")
    return bool(counts) and bool(listener.events)


if __name__ == "__main__":
    sys.exit(main())
