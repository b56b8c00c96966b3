"""YOLO txt: ground truth (labels + image sizes + class names) and predictions with scores.

Layout, as ultralytics has it: images under ``.../images/...``, one ``STEM.txt`` per image
under the same path with ``images`` replaced by ``labels``; lines ``class cx cy w h``,
normalised to 0-1. The ground truth can be named by

- a data YAML (``path``, ``val`` (an images folder), ``names``),
- a data set folder holding ``images/`` and ``labels/`` (with one split folder inside, or
  a ``val``/``val2017``/``valid``/``test`` one), or an images folder.

Class names come from ``--names``, else the data YAML, else ``classes.txt``/``*.names``/
``data.yaml`` in the data set folder or above the images. An image without a label file
has no objects (ultralytics' background images); a label file without an image is an error
(its boxes would silently not count). Image ids are the stems when every stem is a number
(as COCO file names are), else 1..M in file-name order.

Predictions: a folder of ``STEM.txt`` with ``class cx cy w h score`` (ultralytics'
``save_txt`` + ``save_conf``); class N is the N-th ground-truth category in id order.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from agent.errors import DataError
from agent.evaluate import resolve
from agent.evaluate.imagesize import image_size
from agent.evaluate.structures import GroundTruth, Predictions, ReadOptions, check_boxes, line_origin
from agent.fileio import image_files

log = logging.getLogger(__name__)

_SPLITS = ("val", "val2017", "valid", "validation", "test", "test2017")
_NAMES_FILES = ("classes.txt", "data.yaml", "dataset.yaml")


def read_names(path: Path) -> List[str]:
    """Class names from a YAML (``names`` list or index map) or a text file (one per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read class names: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml_names(_load_yaml(path, text), path)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: file is empty (expected one class name per line)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}:{text.splitlines().index(dup) + 1}: class name {dup!r} appears twice")
    return names


