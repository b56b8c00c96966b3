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

from agent.errors import BadInputError

SHIPPED_MODEL = Path("models/shapes-yolov3-tiny.onnx")


def run_selected(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the benchmarks the flags ask for; ``--all`` is every one, on the shipped model."""
    peers = not args.no_peers
    every = args.all
    results: Dict[str, Any] = {}
    if args.postprocess or every:
        from agent.bench.postprocess import run_postprocess_bench

        results["postprocess"] = run_postprocess_bench(repeat=args.repeat, peers=peers)
    if args.eval or every:
        from agent.bench.evaluate import run_eval_bench

        results["eval"] = run_eval_bench(peers=peers)
    if args.mqtt or every:
        from agent.bench.mqtt import run_mqtt_bench

        results["mqtt"] = run_mqtt_bench(messages=args.mqtt_messages, peers=peers)
    model = Path(args.model) if args.model else (SHIPPED_MODEL if every else None)
    if model is not None and ((args.model and not args.pipeline) or every):
        from agent.bench.backend import format_report, run_backend_bench

        backends = ["onnxruntime", "opencv"] if every and args.backend == "auto" else args.backend.split(",")
        results["backend"] = run_backend_bench(model, backends, batch=args.batch, iterations=args.iterations,
                                               warmup=args.warmup, threads=args.threads)
        for line in format_report(results["backend"]):
            print(line)
    if args.pipeline or every:
        results["pipeline"] = _pipeline(args, model, peers)
    if getattr(args, "tracker", False) or every:
        from agent.bench.tracker import run_tracker_bench

        results["tracker"] = run_tracker_bench()
    if getattr(args, "fleet", False):  # minutes, and a broker restart: never part of --all
        from agent.bench.fleet import run_fleet_bench

        results["fleet"] = run_fleet_bench(args)
    return results


def _pipeline(args: argparse.Namespace, model: Optional[Path], peers: bool) -> Dict[str, Any]:
    from agent.bench.pipeline import run_pipeline_bench

    if model is None:
        raise BadInputError("bench --pipeline needs --model MODEL (and --source VIDEO, or one is made)")
    backend = "auto" if args.all else args.backend
    scrape_hz = getattr(args, "scrape_hz", None)

    def bench(video: Path) -> Dict[str, Any]:
        if getattr(args, "tracking", False):  # what tracking costs, and the backend's threads
            from agent.bench.tracking_cost import run_threads_bench, run_tracking_bench

            return {"tracking": run_tracking_bench(model, video, backend, args.threads),
                    "threads": run_threads_bench(model, video)}
        if scrape_hz:  # the cost of Prometheus scraping instead of the comparison with the peers
            from agent.bench.scrape import run_scrape_bench

            return run_scrape_bench(model, video, backend, args.threads, scrape_hz, args.scrape_pairs)
        return run_pipeline_bench(model, video, backend, args.threads, peers)

    if args.source:
        return bench(Path(args.source))
    from agent.datasets.video import make_video

    with tempfile.TemporaryDirectory(prefix="da-bench-") as tmp:
        video = Path(tmp) / "clip.mp4"
        make_video(video, frames=300, fps=30, seed=5)
        return bench(video)


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
    coco = results.get("eval", {}).get("coco_json", {})
    ratios = coco.get("ratios", {})
    if ratios:
        rows.append(("`eval` end to end, 5,000 images / 248k detections: pycocotools / ours", "",
                     f"{ratios.get('pycocotools_over_ours')}x faster"))
        rows.append(("`eval` end to end: faster-coco-eval / ours", "",
                     f"{ratios.get('faster_coco_eval_over_ours')}x faster"))
        rows.append(("`eval` end to end: ours / hotcoco's bare time", "",
                     f"{ratios.get('ours_over_hotcoco_bare')}"))
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
    mqtt = results.get("mqtt", {})
    if "throughput" in mqtt:
        ours, plain = mqtt["throughput"]["acked_per_s"], mqtt.get("plain_paho", {}).get("acked_per_s")
        rows.append(("MQTT QoS 1 acknowledged msgs/s: ours (on-disk spool, zero loss) / plain paho",
                     f"{ours} / {plain}", f"{round(ours / plain, 2) if plain else '-'}"))
    if "latency" in mqtt:
        lat = mqtt["latency"]
        rows.append(("MQTT publish call / to the subscriber, at 100 msgs/s",
                     f"p50 {lat['caller_us']['p50']} us, p99 {lat['caller_us']['p99']} us / "
                     f"p50 {lat['end_to_end_ms']['p50']} ms, p99 {lat['end_to_end_ms']['p99']} ms", ""))
    return rows


def to_markdown(results: Dict[str, Any]) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    lines = [f"Measured on {machine}.",
             "", "| comparison | figures | ratio |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in headline_rows(results)]
    return "\n".join(lines) + "\n"
