"""Tie predictions to the ground truth: image ids, categories, boxes; refuse what does not fit.

Every prediction reader ends here, so the policy is one place: a prediction for an image
or a class the ground truth does not have is an error naming where it was read, unless the
user passed ``--ignore-unknown-images`` / ``--ignore-unknown-classes``, in which case those
predictions are dropped and a warning says how many. Boxes outside their image: see
``structures.check_boxes``.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import DataError
from agent.evaluate.structures import (
    GroundTruth,
    Origin,
    Predictions,
    ReadOptions,
    check_boxes,
    is_member,
    where,
)

log = logging.getLogger(__name__)


def image_ids_from_keys(keys: Sequence[Union[int, str]], gt: GroundTruth) -> Tuple[np.ndarray, np.ndarray]:
    """Image ids for keys that are ids (int) or file names / stems (str); and which are known.

    ultralytics writes ``image_id`` as ``int(stem)`` when the stem is numeric, else the stem.
    """
    index = gt.image_index()
    stems = gt.stem_index()
    ids = np.empty(len(keys), np.int64)
    known = np.ones(len(keys), bool)
    for k, key in enumerate(keys):
        if isinstance(key, str):
            row = stems.get(key)
            if row is None and key.lstrip("-").isdigit() and int(key) in index:
                row = index[int(key)]
            if row is None:
                known[k] = False
                ids[k] = -1
            else:
                ids[k] = gt.image_ids[row]
        else:
            ids[k] = int(key)
            known[k] = int(key) in index
    return ids, known


def known_image_ids(ids: np.ndarray, gt: GroundTruth) -> np.ndarray:
    return is_member(gt.image_ids, ids)


def known_category_ids(ids: np.ndarray, gt: GroundTruth) -> np.ndarray:
    return is_member(np.asarray(gt.category_ids, np.int64), ids)


def categories_from_indices(indices: np.ndarray, gt: GroundTruth) -> Tuple[np.ndarray, np.ndarray]:
    """YOLO class index N -> the N-th ground-truth category (categories in id order)."""
    ordered = np.asarray(sorted(gt.category_ids), np.int64)
    known = (indices >= 0) & (indices < ordered.size)
    return np.where(known, ordered[np.clip(indices, 0, max(ordered.size - 1, 0))], -1), known


def categories_from_labels(labels: Sequence[str], gt: GroundTruth) -> Tuple[np.ndarray, np.ndarray]:
    by_name = gt.name_to_category()
    ids = np.asarray([by_name.get(label, -1) for label in labels], np.int64)
    return ids, np.asarray([label in by_name for label in labels], bool)


def finish(
    source: str,
    gt: GroundTruth,
    image_ids: np.ndarray,
    known_image: np.ndarray,
    image_key: Callable[[int], str],
    category_ids: np.ndarray,
    known_class: np.ndarray,
    class_key: Callable[[int], str],
    boxes: np.ndarray,
    scores: np.ndarray,
    origin: Optional[Origin],
    options: ReadOptions,
) -> Predictions:
    """Apply the unknown-image / unknown-class policy, check scores and boxes, build ``Predictions``."""
    keep = np.ones(scores.shape, bool)
    for known, flag, what, key, fix in (
        (known_image, options.ignore_unknown_images, "image", image_key, "--ignore-unknown-images"),
        (known_class, options.ignore_unknown_classes, "class", class_key, "--ignore-unknown-classes"),
    ):
        missing = ~known & keep
        count = int(missing.sum())
        if not count:
            continue
        if not flag:
            i = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{where(origin, i, source)}: {what} {key(i)} is not in the ground truth "
                f"({gt.source}); {count} predictions name unknown {what}s "
                f"(pass {fix} to leave them out)"
            )
        log.warning(
            "%s: left out %d predictions of %ss not in the ground truth (%s)",
            source,
            count,
            what,
            _sample([key(i) for i in np.flatnonzero(missing)[:5]]),
        )
        keep &= known
    if not keep.all():
        idx = np.flatnonzero(keep)
        origin = None if origin is None else origin.subset(idx)
        image_ids, category_ids, boxes, scores = image_ids[idx], category_ids[idx], boxes[idx], scores[idx]
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(origin, i, source)}: score {scores[i]} is not a finite number")
    boxes = check_boxes(boxes, gt.image_sizes_of(image_ids), origin, source, "predicted", options.outside)
    return Predictions(
        source,
        image_ids.astype(np.int64),
        category_ids.astype(np.int64),
        boxes.astype(np.float64),
        scores.astype(np.float64),
        origin,
    )


def _sample(keys: List[str]) -> str:
    return "e.g. " + ", ".join(keys)
