"""Tracking scored on generated clips: the shipped model's detections (or the ground truth's
own boxes, jittered) through the event engine, recorded as the agent publishes them, then
``eval --track`` against the clip's MOT ground truth and true line crossings.

    python -m agent.bench.track_clips --seeds 5 21 22 23 24 --frames 300 --json OUT

Each clip: ``make-video`` (640x480, 15 FPS, two counting lines), every frame through
``Detector`` (ONNX Runtime, confidence down to the tracker's ``low_threshold``, so its
second association sees the weak boxes), ``EventEngine`` per frame, and a recording of
``detections/1`` messages with ``track_id`` plus ``events/1`` messages, as ``record`` would
save them. Clips run one after another; ``--threads`` bounds ONNX Runtime's threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.datasets.shapes_draw import CLASS_NAMES
from agent.datasets.video import make_video
from agent.datasets.video_truth import TruthBox, read_mot
from agent.errors import BadInputError
from agent.evaluate.mot import evaluate_tracks
from agent.fileio import atomic_write_text
from agent.tracking import CountingLine, EventEngine, TrackingSettings
from agent.types import Detections

log = logging.getLogger(__name__)

SHIPPED_MODEL = Path("models/shapes-yolov3-tiny.onnx")
#: Two counting lines for every clip: the picture's vertical and horizontal middles.
LINES = (CountingLine("middle", (0.5, 0.0), (0.5, 1.0), relative=True, anchor="center"),
         CountingLine("across", (0.0, 0.5), (1.0, 0.5), relative=True, anchor="bottom_center"))
START_TS = 1_700_000_000.0
RUN = "bench-track"


def detector_frames(video: Path, detector: Any) -> Iterator[Tuple[int, Detections, int, int]]:
    """(frame index, detections, width, height) for every frame of ``video``."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise BadInputError(f"{video}: OpenCV cannot open it")
    try:
        k = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            yield k, detector([image])[0], image.shape[1], image.shape[0]
            k += 1
    finally:
        cap.release()


def jittered_truth(truth: Sequence[TruthBox], frames: int, width: int, height: int, seed: int = 0,
                   jitter: float = 0.03, miss: float = 0.05, clutter: float = 0.1
                   ) -> Iterator[Tuple[int, Detections, int, int]]:
    """The annotated boxes as detections: each side moved by ``jitter`` of the box size, a
    fraction ``miss`` left out (a detector's misses) or scored low, and ``clutter`` false
    boxes per frame on average, scattered over the picture."""
    rng = np.random.default_rng(seed)
    by_frame: Dict[int, List[TruthBox]] = {}
    for row in truth:
        if row.considered:
            by_frame.setdefault(row.frame, []).append(row)
    for k in range(frames):
        rows = by_frame.get(k, [])
        boxes, scores, classes = [], [], []
        for r in rows:
            x0, y0, x1, y1 = r.box
            size = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
            u = rng.random()
            if u < miss:
                continue
            boxes.append(np.array(r.box) + rng.normal(0.0, jitter, 4) * size)
            scores.append(rng.uniform(0.15, 0.5) if u < 2 * miss else rng.uniform(0.6, 0.95))
            classes.append(r.class_id)
        for _ in range(rng.poisson(clutter)):
            x, y, s = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(15, 60)
            boxes.append(np.array([x, y, x + s, y + s]))
            scores.append(rng.uniform(0.1, 0.6))
            classes.append(int(rng.integers(0, 3)))
        yield k, Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                            np.array(classes, np.int32)), width, height


