"""``eval --model``: run a model over a labelled image set and collect its predictions.

It uses ``Detector``, the object the daemon and ``detect`` use, so preprocessing, the
backend and postprocessing are exactly the deployed ones; only the thresholds differ (COCO
evaluations run at confidence 0.001 and NMS IoU 0.6, to trace the whole precision-recall
curve). Model classes are paired with ground-truth categories by name, or by position
with ``--class-match index`` (darknet's coco.names says "motorbike" where COCO says
"motorcycle"); either way the pairs that differ are reported.

Caveat, OpenCV backend (darknet .cfg): OpenCV zeroes class scores under the cfg's
``thresh`` (0.2) inside the network, so a lower ``--conf`` finds nothing more there; the
AP is that of a 0.2 threshold, a little below what darknet itself would score.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

from agent.errors import DataError
from agent.evaluate.structures import GroundTruth, Predictions
from agent.inference.postprocess.postprocessor import PostprocessSettings

if TYPE_CHECKING:
    from agent.inference.detector import DetectorSettings

log = logging.getLogger(__name__)

CLASS_MATCH = ("name", "index")


@dataclasses.dataclass
class ModelRun:
    model: str
    preds: Predictions
    latency_ms: Dict[str, float]  # medians per image: read, preprocess, inference, postprocess, total
    seconds: float
    images: int
    dropped: int  # detections of model classes the ground truth lacks (--ignore-unknown-classes)


def class_table(model_names: Sequence[str], gt: GroundTruth, mode: str, ignore_unknown: bool) -> np.ndarray:
    """Ground-truth category id of each model class index, -1 for classes left out."""
    if mode not in CLASS_MATCH:
        raise DataError(f"--class-match must be one of {', '.join(CLASS_MATCH)}, got {mode!r}")
    if mode == "index":
        ordered = sorted(gt.category_ids)
        by_id = dict(zip(gt.category_ids, gt.names))
        table = np.asarray(
            [ordered[k] if k < len(ordered) else -1 for k in range(len(model_names))], np.int64
        )
        renamed = [
            f"{m}->{by_id[c]}" for m, c in zip(model_names, table.tolist()) if c >= 0 and m != by_id[c]
        ]
        if renamed:
            log.warning(
                "classes paired by position; %d names differ: %s", len(renamed), ", ".join(renamed[:8])
            )
        unknown = [m for m, c in zip(model_names, table.tolist()) if c < 0]
    else:
        by_name = gt.name_to_category()
        table = np.asarray([by_name.get(m, -1) for m in model_names], np.int64)
        unknown = [m for m, c in zip(model_names, table.tolist()) if c < 0]
    if unknown and not ignore_unknown:
        hint = (
            " pass --class-match index to pair classes by position (the counts match), or"
            if mode == "name" and len(model_names) == len(gt.category_ids)
            else " pass"
        )
        raise DataError(
            f"{len(unknown)} of the model's {len(model_names)} classes are not in the ground truth "
            f"({gt.source}): {', '.join(unknown[:8])};{hint} --ignore-unknown-classes to leave "
            "their detections out"
        )
    return table


class Progress:
    """One line on stderr: rewritten in place on a terminal, every 10% otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._next = 0.0

    def update(self, done: int) -> None:
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        text = f"{self.label}: {done}/{self.total} images, {rate:.1f} images/s"
        if self.tty:
            print("\r" + text, end="" if done < self.total else "\n", file=sys.stderr, flush=True)
        elif done >= self._next * self.total or done == self.total:
            print(text, file=sys.stderr, flush=True)
            self._next = min(1.0, done / self.total + 0.1)


