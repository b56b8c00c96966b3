"""COCO box metrics on a pluggable engine: hotcoco, faster-coco-eval or pycocotools.

The engines compute pycocotools' numbers exactly (verified by tests to 1e-9 on random
cases and on the COCO API's published demo); this module only hands data over and reads
results back. ``auto`` picks the fastest installed: hotcoco (Rust; wheels for Python >=
3.10, incl. aarch64), then faster-coco-eval (C++; wheels down to Python 3.8 / JetPack 5),
then pycocotools. Engines are imported here, lazily, and fed in memory: an instances dict
(or hotcoco's column constructor) and pycocotools' (K, 7) numpy result layout, no files.
Their progress prints are swallowed.

Annotation id 0: pycocotools (and faster-coco-eval, which copies it) store a match as the
matched ground truth's id, and read 0 as "unmatched"; so a detection matched to the
annotation with id 0 counts as a false positive and that object as missed. hotcoco does
not have this quirk. To keep the engines interchangeable, ground truth with an id 0 is
evaluated as pycocotools does (auto skips hotcoco, with a warning), unless the user asks
for ``--annotation-ids renumber`` (ids 1..N: every engine then gives the quirk-free numbers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from agent.errors import BadInputError, DataError
from agent.evaluate.structures import GroundTruth, Predictions

log = logging.getLogger(__name__)

ENGINES = ("hotcoco", "faster-coco-eval", "pycocotools")
_MODULES = {
    "hotcoco": "hotcoco",
    "faster-coco-eval": "faster_coco_eval",
    "pycocotools": "pycocotools.cocoeval",
}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclasses.dataclass
class CocoResult:
    engine: str
    stats: Dict[str, float]  # the 12 standard numbers; -1 where undefined (pycocotools' convention)
    per_class: Dict[int, Optional[float]]  # category id -> AP@[.50:.95], None without ground truth
    per_class_ap50: Dict[int, Optional[float]]
    #: Precision at IoU 0.5, area all, 100 detections: (101 recall points, categories), -1 = undefined.
    pr50: np.ndarray
    recall_points: np.ndarray
    category_ids: List[int]


def installed(engine: str) -> bool:
    try:
        importlib.import_module(_MODULES[engine])
    except ImportError:
        return False
    return True


def available_engines() -> List[str]:
    return [e for e in ENGINES if installed(e)]


def choose_engine(requested: str = "auto", gt: Optional[GroundTruth] = None) -> str:
    zero_id = gt is not None and bool((gt.ann_ids == 0).any())
    if requested == "auto":
        for engine in ENGINES:
            if engine == "hotcoco" and zero_id:
                log.warning(
                    "%s: an annotation has id 0; evaluating as pycocotools does (its match counts as "
                    "a false positive), so not with hotcoco. --annotation-ids renumber avoids this",
                    gt.source if gt is not None else "ground truth",
                )
                continue
            if installed(engine):
                return engine
        raise BadInputError(
            "no COCO engine is installed: pip install hotcoco (Python >= 3.10), "
            "faster-coco-eval or pycocotools"
        )
    if requested not in ENGINES:
        raise BadInputError(f"unknown engine {requested!r}; expected auto or one of {', '.join(ENGINES)}")
    if not installed(requested):
        hint = " (wheels need Python >= 3.10)" if requested == "hotcoco" else ""
        raise BadInputError(f"engine {requested} is not installed: pip install {requested}{hint}")
    if requested == "hotcoco" and zero_id and gt is not None:
        i = int(np.flatnonzero(gt.ann_ids == 0)[0])
        raise DataError(
            f"{gt.origin.where(i) if gt.origin else gt.source}: annotation id 0: hotcoco would "
            "count it normally, pycocotools as never matched; pass --annotation-ids renumber, or "
            "use --engine pycocotools / faster-coco-eval to reproduce pycocotools"
        )
    return requested


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Engines print progress and summaries on stdout (faster-coco-eval logs them at INFO) and
    warn about ids; the report is ours."""
    chatty = logging.getLogger("faster_coco_eval")
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        chatty.setLevel(level)