def cached_detections(video: Path, detector: Any, cache: Path) -> List[Tuple[int, Detections, int, int]]:
    """``detector_frames`` of ``video``, kept in ``cache`` (.npz) so that trying tracker
    settings does not run the model again (the cache names the model and its threshold)."""
    if cache.is_file():
        with np.load(cache) as data:
            size = (int(data["size"][0]), int(data["size"][1]))
            return [(k, Detections(data[f"xyxy{k}"], data[f"scores{k}"], data[f"classes{k}"]), *size)
                    for k in range(int(data["frames"]))]
    frames = list(detector_frames(video, detector))
    arrays: Dict[str, np.ndarray] = {"frames": np.array(len(frames)),
                                     "size": np.array(frames[0][2:] if frames else (0, 0))}
    for k, dets, _, _ in frames:
        arrays.update({f"xyxy{k}": dets.xyxy, f"scores{k}": dets.scores, f"classes{k}": dets.class_ids})
    np.savez(cache, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds like its allow_pickle: bool
    return frames


def record_clip(frames: Iterable[Tuple[int, Detections, int, int]], settings: TrackingSettings, fps: float,
                lines: Sequence[CountingLine] = LINES, camera: str = "cam"
                ) -> Tuple[List[str], Dict[str, Any]]:
    """Run the engine over ``frames``; the recording's lines and the final counts."""
    from agent.publish.payloads import detections_payload

    engine = EventEngine(settings, CLASS_NAMES, (), lines, start_ts=START_TS)
    out: List[str] = []
    seq = {"detections": 0, "events": 0}
    counts: Dict[str, Any] = {}
    k, ts = 0, START_TS

    def emit_events(events: List[Dict[str, Any]]) -> None:
        for event in events:
            seq["events"] += 1
            out.append(json.dumps({"schema": "events/1", "device": "bench", "camera": camera, "run": RUN,
                                   "seq": seq["events"], **event}))

    for k, dets, width, height in frames:
        ts = START_TS + k / fps
        result = engine.update(dets, None, k, ts, width, height)
        seq["detections"] += 1
        message = detections_payload(device="bench", camera=camera, run=RUN, seq=seq["detections"], frame=k,
                                     skipped=0, ts=ts, width=width, height=height, model="bench",
                                     latency_ms={}, detections=dets, names=CLASS_NAMES)
        for item, track_id in zip(message["detections"], result.track_ids):
            item["track_id"] = track_id
        out.append(json.dumps(message))
        emit_events(result.events)
        counts = result.counts
    final = engine.finish(k + 1, ts + 1.0 / fps)
    emit_events(final.events)
    return out, counts


def score_clip(seed: int, frames: int, out_dir: Path, settings: TrackingSettings, detector: Optional[Any],
               fps: float = 15.0, width: int = 640, height: int = 480) -> Dict[str, Any]:
    """Make clip ``seed``, track it (detector, or jittered truth when None) and score it."""
    video = out_dir / f"clip-{seed}.mp4"
    if not video.with_suffix(".lines.json").is_file():
        make_video(video, frames=frames, fps=fps, seed=seed, width=width, height=height, lines=LINES)
    source: Iterable[Tuple[int, Detections, int, int]]
    if detector is not None:
        tag = f"{Path(detector.info.name).stem}-{detector.postprocess.settings.conf_threshold:g}"
        source = cached_detections(video, detector, out_dir / f"clip-{seed}.{tag}.npz")
    else:
        source = jittered_truth(read_mot(video.with_suffix(".mot.txt")), frames, width, height, seed)
    t0 = time.perf_counter()
    lines, _ = record_clip(source, settings, fps)
    seconds = time.perf_counter() - t0
    recording = out_dir / f"clip-{seed}.{'model' if detector is not None else 'truth'}.jsonl"
    atomic_write_text(recording, "\n".join(lines) + "\n")
    result = evaluate_tracks(video.with_suffix(".mot.txt"), recording)
    result["seed"], result["seconds"] = seed, round(seconds, 2)
    return result


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    keys = ("mota", "idf1", "num_switches", "id_switches_per_1000", "precision", "recall", "mean_iou")
    mean = {k: round(statistics.mean(r["scores"][k] for r in results), 4) for k in keys}
    exact = sum(1 for r in results if r.get("line_counts", {}).get("all_exact"))
    return {"mean": mean, "clips": len(results), "line_counts_exact": exact}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 21, 22, 23, 24])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--truth", action="store_true",
                        help="jittered ground-truth boxes instead of the model")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    parser.add_argument("--out", default="runs/track-clips", help="folder for the clips and recordings")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a tracking setting, e.g. --set high_threshold=0.4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = TrackingSettings(enabled=True, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = None
    if not args.truth:
        from agent.inference.detector import Detector
        from agent.inference.postprocess.postprocessor import PostprocessSettings

        detector = Detector.open(Path(args.model), "onnxruntime", threads=args.threads,
                                 settings=PostprocessSettings(conf_threshold=settings.low_threshold))
    results = []
    for seed in args.seeds:
        result = score_clip(seed, args.frames, out, settings, detector)
        s = result["scores"]
        counts = {n: f"{c['in']}/{c['true_in']} in, {c['out']}/{c['true_out']} out"
                  for n, c in result["line_counts"]["lines"].items()}
        print(f"seed {seed}: MOTA {s['mota']:.3f} IDF1 {s['idf1']:.3f} IDsw {s['num_switches']} "
              f"({s['num_objects']} boxes) P {s['precision']:.3f} R {s['recall']:.3f}; lines {counts}; "
              f"{result['seconds']} s", flush=True)
        results.append(result)
    summary = summarize(results)
    print(f"mean over {len(results)} clips: {json.dumps(summary['mean'])}; line counts exact on "
          f"{summary['line_counts_exact']}/{len(results)} clips")
    if args.json:
        atomic_write_text(args.json, json.dumps({"settings": settings.__dict__, "model": None if args.truth
                                                 else args.model, "clips": results, "summary": summary},
                                                indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
