"""``bench --pipeline --tracking``: what tracking costs the pipeline, and the backend's threads.

1. Tracking on against off, in one run of the pipeline (every frame of a video, looped ->
   preprocess -> infer -> decode -> NMS -> zones/tracking/lines -> a counting sink), cut into
   windows of ``window_s`` seconds in ABBA order (off/on, on/off, ...), tracking switched
   with ``Pipeline.apply`` exactly as a SIGHUP would: drift and a busy neighbour fall on both
   alike. Each pair gives a ratio of FPS with tracking over FPS without; also frames per CPU
   second of the process (what tracking costs a CPU-bound pipeline, much less moved by other
   processes than FPS is). "On" also decodes down to the tracker's ``low_threshold``.
2. ``threads``: for each ONNX Runtime thread count, in turns, the backend alone
   (``backend.infer`` back to back) and the whole pipeline with tracking on; the pipeline's
   FPS over the best raw backend FPS is the share of the ceiling the pipeline reaches.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from agent.bench.backend import run_backend_bench
from agent.bench.pipeline import CountingSink
from agent.capture import Camera
from agent.config.schema import CameraConfig
from agent.inference.detector import DetectorSettings, build_detector, inference_threads
from agent.runtime.pipeline import Pipeline
from agent.runtime.settings import CameraSettings, RuntimeSettings
from agent.tracking.lines import CountingLine
from agent.tracking.settings import TrackingSettings

CAMERA = "bench"
LINE = CountingLine("middle", (0.5, 0.0), (0.5, 1.0), relative=True)


def tracking_settings(on: bool) -> RuntimeSettings:
    """The bench camera with tracking and a counting line, or with neither."""
    if not on:
        return RuntimeSettings()
    return RuntimeSettings(cameras={CAMERA: CameraSettings(None, (LINE,), TrackingSettings(enabled=True))})


def _quartiles(values: Sequence[float]) -> List[float]:
    ordered = sorted(values)
    return [round(ordered[len(ordered) // 4], 4), round(ordered[(3 * len(ordered)) // 4], 4)]


class _Looped:
    """One pipeline on a looped video; ``window(s)`` counts frames, wall and CPU time."""

    def __init__(self, model: Path, video: Path, settings: DetectorSettings, runtime: RuntimeSettings
                 ) -> None:
        self.sink = CountingSink()
        camera = Camera(CameraConfig(name=CAMERA, source=str(video), loop=True))
        self.pipeline = Pipeline([camera], lambda: build_detector(model, settings), [self.sink],
                                 settings=runtime)

    def __enter__(self) -> _Looped:
        self.pipeline.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pipeline.stop()

    def window(self, seconds: float) -> Dict[str, float]:
        frames, wall, cpu = self.sink.frames, time.perf_counter(), time.process_time()
        time.sleep(seconds)
        frames, wall, cpu = self.sink.frames - frames, time.perf_counter() - wall, time.process_time() - cpu
        return {"fps": frames / wall, "frames_per_cpu_s": frames / cpu if cpu > 0 else 0.0}


def run_tracking_bench(model: Path, video: Path, backend: str = "auto", threads: Optional[int] = None,
                       rounds: int = 6, window_s: float = 5.0) -> Dict[str, Any]:
    # threads None: what ``run`` would choose for one camera (inference_threads), not the runtime's default
    settings = DetectorSettings(backend=backend, threads=threads or inference_threads(1))
    off, on = tracking_settings(False), tracking_settings(True)
    windows: Dict[bool, List[Dict[str, float]]] = {False: [], True: []}
    ratios: List[float] = []
    cpu_ratios: List[float] = []
    with _Looped(model, video, settings, off) as run:
        run.window(window_s)  # warm-up: caches, the first frames' queue
        for index in range(rounds):
            order = (False, True) if index % 2 == 0 else (True, False)  # ABBA
            pair: Dict[bool, Dict[str, float]] = {}
            for tracking in order:
                run.pipeline.apply(on if tracking else off)
                run.window(0.5)  # the switch takes effect at the next batch; let it settle
                pair[tracking] = run.window(window_s)
                windows[tracking].append(pair[tracking])
            ratios.append(pair[True]["fps"] / pair[False]["fps"])
            cpu_ratios.append(pair[True]["frames_per_cpu_s"] / pair[False]["frames_per_cpu_s"])
        latency: Dict[str, Any] = dict(run.pipeline.metrics.snapshot()["latency_ms"])  # type: ignore[call-overload]  # stages -> figures
        tracking_ms: Dict[str, Any] = latency.get("tracking", {})
    report: Dict[str, Any] = {
        "model": str(model), "video": str(video), "rounds": rounds, "window_s": window_s,
        "fps_off": round(statistics.median(w["fps"] for w in windows[False]), 2),
        "fps_on": round(statistics.median(w["fps"] for w in windows[True]), 2),
        "on_over_off": round(statistics.median(ratios), 4), "on_over_off_quartiles": _quartiles(ratios),
        "cpu_on_over_off": round(statistics.median(cpu_ratios), 4),
        "cpu_on_over_off_quartiles": _quartiles(cpu_ratios),
        "tracking_ms": {"p50": tracking_ms.get("p50"), "p99": tracking_ms.get("p99")},
    }
    print(f"tracking on {report['fps_on']} fps vs off {report['fps_off']} fps: x{report['on_over_off']} "
          f"(quartiles {report['on_over_off_quartiles']}); frames per CPU second "
          f"x{report['cpu_on_over_off']}; tracking stage p50 {tracking_ms.get('p50')} ms")
    return report


def run_threads_bench(model: Path, video: Path, thread_counts: Sequence[int] = (1, 2), turns: int = 3,
                      window_s: float = 8.0) -> Dict[str, Any]:
    """Per ONNX Runtime thread count: the backend alone and the pipeline with tracking on, in turns."""
    raw: Dict[int, List[float]] = {t: [] for t in thread_counts}
    piped: Dict[int, List[float]] = {t: [] for t in thread_counts}
    for turn in range(turns):
        for threads in (thread_counts if turn % 2 == 0 else list(reversed(thread_counts))):
            result = run_backend_bench(Path(model), ["onnxruntime"], iterations=60, warmup=5, threads=threads)
            raw[threads].append(float(next(iter(result["backends"].values()))["fps"]))
            settings = DetectorSettings(backend="onnxruntime", threads=threads)
            with _Looped(model, video, settings, tracking_settings(True)) as run:
                run.window(2.0)
                piped[threads].append(run.window(window_s)["fps"])
    ceiling = max(statistics.median(v) for v in raw.values())
    rows: Dict[str, Dict[str, float]] = {}
    for t in thread_counts:
        backend_fps, pipeline_fps = statistics.median(raw[t]), statistics.median(piped[t])
        rows[str(t)] = {"backend_fps": round(backend_fps, 2), "pipeline_fps": round(pipeline_fps, 2),
                        "pipeline_over_best_backend": round(pipeline_fps / ceiling, 3),
                        "pipeline_over_own_backend": round(pipeline_fps / backend_fps, 3)}
        print(f"threads {t}: backend {backend_fps:.2f} fps, pipeline (tracking on) {pipeline_fps:.2f} fps, "
              f"x{pipeline_fps / ceiling:.3f} of the best backend, x{pipeline_fps / backend_fps:.3f} "
              "of its own")
    return {"turns": turns, "window_s": window_s, "best_backend_fps": round(ceiling, 2), "threads": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m agent.bench.tracking_cost --model M --source VIDEO [--threads-sweep] [--json OUT]``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="tracking on vs off, and ONNX Runtime threads")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--source", required=True, type=Path, help="a video (looped)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads for the on/off comparison")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--threads-sweep", action="store_true", help="also compare 1 and 2 threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report: Dict[str, Any] = {"tracking": run_tracking_bench(args.model, args.source, threads=args.threads,
                                                             rounds=args.rounds, window_s=args.window)}
    if args.threads_sweep:
        report["threads"] = run_threads_bench(args.model, args.source)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
