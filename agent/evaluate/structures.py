"""The in-memory COCO structures every reader produces and every metric consumes.

Parallel numpy arrays rather than a dict per box: a COCO-val-sized case has 250k
predictions, and per-object Python work is what makes the reference tools slow. Boxes are
COCO ``[x, y, w, h]`` in source pixels, float64 (what json gives, so no rounding on the way).

Readers record where each box came from (``Origin``), so a check that fails later can name
the file and line, or the JSON element, of the offending box.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from agent.errors import DataError

log = logging.getLogger(__name__)

#: How far (pixels) a box may overhang its image before it counts as outside: float rounding,
#: exporters that round outward, and VOC's 1-based inclusive coordinates (xmax == width).
BOX_TOLERANCE_PX = 1.0


@dataclasses.dataclass
class ReadOptions:
    """How readers treat what the files leave open; every lenient choice is explicit."""

    names: Optional[str] = None  # class names file for YOLO / VOC ground truth
    sizes: Optional[str] = None  # "NAME WIDTH HEIGHT" lines instead of image headers (YOLO)
    camera: Optional[str] = None  # recordings: the camera to evaluate
    outside: str = "error"  # boxes overhanging their image: "error", "keep" (as given) or "clip"
    ignore_unknown_classes: bool = False  # drop predictions of classes the ground truth lacks
    ignore_unknown_images: bool = False  # drop predictions of images the ground truth lacks
    annotation_ids: str = "keep"  # "renumber": ground-truth annotation ids 1..N (see coco.py)


@dataclasses.dataclass
class Origin:
    """Where rows came from: ``where(i)`` gives ``FILE:LINE`` or ``FILE: key[index]`` for row i."""

    describe: Callable[[int], str]

    def where(self, row: int) -> str:
        return self.describe(row)

    def subset(self, rows: np.ndarray) -> Origin:
        """The origin of ``rows`` of these rows, in that order."""
        return Origin(lambda i: self.where(int(rows[i])))


def element_origin(path: str, key: str, index: Optional[np.ndarray] = None) -> Origin:
    """Rows read from a JSON list: ``gt.json: annotations[17]``."""
    if index is None:
        return Origin(lambda i: f"{path}: {key}[{i}]")
    return Origin(lambda i: f"{path}: {key}[{int(index[i])}]")


def line_origin(files: Sequence[str], file_index: np.ndarray, lines: np.ndarray) -> Origin:
    """Rows read from text files: ``labels/0001.txt:3``."""
    return Origin(lambda i: f"{files[int(file_index[i])]}:{int(lines[i])}")


@dataclasses.dataclass
class GroundTruth:
    """Images, categories and annotations: a COCO instances file as arrays.

    ``iscrowd`` marks regions to ignore: COCO crowd annotations, and VOC ``difficult``
    objects (COCO's mechanism for objects that should neither be found nor missed; the VOC
    metric ignores both alike). ``plus_one`` says whether the data uses the VOC devkit's
    inclusive pixel coordinates, the default of the VOC metric's +1 convention.
    """

    source: str
    format: str
    image_ids: np.ndarray  # (M,) int64
    file_names: List[str]
    widths: np.ndarray  # (M,) float64
    heights: np.ndarray
    category_ids: List[int]
    names: List[str]
    ann_ids: np.ndarray  # (N,) int64
    ann_image_ids: np.ndarray
    ann_category_ids: np.ndarray
    boxes: np.ndarray  # (N, 4) float64, x y w h
    areas: np.ndarray
    iscrowd: np.ndarray  # (N,) uint8
    origin: Optional[Origin] = None
    plus_one: bool = False
    image_paths: Optional[List[str]] = None  # image files, for --model

    def __post_init__(self) -> None:
        self._image_index: Optional[Dict[int, int]] = None
        self._stem_index: Optional[Dict[str, int]] = None

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    def image_index(self) -> Dict[int, int]:
        """Image id -> row."""
        if self._image_index is None:
            self._image_index = {int(i): k for k, i in enumerate(self.image_ids.tolist())}
        return self._image_index

    def stem_index(self) -> Dict[str, int]:
        """File name and file stem (no folder, no suffix) -> row, for predictions keyed by name."""
        if self._stem_index is None:
            index: Dict[str, int] = {}
            for k, name in enumerate(self.file_names):
                base = name.replace("\\", "/").rsplit("/", 1)[-1]
                index.setdefault(base, k)
                index.setdefault(base.rsplit(".", 1)[0], k)
            self._stem_index = index
        return self._stem_index

    def category_index(self) -> Dict[int, int]:
        return {cid: k for k, cid in enumerate(self.category_ids)}

    def name_to_category(self) -> Dict[str, int]:
        return {name: cid for name, cid in zip(self.names, self.category_ids)}

    def image_sizes_of(self, image_ids: np.ndarray) -> np.ndarray:
        """(K, 2) width, height of each image id (ids must be known)."""
        rows = rows_of(self.image_ids, image_ids)
        return np.stack([self.widths[rows], self.heights[rows]], 1)

    def to_coco_dict(self) -> Dict[str, list]:
        """The instances dict pycocotools and faster-coco-eval take."""
        images = [
            {"id": i, "file_name": f, "width": w, "height": h}
            for i, f, w, h in zip(
                self.image_ids.tolist(), self.file_names, self.widths.tolist(), self.heights.tolist()
            )
        ]
        anns = [
            {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": ar, "iscrowd": cr}
            for a, i, c, b, ar, cr in zip(
                self.ann_ids.tolist(),
                self.ann_image_ids.tolist(),
                self.ann_category_ids.tolist(),
                self.boxes.tolist(),
                self.areas.tolist(),
                self.iscrowd.tolist(),
            )
        ]
        return {"images": images, "annotations": anns, "categories": self.categories()}

    def categories(self) -> List[Dict[str, object]]:
        return [{"id": c, "name": n, "supercategory": "none"} for c, n in zip(self.category_ids, self.names)]


@dataclasses.dataclass
class Predictions:
    """Detections of many images, in the order read (the order that breaks score ties)."""

    source: str
    image_ids: np.ndarray  # (K,) int64
    category_ids: np.ndarray  # (K,) int64
    boxes: np.ndarray  # (K, 4) float64, x y w h
    scores: np.ndarray  # (K,) float64
    origin: Optional[Origin] = None

    def __len__(self) -> int:
        return int(self.scores.size)

    def select(self, keep: np.ndarray) -> Predictions:
        idx = np.flatnonzero(keep)
        origin = self.origin
        sub = None if origin is None else origin.subset(idx)
        return Predictions(
            self.source, self.image_ids[idx], self.category_ids[idx], self.boxes[idx], self.scores[idx], sub
        )

    def to_array(self) -> np.ndarray:
        """(K, 7) ``[image_id, x, y, w, h, score, category_id]``: pycocotools' numpy result layout."""
        return np.column_stack([self.image_ids, self.boxes, self.scores, self.category_ids]).astype(
            np.float64
        )

    @classmethod
    def empty(cls, source: str) -> Predictions:
        return cls(source, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))


