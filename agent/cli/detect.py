"""``detection-agent detect``: run a model over image files, like ``yolo predict``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from agent.cli.arguments import configured_detector
from agent.errors import DataError

if TYPE_CHECKING:
    from agent.inference.detector import DetectorSettings

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
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


def cmd_detect(args: argparse.Namespace) -> int:
    return run_detect(
        model=Path(args.model), inputs=args.inputs, backend=args.backend, conf=args.conf, iou=args.iou,
        max_det=args.max_det, classes=args.classes, json_out=args.json, save_dir=args.save,
        names_file=args.names, quiet=args.quiet, detector_settings=configured_detector(args.config),
    )


def run_detect(model: Path, inputs: Sequence[str], backend: str = "auto", conf: float = 0.25,
               iou: float = 0.45, max_det: int = 100, classes: Optional[Sequence[str]] = None,
               json_out: Optional[str] = None, save_dir: Optional[str] = None,
               names_file: Optional[str] = None, quiet: bool = False,
               detector_settings: Optional[DetectorSettings] = None) -> int:
    """``detector_settings`` (from ``--config``): the model side (backend, input size, resize
    mode, labels, threads, warm-up) as ``run`` has it; the thresholds come from the arguments,
    and the backend unless it is ``auto``."""
    # Imported here, not with the parser: every command's parser is built at start-up, and
    # `run` must not load OpenCV before its SIGHUP handler is up (test_run_faults).
    from agent.fileio import atomic_write_text, list_images, read_image, write_image
    from agent.inference.detector import DetectorSettings, build_detector
    from agent.inference.postprocess.postprocessor import PostprocessSettings
    from agent.runtime.draw import draw_detections

    images = list_images(inputs)  # bad paths fail before the model loads
    # An image named on the command line must be readable; one found in a folder or by a
    # pattern is skipped with a warning when it is not (as ``run`` does with image folders).
    named = {Path(item) for item in inputs if Path(item).is_file()}
    skipped = 0
    settings = PostprocessSettings(conf_threshold=conf, iou_threshold=iou, max_detections=max_det,
                                   classes=classes)
    base = detector_settings or DetectorSettings()
    chosen = dataclasses.replace(base, postprocess=settings, labels=names_file if names_file else base.labels,
                                 backend=base.backend if backend == "auto" else backend)
    records: List[Dict[str, object]] = []
    started = time.perf_counter()
    with build_detector(model, chosen) as detector:
        for path in images:
            try:
                image = read_image(path)
            except DataError as exc:
                if path in named:
                    raise
                log.warning("skipping %s", exc)
                skipped += 1
                continue
            (dets,) = detector([image])
            boxes = dets.to_list(detector.class_names)
            records.append({"image": str(path), "width": image.shape[1], "height": image.shape[0],
                            "latency_ms": {k: round(v, 2) for k, v in detector.last_latency_ms.items()},
                            "detections": boxes})
            if not quiet:
                for b in boxes:
                    print(f"{path}: {b['label']} {b['score']:.2f} {b['box']}")
                if not boxes:
                    print(f"{path}: nothing found")
            if save_dir:
                write_image(Path(save_dir) / f"{path.stem}.jpg",
                            draw_detections(image, dets, detector.class_names))
    elapsed = time.perf_counter() - started
    if skipped == len(images):
        raise DataError(f"no readable image in {', '.join(str(i) for i in inputs)} "
                        f"({skipped} unreadable file(s) skipped)")
    log.info("%d images in %.2f s (%d unreadable skipped)", len(images) - skipped, elapsed, skipped)
    if json_out:
        atomic_write_text(json_out, json.dumps(records, indent=1) + "\n")
    return 0
