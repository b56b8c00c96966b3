"""``bench --pipeline``: the whole pipeline's FPS against the backend's raw FPS and against
ultralytics' own ``predict`` on the same ONNX model and video, in one run.

- backend: ``backend.infer`` alone on the model's input, back to back (the ceiling);
- pipeline: capture (every frame of the file) -> preprocess -> infer -> decode -> NMS ->
  a sink that only counts, with capture-to-publish latency percentiles;
- ultralytics: ``YOLO(model).predict(source=video, stream=True)``, what a user would run
  otherwise (imported only here; the agent never loads torch).
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

from agent.bench.backend import run_backend_bench
from agent.capture import Camera
from agent.config.schema import CameraConfig
from agent.errors import BadInputError
from agent.inference.detector import DetectorSettings, build_detector
from agent.runtime.pipeline import FrameResult, Pipeline

log = logging.getLogger(__name__)


class CountingSink:
    def __init__(self) -> None:
        self.frames = 0

    def handle(self, result: FrameResult) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


def pipeline_fps(model: Path, video: Path, backend: str = "auto", threads: Optional[int] = None,
                 settings: Optional[DetectorSettings] = None, sink: Optional[CountingSink] = None
                 ) -> Dict[str, Any]:
    """Every frame of ``video`` (a file or an image folder) through the pipeline; ``settings``
    (default: ``backend`` and ``threads``, the model's own sizes) go to ``build_detector``."""
    sink = sink if sink is not None else CountingSink()
    camera = Camera(CameraConfig(name="bench", source=str(video)))
    chosen = settings if settings is not None else DetectorSettings(backend=backend, threads=threads)
    pipeline = Pipeline([camera], lambda: build_detector(model, chosen), [sink])
    pipeline.start()
    started = time.perf_counter()
    pipeline.finished.wait(3600)
    elapsed = time.perf_counter() - started
    pipeline.stop()
    snapshot: Dict[str, Any] = pipeline.metrics.snapshot()
    latency = snapshot["latency_ms"].get("capture_to_publish", {})
    return {"fps": round(sink.frames / elapsed, 2), "frames": sink.frames,
            "latency_ms": {"p50": latency.get("p50"), "p99": latency.get("p99")}}


def ultralytics_fps(model: Path, video: Path, imgsz: int) -> Dict[str, Any]:
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    next(iter(yolo.predict(source=str(video), stream=True, imgsz=imgsz, verbose=False)))  # warm-up
    frames = 0
    started = time.perf_counter()
    for _ in yolo.predict(source=str(video), stream=True, imgsz=imgsz, conf=0.25, verbose=False):
        frames += 1
    elapsed = time.perf_counter() - started
    return {"fps": round(frames / elapsed, 2), "frames": frames}


def run_pipeline_bench(model: Path, video: Path, backend: str = "auto", threads: Optional[int] = None,
                       peers: bool = True) -> Dict[str, Any]:
    if not Path(video).is_file():
        raise BadInputError(f"--source: {video}: no such video (make one with `detection-agent make-video`)")
    raw = run_backend_bench(Path(model), [backend], iterations=100, warmup=10, threads=threads)
    backend_result = next(iter(raw["backends"].values()))
    ours = pipeline_fps(Path(model), Path(video), backend, threads)
    report: Dict[str, Any] = {
        "model": str(model), "video": str(video), "machine": platform.machine(),
        "pipeline_fps": ours["fps"], "backend_fps": backend_result["fps"], "latency_ms": ours["latency_ms"],
        "frames": ours["frames"],
        "pipeline_over_backend": round(float(ours["fps"]) / float(backend_result["fps"]), 2),
    }
    if peers:
        peer = ultralytics_fps(Path(model), Path(video), int(backend_result["input"][-1]))
        report["ultralytics_fps"] = peer["fps"]
        report["pipeline_over_ultralytics"] = round(float(ours["fps"]) / float(peer["fps"]), 2)
    latency = report["latency_ms"]
    print(f"pipeline {report['pipeline_fps']} fps, backend alone {report['backend_fps']} fps "
          f"(x{report['pipeline_over_backend']}), ultralytics predict {report.get('ultralytics_fps', '-')} "
          f"fps (pipeline x{report.get('pipeline_over_ultralytics', '-')}); capture-to-publish p50 "
          f"{latency['p50']} ms, p99 {latency['p99']} ms")
    return report