_DENSE_LIMIT = 1 << 24  # ids spanning fewer values than this are looked up in a table


def lookup(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each value in ``keys`` (unique ids), -1 where absent.

    Ids are usually small integers (COCO image ids < 1M): a dense table answers 250k
    look-ups in a few milliseconds, several times faster than sorting.
    """
    values = np.asarray(values, np.int64)
    if keys.size == 0 or values.size == 0:
        return np.full(values.shape, -1, np.int64)
    lo, hi = int(keys.min()), int(keys.max())
    if hi - lo < _DENSE_LIMIT:
        table = np.full(hi - lo + 1, -1, np.int64)
        table[keys - lo] = np.arange(keys.size)
        inside = (values >= lo) & (values <= hi)
        return np.where(inside, table[np.clip(values - lo, 0, hi - lo)], -1)
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys, values, sorter=order), 0, keys.size - 1)
    rows = order[pos]
    return np.where(keys[rows] == values, rows, -1)


def rows_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each value in ``keys`` (all must be present)."""
    return np.clip(lookup(keys, values), 0, None)


def is_member(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    return lookup(keys, values) >= 0


def first_problem(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def where(origin: Optional[Origin], row: int, fallback: str) -> str:
    return origin.where(row) if origin is not None else f"{fallback}: row {row}"


OUTSIDE_POLICIES = ("error", "keep", "clip")


def check_boxes(
    boxes: np.ndarray,
    sizes: np.ndarray,
    origin: Optional[Origin],
    source: str,
    what: str,
    outside_policy: str = "error",
) -> np.ndarray:
    """Refuse non-finite or negative-size boxes; boxes outside their image per the policy.

    ``sizes`` is (K, 2) width, height. "error" refuses them (naming the first); "keep" keeps
    them as given (pycocotools evaluates such boxes as they are) and "clip" clips them to the
    image, both with a warning that counts them. Returns the boxes.
    """
    finite = np.isfinite(boxes).all(1)
    if not finite.all():
        i = first_problem(~finite)
        raise DataError(f"{where(origin, i, source)}: {what} box {boxes[i].tolist()} is not a finite number")
    negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if negative.any():
        i = first_problem(negative)
        raise DataError(
            f"{where(origin, i, source)}: {what} box [x, y, w, h] = {_fmt(boxes[i])} "
            "has a negative width or height"
        )
    tol = BOX_TOLERANCE_PX
    x2, y2 = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    outside = (
        (boxes[:, 0] < -tol) | (boxes[:, 1] < -tol) | (x2 > sizes[:, 0] + tol) | (y2 > sizes[:, 1] + tol)
    )
    count = int(outside.sum())
    if count == 0:
        return boxes
    if outside_policy not in ("keep", "clip"):
        i = first_problem(outside)
        raise DataError(
            f"{where(origin, i, source)}: {what} box [x, y, w, h] = {_fmt(boxes[i])} lies outside its "
            f"{sizes[i, 0]:g}x{sizes[i, 1]:g} image ({count} such boxes); check the box format "
            "(pixels vs normalised, xywh vs xyxy) and the image sizes, or pass --outside-boxes keep|clip"
        )
    log.warning(
        "%s: %s %d %s boxes that extend more than %g px outside their image",
        source,
        "kept" if outside_policy == "keep" else "clipped",
        count,
        what,
        tol,
    )
    if outside_policy == "keep":
        return boxes
    x1 = np.clip(boxes[:, 0], 0, sizes[:, 0])
    y1 = np.clip(boxes[:, 1], 0, sizes[:, 1])
    out = np.stack([x1, y1, np.clip(x2, 0, sizes[:, 0]) - x1, np.clip(y2, 0, sizes[:, 1]) - y1], 1)
    return np.where(outside[:, None], np.maximum(out, 0), boxes)


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def read_bytes(path: Path) -> bytes:
    """A whole input file; ``DataError`` naming it when it is missing, a folder or empty."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    return data
