"""A COCO-val-sized evaluation workload, generated from a seed (no download).

COCO val2017 has 5,000 images, 80 categories and about 36k boxes (27k once crowd regions
and small-object noise are set aside in typical subsets); a detector evaluated at
confidence 0.001 emits about 50 boxes per image. The generator reproduces those sizes:
per image, Poisson(5.4) ground-truth boxes (1% crowd), each seen by 1-3 jittered
detections (sometimes with the wrong class), and background detections up to about 50
in all, with scores that favour the good boxes. Written as COCO instances JSON and a COCO
results list (the files a user hands to ``detection-agent eval``), and as a YOLO data set
of small real images (64x48 JPEG/PNG, so header reading is real) with label and
prediction text files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: COCO's 80 category ids (1-90 with gaps), in YOLO index order.
COCO_IDS = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
]


@dataclasses.dataclass
class Workload:
    """Arrays of one generated case (boxes are COCO ``[x, y, w, h]`` in pixels)."""

    widths: np.ndarray
    heights: np.ndarray
    gt_image: np.ndarray
    gt_class: np.ndarray  # 0..79
    gt_box: np.ndarray
    gt_crowd: np.ndarray
    dt_image: np.ndarray
    dt_class: np.ndarray
    dt_box: np.ndarray
    dt_score: np.ndarray


def generate(
    images: int = 5000,
    seed: int = 0,
    gt_per_image: float = 5.4,
    dt_per_image: float = 49.6,
    width: Tuple[int, int] = (320, 640),
    height: Tuple[int, int] = (240, 640),
) -> Workload:
    rng = np.random.default_rng(seed)
    widths = rng.integers(width[0], width[1] + 1, images)
    heights = rng.integers(height[0], height[1] + 1, images)
    counts = rng.poisson(gt_per_image, images)
    gt_image = np.repeat(np.arange(images), counts)
    n = gt_image.size
    w_img, h_img = widths[gt_image], heights[gt_image]
    # Log-uniform box sides from 4 px to 90% of the image: small, medium and large objects.
    bw = np.exp(rng.uniform(np.log(4), np.log(0.9 * w_img)))
    bh = np.clip(bw * np.exp(rng.normal(0, 0.5, n)), 4, 0.9 * h_img)
    x = rng.uniform(0, w_img - bw)
    y = rng.uniform(0, h_img - bh)
    gt_box = np.stack([x, y, bw, bh], 1).round(2)
    gt_class = rng.integers(0, 80, n)
    gt_crowd = (rng.uniform(size=n) < 0.01).astype(np.int64)

    # Detections of each object: 1-3, jittered by 0-25% of the box size.
    per_gt = rng.integers(1, 4, n)
    src = np.repeat(np.arange(n), per_gt)
    jitter = rng.uniform(0, 0.25, (src.size, 1)) * rng.normal(0, 1, (src.size, 4))
    box = gt_box[src] + jitter * np.concatenate([gt_box[src, 2:], gt_box[src, 2:]], 1)
    cls = np.where(rng.uniform(size=src.size) < 0.1, rng.integers(0, 80, src.size), gt_class[src])
    score = rng.beta(4, 2, src.size)
    obj_image = gt_image[src]
    # Background detections fill each image up to its target count.
    target = rng.poisson(dt_per_image, images)
    have = np.bincount(obj_image, minlength=images)
    extra = np.clip(target - have, 0, None)
    bg_image = np.repeat(np.arange(images), extra)
    m = bg_image.size
    bg_w = np.exp(rng.uniform(np.log(4), np.log(0.8 * widths[bg_image])))
    bg_h = np.clip(bg_w * np.exp(rng.normal(0, 0.5, m)), 4, 0.8 * heights[bg_image])
    bg_box = np.stack(
        [rng.uniform(0, widths[bg_image] - bg_w), rng.uniform(0, heights[bg_image] - bg_h), bg_w, bg_h], 1
    )
    dt_image = np.concatenate([obj_image, bg_image])
    dt_box = np.concatenate([box, bg_box])
    dt_class = np.concatenate([cls, rng.integers(0, 80, m)])
    dt_score = np.concatenate([score, rng.beta(1, 8, m)]).clip(0.001, 1.0).round(5)
    # Detections stay inside their image, as a detector's clipped boxes do.
    x1 = np.clip(dt_box[:, 0], 0, widths[dt_image] - 1)
    y1 = np.clip(dt_box[:, 1], 0, heights[dt_image] - 1)
    x2 = np.clip(dt_box[:, 0] + np.abs(dt_box[:, 2]), x1 + 1, widths[dt_image])
    y2 = np.clip(dt_box[:, 1] + np.abs(dt_box[:, 3]), y1 + 1, heights[dt_image])
    dt_box = np.stack([x1, y1, x2 - x1, y2 - y1], 1).round(2)
    order = np.argsort(dt_image, kind="stable")
    return Workload(
        widths,
        heights,
        gt_image,
        gt_class,
        gt_box,
        gt_crowd,
        dt_image[order],
        dt_class[order],
        dt_box[order],
        dt_score[order],
    )


def categories() -> List[Dict[str, object]]:
    return [{"id": cid, "name": f"class{i:02d}", "supercategory": "thing"} for i, cid in enumerate(COCO_IDS)]


def write_coco(work: Workload, out: Path) -> Tuple[Path, Path]:
    """``gt.json`` (instances) and ``pred.json`` (results list) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(COCO_IDS)
    images = [
        {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(w), "height": int(h)}
        for i, (w, h) in enumerate(zip(work.widths.tolist(), work.heights.tolist()))
    ]
    anns = [
        {
            "id": k + 1,
            "image_id": img + 1,
            "category_id": int(cid),
            "bbox": box,
            "area": round(box[2] * box[3], 2),
            "iscrowd": crowd,
        }
        for k, (img, cid, box, crowd) in enumerate(
            zip(
                work.gt_image.tolist(),
                ids[work.gt_class].tolist(),
                work.gt_box.tolist(),
                work.gt_crowd.tolist(),
            )
        )
    ]
    gt = {
        "info": {"description": "synthetic COCO-val-sized workload"},
        "images": images,
        "annotations": anns,
        "categories": categories(),
    }
    dets = [
        {"image_id": img + 1, "category_id": cid, "bbox": box, "score": s}
        for img, cid, box, s in zip(
            work.dt_image.tolist(), ids[work.dt_class].tolist(), work.dt_box.tolist(), work.dt_score.tolist()
        )
    ]
    gt_path, pred_path = out / "gt.json", out / "pred.json"
    gt_path.write_text(json.dumps(gt), encoding="utf-8")
    pred_path.write_text(json.dumps(dets), encoding="utf-8")
    return gt_path, pred_path