def evaluate_coco(gt: GroundTruth, preds: Predictions, engine: str = "auto") -> CocoResult:
    engine = choose_engine(engine, gt)
    with _quiet():
        if engine == "hotcoco":
            evaluator = _hotcoco(gt, preds)
        else:
            evaluator = _pycocotools_style(engine, gt, preds)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) for v in np.asarray(evaluator.stats, np.float64).tolist()]
    precision = np.asarray(evaluator.eval["precision"], np.float64)  # [T, R, K, A, M]
    cat_ids = [int(c) for c in evaluator.params.catIds]
    rec_thrs = np.asarray(evaluator.params.recThrs, np.float64)
    per_class, per_class_50 = {}, {}
    for k, cid in enumerate(cat_ids):
        per_class[cid] = _mean_defined(precision[:, :, k, 0, -1])
        per_class_50[cid] = _mean_defined(precision[0, :, k, 0, -1])
    return CocoResult(
        engine,
        dict(zip(STAT_NAMES, stats)),
        per_class,
        per_class_50,
        precision[0, :, :, 0, -1].copy(),
        rec_thrs,
        cat_ids,
    )


def _mean_defined(values: np.ndarray) -> Optional[float]:
    """pycocotools' per-class AP: mean over defined precisions (-1 marks 'no ground truth')."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else None


def _pycocotools_style(engine: str, gt: GroundTruth, preds: Predictions):
    if engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    coco_gt = COCO()
    coco_gt.dataset = gt.to_coco_dict()
    coco_gt.createIndex()
    coco_dt = _load_results(COCO, coco_gt, gt, preds)
    return COCOeval(coco_gt, coco_dt, "bbox")


def _load_results(coco_cls, coco_gt, gt: GroundTruth, preds: Predictions):
    if len(preds):
        return coco_gt.loadRes(preds.to_array())
    # pycocotools' loadRes cannot take an empty list; an empty result set is still a result.
    coco_dt = coco_cls()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": gt.categories(),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def _hotcoco(gt: GroundTruth, preds: Predictions):
    import hotcoco

    images = [
        {"id": i, "file_name": f, "width": w, "height": h}
        for i, f, w, h in zip(gt.image_ids.tolist(), gt.file_names, gt.widths.tolist(), gt.heights.tolist())
    ]
    coco_gt = hotcoco.COCO.from_arrays(
        images,
        gt.categories(),
        gt.ann_image_ids,
        gt.ann_category_ids,
        gt.boxes,
        ids=gt.ann_ids,
        area=gt.areas,
        iscrowd=gt.iscrowd.astype(np.int64),
    )
    coco_dt = coco_gt.loadRes(preds.to_array() if len(preds) else np.zeros((0, 7)))
    return hotcoco.COCOeval(coco_gt, coco_dt, "bbox")


def stats_table(result: CocoResult) -> List[Tuple[str, str, float]]:
    """(name, description, value) rows in pycocotools' summary order."""
    described = [
        ("AP", "AP @[IoU=0.50:0.95 | area=all | maxDets=100]"),
        ("AP50", "AP @[IoU=0.50 | area=all | maxDets=100]"),
        ("AP75", "AP @[IoU=0.75 | area=all | maxDets=100]"),
        ("APs", "AP @[IoU=0.50:0.95 | area=small]"),
        ("APm", "AP @[IoU=0.50:0.95 | area=medium]"),
        ("APl", "AP @[IoU=0.50:0.95 | area=large]"),
        ("AR1", "AR @[IoU=0.50:0.95 | area=all | maxDets=1]"),
        ("AR10", "AR @[IoU=0.50:0.95 | maxDets=10]"),
        ("AR100", "AR @[IoU=0.50:0.95 | maxDets=100]"),
        ("ARs", "AR @[IoU=0.50:0.95 | area=small]"),
        ("ARm", "AR @[IoU=0.50:0.95 | area=medium]"),
        ("ARl", "AR @[IoU=0.50:0.95 | area=large]"),
    ]
    return [(name, text, result.stats[name]) for name, text in described]
