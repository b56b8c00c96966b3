"""Command-line entry point: argument parsing only; each subcommand calls into the package.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input, with one ``error: ...``
line on stderr (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence

from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.inference.detector import DetectorSettings

log = logging.getLogger("agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: After ``run`` has stopped, how long a camera reader still inside its driver (an FFmpeg read
#: on a stalled stream) is waited for before the process ends without interpreter teardown.
CAPTURE_EXIT_WAIT_S = 2.0


def configure_logging(level: str) -> None:
    """Plain text on stderr, once per process; journald adds its own timestamps on a device."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stderr)


# ---------------------------------------------------------------- subcommands


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import loader as config

    cfg = config.load(args.file, args.set)
    if args.print:
        sys.stdout.write(config.resolved_yaml(cfg))
    else:
        print(f"{args.file}: ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.runtime.daemon import run_daemon

    overrides = list(args.set)
    if args.preview is not None:
        overrides += ["preview.enabled=true", f"preview.port={args.preview}"]
    return run_daemon(args.config, overrides, max_frames=args.max_frames, duration=args.duration,
                      video_dir=args.save_video)


def _leave_after_run(code: int) -> None:
    """End ``run``'s process at once if a camera reader is still inside its driver.

    Tearing the interpreter down while a thread sits in an OpenCV call aborts the process
    when that call returns (SIGABRT, a core dump, a "failed" unit). Everything worth keeping
    is flushed and closed by now (spool, broker, logs), so ``os._exit`` loses nothing.
    """
    if "agent.capture.camera" not in sys.modules:
        return  # no camera was ever opened
    from agent.capture import join_readers

    stuck = join_readers(CAPTURE_EXIT_WAIT_S)
    if not stuck:
        return
    log.warning("%s still inside the camera driver %.0f s after stopping; exiting without waiting "
                "for it", ", ".join(stuck), CAPTURE_EXIT_WAIT_S)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def cmd_detect(args: argparse.Namespace) -> int:
    from agent.cli.detect import run_detect

    return run_detect(
        model=Path(args.model), inputs=args.inputs, backend=args.backend, conf=args.conf, iou=args.iou,
        max_det=args.max_det, classes=args.classes, json_out=args.json, save_dir=args.save,
        names_file=args.names, quiet=args.quiet, detector_settings=configured_detector(args.config),
    )


def configured_detector(config_path: Optional[str]) -> Optional[DetectorSettings]:
    """``--config FILE`` of detect and eval: the model side of that config, as ``run`` loads it."""
    if not config_path:
        return None
    from agent.config import loader as config
    from agent.inference.detector import DetectorSettings

    return DetectorSettings.from_config(config.load(config_path))


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


def cmd_make_dataset(args: argparse.Namespace) -> int:
    from agent.datasets.synthetic import make_dataset

    data_yaml = make_dataset(args.out, train=args.train, val=args.val, imgsz=args.imgsz, seed=args.seed,
                             style=args.style, overwrite=args.overwrite, backgrounds=args.backgrounds,
                             background_ratio=args.background_ratio)
    print(f"data set written: {data_yaml}")
    return 0


def cmd_make_video(args: argparse.Namespace) -> int:
    from agent.datasets.video import make_video
    from agent.datasets.video_truth import load_lines

    lines = load_lines(args.lines) if args.lines else []  # a bad file fails before any frame is drawn
    truth = make_video(args.out, frames=args.frames, fps=args.fps, seed=args.seed, width=args.width,
                       height=args.height, lines=lines)
    extra = f", crossings: {truth.with_suffix('.lines.json')}" if lines else ""
    print(f"video written: {args.out} (ground truth: {truth}, identities: {truth.with_suffix('.mot.txt')}"
          f"{extra})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from agent.training.recipe import load_recipe
    from agent.training.train import train

    recipe = load_recipe(args.recipe)  # a bad recipe fails before torch loads
    result = train(Path(args.data), recipe, model=args.model, strategy=args.strategy,
                   data_size=args.data_size, similarity=args.similarity, width=args.width, device=args.device,
                   project=Path(args.project), name=args.name,
                   overrides={"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch},
                   pretrained_cfg=Path(args.pretrained) if args.pretrained else None, time_hours=args.time)
    print(f"best weights: {result.best_weights}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent.training.export import export_onnx, list_sample_images
    from agent.training.train import dataset_fingerprint

    provenance: Dict[str, object] = {"weights": Path(args.weights).name}
    if args.data:
        provenance["data_fingerprint"] = dataset_fingerprint(Path(args.data))
    training_json = Path(args.weights).parent.parent / "training.json"
    if training_json.is_file():
        record = json.loads(training_json.read_text(encoding="utf-8"))
        provenance.update(recipe=record["recipe"]["name"], strategy=record["strategy"]["strategy"],
                          model=record["model"], width=record["width"])
    images = list_sample_images(Path(args.verify_images)) if args.verify_images else []
    report = export_onnx(Path(args.weights), Path(args.output), imgsz=args.imgsz, half=args.half,
                         dynamic=args.dynamic, batch=args.batch, verify_images=images, provenance=provenance)
    print(f"exported {report.path} ({report.path.stat().st_size / 1e6:.1f} MB, input "
          f"{report.info.input_size}, classes {report.info.class_names})")
    if report.max_abs_diff is not None:
        print(f"ONNX Runtime vs PyTorch on {report.images_checked} images: max abs difference "
              f"{report.max_abs_diff:.2e}")
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

    p = sub.add_parser("run", help="the daemon: cameras -> model -> MQTT")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set cameras.0.source=clip.mp4 (repeatable)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames (tests, demos)")
    p.add_argument("--duration", type=positive_seconds, help="stop after this many seconds")
    p.add_argument("--save-video", metavar="DIR", help="also write an annotated video per camera here")
    p.add_argument("--preview", type=int, metavar="PORT",
                   help="serve a live MJPEG view of the cameras on http://127.0.0.1:PORT/ (0: any free port)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set mqtt.port=18830 (repeatable)")
    p.add_argument("--print", action="store_true", help="print the resolved config (secrets masked)")
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser("detect", help="one-shot detection on images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or glob patterns")
    p.add_argument("--model", required=True,
                   help="model file: .onnx, .engine/.plan (TensorRT) or .cfg (with its .weights beside it)")
    p.add_argument("--backend", default="auto",
                   help="auto | tensorrt | onnxruntime | opencv (default auto: TensorRT for engines, "
                        "ONNX Runtime for .onnx and for .cfg, converted on the fly)")
    p.add_argument("--names", help="class names file (default: the model's own, or one beside it)")
    p.add_argument("--config", help="take backend, input size, resize mode, labels, threads and warm-up "
                                    "from this agent config's model: section, as run does")
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
    p.add_argument("--eval", action="store_true",
                   help="eval end to end on a COCO-val-sized case vs pycocotools, faster-coco-eval, hotcoco")
    p.add_argument("--all", action="store_true", help="every benchmark, on the shipped model (make bench)")
    p.add_argument("--markdown", metavar="OUT", help="write the headline ratios as a Markdown table")
    p.add_argument("--pipeline", action="store_true",
                   help="whole-pipeline FPS on --source VIDEO vs the backend alone vs ultralytics predict")
    p.add_argument("--source", metavar="VIDEO", help="video for --pipeline")
    p.add_argument("--scrape-hz", type=float, metavar="HZ",
                   help="with --pipeline: FPS with /metrics scraped HZ times a second vs without, in turns")
    p.add_argument("--scrape-rounds", type=int, default=4, metavar="N",
                   help="pairs of runs (without, with scraping) for --scrape-hz (default 4)")
    p.add_argument("--mqtt", action="store_true",
                   help="MQTT publishing to a local broker it starts: QoS 1 msgs/s and added latency p50/p99")
    p.add_argument("--mqtt-messages", type=int, default=20000, metavar="N",
                   help="messages in the --mqtt throughput run (default 20000)")
    p.add_argument("--repeat", type=int, default=200, help="timed repetitions per case (default 200)")
    p.add_argument("--no-peers", action="store_true", help="time only this project's code")
    p.add_argument("--tracker", action="store_true",
                   help="tracking cost per frame with 50 objects: tracker, event engine, zone tagging")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    from agent.bench.backend import add_arguments as add_backend_bench_arguments

    add_backend_bench_arguments(p)
    from agent.bench.fleet import add_arguments as add_fleet_bench_arguments

    add_fleet_bench_arguments(p)
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("make-dataset", help="write a synthetic shapes data set (YOLO layout)")
    p.add_argument("kind", choices=["shapes"], help="data set kind")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--imgsz", type=int, default=640, help="image size in pixels (default 640)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--style", default="default", choices=["default", "alt"],
                   help="background and colour distribution (alt: drawn differently)")
    p.add_argument("--backgrounds", metavar="DIR",
                   help="folder of photos: draw a share of the images on crops of them (e.g. coco128/images)")
    p.add_argument("--background-ratio", type=float, default=0.5, metavar="R",
                   help="share of the images on photo backgrounds with --backgrounds (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace images and labels already there")
    p.set_defaults(handler=cmd_make_dataset)

    p = sub.add_parser("make-video", help="write a video of moving shapes with COCO and MOT ground truth")
    p.add_argument("--out", required=True,
                   help="output .mp4 (ground truth beside it: .json boxes, .mot.txt identities)")
    p.add_argument("--frames", type=int, default=300, help="frame count (default 300)")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--lines", metavar="FILE",
                   help="counting lines, YAML or JSON: a list of {name, points: [[x1, y1], [x2, y2]], units, "
                        "anchor, classes} as in a camera's lines:; writes the true crossings as .lines.json")
    p.set_defaults(handler=cmd_make_video)

    p = sub.add_parser("train", help="train YOLOv3 weights with an augmentation recipe (ultralytics)")
    p.add_argument("--data", required=True, help="data YAML (ultralytics format)")
    p.add_argument("--model", help="yolov3-tiny (default) | yolov3-tiny-3l | yolov3 | yolov3-spp | PATH.pt; "
                                    "with --pretrained, the cfg's own network or yolov3-tiny-3l")
    p.add_argument("--pretrained", metavar="CFG",
                   help="start from darknet weights: a .cfg with its .weights beside it "
                        "(e.g. yolov3-tiny.cfg)")
    p.add_argument("--time", type=float, metavar="HOURS",
                   help="stop training after this many hours (epochs are then fitted to the budget)")
    p.add_argument("--recipe", default="configs/train/augment-default.yaml", help="augmentation recipe YAML")
    p.add_argument("--strategy", default="auto",
                   help="fine-tuning: auto | full | partial-late | partial-early | head")
    p.add_argument("--data-size", choices=["small", "large"], help="for --strategy auto")
    p.add_argument("--similarity", choices=["low", "high"],
                   help="similarity to the pretraining data, for --strategy auto")
    p.add_argument("--width", type=float, help="channel width multiple for a model built from scratch")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--imgsz", type=int, help="override the recipe's training size")
    p.add_argument("--batch", type=int, help="override the recipe's batch size")
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA device index (default cpu)")
    p.add_argument("--project", default="runs/train", help="folder for training runs (default runs/train)")
    p.add_argument("--name", default="exp", help="run name (default exp)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("export", help="export trained weights to a self-describing, verified ONNX model")
    p.add_argument("--weights", required=True, help="trained .pt weights")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--imgsz", type=int, default=416, help="input size (default 416)")
    p.add_argument("--half", action="store_true", help="FP16 weights (needs a CUDA device to export)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and input size")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    p.add_argument("--data", help="data YAML, to record the data set's fingerprint in the model")
    p.add_argument("--verify-images", metavar="DIR", help="compare ONNX Runtime with PyTorch on images here")
    p.set_defaults(handler=cmd_export)

    from agent.modeltools.darknet.to_onnx import add_parser as add_convert_darknet_parser

    add_convert_darknet_parser(sub)

    from agent.modeltools.tensorrt.build import add_parser as add_build_engine_parser

    add_build_engine_parser(sub)

    from agent.evaluate.cli import add_parser as add_eval_parser

    add_eval_parser(sub)

    from agent.publish.record import add_parser as add_record_parser

    add_record_parser(sub)

    for p in sub.choices.values():
        _add_common(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from agent.runtime import service

    # First of all: a SIGHUP (systemctl reload) while `run` still imports and loads its model
    # would otherwise kill it; it is kept and applied once the daemon runs.
    service.hold_reload_signal()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        service.release_reload_signal()
    debug = getattr(args, "debug", False)
    configure_logging("DEBUG" if debug else getattr(args, "log_level", "WARNING"))
    if args.command == "bench" and not (args.postprocess or args.eval or args.model or args.mqtt or args.all
                                        or args.pipeline or args.fleet or args.tracker):
        parser.error("bench: choose what to measure, e.g. --postprocess, --eval, --mqtt or --model M")
    code = _call(args, debug)
    if args.command == "run":
        _leave_after_run(code)
    return code


def _call(args: argparse.Namespace, debug: bool) -> int:
    """The subcommand's exit code; errors become ``error: ...`` lines and their codes."""
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

