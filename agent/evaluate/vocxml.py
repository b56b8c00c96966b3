"""PASCAL VOC XML ground truth: one ``<annotation>`` file per image.

Reads ``filename``, ``size/width``, ``size/height`` and each ``object``'s ``name``,
``difficult`` (default 0) and ``bndbox`` (``xmin ymin xmax ymax``, the devkit's 1-based
inclusive pixels). Boxes become COCO ``[xmin, ymin, xmax - xmin, ymax - ymin]`` with the
coordinates as written, so predictions in the same pixel frame line up; the VOC metric's
+1 convention (on by default for this format) accounts for the inclusive pixels.
``difficult`` objects become ``iscrowd`` (ignored; see structures.GroundTruth).

The path is a folder of ``.xml`` files or a VOC root holding ``Annotations/`` (images then
come from ``JPEGImages/``, for ``eval --model``). Class names: ``--names`` (fixes the order;
a name outside it is an error), else the sorted set of names found. Errors carry the XML
line (parsed with expat, which knows line numbers).
"""

from __future__ import annotations

import logging
import xml.parsers.expat
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from agent.errors import DataError
from agent.evaluate.imagesize import image_size
from agent.evaluate.structures import GroundTruth, ReadOptions, check_boxes, line_origin
from agent.evaluate.yolo import read_names, stem_ids
from agent.fileio import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class _Node:
    __slots__ = ("children", "line", "tag", "text")

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line, self.text = tag, line, ""
        self.children: List[_Node] = []

    def find(self, tag: str) -> Optional[_Node]:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> List[_Node]:
        return [c for c in self.children if c.tag == tag]


def parse_xml(path: Path) -> _Node:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    parser = xml.parsers.expat.ParserCreate()
    root = _Node("", 0)
    stack = [root]

    def start(tag: str, _attrs: Dict[str, str]) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(chars: str) -> None:
        stack[-1].text += chars

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: invalid XML: {xml.parsers.expat.ErrorString(exc.code)}"
        ) from None
    top = root.find("annotation")
    if top is None:
        raise DataError(f"{path}:1: expected an <annotation> element")
    return top


def _number(node: Optional[_Node], path: Path, parent: _Node, tag: str) -> float:
    if node is None:
        raise DataError(f"{path}:{parent.line}: <{parent.tag}> has no <{tag}>")
    try:
        value = float(node.text.strip())
    except ValueError:
        raise DataError(f"{path}:{node.line}: <{tag}> must be a number, got {node.text.strip()!r}") from None
    if not np.isfinite(value):
        raise DataError(f"{path}:{node.line}: <{tag}> must be finite")
    return value


def read_annotation(path: Path, images_dir: Optional[Path]) -> Tuple[str, float, float, List[tuple]]:
    """(file name, width, height, [(name, difficult, xmin, ymin, xmax, ymax, line)])."""
    top = parse_xml(path)
    name_node = top.find("filename")
    filename = (
        name_node.text.strip() if name_node is not None and name_node.text.strip() else path.stem + ".jpg"
    )
    size = top.find("size")
    width = _number(size.find("width"), path, size, "width") if size is not None else 0.0
    height = _number(size.find("height"), path, size, "height") if size is not None else 0.0
    if width <= 0 or height <= 0:  # some VOC files carry 0x0; the image itself knows
        image = _image_file(images_dir, filename, path.stem)
        if image is None:
            raise DataError(
                f"{path}:{size.line if size is not None else 1}: no image size, and no image "
                f"file {filename} to read it from"
            )
        width, height = (float(v) for v in image_size(image))
    objects = []
    for obj in top.findall("object"):
        label = obj.find("name")
        if label is None or not label.text.strip():
            raise DataError(f"{path}:{obj.line}: <object> has no <name>")
        diff = obj.find("difficult")
        difficult = diff is not None and diff.text.strip() not in ("", "0")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}:{obj.line}: <object> has no <bndbox>")
        coords = [_number(box.find(t), path, box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise DataError(f"{path}:{box.line}: <bndbox> has xmax < xmin or ymax < ymin: {coords}")
        objects.append((label.text.strip(), difficult, *coords, box.line))
    return filename, width, height, objects


def _image_file(images_dir: Optional[Path], filename: str, stem: str) -> Optional[Path]:
    if images_dir is None or not images_dir.is_dir():
        return None
    candidate = images_dir / filename
    if candidate.is_file():
        return candidate
    return next(
        (images_dir / (stem + s) for s in IMAGE_SUFFIXES if (images_dir / (stem + s)).is_file()), None
    )


def voc_ground_truth(path: Path, options: ReadOptions) -> GroundTruth:
    if path.is_file():
        files, images_dir = [path], path.parent.parent / "JPEGImages"
    else:
        folder = path / "Annotations" if (path / "Annotations").is_dir() else path
        files = sorted(folder.glob("*.xml"))
        images_dir = folder.parent / "JPEGImages"
    if not files:
        raise DataError(f"{path}: no .xml annotation files")
    names: Optional[List[str]] = read_names(Path(options.names)) if options.names else None
    records = [read_annotation(f, images_dir) for f in files]
    found = sorted({o[0] for _, _, _, objects in records for o in objects})
    if names is not None:
        allowed = set(names)
        for f, (_, _, _, objects) in zip(files, records):
            for o in objects:
                if o[0] not in allowed:
                    raise DataError(f"{f}:{o[6]}: class {o[0]!r} is not in {options.names}")
    else:
        names = found
    if not names:
        raise DataError(f"{path}: no objects in any annotation file, and no --names to list the classes")
    cat_of = {n: k for k, n in enumerate(names)}
    rows, file_index, lines, image_rows = [], [], [], []
    for k, (_, _, _, objects) in enumerate(records):
        for o in objects:
            rows.append((cat_of[o[0]], 1 if o[1] else 0, o[2], o[3], o[4] - o[2], o[5] - o[3]))
            file_index.append(k)
            lines.append(o[6])
            image_rows.append(k)
    table = np.asarray(rows, np.float64).reshape(-1, 6)
    origin = line_origin(
        [str(f) for f in files], np.asarray(file_index, np.int64), np.asarray(lines, np.int64)
    )
    widths = np.asarray([r[1] for r in records], np.float64)
    heights = np.asarray([r[2] for r in records], np.float64)
    img = np.asarray(image_rows, np.int64)
    boxes = check_boxes(
        table[:, 2:6],
        np.stack([widths[img], heights[img]], 1),
        origin,
        str(path),
        "ground-truth",
        options.outside,
    )
    ids = stem_ids([f.stem for f in files])
    paths = [_image_file(images_dir, r[0], f.stem) for f, r in zip(files, records)]
    return GroundTruth(
        str(path),
        "voc",
        ids,
        [r[0] for r in records],
        widths,
        heights,
        list(range(len(names))),
        list(names),
        np.arange(1, len(rows) + 1, dtype=np.int64),
        ids[img],
        table[:, 0].astype(np.int64),
        boxes,
        boxes[:, 2] * boxes[:, 3],
        table[:, 1].astype(np.uint8),
        origin,
        plus_one=True,
        image_paths=[str(p) for p in paths] if all(p is not None for p in paths) else None,
    )