def _load_yaml(path: Path, text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping (path, val, names)")
    return data


def _yaml_names(data: dict, path: Path) -> List[str]:
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError(f"{path}: names: class indices must run 0..{len(keys) - 1}, got {keys[:10]}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: names: expected a list of class names or an index -> name map")
    return [str(n) for n in names]


def find_layout(path: Path) -> Tuple[Path, Path, Optional[List[str]], Optional[Path]]:
    """(images folder, labels folder, names from a data YAML, names file) for a data set path."""
    yaml_names: Optional[List[str]] = None
    if path.is_file():
        data = _load_yaml(path, path.read_text(encoding="utf-8"))
        yaml_names = _yaml_names(data, path) if "names" in data else None
        val = data.get("val")
        if not isinstance(val, str):
            raise DataError(
                f"{path}: val: expected an images folder (a list or file of images is not supported)"
            )
        root = Path(str(data.get("path") or "."))
        root = root if root.is_absolute() else path.parent / root  # relative to the YAML's folder
        images = root / val
    elif (path / "images").is_dir():
        images = _pick_split(path / "images")
    else:
        images = path
    if not images.is_dir():
        raise DataError(f"{images}: images folder not found")
    labels = _labels_dir(images)
    names_file = None
    for folder in [images, *list(images.parents)[:2]]:  # the data set root: DATA/images/SPLIT
        names_file = next((folder / n for n in _NAMES_FILES if (folder / n).is_file()), None) or next(
            iter(sorted(folder.glob("*.names"))), None
        )
        if names_file is not None:
            break
    return images, labels, yaml_names, names_file


def _pick_split(images_root: Path) -> Path:
    if image_files(images_root):
        return images_root
    subdirs = sorted(p for p in images_root.iterdir() if p.is_dir())
    if len(subdirs) == 1:
        return subdirs[0]
    for split in _SPLITS:
        if (images_root / split).is_dir():
            return images_root / split
    raise DataError(
        f"{images_root}: several splits ({', '.join(p.name for p in subdirs)}); name the images "
        "folder of the one to evaluate"
    )


def _labels_dir(images: Path) -> Path:
    parts = list(images.parts)
    if "images" in parts:
        k = len(parts) - 1 - parts[::-1].index("images")  # ultralytics replaces the last "images"
        return Path(*parts[:k], "labels", *parts[k + 1 :])
    return images if any(images.glob("*.txt")) else images.parent / "labels"


def read_sizes(path: Path) -> Dict[str, Tuple[float, float]]:
    """``NAME WIDTH HEIGHT`` per line (NAME a file name or stem)."""
    sizes: Dict[str, Tuple[float, float]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image sizes: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            name, width, height = parts[0], float(parts[1]), float(parts[2])
            if len(parts) != 3 or width <= 0 or height <= 0:
                raise ValueError
        except (IndexError, ValueError):
            raise DataError(
                f"{path}:{n}: expected 'NAME WIDTH HEIGHT' with positive sizes, got {line!r}"
            ) from None
        sizes[name] = sizes[Path(name).stem] = (width, height)
    if not sizes:
        raise DataError(f"{path}: file is empty (expected 'NAME WIDTH HEIGHT' lines)")
    return sizes


def parse_rows(path: Path, columns: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """Numbers of one label file, (rows, columns), and each row's line number; precise errors."""
    text = _read_text(path)
    rows: List[List[float]] = []
    lines: List[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise DataError(f"{path}:{n}: expected numbers ({what}), got {line.strip()!r}") from None
        if len(values) != columns:
            hint = " (segment labels are not supported; convert them to boxes)" if len(values) > 6 else ""
            raise DataError(f"{path}:{n}: expected {columns} values ({what}), got {len(values)}{hint}")
        if not np.isfinite(values).all() or values[0] % 1 != 0:
            raise DataError(
                f"{path}:{n}: class must be a whole number and values finite, got {line.strip()!r}"
            )
        rows.append(values)
        lines.append(n)
    return np.asarray(rows, np.float64).reshape(-1, columns), np.asarray(lines, np.int64)


def parse_files(files: Sequence[Path], columns: int, what: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All rows of many label files: values (R, columns), file index and line number per row.

    One C-speed ``loadtxt`` over the joined text (thousands of files, a quarter million
    rows); if anything in it is malformed, the files are read one by one to say where.
    """
    texts = [_read_text(f) for f in files]
    file_index: List[int] = []
    line_numbers: List[int] = []
    kept: List[str] = []
    for k, text in enumerate(texts):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                kept.append(line)
                file_index.append(k)
                line_numbers.append(n)
    values: Optional[np.ndarray] = None
    if kept:
        try:
            values = np.loadtxt(io.StringIO("\n".join(kept)), dtype=np.float64, ndmin=2, comments=None)
        except ValueError:
            values = None
        if values is not None and (
            values.shape != (len(kept), columns)
            or not np.isfinite(values).all()
            or (np.mod(values[:, 0], 1) != 0).any()
        ):
            values = None
        if values is None:
            for f in files:
                parse_rows(f, columns, what)  # raises with the file and line
            raise DataError(f"{files[0].parent}: unreadable label files")  # pragma: no cover
    else:
        values = np.zeros((0, columns))
    return values, np.asarray(file_index, np.int64), np.asarray(line_numbers, np.int64)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def stem_ids(stems: Sequence[str]) -> np.ndarray:
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return np.asarray([int(s) for s in stems], np.int64)
    return np.arange(1, len(stems) + 1, dtype=np.int64)


def yolo_ground_truth(path: Path, options: ReadOptions) -> GroundTruth:
    images_dir, labels_dir, yaml_names, names_file = find_layout(path)
    if options.names:
        names = read_names(Path(options.names))
    elif yaml_names is not None:
        names = yaml_names
    elif names_file is not None:
        names = read_names(names_file)
    else:
        raise DataError(
            f"{path}: no class names found (classes.txt, data.yaml or *.names); pass --names FILE"
        )
    images = image_files(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no images")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"{images_dir}: two images share the stem {dup!r}; their labels would be ambiguous")
    if labels_dir.is_dir():
        label_files = {p.stem: p for p in labels_dir.glob("*.txt") if p.name != "classes.txt"}
    else:
        raise DataError(f"{labels_dir}: labels folder not found (for images in {images_dir})")
    orphans = sorted(set(label_files) - set(stems))
    if orphans:
        raise DataError(
            f"{label_files[orphans[0]]}: label file has no image in {images_dir} "
            f"({len(orphans)} such files); its boxes would not be evaluated"
        )
    sizes = _image_sizes(images, options)
    row_of = {s: k for k, s in enumerate(stems)}
    labelled = [label_files[s] for s in stems if s in label_files]
    values, file_index, lines = parse_files(labelled, 5, "class cx cy w h")
    missing = len(images) - len(labelled)
    if missing:
        log.info("%s: %d images have no label file (no objects)", images_dir, missing)
    origin = line_origin([str(f) for f in labelled], file_index, lines)
    img = (
        np.asarray([row_of[f.stem] for f in labelled], np.int64)[file_index]
        if labelled
        else np.zeros(0, np.int64)
    )
    cls = values[:, 0].astype(np.int64)
    bad = (cls < 0) | (cls >= len(names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{origin.where(i)}: class {cls[i]} is out of range: {len(names)} class names")
    wh = sizes[img]
    boxes = _denormalise(values, wh)
    boxes = check_boxes(boxes, wh, origin, str(path), "ground-truth", options.outside)
    ids = stem_ids(stems)
    cat_ids = list(range(len(names)))
    return GroundTruth(
        str(path),
        "yolo",
        ids,
        [p.name for p in images],
        sizes[:, 0].copy(),
        sizes[:, 1].copy(),
        cat_ids,
        list(names),
        np.arange(1, len(cls) + 1, dtype=np.int64),
        ids[img],
        cls,
        boxes,
        boxes[:, 2] * boxes[:, 3],
        np.zeros(len(cls), np.uint8),
        origin,
        image_paths=[str(p) for p in images],
    )


def _image_sizes(images: List[Path], options: ReadOptions) -> np.ndarray:
    if options.sizes:
        table = read_sizes(Path(options.sizes))
        missing = [p for p in images if p.name not in table and p.stem not in table]
        if missing:
            raise DataError(f"{options.sizes}: no size for {missing[0].name} ({len(missing)} images missing)")
        return np.asarray([table.get(p.name, table.get(p.stem)) for p in images], np.float64)
    return np.asarray([image_size(p) for p in images], np.float64)


def yolo_predictions(path: Path, gt: GroundTruth, options: ReadOptions) -> Predictions:
    files = sorted(p for p in path.glob("*.txt") if p.name != "classes.txt")
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of STEM.txt prediction files")
    if not files:
        # ultralytics writes no file for an image without detections: a model that found nothing.
        log.warning("%s: no prediction files (STEM.txt); every AP will be 0", path)
        return Predictions.empty(str(path))
    stems = gt.stem_index()
    values, file_of, lines = parse_files(files, 6, "class cx cy w h score")
    origin = line_origin([str(f) for f in files], file_of, lines)
    file_rows = np.asarray([stems.get(f.stem, -1) for f in files], np.int64)
    rows = file_rows[file_of]
    known_image = rows >= 0
    rows = np.clip(rows, 0, None)
    image_ids = np.where(known_image, gt.image_ids[rows], -1)
    boxes = _denormalise(values, np.stack([gt.widths[rows], gt.heights[rows]], 1))
    index = values[:, 0].astype(np.int64)
    cats, known_class = resolve.categories_from_indices(index, gt)
    names = [f.stem for f in files]
    return resolve.finish(
        str(path),
        gt,
        image_ids,
        known_image,
        lambda i: repr(names[int(file_of[i])]),
        cats,
        known_class,
        lambda i: f"index {int(index[i])} (of {len(gt.category_ids)})",
        boxes,
        values[:, 5],
        origin,
        options,
    )


def _denormalise(values: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """``class cx cy w h ...`` rows (normalised) -> COCO ``[x, y, w, h]`` pixels (ultralytics' arithmetic)."""
    x = (values[:, 1] - values[:, 3] / 2) * wh[:, 0]
    y = (values[:, 2] - values[:, 4] / 2) * wh[:, 1]
    return np.column_stack([x, y, values[:, 3] * wh[:, 0], values[:, 4] * wh[:, 1]])
