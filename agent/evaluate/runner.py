"""One evaluation: ground truth + predictions -> COCO or VOC results, timed by phase.

``evaluate_files`` is what ``detection-agent eval --gt --pred`` runs (and what the
benchmark times end to end, reading included); ``evaluate`` takes structures already in
memory (``eval --model`` builds its predictions itself).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, Optional, Sequence, Union

import numpy as np

from agent.errors import AgentError, BadInputError
from agent.evaluate.coco import CocoResult, evaluate_coco
from agent.evaluate.datasets import PathLike, load_ground_truth, load_predictions
from agent.evaluate.structures import GroundTruth, Predictions, ReadOptions
from agent.evaluate.voc import VocResult, confusion_matrix, evaluate_voc

log = logging.getLogger(__name__)

METRICS = ("coco", "voc07", "voc12")


@dataclasses.dataclass
class EvalConfig:
    metric: str = "coco"
    engine: str = "auto"
    iou: float = 0.5  # VOC match threshold (COCO always uses 0.50:0.05:0.95)
    plus_one: Optional[bool] = None  # None: on for VOC XML ground truth, off otherwise
    score_threshold: float = 0.25  # precision / recall / F1 and the confusion matrix
    confusion: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise BadInputError(f"unknown metric {self.metric!r}; expected one of {', '.join(METRICS)}")
        if not 0.0 < self.iou <= 1.0:
            raise BadInputError(f"IoU threshold must be in (0, 1], got {self.iou}")


@dataclasses.dataclass
class Evaluation:
    gt: GroundTruth
    preds: Predictions
    config: EvalConfig
    coco: Optional[CocoResult] = None
    voc: Optional[VocResult] = None
    confusion: Optional[np.ndarray] = None
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)  # model, latency, ...

    @property
    def headline(self) -> Optional[float]:
        """The one number: COCO AP@[.50:.95], or VOC mAP."""
        if self.coco is not None:
            return self.coco.stats["AP"]
        return self.voc.mean_ap if self.voc is not None else None

    @property
    def voc_result(self) -> VocResult:
        """``voc``, for reports of a VOC evaluation (one of ``coco`` and ``voc`` is always set)."""
        if self.voc is None:
            raise AgentError("this evaluation has no VOC result (it is a COCO one)")
        return self.voc


def evaluate(
    gt: GroundTruth,
    preds: Predictions,
    config: Optional[EvalConfig] = None,
    seconds: Optional[Dict[str, float]] = None,
) -> Evaluation:
    config = config or EvalConfig()
    result = Evaluation(gt, preds, config, seconds=dict(seconds or {}))
    start = time.perf_counter()
    if config.metric == "coco":
        result.coco = evaluate_coco(gt, preds, config.engine)
    else:
        result.voc = evaluate_voc(
            gt, preds, config.metric, config.iou, config.plus_one, config.score_threshold
        )
    result.seconds["evaluate"] = time.perf_counter() - start
    if config.confusion:
        plus_one = config.plus_one if config.metric != "coco" else False
        result.confusion = confusion_matrix(
            gt, preds, 0.5 if config.metric == "coco" else config.iou, config.score_threshold, plus_one
        )
    return result


def evaluate_files(
    gt_path: PathLike,
    pred_path: Union[PathLike, Sequence[PathLike]],
    gt_format: Optional[str] = None,
    pred_format: Optional[str] = None,
    options: Optional[ReadOptions] = None,
    config: Optional[EvalConfig] = None,
) -> Evaluation:
    options = options or ReadOptions()
    config = config or EvalConfig()
    times: Dict[str, float] = {}
    start = time.perf_counter()
    gt = load_ground_truth(gt_path, gt_format, options)
    times["read_gt"] = time.perf_counter() - start
    start = time.perf_counter()
    preds = load_predictions(pred_path, gt, pred_format, options)
    times["read_predictions"] = time.perf_counter() - start
    return evaluate(gt, preds, config, times)


def label_of(gt: GroundTruth) -> Dict[int, str]:
    return dict(zip(gt.category_ids, gt.names))


def predictions_per_class(preds: Predictions) -> Dict[int, int]:
    ids, counts = np.unique(preds.category_ids, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def objects_per_class(gt: GroundTruth, include_ignored: bool = False) -> Dict[int, int]:
    mask = np.ones(gt.iscrowd.shape, bool) if include_ignored else gt.iscrowd == 0
    ids, counts = np.unique(gt.ann_category_ids[mask], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))
