"""Random evaluation cases and writers for every file format the readers take.

A case is plain Python data (per image: size, objects, detections) so that each writer
derives its file from the same truth, and "the equivalent COCO JSON" is written directly
from it, not through the code under test.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.evaluate.structures import GroundTruth, Predictions

CONFORMANCE = Path("../shared/conformance")


@dataclasses.dataclass
class Obj:
    cls: int
    box: Tuple[float, float, float, float]  # x, y, w, h pixels
    difficult: bool = False


@dataclasses.dataclass
class Det:
    cls: int
    box: Tuple[float, float, float, float]
    score: float


@dataclasses.dataclass
class Image:
    stem: str
    width: int
    height: int
    objects: List[Obj]
    dets: List[Det]


@dataclasses.dataclass
class Case:
    names: List[str]
    images: List[Image]


def random_case(
    seed: int,
    images: int = 12,
    classes: int = 4,
    integer: bool = False,
    difficult: float = 0.0,
    max_objects: int = 6,
) -> Case:
    """Objects and jittered / background detections, boxes inside their images.

    ``integer``: whole-pixel boxes (VOC's style) in images whose sides are powers of two, so
    YOLO's normalised coordinates convert back to the very same pixels (no rounding can move an
    IoU across a threshold that whole-pixel boxes often hit exactly). Scores are drawn from a
    small set so ties occur and the reading order matters.
    """
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(classes)]
    out = []
    for i in range(images):
        if integer:
            w, h = (int(2 ** rng.integers(6, 9)) for _ in range(2))
        else:
            w, h = int(rng.integers(64, 400)), int(rng.integers(64, 400))
        objs, dets = [], []
        for _ in range(int(rng.integers(0, max_objects + 1))):
            bw, bh = rng.uniform(4, w * 0.7), rng.uniform(4, h * 0.7)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            box = _round((x, y, bw, bh), integer, w, h)
            objs.append(Obj(int(rng.integers(classes)), box, bool(rng.uniform() < difficult)))
        for obj in objs:
            for _ in range(int(rng.integers(0, 3))):
                x, y, bw, bh = obj.box
                j = rng.normal(0, 0.15, 4) * [bw, bh, bw, bh]
                cls = obj.cls if rng.uniform() < 0.85 else int(rng.integers(classes))
                dets.append(
                    Det(
                        cls,
                        _clip((x + j[0], y + j[1], bw + j[2], bh + j[3]), w, h, integer),
                        float(rng.choice([0.3, 0.5, 0.7, 0.9]) if rng.uniform() < 0.3 else rng.uniform()),
                    )
                )
        for _ in range(int(rng.integers(0, 5))):
            bw, bh = rng.uniform(4, w * 0.5), rng.uniform(4, h * 0.5)
            box = _clip((rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh), w, h, integer)
            dets.append(Det(int(rng.integers(classes)), box, float(rng.uniform() * 0.6)))
        out.append(Image(f"{i + 1:06d}", w, h, objs, dets))
    return Case(names, out)


def _round(box, integer: bool, w: int, h: int):
    if not integer:
        return tuple(float(v) for v in box)
    x, y, bw, bh = (float(round(v)) for v in box)
    return (x, y, max(1.0, min(bw, w - x)), max(1.0, min(bh, h - y)))


def _clip(box, w: int, h: int, integer: bool):
    x1, y1 = max(0.0, box[0]), max(0.0, box[1])
    x2, y2 = min(float(w), box[0] + abs(box[2])), min(float(h), box[1] + abs(box[3]))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    out = (x1, y1, min(x2, w) - x1, min(y2, h) - y1)
    return _round(out, integer, w, h) if integer else tuple(float(v) for v in out)


def coco_gt_dict(case: Case, difficult_as_crowd: bool = True) -> dict:
    images = [
        {"id": i + 1, "file_name": f"{im.stem}.png", "width": im.width, "height": im.height}
        for i, im in enumerate(case.images)
    ]
    anns = []
    for i, im in enumerate(case.images):
        for o in im.objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": o.cls,
                    "bbox": list(o.box),
                    "area": o.box[2] * o.box[3],
                    "iscrowd": int(o.difficult and difficult_as_crowd),
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k, "name": n} for k, n in enumerate(case.names)],
    }


def coco_results(case: Case, image_key: str = "id") -> list:
    out = []
    for i, im in enumerate(case.images):
        for d in im.dets:
            out.append(
                {
                    "image_id": i + 1 if image_key == "id" else im.stem,
                    "category_id": d.cls,
                    "bbox": list(d.box),
                    "score": d.score,
                }
            )
    return out


def write_coco(case: Case, folder: Path) -> Tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    gt, pred = folder / "gt.json", folder / "pred.json"
    gt.write_text(json.dumps(coco_gt_dict(case)))
    pred.write_text(json.dumps(coco_results(case)))
    return gt, pred


def write_images(case: Case, folder: Path, real: bool = True) -> None:
    """Tiny PNG files of each image's size (headers are what the reader looks at)."""
    folder.mkdir(parents=True, exist_ok=True)
    for im in case.images:
        cv2.imwrite(str(folder / f"{im.stem}.png"), np.zeros((im.height, im.width, 3), np.uint8))


