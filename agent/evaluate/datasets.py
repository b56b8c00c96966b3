"""Ground truth and predictions from files, all into the same in-memory COCO structures.

Formats (detected from the path when not given):

ground truth   ``coco``  COCO instances JSON (``.json``)
               ``yolo``  YOLO txt labels: a data YAML, a data set folder, or an images folder
                         (see yolo.py); image sizes from the image headers or ``--sizes``
               ``voc``   PASCAL VOC XML folder, or a VOC root holding ``Annotations/``
predictions    ``coco``  COCO results JSON: a list of ``{image_id, category_id, bbox, score}``
                         (``image_id`` an id, or a file name / stem as ultralytics writes it),
                         or a dict whose ``annotations`` carry scores
               ``yolo``  a folder of ``STEM.txt`` files, lines ``class cx cy w h score``
               ``jsonl`` the agent's recordings: one MQTT detections message per line
                         (see recordings.py)

Bad input raises ``DataError`` naming the file and the line (text) or element (JSON).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from agent.errors import AgentError, DataError
from agent.evaluate import resolve
from agent.evaluate.fastjson import parse_uniform_list
from agent.evaluate.structures import (
    GroundTruth,
    Predictions,
    ReadOptions,
    check_boxes,
    element_origin,
    is_member,
    read_bytes,
)

log = logging.getLogger(__name__)

GT_FORMATS = ("coco", "yolo", "voc")
PRED_FORMATS = ("coco", "yolo", "jsonl")

PathLike = Union[str, Path]


def detect_gt_format(path: PathLike) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".json":
            return "coco"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        if suffix == ".xml":
            return "voc"
    elif path.is_dir():
        if (path / "Annotations").is_dir() or next(path.glob("*.xml"), None) is not None:
            return "voc"
        if (
            any((path / name).exists() for name in ("images", "labels", "data.yaml", "classes.txt"))
            or "images" in path.parts
            or next(path.glob("*.txt"), None) is not None
        ):
            return "yolo"
    else:
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: cannot tell the ground-truth format; pass --gt-format {'|'.join(GT_FORMATS)}")


def detect_pred_format(path: PathLike) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return "yolo"
    if suffix == ".json":
        return "coco"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(
        f"{path}: cannot tell the predictions format; pass --pred-format {'|'.join(PRED_FORMATS)}"
    )


def load_ground_truth(
    path: PathLike, fmt: Optional[str] = None, options: Optional[ReadOptions] = None
) -> GroundTruth:
    options = options or ReadOptions()
    fmt = fmt or detect_gt_format(path)
    if fmt == "coco":
        gt = coco_ground_truth(Path(path), options)
    elif fmt == "yolo":
        from agent.evaluate.yolo import yolo_ground_truth

        gt = yolo_ground_truth(Path(path), options)
    elif fmt == "voc":
        from agent.evaluate.vocxml import voc_ground_truth

        gt = voc_ground_truth(Path(path), options)
    else:
        raise DataError(f"unknown ground-truth format {fmt!r}; expected one of {', '.join(GT_FORMATS)}")
    if options.annotation_ids == "renumber":
        gt.ann_ids = np.arange(1, gt.ann_ids.size + 1, dtype=np.int64)
    log.info(
        "%s: %d images, %d annotations, %d categories (%s)",
        gt.source,
        gt.num_images,
        gt.ann_ids.size,
        len(gt.category_ids),
        fmt,
    )
    return gt


def load_predictions(
    path: Union[PathLike, Sequence[PathLike]],
    gt: GroundTruth,
    fmt: Optional[str] = None,
    options: Optional[ReadOptions] = None,
) -> Predictions:
    """Predictions from ``path``; a list of several paths is read as one, recordings only."""
    options = options or ReadOptions()
    if not isinstance(path, (str, Path)):
        paths = list(path)
        if len(paths) != 1:
            return _several_recordings(paths, gt, fmt, options)
        path = paths[0]
    fmt = fmt or detect_pred_format(path)
    if fmt == "coco":
        preds = coco_predictions(Path(path), gt, options)
    elif fmt == "yolo":
        from agent.evaluate.yolo import yolo_predictions

        preds = yolo_predictions(Path(path), gt, options)
    elif fmt == "jsonl":
        from agent.evaluate.recordings import recording_predictions

        preds = recording_predictions(Path(path), gt, options)
    else:
        raise DataError(f"unknown predictions format {fmt!r}; expected one of {', '.join(PRED_FORMATS)}")
    log.info("%s: %d predictions (%s)", preds.source, len(preds), fmt)
    return preds


def _several_recordings(
    paths: List[PathLike], gt: GroundTruth, fmt: Optional[str], options: ReadOptions
) -> Predictions:
    # What the recorders of one shared subscription saved between them (record --share).
    if not paths:
        raise DataError("no predictions file given")
    for path in paths:
        if (fmt or detect_pred_format(path)) != "jsonl":
            raise DataError(
                f"{path}: several prediction files are read as one only when they are recordings "
                "(.jsonl); pass one COCO results file or YOLO folder"
            )
    from agent.evaluate.recordings import recording_predictions

    preds = recording_predictions([Path(p) for p in paths], gt, options)
    log.info("%s: %d predictions (jsonl, %d files)", preds.source, len(preds), len(paths))
    return preds


# ---------------------------------------------------------------- JSON helpers


def parse_json(data: Union[bytes, str], source: str, line_offset: int = 0) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        lineno = getattr(exc, "lineno", 1) + line_offset
        msg = getattr(exc, "msg", str(exc))
        colno = getattr(exc, "colno", None)
        raise DataError(
            f"{source}:{lineno}: invalid JSON: {msg}" + (f" (column {colno})" if colno else "")
        ) from None


def column(
    items: Sequence[Any], key: str, source: str, listname: str, kind: str, default: Any = None
) -> np.ndarray:
    """One field of a list of JSON objects as an array; ``kind`` "int", "number" or "box".

    The fast path builds the array in one go; when that fails, a second pass finds the first
    bad element so the error can name it (``gt.json: annotations[17]: ...``).
    """
    n = len(items)
    dtype = np.int64 if kind == "int" else np.float64
    try:
        values = (
            [item[key] for item in items] if default is None else [item.get(key, default) for item in items]
        )
        array = np.array(values)
        kinds = "iu" if kind == "int" else "iuf"
        if array.dtype.kind in kinds and array.shape == ((n, 4) if kind == "box" else (n,)):
            return array.astype(dtype)
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{source}: {listname}[{i}]: expected an object, got {type(item).__name__}")
        if key not in item and default is None:
            raise DataError(f"{source}: {listname}[{i}]: missing {key!r}")
        value = item.get(key, default)
        if not _valid(value, kind):
            want = {"int": "an integer", "number": "a number", "box": "a list of 4 numbers [x, y, w, h]"}[
                kind
            ]
            raise DataError(f"{source}: {listname}[{i}]: {key!r} must be {want}, got {json.dumps(value)}")
    try:  # every element is valid on its own (e.g. an integer beyond int64 is not)
        return np.array(values, dtype=dtype).reshape((n, 4) if kind == "box" else (n,))
    except (OverflowError, ValueError):
        raise DataError(f"{source}: {listname}: {key!r} values do not fit a 64-bit number") from None


def _valid(value: Any, kind: str) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return number(value)
    return isinstance(value, list) and len(value) == 4 and all(number(v) for v in value)


def _unique(ids: np.ndarray, source: str, listname: str, hint: str = "") -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        dup = uniq[counts > 1][0]
        later = np.flatnonzero(ids == dup)[1]
        raise DataError(f"{source}: {listname}[{later}]: id {dup} is used twice{hint}")


# ---------------------------------------------------------------- COCO


def coco_ground_truth(path: Path, options: ReadOptions) -> GroundTruth:
    source = str(path)
    data = parse_json(read_bytes(path), source)
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a COCO instances object with images, annotations, categories")
    lists: Dict[str, List[Any]] = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            raise DataError(f"{source}: {key!r} must be a list" + ("" if key in data else " (missing)"))
        lists[key] = value
    images, anns, cats = lists["images"], lists["annotations"], lists["categories"]
    if not images:
        raise DataError(f"{source}: 'images' is empty")
    if not cats:
        raise DataError(f"{source}: 'categories' is empty")
    image_ids = column(images, "id", source, "images", "int")
    _unique(image_ids, source, "images")
    widths = column(images, "width", source, "images", "number")
    heights = column(images, "height", source, "images", "number")
    bad = (widths <= 0) | (heights <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: images[{i}]: width and height must be positive")
    file_names = [str(im.get("file_name", im["id"])) for im in images]
    cat_ids = column(cats, "id", source, "categories", "int")
    _unique(cat_ids, source, "categories")
    names = []
    for i, cat in enumerate(cats):
        name = cat.get("name")
        if not isinstance(name, str) or not name:
            raise DataError(f"{source}: categories[{i}]: missing 'name'")
        if name in names:
            raise DataError(f"{source}: categories[{i}]: name {name!r} is used twice")
        names.append(name)
    n = len(anns)
    renumber = options.annotation_ids == "renumber"
    ann_ids = (
        np.arange(1, n + 1, dtype=np.int64) if renumber else column(anns, "id", source, "annotations", "int")
    )
    if not renumber:
        _unique(ann_ids, source, "annotations", " (pass --annotation-ids renumber to number them 1..N)")
    ann_images = column(anns, "image_id", source, "annotations", "int") if n else np.zeros(0, np.int64)
    ann_cats = column(anns, "category_id", source, "annotations", "int") if n else np.zeros(0, np.int64)
    boxes = column(anns, "bbox", source, "annotations", "box") if n else np.zeros((0, 4))
    for values, keys, what in ((ann_images, image_ids, "image_id"), (ann_cats, cat_ids, "category_id")):
        unknown = ~is_member(keys, values)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"{source}: annotations[{i}]: {what} {values[i]} is not in "
                f"'{'images' if what == 'image_id' else 'categories'}'"
            )
    # pycocotools needs an area; a box-only file means the box area (NaN marks "not given").
    areas = column(anns, "area", source, "annotations", "number", default=float("nan")) if n else np.zeros(0)
    missing = np.isnan(areas)
    areas[missing] = boxes[missing, 2] * boxes[missing, 3]
    iscrowd = column(anns, "iscrowd", source, "annotations", "int", default=0) if n else np.zeros(0, np.int64)
    origin = element_origin(source, "annotations")
    gt = GroundTruth(
        source,
        "coco",
        image_ids,
        file_names,
        widths,
        heights,
        cat_ids.tolist(),
        names,
        ann_ids,
        ann_images,
        ann_cats,
        boxes,
        areas,
        (iscrowd != 0).astype(np.uint8),
        origin,
    )
    gt.boxes = check_boxes(
        boxes, gt.image_sizes_of(ann_images), origin, source, "ground-truth", options.outside
    )
    return gt


def coco_predictions(path: Path, gt: GroundTruth, options: ReadOptions) -> Predictions:
    source = str(path)
    data = read_bytes(path)
    fast = parse_uniform_list(data)
    if fast is not None and {"image_id", "category_id", "bbox", "score"} <= set(fast):
        image_ids = fast["image_id"]
        if (
            fast["bbox"].ndim == 2
            and fast["bbox"].shape[1] == 4
            and fast["image_id"].ndim == 1
            and fast["category_id"].ndim == 1
            and fast["score"].ndim == 1
            and (np.mod(image_ids, 1) == 0).all()
            and (np.mod(fast["category_id"], 1) == 0).all()
        ):
            return _finish_coco(
                source,
                gt,
                image_ids.astype(np.int64),
                None,
                fast["category_id"].astype(np.int64),
                fast["bbox"],
                fast["score"],
                "",
                options,
            )
    items = parse_json(data, source)
    listname = ""
    if isinstance(items, dict) and isinstance(items.get("annotations"), list):
        items, listname = items["annotations"], "annotations"
    if not isinstance(items, list):
        raise DataError(
            f"{source}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...]"
        )
    if not items:
        log.warning("%s: holds no predictions; every AP will be 0", source)
        return Predictions.empty(source)
    keys: List[Any] = []
    for i, item in enumerate(items):
        key = item.get("image_id") if isinstance(item, dict) else None
        if not (isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))):
            raise DataError(
                f"{source}: {listname}[{i}]: 'image_id' must be an integer or a file name, "
                f"got {json.dumps(key)}"
            )
        keys.append(key)
    cats = column(items, "category_id", source, listname, "int")
    boxes = column(items, "bbox", source, listname, "box")
    scores = column(items, "score", source, listname, "number")
    return _finish_coco(source, gt, None, keys, cats, boxes, scores, listname, options)


def _finish_coco(
    source: str,
    gt: GroundTruth,
    image_ids: Optional[np.ndarray],
    keys: Optional[List[Any]],
    cats: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    listname: str,
    options: ReadOptions,
) -> Predictions:
    if keys is not None:
        ids, known_image = resolve.image_ids_from_keys(keys, gt)
    elif image_ids is not None:
        ids, known_image = image_ids, resolve.known_image_ids(image_ids, gt)
    else:  # a caller's mistake, not the file's
        raise AgentError("_finish_coco needs image ids or keys")
    known_class = resolve.known_category_ids(cats, gt)
    return resolve.finish(
        source,
        gt,
        ids,
        known_image,
        lambda i: json.dumps(keys[i] if keys is not None else int(ids[i])),
        cats,
        known_class,
        lambda i: f"category_id {int(cats[i])}",
        boxes,
        scores,
        element_origin(source, listname),
        options,
    )
