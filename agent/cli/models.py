"""Model tools: ``convert-darknet``, ``build-engine`` and ``ensure-engine`` (agent/modeltools/).

``ensure-engine`` is what detection-agent-engine.service runs before every start of the
agent: it builds the configured TensorRT engine when it is missing or stale. Its exit codes:
0 the engine is current (or was just built, or ``model.path`` is no engine), 1 an engine is
needed and could not be built (with ``--check``: a build is needed), 2 bad config or input.

Nothing heavy is imported here: onnx, tensorrt and pycuda load when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("convert-darknet",
                       help="convert a darknet .cfg + .weights to ONNX (decoded YOLO heads)")
    p.add_argument("cfg", help="darknet network description (.cfg)")
    p.add_argument("weights", help="darknet weights (.weights)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--names", help="class names file (default: MODEL.names / coco.names beside the cfg)")
    p.add_argument("--imgsz", type=int, help="input size, a multiple of 32 (default: the cfg's width/height)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    group.add_argument("--dynamic", action="store_true", help="dynamic batch size")
    p.set_defaults(handler=cmd_convert_darknet)

    p = sub.add_parser("build-engine",
                              help="build a TensorRT engine from an ONNX model, on the device")
    p.add_argument("model", help="ONNX model (from `detection-agent export`)")
    p.add_argument("-o", "--output", required=True, help="engine file to write (.engine); a .json sidecar "
                                                         "goes beside it")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (about 2x faster on Jetson)")
    p.add_argument("--int8", action="store_true", help="INT8 with calibration (FP16 where INT8 cannot go)")
    p.add_argument("--calib-images", metavar="DIR", help="images for INT8 calibration, like the camera's")
    p.add_argument("--calib-cache", metavar="FILE", help="calibration cache to reuse or write (default: "
                                                         "OUTPUT.calib)")
    p.add_argument("--calib-max", type=int, default=500, help="most calibration images used (default 500)")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per call, e.g. the number of cameras (needs a --dynamic export above 1; "
                        "default 1)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace (default "
                                                                             "1024)")
    p.add_argument("--nms", action="store_true", help="append TensorRT's EfficientNMS: NMS runs on the GPU")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold with --nms (default 0.45)")
    p.add_argument("--score", type=float, default=0.25,
                   help="score floor with --nms (default 0.25); lower runtime thresholds cannot go below it")
    p.add_argument("--max-det", type=int, default=100, help="most detections per image with --nms (default "
                                                            "100)")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="TensorRT timing cache (default: beside the output)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.set_defaults(handler=cmd_build_engine)

    p = sub.add_parser("ensure-engine",
                       help="build the configured TensorRT engine when missing or stale (the boot unit)")
    p.add_argument("--config", required=True, help="the agent's config (/etc/detection-agent/agent.yaml)")
    p.add_argument("--check", action="store_true", help="only say whether a build is needed (exit 1 if so)")
    p.add_argument("--force", action="store_true", help="rebuild even when the engine is current")
    # What it decided goes to the journal: INFO unless --log-level says otherwise.
    p.set_defaults(handler=cmd_ensure_engine, default_log_level="INFO")


def cmd_convert_darknet(args: argparse.Namespace) -> int:
    from agent.inference.backends.onnx_info import read_summary
    from agent.inference.labels import read_names
    from agent.modeltools.darknet.to_onnx import convert

    names = read_names(Path(args.names)) if args.names else None
    out = convert(args.cfg, args.weights, args.output, names=names, imgsz=args.imgsz,
                  batch=args.batch, dynamic=args.dynamic)
    summary = read_summary(out, "convert-darknet")
    print(f"wrote {out}: input {summary.input_shape}, outputs {', '.join(summary.output_names)}, "
          f"{summary.info.num_classes} classes")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from agent.modeltools.tensorrt.build import MB, BuildOptions, build_engine

    options = BuildOptions(
        onnx_path=Path(args.model), output=Path(args.output), fp16=args.fp16, int8=args.int8,
        calib_images=Path(args.calib_images) if args.calib_images else None,
        calib_cache=Path(args.calib_cache) if args.calib_cache else None, calib_max=args.calib_max,
        batch=args.batch, workspace_mb=args.workspace, nms=args.nms, iou=args.iou, score=args.score,
        max_det=args.max_det, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        device=args.device)
    meta = build_engine(options)
    size = Path(options.output).stat().st_size / MB
    precision = "int8" if meta.build["int8"] else "fp16" if meta.build["fp16"] else "fp32"
    print(f"engine written: {options.output} ({size:.1f} MB, TensorRT {meta.tensorrt_version}, "
          f"{meta.gpu_name}, "
          f"{precision}, batch {options.batch}{', EfficientNMS' if options.nms else ''})")
    return 0


def cmd_ensure_engine(args: argparse.Namespace) -> int:
    from agent.modeltools.tensorrt.deploy import ensure_engine

    return ensure_engine(Path(args.config), check_only=args.check, force=args.force)
