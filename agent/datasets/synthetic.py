"""Procedural shapes: a YOLO data set and videos with COCO ground truth, from a seed.

Classes, in class-id order: 0 circle, 1 square, 2 triangle.

Images (``make_dataset``)
    imgsz x imgsz (or ``width`` x ``height``), 0-8 objects (uniform count). An object's size,
    the longer side of its unclipped bounding box, is log-uniform in 12-300 px at 640 and
    scales with the image's longer side (never under 8 px, never over 90% of the shorter
    side). Squares and triangles take any rotation; triangles have random angles, each at
    least 25 degrees. Centres may lie slightly outside the image, so some objects are cut by
    the border. Later objects are drawn over earlier ones.
    Backgrounds, style "default": gradient, noise, stripes, checker, clutter (soft blobs and
    thin lines); vivid object colours on calmer backgrounds. Style "alt": radial gradient,
    plasma, rings, grid, speckle; saturated backgrounds under muted, greyish objects. Every
    object's colour is at least 110 (BGR distance) from the mean of what lies under it.
    Then, at random: Gaussian noise (60%), Gaussian or motion blur (30%), and JPEG quality
    40-95.

Labels
    Exact, from the geometry: the bounding box of the object's visible pixels (drawn
    coverage >= 50%, not covered by a later object, inside the image), COCO's convention;
    each side that no later object trims sits at the shape's exact extent clipped to the
    image (sub-pixel), so an unoccluded object's label is its true box.
    Occlusion rule: an object is not placed (up to 10 tries at another position and size,
    else left out) if it would be under 40% visible itself, because of the border, or would
    leave an earlier object under 40% visible, or either visible box would be under 4 px a
    side. So every drawn object is labelled; the image never shows an unlabelled fragment.

Videos (``make_video``) with COCO, MOT and line-crossing ground truth: agent/datasets/video.py.

Same seed, same arguments: byte-identical label files and ground truth, identical images.
Each image draws from its own generator seeded by (seed, style, split, index), so an image
does not depend on how many others are made or in which order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import yaml

from agent.datasets.canvas import ALT_BACKGROUNDS, DEFAULT_BACKGROUNDS, background, degrade, to_uint8
from agent.datasets.photos import PhotoBackgrounds
from agent.datasets.shapes_draw import (
    CIRCLE,
    CLASS_NAMES,
    SQUARE,
    Placed,
    Shape,
    contrasting_color,
    make_circle,
    make_square,
    make_triangle,
    paint,
    triangle_arcs,
)
from agent.errors import DataError
from agent.fileio import atomic_write_text, write_image

log = logging.getLogger(__name__)

STYLES = ("default", "alt")
MIN_SIDE = 64
_MAX_OBJECTS = 8
_TRIES = 10
_SPLITS = ("train", "val")
#: Per style: background kinds, background (sat, val) and object (sat, val) HSV ranges.
_PALETTES = {
    "default": (DEFAULT_BACKGROUNDS, ((0.0, 0.6), (0.15, 0.95)), ((0.35, 1.0), (0.35, 1.0))),
    "alt": (ALT_BACKGROUNDS, ((0.5, 1.0), (0.3, 1.0)), ((0.0, 0.35), (0.05, 1.0))),
}


@dataclasses.dataclass
class Scene:
    """One rendered image: pixels, the objects drawn (in order) and the JPEG quality to save at."""

    image: np.ndarray
    objects: List[Placed]
    jpeg_quality: int
    background: str


def size_range(width: int, height: int) -> Tuple[float, float]:
    """Object sizes (px, longer side of the box): 12-300 at 640, scaled, at least 8."""
    scale = max(width, height) / 640.0
    lo = max(8.0, 12.0 * scale)
    return lo, max(lo, min(300.0 * scale, 0.9 * min(width, height)))


def random_shape(rng: np.random.Generator, width: int, height: int, lo: float, hi: float) -> Shape:
    """A random class, log-uniform size, any rotation; the centre may sit a little off-image."""
    class_id = int(rng.integers(0, len(CLASS_NAMES)))
    size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    margin = 0.3 * size
    cx, cy = rng.uniform(-margin, width + margin), rng.uniform(-margin, height + margin)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    if class_id == CIRCLE:
        return make_circle(cx, cy, size)
    if class_id == SQUARE:
        return make_square(cx, cy, size, angle)
    return make_triangle(cx, cy, size, angle, triangle_arcs(rng))


def render_scene(rng: np.random.Generator, width: int = 640, height: int = 640, style: str = "default",
                 effects: bool = True, photos: Optional[PhotoBackgrounds] = None,
                 photo_ratio: float = 0.0) -> Scene:
    """Draw one image. ``effects=False`` skips noise and blur (objects and labels are the same).

    With ``photos``, a fraction ``photo_ratio`` of the images are drawn on a crop of a photo
    instead of a procedural background (without ``photos`` the generator's draws are unchanged).
    """
    kinds, bg_hsv, obj_hsv = _PALETTES[style]
    if photos is not None and rng.random() < photo_ratio:
        canvas, name = photos.crop(rng, width, height)
        kind = f"photo:{name}"
    else:
        kind = str(kinds[int(rng.integers(0, len(kinds)))])
        canvas = background(rng, kind, width, height, *bg_hsv)
    lo, hi = size_range(width, height)
    objects: List[Placed] = []
    for _ in range(int(rng.integers(0, _MAX_OBJECTS + 1))):
        for _try in range(_TRIES):
            obj = Placed.create(random_shape(rng, width, height, lo, hi), width, height)
            if obj is None or not obj.labelled():
                continue
            # Placement is refused, not the label dropped: see the occlusion rule above.
            after = [o.under(obj) for o in objects]
            if all(o.labelled(v) for o, v in zip(objects, after)):
                for o, v in zip(objects, after):
                    o.visible = v
                obj.color = contrasting_color(rng, canvas, obj, *obj_hsv)
                paint(canvas, obj)
                objects.append(obj)
                break
    quality = int(rng.integers(40, 96))
    image = degrade(rng, canvas) if effects else to_uint8(canvas)
    return Scene(image, objects, quality, kind)


def yolo_labels(objects: List[Placed], width: int, height: int) -> str:
    """YOLO label text, one ``class cx cy w h`` line (normalised, 6 decimals) per labelled object."""
    lines = []
    for obj in objects:
        box = obj.box()
        if box is None or not obj.labelled():
            continue
        x0, y0, x1, y1 = box
        lines.append(f"{obj.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "".join(line + "\n" for line in lines)


def image_rng(seed: int, style: str, split: str, index: int) -> np.random.Generator:
    """The generator of one data set image (independent of the others)."""
    return np.random.default_rng([seed, STYLES.index(style), _SPLITS.index(split), index])


def make_dataset(out_dir: Union[str, Path], train: int, val: int, imgsz: int = 640, seed: int = 0,
                 style: str = "default", width: Optional[int] = None, height: Optional[int] = None,
                 overwrite: bool = False, workers: Optional[int] = None,
                 backgrounds: Optional[Union[str, Path]] = None, background_ratio: float = 0.5) -> Path:
    """Write a YOLO data set (images/, labels/, data.yaml) to ``out_dir``; returns data.yaml's path.

    ``backgrounds``: a folder of photos; a fraction ``background_ratio`` of the images are drawn
    on crops of them (see agent/datasets/photos.py), the rest on procedural backgrounds. The
    folder, its photo count and the ratio are recorded in data.yaml.

    ``width``/``height`` override ``imgsz`` for non-square images. An ``out_dir`` that already
    holds images or labels is refused unless ``overwrite`` (which deletes only those files).
    ``workers`` threads render in parallel (default: up to 4); the output does not depend on it.
    """
    _check_count("train", train)
    _check_count("val", val)
    if train + val < 1:
        raise DataError("make_dataset: train + val must be at least 1 image")
    _check_int("seed", seed, 0)
    _check_style(style)
    w = _check_int("imgsz" if width is None else "width", imgsz if width is None else width, MIN_SIDE)
    h = _check_int("imgsz" if height is None else "height", imgsz if height is None else height, MIN_SIDE)
    if isinstance(background_ratio, bool) or not isinstance(background_ratio, (int, float)) or not (
            0.0 <= background_ratio <= 1.0):
        raise DataError(f"background_ratio must be a number in [0, 1], got {background_ratio!r}")
    photos = PhotoBackgrounds(backgrounds) if backgrounds is not None else None
    out = _prepare(Path(out_dir), overwrite)

    jobs = [(split, i) for split, count in zip(_SPLITS, (train, val)) for i in range(count)]

    def write_one(job: Tuple[str, int]) -> None:
        split, index = job
        scene = render_scene(image_rng(seed, style, split, index), w, h, style, photos=photos,
                             photo_ratio=float(background_ratio))
        write_image(out / "images" / split / f"{index:06d}.jpg", scene.image, scene.jpeg_quality)
        atomic_write_text(out / "labels" / split / f"{index:06d}.txt", yolo_labels(scene.objects, w, h))

    threads = workers if workers is not None else min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        # OpenCV and numpy release the GIL in the heavy calls, so threads scale without pickling.
        for _ in pool.map(write_one, jobs):
            pass
    data: Dict[str, Any] = {"path": str(out), "train": "images/train", "val": "images/val",
                            "names": dict(enumerate(CLASS_NAMES))}
    header = (f"# synthetic shapes: seed {seed}, style {style}, {w}x{h}, train {train}, val {val}\n"
              "# made by agent.datasets.synthetic.make_dataset\n")
    if photos is not None:
        data["backgrounds"] = {"folder": str(photos.folder), "photos": len(photos),
                               "ratio": float(background_ratio)}
        header += (f"# backgrounds: {background_ratio:.0%} of the images on crops of the {len(photos)} "
                   f"photos in {photos.folder}, the rest procedural\n")
    yaml_path = out / "data.yaml"
    # Written last: its presence marks a complete data set.
    atomic_write_text(yaml_path, header + yaml.safe_dump(data, sort_keys=False))
    log.info("wrote %d train and %d val images to %s", train, val, out)
    return yaml_path


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_count(name: str, value: Any) -> int:
    return _check_int(name, value, 0)


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise DataError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


def _prepare(out: Path, overwrite: bool) -> Path:
    """Create the layout under ``out`` (absolute), refusing unwritable or already-used folders."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    dirs = [out / kind / split for kind in ("images", "labels") for split in _SPLITS]
    stale = [p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_file()]
    stale += list((out / "labels").glob("*.cache")) if (out / "labels").is_dir() else []
    if stale and not overwrite:
        raise DataError(f"{out}: already holds a data set ({stale[0]}); use an empty folder or overwrite")
    try:
        for path in stale:
            path.unlink()
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot write the data set there: {exc.strerror or exc}") from exc
    if not os.access(str(out), os.W_OK):
        raise DataError(f"{out}: folder is not writable")
    return out

