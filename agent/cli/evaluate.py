"""``detection-agent eval``: its arguments and the command's flow (the metrics are agent/evaluate/).

Two modes: prediction files against ground truth (``--gt`` + ``--pred``), or a model run
over a labelled image set (``--model`` + ``--data``, optionally ``--compare``). Nothing
heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, List, Optional

from agent.cli.arguments import configured_detector
from agent.errors import BadInputError

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="offline mAP: predictions against ground truth, or a model over a labelled data set",
        description="COCO (12 numbers, hotcoco / faster-coco-eval / pycocotools) or PASCAL VOC mAP. "
        "Either --gt GT --pred PRED, or --model MODEL --data DATA.",
    )
    files = p.add_argument_group("prediction files")
    files.add_argument(
        "--gt", help="ground truth: COCO instances .json, YOLO data YAML or folder, VOC XML folder"
    )
    files.add_argument(
        "--pred",
        nargs="+",
        metavar="PRED",
        help="predictions: COCO results .json, folder of YOLO txt, recordings .jsonl; several "
        "recordings (of shared-subscription recorders, record --share) are read as one",
    )
    files.add_argument("--gt-format", choices=["coco", "yolo", "voc"], help="default: from the path")
    files.add_argument("--pred-format", choices=["coco", "yolo", "jsonl"], help="default: from the path")
    files.add_argument("--camera", help="recordings holding several cameras: the one to evaluate")
    files.add_argument(
        "--track",
        action="store_true",
        help="score tracks instead of boxes: --gt CLIP.mot.txt (or CLIP.json beside it) and --pred "
        "a recording with track_id; MOTA, IDF1, ID switches (py-motmetrics) and line counts",
    )
    files.add_argument(
        "--lines",
        metavar="FILE",
        help="with --track: the true line crossings (default: CLIP.lines.json beside the gt)",
    )
    model = p.add_argument_group("model run")
    model.add_argument("--model", help="model file the agent loads (.onnx, .engine, darknet .cfg)")
    model.add_argument("--data", help="labelled images: YOLO data YAML or folder, or a VOC root")
    model.add_argument(
        "--compare", metavar="OTHER_MODEL", help="evaluate this model too and print the difference"
    )
    model.add_argument("--backend", default="auto", help="inference backend (default auto)")
    model.add_argument("--config", help="take input size, resize mode, labels, threads and warm-up from this "
                                        "agent config's model: section, as run does")
    model.add_argument("--conf", type=float, default=0.001, help="confidence threshold (default 0.001)")
    model.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    model.add_argument("--max-det", type=int, default=300, help="most detections per image (default 300)")
    model.add_argument(
        "--class-match",
        choices=["name", "index"],
        default="name",
        help="pair model classes with ground-truth classes by name (default) or position",
    )
    model.add_argument("--limit", type=int, help="evaluate only the first N images")
    metric = p.add_argument_group("metric")
    metric.add_argument(
        "--metric",
        choices=["coco", "voc07", "voc12"],
        default="coco",
        help="coco (default), voc07 (11-point) or voc12 (all-point)",
    )
    metric.add_argument(
        "--iou",
        type=float,
        help="with --model: NMS IoU (default 0.6); otherwise: VOC match IoU (default 0.5)",
    )
    metric.add_argument("--match-iou", type=float, help="VOC match IoU with --model (default 0.5)")
    metric.add_argument(
        "--plus-one",
        choices=["auto", "on", "off"],
        default="auto",
        help="VOC devkit +1 pixel convention: auto = on for VOC XML ground truth",
    )
    metric.add_argument(
        "--score-threshold",
        type=float,
        default=0.25,
        help="for precision/recall/F1 and the confusion matrix (default 0.25)",
    )
    metric.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "hotcoco", "faster-coco-eval", "pycocotools"],
        help="COCO engine (default auto: the fastest installed)",
    )
    data = p.add_argument_group("data policies")
    data.add_argument("--names", help="class names file for YOLO / VOC ground truth")
    data.add_argument(
        "--sizes", help="image sizes, 'NAME WIDTH HEIGHT' lines, instead of reading image headers"
    )
    data.add_argument(
        "--outside-boxes",
        choices=["error", "keep", "clip"],
        default="error",
        help="boxes overhanging their image by more than 1 px: fail (default), or keep them as "
        "given / clip them, with a warning that counts them",
    )
    data.add_argument(
        "--ignore-unknown-classes",
        action="store_true",
        help="leave out predictions of classes the ground truth lacks (warns with a count)",
    )
    data.add_argument(
        "--ignore-unknown-images",
        action="store_true",
        help="leave out predictions of images the ground truth lacks (warns with a count)",
    )
    data.add_argument(
        "--annotation-ids",
        choices=["keep", "renumber"],
        default="keep",
        help="COCO ground truth: keep the file's annotation ids (default) or number them 1..N",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the results as JSON")
    out.add_argument("--csv", metavar="OUT", help="write the per-class table as CSV")
    out.add_argument("--plots", metavar="DIR", help="write precision-recall and confusion-matrix PNGs")
    out.add_argument("--quiet", action="store_true", help="print only the summary, no per-class table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from agent.evaluate.runner import EvalConfig
    from agent.evaluate.structures import ReadOptions

    if args.track or args.lines:
        return _run_track(args)
    model_mode = bool(args.model or args.data or args.compare)
    if model_mode and (args.gt or args.pred):
        raise BadInputError("eval: use either --gt/--pred or --model/--data, not both")
    if model_mode and not (args.model and args.data):
        raise BadInputError("eval: --model needs --data (and --data needs --model)")
    if not model_mode and not (args.gt and args.pred):
        raise BadInputError("eval: give --gt GT --pred PRED, or --model MODEL --data DATA")
    if args.metric == "coco" and (args.match_iou is not None or (args.iou is not None and not model_mode)):
        raise BadInputError(
            "eval: --iou/--match-iou set the VOC match threshold; COCO always uses 0.50:0.05:0.95"
        )
    options = ReadOptions(
        names=args.names,
        sizes=args.sizes,
        camera=args.camera,
        outside=args.outside_boxes,
        ignore_unknown_classes=args.ignore_unknown_classes,
        ignore_unknown_images=args.ignore_unknown_images,
        annotation_ids=args.annotation_ids,
    )
    match_iou = args.match_iou if model_mode else args.iou
    config = EvalConfig(
        metric=args.metric,
        engine=args.engine,
        iou=0.5 if match_iou is None else match_iou,
        plus_one={"auto": None, "on": True, "off": False}[args.plus_one],
        score_threshold=args.score_threshold,
        confusion=bool(args.plots or args.json),
    )
    if model_mode:
        return _run_models(args, options, config)
    from agent.evaluate.runner import evaluate_files

    result = evaluate_files(args.gt, args.pred, args.gt_format, args.pred_format, options, config)
    _report([result], args)
    return 0


def _run_track(args: argparse.Namespace) -> int:
    from agent.evaluate.mot import evaluate_tracks, summary_text
    from agent.evaluate.report import write_json

    if not args.track:
        raise BadInputError("eval: --lines goes with --track")
    if not (args.gt and args.pred) or args.model or args.data:
        raise BadInputError("eval --track: give --gt CLIP.mot.txt --pred RECORDING.jsonl")
    result = evaluate_tracks(args.gt, args.pred, args.lines, args.camera)
    print(summary_text(result))
    if args.json:
        write_json(args.json, result)
    return 0


def _run_models(args: argparse.Namespace, options, config) -> int:
    from agent.evaluate.datasets import load_ground_truth
    from agent.evaluate.report import latency_text
    from agent.evaluate.run_model import limit_images, run_model
    from agent.evaluate.runner import evaluate

    if args.batch < 1 or args.max_det < 1 or not 0.0 <= args.conf <= 1.0:
        raise BadInputError("eval: --batch and --max-det must be at least 1, --conf within [0, 1]")
    gt = limit_images(load_ground_truth(args.data, None, options), args.limit)
    detector_settings = configured_detector(args.config)
    results = []
    for model in [args.model] + ([args.compare] if args.compare else []):
        run = run_model(
            model,
            gt,
            args.backend,
            args.conf,
            0.6 if args.iou is None else args.iou,
            args.max_det,
            args.batch,
            args.class_match,
            options.ignore_unknown_classes,
            detector_settings=detector_settings,
        )
        result = evaluate(gt, run.preds, config)
        result.extra = {
            "model": model,
            "conf": args.conf,
            "nms_iou": 0.6 if args.iou is None else args.iou,
            "latency_ms": {k: round(v, 3) for k, v in run.latency_ms.items()},
            "images_per_second": round(run.images / run.seconds, 3) if run.seconds else None,
        }
        print(f"model {model}")
        print(latency_text(run.latency_ms, run.images, run.seconds))
        results.append(result)
    _report(results, args)
    return 0


def _report(results: List, args: argparse.Namespace) -> None:
    from agent.evaluate.report import (
        compare_json,
        compare_text,
        per_class_text,
        summary_text,
        to_json,
        write_csv,
        write_json,
    )

    labels: Optional[List[str]] = [args.model, args.compare] if len(results) == 2 else None
    for result in results:
        print(summary_text(result))
        if not args.quiet:
            print(per_class_text(result))
    if labels is not None:
        print(compare_text(results[0], results[1], labels))
    if args.json:
        write_json(args.json, compare_json(results[0], results[1], labels) if labels else to_json(results[0]))
    if args.csv:
        write_csv(args.csv, results[0])
        if labels:  # the compared model's table beside it: OUT.compare.csv
            write_csv(_suffixed(args.csv, "compare"), results[1])
    if args.plots:
        from agent.evaluate.plots import write_plots

        for k, result in enumerate(results):
            write_plots(result, args.plots if k == 0 else f"{args.plots.rstrip('/')}/compare")


def _suffixed(path: str, tag: str) -> str:
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}.{tag}.{suffix}" if dot else f"{path}.{tag}"