def run_model(
    model_path: str,
    gt: GroundTruth,
    backend: str = "auto",
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    batch: int = 1,
    class_match: str = "name",
    ignore_unknown_classes: bool = False,
    progress: bool = True,
    detector_settings: Optional[DetectorSettings] = None,
) -> ModelRun:
    """``detector_settings`` (from ``--config``): the model side as ``run`` has it (input size,
    resize mode, labels, threads, warm-up); batch and thresholds come from the arguments, and
    the backend unless it is ``auto``."""
    from agent.fileio import read_image
    from agent.inference.detector import DetectorSettings, build_detector

    if gt.image_paths is None:
        raise DataError(
            f"{gt.source}: the images of this ground truth are not known; give a YOLO data set "
            "or a VOC root (Annotations/ + JPEGImages/)"
        )
    settings = PostprocessSettings(conf_threshold=conf, iou_threshold=iou, max_detections=max_det)
    base = detector_settings or DetectorSettings()
    chosen = dataclasses.replace(base, backend=base.backend if backend == "auto" else backend,
                                 batch_size=batch, postprocess=settings)
    with build_detector(Path(model_path), chosen) as detector:
        if detector.backend.name == "opencv" and conf < 0.2:
            log.warning(
                "OpenCV's darknet importer zeroes scores under 0.2, so --conf %g acts as 0.2 here", conf
            )
        table = class_table(detector.class_names, gt, class_match, ignore_unknown_classes)
        step = detector.preprocess.batch_size
        bar = Progress(gt.num_images, f"eval {Path(model_path).name}") if progress else None
        parts: List[tuple] = []
        stages: Dict[str, List[float]] = {"read": [], "preprocess": [], "inference": [], "postprocess": []}
        started = time.perf_counter()
        for first in range(0, gt.num_images, step):
            rows = list(range(first, min(first + step, gt.num_images)))
            t0 = time.perf_counter()
            images = [read_image(Path(gt.image_paths[r])) for r in rows]
            stages["read"].extend([(time.perf_counter() - t0) * 1e3 / len(rows)] * len(rows))
            for r, image in zip(rows, images):
                if (image.shape[1], image.shape[0]) != (gt.widths[r], gt.heights[r]):
                    raise DataError(
                        f"{gt.image_paths[r]}: decodes to {image.shape[1]}x{image.shape[0]}, but the "
                        f"ground truth assumes {gt.widths[r]:g}x{gt.heights[r]:g}"
                    )
            for r, dets in zip(rows, detector(images)):
                parts.append((r, dets))
            for stage, ms in detector.last_latency_ms.items():
                stages[stage].extend([ms / len(rows)] * len(rows))
            if bar is not None:
                bar.update(rows[-1] + 1)
        seconds = time.perf_counter() - started
    preds, dropped = _to_predictions(parts, gt, table, str(model_path))
    if dropped:
        log.warning("left out %d detections of model classes not in the ground truth", dropped)
    latency = {k: statistics.median(v) for k, v in stages.items() if v}
    latency["total"] = sum(latency.values())
    return ModelRun(str(model_path), preds, latency, seconds, gt.num_images, dropped)


def _to_predictions(parts: List[tuple], gt: GroundTruth, table: np.ndarray, source: str):
    image_ids, cats, boxes, scores = [], [], [], []
    for row, dets in parts:
        xyxy = dets.xyxy.astype(np.float64)
        image_ids.append(np.full(len(dets), gt.image_ids[row], np.int64))
        cats.append(table[dets.class_ids])
        boxes.append(np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]))
        scores.append(dets.scores.astype(np.float64))
    if not parts:
        return Predictions.empty(source), 0
    cat = np.concatenate(cats)
    keep = cat >= 0
    preds = Predictions(
        source,
        np.concatenate(image_ids)[keep],
        cat[keep],
        np.concatenate(boxes)[keep],
        np.concatenate(scores)[keep],
    )
    return preds, int((~keep).sum())


def limit_images(gt: GroundTruth, count: Optional[int]) -> GroundTruth:
    """The first ``count`` images and their annotations (a quick look at a big set)."""
    if count is None or count >= gt.num_images:
        return gt
    if count < 1:
        raise DataError(f"--limit must be at least 1, got {count}")
    ids = gt.image_ids[:count]
    keep = np.isin(gt.ann_image_ids, ids)
    return dataclasses.replace(
        gt,
        image_ids=ids,
        file_names=gt.file_names[:count],
        widths=gt.widths[:count],
        heights=gt.heights[:count],
        ann_ids=gt.ann_ids[keep],
        ann_image_ids=gt.ann_image_ids[keep],
        ann_category_ids=gt.ann_category_ids[keep],
        boxes=gt.boxes[keep],
        areas=gt.areas[keep],
        iscrowd=gt.iscrowd[keep],
        origin=None,
        image_paths=gt.image_paths[:count] if gt.image_paths is not None else None,
    )
