"""Soak test: the real agent for a long run while its broker restarts and stalls, its network
path freezes and its camera is cut.

Run (not part of ``make test``; ``make soak`` runs the 30-minute default)::

    python -m agent.bench.soak [--duration 1800] [--broker-restart-every 180]
                               [--broker-stall-every 250] [--network-freeze-every 330]
                               [--camera-cut-every 240] [--json OUT]
    python -m agent.bench.soak --scenario stall --runs 5     # issue 14's measurements
    python -m agent.bench.soak --scenario freeze --runs 5

What it sets up, all private to the run (a temporary folder, free loopback ports):

- a looping sample video (``agent.datasets.video.make_video``) served as a live HTTP
  MJPEG camera (``agent.bench.mjpeg``) that is cut for ``--cut-seconds`` every
  ``--camera-cut-every`` seconds, and a second camera reading the same file directly;
- a Mosquitto with persistence (``agent.bench.broker``), stopped gracefully (SIGTERM) every
  ``--broker-restart-every`` seconds and started again ``--broker-down`` seconds later on
  the same port and files, and hung with SIGSTOP for ``--stall-seconds`` every
  ``--broker-stall-every`` seconds (connections stay open; SIGCONT resumes it);
- a TCP relay process between the agent and the broker (``agent.bench.relay``), hung with
  SIGSTOP for ``--freeze-seconds`` every ``--network-freeze-every`` seconds: a network path
  that goes silent without closing anything;
- a persistent QoS 1 subscriber (clean session off, fixed client id) that records every
  detections message and the agent's stats;
- ``detection-agent run --duration D`` as a subprocess with the shipped model and short
  reconnect times (``--mqtt-defaults``: the shipped ones). It ends by itself: its input
  ended, so it drains its spool (``mqtt.drain_timeout``) before exiting.

It samples the agent's resident memory, open file descriptors and threads (``/proc``) after
a warm-up and until the end, lets the subscriber drain, and reports frames processed,
messages delivered, losses (``seq`` gaps per camera and run), processed frames never
delivered, duplicates, sender internal errors, growth and reconnects. Exit status 0 only if
nothing was lost, every processed frame was delivered, the sender reported no internal
error, the agent exited 0, memory grew less than ``--rss-growth-limit`` percent and fds
and threads did not grow. No fault is scheduled during the warm-up or the quiet tail
before the end, so both samples see the agent in the same steady state.

``--scenario stall|freeze`` are the short measurements of issue 14: one file camera looping
at 15 fps, the shipped MQTT settings; ``stall``: the broker hung 8 s from second 5 with
stats every 2 s; ``freeze``: the network path frozen 25 s from second 5 with the default
stats interval. ``--runs N`` repeats any setting and prints one line per run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from agent.bench.soak_live import (
    FILE,
    LIVE,
    Faults,
    Recorder,
    read_process,
    say,
    spooled_detections,
    write_config,
)
from agent.bench.soak_report import (
    Fault,
    Sample,
    agent_counters,
    end_sample,
    format_table,
    growth_verdicts,
    schedule,
    sender_errors,
    seq_report,
    verdict,
)

DEFAULT_MODEL = "models/shapes-yolov3-tiny.onnx"
DRAIN_GRACE_S = 60.0  # beyond the agent's --duration: its drain (30 s by default) and shutdown

#: Issue 14's measurements: (fault, settings) applied over the command line's defaults.
SCENARIOS: Dict[str, Dict[str, Any]] = {
    "stall": {"duration": 25, "warmup": 5, "tail": 10, "stats_interval": 2, "fault": ("broker_stall", 5, 8)},
    "freeze": {"duration": 45, "warmup": 5, "tail": 12, "stats_interval": 10,
               "fault": ("network_freeze", 5, 25)},
}


def faults_from(args: argparse.Namespace) -> List[Fault]:
    if args.scenario:
        name, at, length = SCENARIOS[args.scenario]["fault"]
        return [Fault(name, at, length, once=True)]
    return [Fault("broker_restart", args.broker_restart_every, args.broker_down),
            Fault("camera_cut", args.camera_cut_every, args.cut_seconds),
            Fault("broker_stall", args.broker_stall_every, args.stall_seconds),
            Fault("network_freeze", args.network_freeze_every, args.freeze_seconds)]


def run_soak(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """Set everything up in ``work``, run the agent for ``args.duration`` s, return the report."""
    from agent.bench.broker import Mosquitto
    from agent.bench.mjpeg import MjpegCamera, load_jpegs
    from agent.bench.relay import Relay
    from agent.datasets.video import make_video

    duration = float(args.duration)
    warmup = args.warmup if args.warmup is not None else min(60.0, max(5.0, 0.1 * duration))
    tail = args.tail if args.tail is not None else min(30.0, max(15.0, 0.1 * duration))
    events = schedule(duration, warmup, tail, faults_from(args))

    clip = work / "clip.mp4"
    make_video(clip, frames=args.clip_frames, fps=args.fps, seed=7, width=320, height=240)
    # Whatever fails, the broker, the relay and the camera server go away with the soak.
    cleanup = contextlib.ExitStack()
    camera = MjpegCamera(load_jpegs(clip), fps=args.fps) if args.live_camera else None
    broker = Mosquitto(work / "broker")
    relay = Relay(broker.port)
    cleanup.callback(broker.stop)
    cleanup.callback(relay.stop)
    if camera is not None:
        cleanup.callback(camera.stop)
    try:
        if camera is not None:
            camera.start()
        broker.start()
        relay.start()
    except BaseException:
        cleanup.close()
        raise
    faults = Faults(broker, relay, camera)
    cleanup.callback(faults.clear)  # runs first: a hung broker would not stop
    state = work / "state"
    state.mkdir()
    config = write_config(work / "agent.yaml", broker_port=relay.port,
                          live_url=camera.url if camera else None, clip=clip, model=args.model, state=state,
                          file_fps=args.file_fps, stats_interval=args.stats_interval,
                          mqtt_defaults=args.mqtt_defaults)
    log_path = work / "agent.log"
    samples: List[Sample] = []
    start_sample: Optional[Sample] = None
    agent_exit: Optional[int] = None
    ended_by_input = False
    say(f"work folder {work}; broker :{broker.port} via relay :{relay.port}; "
        f"{len(events) // 2} fault(s) planned; warm-up {warmup:.0f} s, quiet tail {tail:.0f} s")
    with cleanup:
        recorder = Recorder(broker.host, broker.port)
        cleanup.callback(recorder.close)
        with log_path.open("w", encoding="utf-8") as log_file:
            command = [sys.executable, "-m", "agent", "run", "--config", str(config),
                       "--duration", f"{duration:g}"]
            agent = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            try:
                next_sample = 0.0
                pending = list(events)
                while True:
                    now = time.monotonic() - t0
                    if agent.poll() is not None:
                        agent_exit = agent.returncode
                        ended_by_input = now >= duration - 1.0
                        if not ended_by_input:
                            say(f"the agent exited early with {agent_exit} after {now:.0f} s "
                                f"(see {log_path})")
                        break
                    if now >= duration + DRAIN_GRACE_S:
                        say(f"the agent still runs {DRAIN_GRACE_S:.0f} s after its --duration: SIGTERM")
                        break
                    while pending and pending[0][0] <= now:
                        faults.apply(pending.pop(0)[1])
                    if now >= next_sample and now <= duration - 1.0:  # not while it shuts down
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
                    agent.send_signal(signal.SIGTERM)
                    try:
                        agent_exit = agent.wait(30)
                    except subprocess.TimeoutExpired:
                        say("the agent did not stop within 30 s of SIGTERM: killed")
                        agent.kill()
                        agent_exit = agent.wait(10)
                ran = time.monotonic() - t0
                say(f"agent ended ({agent_exit}) after {ran:.0f} s; draining the subscriber")
                faults.clear()  # in case the run ended during a fault
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
        "scenario": args.scenario,
        "cameras": ([LIVE] if camera else []) + ([FILE] if args.file_fps > 0 else []),
        "camera_fps": args.fps, "file_fps": args.file_fps, "stats_interval": args.stats_interval,
        "mqtt_defaults": args.mqtt_defaults, "warmup_s": warmup, "tail_s": tail,
        "messages": seq_report(records), "agent": counters, "agent_exit": agent_exit,
        "ended_by_input": ended_by_input, "sender_errors": sender_errors(log_text, counters),
        "left_in_spool": spooled_detections(state / "spool.db"), "faults_done": dict(faults.done),
        "camera_connections": camera.connections if camera else None,
        "subscriber_reconnects": max(0, recorder.connects - 1), "bad_payloads": recorder.bad_payloads,
        "rss_growth_limit_pct": args.rss_growth_limit, "growth_checked": not args.scenario,
        "samples": [dataclasses.asdict(s) for s in samples],
        "agent_log_tail": log_text[-3000:],
    }
    frames, spooled = counters.get("frames"), report["left_in_spool"]
    if isinstance(frames, int) and isinstance(spooled, int):
        # Each processed frame yields one detections message (no skip_empty, no max_rate): a frame
        # neither received nor spooled is one the agent never delivered.
        report["frames_without_message"] = frames - report["messages"]["unique"] - spooled
    after = [s for s in samples if start_sample is not None and s.t > start_sample.t]
    if start_sample is not None and after:
        report["growth"] = growth_verdicts(start_sample, end_sample(after), args.rss_growth_limit)
    report["failed"] = verdict(report)
    return report


def run_line(index: int, report: Dict[str, Any]) -> str:
    """One run's figures on one line: processed vs delivered, the issue's measurement."""
    m = report["messages"]
    return (f"run {index}: frames processed {report['agent'].get('frames')}, delivered {m['unique']} "
            f"(lost {m['lost']}, left in spool {report.get('left_in_spool')}, duplicates {m['duplicates']}), "
            f"sender errors {report.get('sender_errors')}, agent exit {report['agent_exit']}: "
            + ("PASSED" if not report["failed"] else "FAILED: " + "; ".join(report["failed"])))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=sorted(SCENARIOS),
                   help="a short measurement of issue 14 (one fault, file camera at 15 fps, shipped MQTT "
                        "settings); overrides the fault and timing options")
    p.add_argument("--runs", type=int, default=1, help="repeat the run N times (default 1)")
    p.add_argument("--duration", type=float, default=1800, help="seconds the agent runs (default 1800)")
    p.add_argument("--broker-restart-every", type=float, default=180, help="seconds; 0: never")
    p.add_argument("--broker-down", type=float, default=5, help="seconds the broker stays down")
    p.add_argument("--broker-stall-every", type=float, default=250, help="seconds; 0: never")
    p.add_argument("--stall-seconds", type=float, default=8, help="seconds the broker stays hung")
    p.add_argument("--network-freeze-every", type=float, default=330, help="seconds; 0: never")
    p.add_argument("--freeze-seconds", type=float, default=25, help="seconds the network path stays frozen")
    p.add_argument("--camera-cut-every", type=float, default=240, help="seconds; 0: never")
    p.add_argument("--cut-seconds", type=float, default=10, help="seconds the camera stays cut")
    p.add_argument("--fps", type=float, default=10, help="frames/s of the live MJPEG camera")
    p.add_argument("--file-fps", type=float, default=5, help="frames/s of the file camera; 0: no file camera")
    p.add_argument("--no-live-camera", dest="live_camera", action="store_false", help="the file camera only")
    p.add_argument("--stats-interval", type=float, default=5, help="the agent's mqtt.stats_interval")
    p.add_argument("--mqtt-defaults", action="store_true",
                   help="the shipped keepalive, backoff and timeouts instead of short test values")
    p.add_argument("--clip-frames", type=int, default=150, help="length of the looping clip")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--warmup", type=float, default=None, help="seconds before the start sample "
                                                               "(default: 10%% of the duration, 5 to 60)")
    p.add_argument("--tail", type=float, default=None, help="quiet seconds before the end "
                                                             "(default: 10%% of the duration, 15 to 30)")
    p.add_argument("--sample-every", type=float, default=5, help="seconds between /proc samples")
    p.add_argument("--rss-growth-limit", type=float, default=5.0, help="percent (default 5)")
    p.add_argument("--json", help="write the full report here (a list with --runs > 1)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (kept anyway on failure)")
    args = p.parse_args(argv)
    if args.scenario:
        scenario = SCENARIOS[args.scenario]
        args.duration, args.warmup, args.tail = scenario["duration"], scenario["warmup"], scenario["tail"]
        args.stats_interval, args.mqtt_defaults = scenario["stats_interval"], True
        args.live_camera, args.file_fps = False, 15.0
    if args.duration <= 0 or args.fps <= 0 or args.sample_every <= 0 or args.runs < 1:
        p.error("--duration, --fps, --sample-every and --runs must be positive")
    if not args.live_camera and args.file_fps <= 0:
        p.error("no camera: --no-live-camera needs --file-fps > 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not Path(args.model).exists():
        print(f"error: {args.model}: no such model (run from the repository root)", file=sys.stderr)
        return 2
    reports: List[Dict[str, Any]] = []
    for index in range(1, args.runs + 1):
        work = Path(tempfile.mkdtemp(prefix="detection-agent-soak-"))
        try:
            report = run_soak(args, work)
        except KeyboardInterrupt:
            print(f"error: interrupted; work folder kept: {work}", file=sys.stderr)
            return 1
        except RuntimeError as exc:
            print(f"error: {exc}; work folder kept: {work}", file=sys.stderr)
            return 1
        reports.append(report)
        print(format_table(report) if args.runs == 1 else run_line(index, report), flush=True)
        if report["failed"] or args.keep:
            print(f"work folder kept: {work} (agent.log, broker/mosquitto.log)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(reports[0] if args.runs == 1 else reports, indent=2) + "\n",
                                   encoding="utf-8")
    failed = sum(1 for r in reports if r["failed"])
    if args.runs > 1:
        print(f"{args.runs - failed} of {args.runs} runs passed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
