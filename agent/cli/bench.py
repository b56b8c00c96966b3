"""``bench``: benchmarks, as ratios against peers measured in the same run (agent/bench/)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.errors import AgentError


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks, as ratios against peers measured in the same run")
    p.add_argument("--postprocess", action="store_true",
                   help="decode + NMS on a YOLOv3-416 output vs ultralytics and torchvision")
    p.add_argument("--eval", action="store_true",
                   help="eval end to end on a COCO-val-sized case vs pycocotools, faster-coco-eval, hotcoco")
    p.add_argument("--all", action="store_true", help="every benchmark, on the shipped model (make bench)")
    p.add_argument("--markdown", metavar="OUT", help="write the headline ratios as a Markdown table")
    p.add_argument("--pipeline", action="store_true",
                   help="whole-pipeline FPS on --source VIDEO vs the backend alone vs ultralytics predict")
    p.add_argument("--source", metavar="VIDEO", help="video for --pipeline")
    p.add_argument("--scrape-hz", type=float, metavar="HZ",
                   help="with --pipeline: FPS with /metrics scraped HZ times a second vs without, in turns")
    p.add_argument("--scrape-pairs", type=int, default=10, metavar="N",
                   help="pairs of 5 s windows (without, with scraping) for --scrape-hz (default 10)")
    p.add_argument("--tracking", action="store_true",
                   help="with --pipeline: FPS with tracking (and a counting line) on vs off, in ABBA windows "
                        "of one run, and the backend alone vs the pipeline at 1 and 2 ONNX Runtime threads")
    p.add_argument("--mqtt", action="store_true",
                   help="MQTT publishing to a local broker it starts: QoS 1 msgs/s and added latency p50/p99")
    p.add_argument("--mqtt-messages", type=int, default=20000, metavar="N",
                   help="messages in the --mqtt throughput run (default 20000)")
    p.add_argument("--repeat", type=int, default=200, help="timed repetitions per case (default 200)")
    p.add_argument("--no-peers", action="store_true", help="time only this project's code")
    p.add_argument("--tracker", action="store_true",
                   help="tracking cost per frame with 50 objects: tracker, event engine, zone tagging")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    _add_backend_arguments(p)
    _add_fleet_arguments(p)
    p.set_defaults(handler=cmd_bench, usage_check=check_bench_args)


def check_bench_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage error (exit 2) when nothing to measure was chosen."""
    if not (args.postprocess or args.eval or args.model or args.mqtt or args.all or args.pipeline
            or args.fleet or args.tracker):
        parser.error("bench: choose what to measure, e.g. --postprocess, --eval, --mqtt or --model M")


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The backend-latency options of ``bench``."""
    parser.add_argument("--model", help="time raw inference of this model (.onnx, .engine, .cfg)")
    parser.add_argument("--backend", default="auto",
                        help="auto | tensorrt | onnxruntime | opencv; several, comma-separated, run "
                             "interleaved in one process (default auto)")
    parser.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per backend (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    parser.add_argument("--threads", type=int, help="CPU threads for onnxruntime/opencv (default: runtime's)")


def _add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--fleet`` options of ``bench``."""
    g = parser.add_argument_group("fleet (--fleet)")
    g.add_argument("--fleet", action="store_true",
                   help="N simulated agents (real publisher, spool, run/seq, status) -> a local Mosquitto "
                        "-> K shared-subscription record consumers, broker restarted mid-run; proves every "
                        "seq arrived exactly once and reports msgs/s, latency and CPU")
    g.add_argument("--agents", type=int, default=50, help="simulated agents (default 50)")
    g.add_argument("--rate", type=float, default=5.0, help="messages/s per agent (default 5)")
    g.add_argument("--duration", type=float, default=30.0, help="seconds of publishing (default 30)")
    g.add_argument("--consumers", type=int, default=3, help="record processes in the group (default 3)")
    g.add_argument("--restart-at", type=float,
                   help="seconds into the run to restart the broker (default half way; 0: no restart)")
    g.add_argument("--restart-down", type=float, default=2.0,
                   help="seconds the broker stays down (default 2)")
    g.add_argument("--processes", type=int, metavar="P",
                   help="worker processes for the agents (default: one per 100 agents)")
    g.add_argument("--fleet-protocol", choices=["3.1.1", "5"], default="5", help="agents' MQTT version")
    g.add_argument("--fleet-hold-unrouted", type=float, default=0.0, metavar="S",
                   help="agents' mqtt.hold_unrouted_s: resend after S seconds what the broker acknowledged "
                        "as reaching no subscriber (MQTT 5; default 0: off)")
    g.add_argument("--fleet-dir", metavar="DIR",
                   help="keep spools, recordings and the broker log here (default: a temporary folder)")
    g.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait after publishing for every message to arrive (default 120)")


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench.suite import run_selected, to_markdown
    from agent.fileio import atomic_write_text

    results = run_selected(args)
    if args.json:
        # A single benchmark's figures sit at the top level (``bench --pipeline --json``).
        data = next(iter(results.values())) if len(results) == 1 else results
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, to_markdown(results))
    proof = results.get("fleet", {}).get("proof")
    if proof is not None and not proof["exactly_once"]:
        raise AgentError(f"bench --fleet: {proof['missing']} message(s) missing from the consumers' union "
                         f"({proof['missing_still_in_spools']} still in the agents' spools, "
                         f"{proof['missing_in_restart_gap']} created in the broker restart's gap, "
                         f"{proof['lost']} lost)")
    return 0