def write_yolo(case: Case, root: Path, with_preds: bool = True) -> Tuple[Path, Optional[Path]]:
    """images/val, labels/val, classes.txt; predictions in pred/ (full-precision repr values)."""
    write_images(case, root / "images" / "val")
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(case.names) + "\n")
    pred = root / "pred"
    pred.mkdir(exist_ok=True)
    for im in case.images:
        lines = [f"{o.cls} {_norm(o.box, im)}" for o in im.objects]
        if lines:
            (root / "labels" / "val" / f"{im.stem}.txt").write_text("\n".join(lines) + "\n")
        if with_preds and im.dets:
            (pred / f"{im.stem}.txt").write_text(
                "".join(f"{d.cls} {_norm(d.box, im)} {d.score!r}\n" for d in im.dets)
            )
    return root, pred if with_preds else None


def _norm(box, im: Image) -> str:
    x, y, w, h = box
    return f"{(x + w / 2) / im.width!r} {(y + h / 2) / im.height!r} {w / im.width!r} {h / im.height!r}"


def write_voc(case: Case, folder: Path) -> Path:
    """One XML per image; boxes as xmin = x, xmax = x + w (the reader's documented mapping)."""
    folder.mkdir(parents=True, exist_ok=True)
    for im in case.images:
        objs = "".join(
            f"<object><name>{case.names[o.cls]}</name><difficult>{int(o.difficult)}</difficult><bndbox>"
            f"<xmin>{o.box[0]:g}</xmin><ymin>{o.box[1]:g}</ymin><xmax>{o.box[0] + o.box[2]:g}</xmax>"
            f"<ymax>{o.box[1] + o.box[3]:g}</ymax></bndbox></object>\n"
            for o in im.objects
        )
        (folder / f"{im.stem}.xml").write_text(
            f"<annotation>\n<filename>{im.stem}.png</filename>\n<size><width>{im.width}</width>"
            f"<height>{im.height}</height><depth>3</depth></size>\n{objs}</annotation>\n"
        )
    return folder


def read_text_boxes(folder: Path, detections: bool, xywh: bool) -> List[Tuple[int, str, float, tuple]]:
    """The conformance tools' text format: ``class [score] a b c d`` per line, one file per image,
    files in sorted name order; returns (file index, class, score, (x, y, w, h))."""
    rows = []
    for k, f in enumerate(sorted(folder.glob("*.txt"))):
        for line in f.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            score = float(parts[1]) if detections else 1.0
            a, b, c, d = map(float, parts[2:6] if detections else parts[1:5])
            rows.append(
                (
                    k,
                    parts[0],
                    score,
                    (a, b, c, d) if xywh else (a, b, c - a, d - b),
                    (not detections) and parts[-1] == "difficult",
                )
            )
    return rows


def arrays_case(gt_rows, det_rows, names: Sequence[str], images: int) -> Tuple[GroundTruth, Predictions]:
    """Structures straight from rows (the conformance text data has no image sizes)."""
    cat = {n: k for k, n in enumerate(names)}
    g = [r for r in gt_rows]
    gt = GroundTruth(
        "gt",
        "text",
        np.arange(images, dtype=np.int64),
        [str(i) for i in range(images)],
        np.full(images, 1e5),
        np.full(images, 1e5),
        list(range(len(names))),
        list(names),
        np.arange(1, len(g) + 1, dtype=np.int64),
        np.asarray([r[0] for r in g], np.int64),
        np.asarray([cat[r[1]] for r in g], np.int64),
        np.asarray([r[3] for r in g], float).reshape(-1, 4),
        np.ones(len(g)),
        np.asarray([r[4] for r in g], np.uint8),
    )
    d = [r for r in det_rows if r[1] in cat]
    preds = Predictions(
        "pred",
        np.asarray([r[0] for r in d], np.int64),
        np.asarray([cat[r[1]] for r in d], np.int64),
        np.asarray([r[3] for r in d], float).reshape(-1, 4),
        np.asarray([r[2] for r in d], float),
    )
    return gt, preds
