"""Command-line entry point: argument parsing only; each subcommand calls into the package.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input, with one ``error: ...``
line on stderr (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from .errors import AgentError

log = logging.getLogger("agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Plain text on stderr, once per process; journald adds its own timestamps on a device."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stderr)


# ---------------------------------------------------------------- subcommands


def cmd_check_config(args: argparse.Namespace) -> int:
    from . import config

    cfg = config.load(args.file, args.set)
    if args.print:
        sys.stdout.write(config.resolved_yaml(cfg))
    else:
        print(f"{args.file}: ok")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from .detect import run_detect

    return run_detect(
        model=Path(args.model), inputs=args.inputs, backend=args.backend, conf=args.conf, iou=args.iou,
        max_det=args.max_det, classes=args.classes, json_out=args.json, save_dir=args.save,
        names_file=args.names, quiet=args.quiet,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.postprocess import run_postprocess_bench

    results: Dict[str, object] = {}
    if args.postprocess:
        results["postprocess"] = run_postprocess_bench(repeat=args.repeat, peers=not args.no_peers)
    if args.json:
        from .fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default=argparse.SUPPRESS,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default WARNING)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detection-agent",
        description="Edge real-time object detection: cameras -> YOLO -> NMS -> MQTT.",
    )
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set mqtt.port=18830 (repeatable)")
    p.add_argument("--print", action="store_true", help="print the resolved config (secrets masked)")
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser("detect", help="one-shot detection on images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or glob patterns")
    p.add_argument("--model", required=True, help="model file (.cfg with its .weights beside it)")
    p.add_argument("--backend", default="auto", help="auto | opencv (default auto)")
    p.add_argument("--names", help="class names file (default: the model's own, or one beside it)")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=100, help="most detections per image (default 100)")
    p.add_argument("--classes", nargs="+", metavar="LABEL", help="keep only these labels")
    p.add_argument("--json", metavar="OUT", help="write all detections as JSON")
    p.add_argument("--save", metavar="DIR", help="write annotated copies of the images here")
    p.add_argument("--quiet", action="store_true", help="print nothing per image")
    p.set_defaults(handler=cmd_detect)

    p = sub.add_parser("bench", help="benchmarks, as ratios against peers measured in the same run")
    p.add_argument("--postprocess", action="store_true",
                   help="decode + NMS on a YOLOv3-416 output vs ultralytics and torchvision")
    p.add_argument("--repeat", type=int, default=200, help="timed repetitions per case (default 200)")
    p.add_argument("--no-peers", action="store_true", help="time only this project's code")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.set_defaults(handler=cmd_bench)

    for p in sub.choices.values():
        _add_common(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    configure_logging("DEBUG" if debug else getattr(args, "log_level", "WARNING"))
    if args.command == "bench" and not args.postprocess:
        parser.error("bench: choose what to measure, e.g. --postprocess")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except AgentError as exc:
        if debug:
            log.exception("failed")
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, permissions: a runtime failure, not a bug
        if debug:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

