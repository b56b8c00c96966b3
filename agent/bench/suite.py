"""What ``detection-agent bench`` runs, and ``make bench``'s whole suite (``--all``).

Every comparison runs this project's code and its peer in the same process run, so the
ratios, not the absolute times, are the figures to quote. ``--markdown`` writes the
headline ratios as a table for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import BadInputError

SHIPPED_MODEL = Path("models/shapes-yolov3-tiny.onnx")


def run_selected(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the benchmarks the flags ask for; ``--all`` is every one, on the shipped model."""
    peers = not args.no_peers
    every = args.all
    results: Dict[str, Any] = {}
    if args.postprocess or every:
        from .postprocess import run_postprocess_bench

        results["postprocess"] = run_postprocess_bench(repeat=args.repeat, peers=peers)
    if args.eval or every:
        from .evaluate import run_eval_bench

        results["eval"] = run_eval_bench(peers=peers)
    if args.mqtt or every:
        from .mqtt import run_mqtt_bench

        results["mqtt"] = run_mqtt_bench(messages=args.mqtt_messages, peers=peers)
    model = Path(args.model) if args.model else (SHIPPED_MODEL if every else None)
    if (args.model and not args.pipeline) or every:
        from .backend import format_report, run_backend_bench

        backends = ["onnxruntime", "opencv"] if every and args.backend == "auto" else args.backend.split(",")
        results["backend"] = run_backend_bench(model, backends, batch=args.batch, iterations=args.iterations,
                                               warmup=args.warmup, threads=args.threads)
        for line in format_report(results["backend"]):
            print(line)
    if args.pipeline or every:
        results["pipeline"] = _pipeline(args, model, peers)
    return results


def _pipeline(args: argparse.Namespace, model: Optional[Path], peers: bool) -> Dict[str, Any]:
    from .pipeline import run_pipeline_bench

    if model is None:
        raise BadInputError("bench --pipeline needs --model MODEL (and --source VIDEO, or one is made)")
    backend = "auto" if args.all else args.backend
    if args.source:
        return run_pipeline_bench(model, Path(args.source), backend, args.threads, peers)
    from ..datasets.synthetic import make_video

    with tempfile.TemporaryDirectory(prefix="da-bench-") as tmp:
        video = Path(tmp) / "clip.mp4"
        make_video(video, frames=300, fps=30, seed=5)
        return run_pipeline_bench(model, video, backend, args.threads, peers)


def headline_rows(results: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(comparison, figures, ratio) rows for the Markdown table; missing parts are skipped."""
    rows: List[Tuple[str, str, str]] = []
    post = results.get("postprocess", {})
    for key, label in (("decode_nms_conf_0.25", "decode + NMS, YOLOv3-416 output, conf 0.25"),
                       ("decode_nms_conf_0.001", "decode + NMS, YOLOv3-416 output, conf 0.001")):
        row = post.get(key)
        if row and "ultralytics_over_ours" in row:
            t = row["timings"]
            rows.append((f"{label}: ours vs ultralytics `non_max_suppression`",
                         f"{t['ours']['median_ms']} ms vs {t['ultralytics']['median_ms']} ms",
                         f"{row['ultralytics_over_ours']}x faster"))
    nms_row = post.get("nms_1000_boxes_80_classes")
    if nms_row and "torchvision_over_ours" in nms_row:
        t = nms_row["timings"]
        rows.append(("NMS, 1,000 boxes, 80 classes: ours vs torchvision `batched_nms`",
                     f"{t['ours']['median_ms']} ms vs {t['torchvision']['median_ms']} ms",
                     f"{nms_row['torchvision_over_ours']}x faster"))
    for name, figures in _flatten_ratios(results.get("eval", {})):
        rows.append((f"eval: {name}", "", figures))
    backend = results.get("backend", {})
    for pair, ratio in backend.get("p50_ratios", {}).items():
        rows.append((f"raw inference p50, {pair} (shipped model)", "", f"{ratio}"))
    pipe = results.get("pipeline", {})
    if pipe:
        rows.append(("pipeline FPS / backend FPS", f"{pipe['pipeline_fps']} / {pipe['backend_fps']}",
                     f"{pipe['pipeline_over_backend']}"))
        if "ultralytics_fps" in pipe:
            rows.append(("pipeline FPS / ultralytics `predict` FPS", f"{pipe['pipeline_fps']} / "
                         f"{pipe['ultralytics_fps']}", f"{pipe['pipeline_over_ultralytics']}x"))
        rows.append(("capture-to-publish latency", f"p50 {pipe['latency_ms']['p50']} ms, "
                     f"p99 {pipe['latency_ms']['p99']} ms", ""))
    for name, figures in _flatten_ratios(results.get("mqtt", {})):
        rows.append((f"MQTT: {name}", "", figures))
    return rows


def _flatten_ratios(report: Dict[str, Any], prefix: str = "") -> List[Tuple[str, str]]:
    """Every ``*ratio*`` / ``*_over_*`` / ``*per_s*`` / ``p50``/``p99`` figure in a nested report."""
    found: List[Tuple[str, str]] = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.extend(_flatten_ratios(value, name + " "))
        elif isinstance(value, (int, float)) and any(t in key for t in ("ratio", "_over_", "per_s")):
            found.append((name, str(value)))
    return found


def to_markdown(results: Dict[str, Any]) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    lines = [f"Measured on {machine}.",
             "", "| comparison | figures | ratio |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in headline_rows(results)]
    return "\n".join(lines) + "\n"