def write_yolo(work: Workload, out: Path, image_w: int = 64, image_h: int = 48) -> Tuple[Path, Path]:
    """A YOLO data set (images/val, labels/val, classes.txt) and a folder of prediction txt files.

    Boxes are normalised, so each image is stored small (alternately JPEG and PNG) yet keeps
    the workload's geometry relative to its size. Crowd boxes are left out (YOLO has none).
    """
    images_dir, labels_dir, pred_dir = out / "images" / "val", out / "labels" / "val", out / "pred"
    for d in (images_dir, labels_dir, pred_dir):
        d.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"class{i:02d}\n" for i in range(80)), encoding="utf-8")
    pixels = np.full((image_h, image_w, 3), 127, np.uint8)
    jpg = cv2.imencode(".jpg", pixels)[1].tobytes()
    png = cv2.imencode(".png", pixels)[1].tobytes()
    plain = work.gt_crowd == 0  # YOLO labels have no crowd regions
    gt_lines = _yolo_lines(work.gt_image[plain], work.gt_class[plain], work.gt_box[plain], None, work)
    dt_lines = _yolo_lines(work.dt_image, work.dt_class, work.dt_box, work.dt_score, work)
    for i in range(work.widths.size):
        name = f"{i + 1:012d}"
        (images_dir / (name + (".jpg" if i % 2 == 0 else ".png"))).write_bytes(jpg if i % 2 == 0 else png)
        (labels_dir / f"{name}.txt").write_text(gt_lines.get(i, ""), encoding="utf-8")
        if i in dt_lines:
            (pred_dir / f"{name}.txt").write_text(dt_lines[i], encoding="utf-8")
    return out, pred_dir


def _yolo_lines(image: np.ndarray, cls: np.ndarray, box: np.ndarray, score, work: Workload) -> Dict[int, str]:
    w, h = work.widths[image], work.heights[image]
    cx, cy = (box[:, 0] + box[:, 2] / 2) / w, (box[:, 1] + box[:, 3] / 2) / h
    bw, bh = box[:, 2] / w, box[:, 3] / h
    text: Dict[int, List[str]] = {}
    rows = zip(
        image.tolist(),
        cls.tolist(),
        cx.tolist(),
        cy.tolist(),
        bw.tolist(),
        bh.tolist(),
        score.tolist() if score is not None else [None] * image.size,
    )
    for img, c, x, y, ww, hh, s in rows:
        line = f"{c} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f}" + ("" if s is None else f" {s:.5f}")
        text.setdefault(img, []).append(line)
    return {k: "\n".join(v) + "\n" for k, v in text.items()}
