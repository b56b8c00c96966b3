"""Evaluation benchmark: ``detection-agent eval`` end to end against the COCO engines.

On a generated COCO-val-sized workload (5,000 images, 80 categories, ~27k boxes, ~248k
detections; eval_workload.py), all in one process and one run, files read each time:

- ours: ``runner.evaluate_files`` (what ``eval --gt --pred`` runs: reading and checking
  both files, the engine, per-class results), with the auto engine and with
  faster-coco-eval (the engine a Python 3.8 / JetPack 5 device gets);
- pycocotools and faster-coco-eval end to end: ``COCO(gt.json)``, ``loadRes(pred.json)``,
  evaluate, accumulate, summarize;
- hotcoco bare: the same with hotcoco, which parses the JSON files in Rust; and its
  evaluation alone, data already in memory.

The 12 numbers of every contender are compared. Then the YOLO-txt path: 5,000 small real
images (JPEG and PNG headers), 5,000 label files and 5,000 prediction files, end to end,
with hotcoco's ``COCO.from_yolo`` (Pillow for sizes) as the reference for reading labels.
Engines are imported lazily; pycocotools runs once (tens of seconds), the rest ``repeat``
times, interleaved, medians reported.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import numpy as np

from agent.bench import eval_workload
from agent.errors import AgentError
from agent.evaluate.coco import STAT_NAMES, installed
from agent.evaluate.runner import EvalConfig, evaluate_files

log = logging.getLogger(__name__)

T = TypeVar("T")


def _quiet_call(fn: Callable[[], T]) -> T:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _engine_end_to_end(engine: str, gt_path: Path, pred_path: Path) -> Callable[[], List[float]]:
    def run() -> List[float]:
        if engine == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        elif engine == "faster-coco-eval":
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        else:
            from hotcoco import COCO, COCOeval
        gt = COCO(str(gt_path))
        return _stats(COCOeval, gt, gt.loadRes(str(pred_path)))

    return lambda: _quiet_call(run)


def _hotcoco_eval_only(gt_path: Path, pred_path: Path) -> Callable[[], List[float]]:
    from hotcoco import COCO, COCOeval

    gt = COCO(str(gt_path))
    dt = gt.loadRes(str(pred_path))

    return lambda: _quiet_call(lambda: _stats(COCOeval, gt, dt))


def _stats(cocoeval: Any, gt: Any, dt: Any) -> List[float]:
    """The 12 numbers from any pycocotools-style evaluator class."""
    ev = cocoeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats]


def _ours(gt_path: Path, pred_path: Path, engine: str = "auto", gt_format: Optional[str] = None,
          pred_format: Optional[str] = None) -> Callable[[], List[float]]:
    def run() -> List[float]:
        result = evaluate_files(gt_path, pred_path, gt_format, pred_format, config=EvalConfig(engine=engine))
        if result.coco is None:
            raise AgentError("the benchmark's evaluation gave no COCO result")
        return [result.coco.stats[k] for k in STAT_NAMES]

    return run


def _time(
    cases: Dict[str, Callable[[], List[float]]], repeat: Dict[str, int]
) -> Dict[str, Dict[str, Any]]:
    """Rounds in which every case still due runs once: load and cache effects fall on all alike."""
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    stats: Dict[str, List[float]] = {}
    for round_ in range(max(repeat.values())):
        for name, fn in cases.items():
            if round_ >= repeat[name]:
                continue
            start = time.perf_counter()
            stats[name] = fn()
            samples[name].append(time.perf_counter() - start)
            log.info("%s: %.3f s", name, samples[name][-1])
    return {
        name: {
            "median_s": round(statistics.median(v), 4),
            "min_s": round(min(v), 4),
            "runs": len(v),
            "stats": stats[name],
        }
        for name, v in samples.items()
    }


def run_eval_bench(
    images: int = 5000, seed: int = 0, repeat: int = 3, peers: bool = True, workdir: Optional[str] = None
) -> Dict[str, Any]:
    report: Dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="eval-bench-", dir=workdir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        work = eval_workload.generate(images, seed)
        gt_path, pred_path = eval_workload.write_coco(work, root / "coco")
        yolo_root, yolo_pred = eval_workload.write_yolo(work, root / "yolo")
        report["workload"] = {
            "images": images,
            "categories": 80,
            "gt_boxes": int(work.gt_image.size),
            "crowd": int(work.gt_crowd.sum()),
            "detections": int(work.dt_image.size),
            "gt_json_mb": round(gt_path.stat().st_size / 1e6, 1),
            "pred_json_mb": round(pred_path.stat().st_size / 1e6, 1),
            "generate_s": round(time.perf_counter() - start, 1),
        }
        print(
            f"workload: {images} images, 80 categories, {work.gt_image.size} boxes, {work.dt_image.size} "
            f"detections ({report['workload']['pred_json_mb']} MB results JSON)"
        )
        report["coco_json"] = _coco_json_cases(gt_path, pred_path, repeat, peers)
        report["yolo_txt"] = _yolo_cases(yolo_root, yolo_pred, repeat, peers)
    _print(report)
    return report


def _coco_json_cases(gt_path: Path, pred_path: Path, repeat: int, peers: bool) -> Dict[str, Any]:
    cases: Dict[str, Callable[[], List[float]]] = {"ours": _ours(gt_path, pred_path)}
    counts = {"ours": repeat}
    if peers and installed("faster-coco-eval"):
        cases["ours (faster-coco-eval engine)"] = _ours(gt_path, pred_path, "faster-coco-eval")
        cases["faster-coco-eval end to end"] = _engine_end_to_end("faster-coco-eval", gt_path, pred_path)
        counts.update({"ours (faster-coco-eval engine)": repeat, "faster-coco-eval end to end": repeat})
    if peers and installed("hotcoco"):
        cases["hotcoco bare"] = _engine_end_to_end("hotcoco", gt_path, pred_path)
        cases["hotcoco evaluation only"] = _hotcoco_eval_only(gt_path, pred_path)
        counts.update({"hotcoco bare": repeat, "hotcoco evaluation only": repeat})
    if peers and installed("pycocotools"):
        cases["pycocotools end to end"] = _engine_end_to_end("pycocotools", gt_path, pred_path)
        counts["pycocotools end to end"] = 1
    timings = _time(cases, counts)
    reference = np.asarray(timings["ours"]["stats"])
    out: Dict[str, Any] = {
        "timings": {k: {kk: vv for kk, vv in v.items() if kk != "stats"} for k, v in timings.items()},
        "stats": dict(zip(STAT_NAMES, reference.tolist())),
        "max_stat_difference": max(
            float(np.abs(np.asarray(v["stats"]) - reference).max()) for v in timings.values()
        ),
    }
    ours = timings["ours"]["median_s"]
    ratios = {}
    if "pycocotools end to end" in timings:
        ratios["pycocotools_over_ours"] = round(timings["pycocotools end to end"]["median_s"] / ours, 1)
    if "faster-coco-eval end to end" in timings:
        ratios["faster_coco_eval_over_ours"] = round(
            timings["faster-coco-eval end to end"]["median_s"] / ours, 2
        )
        ratios["faster_coco_eval_over_ours_fce_engine"] = round(
            timings["faster-coco-eval end to end"]["median_s"]
            / timings["ours (faster-coco-eval engine)"]["median_s"],
            2,
        )
    if "hotcoco bare" in timings:
        ratios["ours_over_hotcoco_bare"] = round(ours / timings["hotcoco bare"]["median_s"], 2)
        ratios["ours_over_hotcoco_evaluation_only"] = round(
            ours / timings["hotcoco evaluation only"]["median_s"], 2
        )
    out["ratios"] = ratios
    return out


def _yolo_cases(root: Path, pred_dir: Path, repeat: int, peers: bool) -> Dict[str, Any]:
    from agent.evaluate.datasets import load_ground_truth
    from agent.evaluate.structures import ReadOptions

    cases: Dict[str, Callable[[], List[float]]] = {
        "ours end to end": _ours(root, pred_dir, gt_format="yolo", pred_format="yolo"),
        "ours ground truth only": lambda: [
            float(load_ground_truth(root, "yolo", ReadOptions()).ann_ids.size)
        ],
    }
    counts = {"ours end to end": repeat, "ours ground truth only": repeat}
    if peers and installed("hotcoco"):
        labels = root / "labels" / "val"
        (labels / "data.yaml").write_text(
            "names:\n" + "".join(f"  {i}: class{i:02d}\n" for i in range(80)), encoding="utf-8"
        )

        def from_yolo() -> List[float]:
            import hotcoco

            coco = hotcoco.COCO.from_yolo(str(labels), images_dir=str(root / "images" / "val"))
            return [float(len(coco.dataset["annotations"]))]

        cases["hotcoco from_yolo (Pillow sizes)"] = lambda: _quiet_call(from_yolo)
        counts["hotcoco from_yolo (Pillow sizes)"] = repeat
    timings = _time(cases, counts)
    return {
        "timings": {k: {kk: vv for kk, vv in v.items() if kk != "stats"} for k, v in timings.items()},
        "stats": dict(zip(STAT_NAMES, timings["ours end to end"]["stats"])),
        "gt_boxes_read": timings["ours ground truth only"]["stats"][0],
    }


def _print(report: Dict[str, Any]) -> None:
    for section in ("coco_json", "yolo_txt"):
        data = report[section]
        print(f"{section}:")
        for name, t in data["timings"].items():
            print(f"  {name:<34} {t['median_s']:8.3f} s  (median of {t['runs']})")
        for name, value in data.get("ratios", {}).items():
            print(f"  {name} = {value}x")
        if "max_stat_difference" in data:
            print(
                f"  AP {data['stats']['AP']:.6f}; largest difference of any of the 12 numbers between "
                f"contenders: {data['max_stat_difference']:.2e}"
            )
