import json
import math
import re
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pytest
import yaml

import agent.datasets.video as video
from agent.datasets.canvas import ALT_BACKGROUNDS, DEFAULT_BACKGROUNDS
from agent.datasets.shapes_draw import (
    CLASS_NAMES,
    MIN_BOX_PX,
    MIN_VISIBLE,
    Placed,
    Shape,
    make_circle,
    make_square,
    make_triangle,
    rasterise,
    triangle_arcs,
)
from agent.datasets.synthetic import (
    image_rng,
    make_dataset,
    render_scene,
    size_range,
    yolo_labels,
)
from agent.datasets.video import Mover, VideoScene, _bounce, coco_annotations, make_video
from agent.errors import DataError

LABEL_LINE = re.compile(r"^[012] (0|1)\.\d{6} (0|1)\.\d{6} (0|1)\.\d{6} (0|1)\.\d{6}$")


# Independent geometry: which pixel centres fall inside a shape (no coverage maps, no OpenCV).
def centre_mask(shape: Shape, width: int, height: int, ss: int = 1) -> np.ndarray:
    """At ``ss`` samples per pixel side: a (height * ss, width * ss) mask."""
    x = (np.arange(width * ss)[None, :] + 0.5) / ss
    y = (np.arange(height * ss)[:, None] + 0.5) / ss
    if shape.vertices is None:
        cx, cy = shape.center
        return (x - cx) ** 2 + (y - cy) ** 2 <= shape.radius ** 2
    v = shape.vertices
    sides = np.stack([(v[(i + 1) % len(v), 0] - v[i, 0]) * (y - v[i, 1])
                      - (v[(i + 1) % len(v), 1] - v[i, 1]) * (x - v[i, 0]) for i in range(len(v))])
    return (sides >= 0).all(axis=0) | (sides <= 0).all(axis=0)


def mask_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def geometric_visibility(objects: List[Placed], width: int, height: int, ss: int = 1) -> List[np.ndarray]:
    """Each object's visible samples: its own minus every later object's."""
    masks = [centre_mask(o.shape, width, height, ss) for o in objects]
    out = []
    for j, mask in enumerate(masks):
        visible = mask.copy()
        for later in masks[j + 1:]:
            visible &= ~later
        out.append(visible)
    return out


def scenes(n: int, size: int, style: str = "default"):
    for seed in range(n):
        yield seed, render_scene(np.random.default_rng(seed), size, size, style, effects=False)


def test_labels_match_the_drawn_geometry_on_many_seeds():
    checked = occluded = cut = 0
    for seed, scene in scenes(40, 192):
        # Sampled at 4x so thin triangle tips are seen; still no coverage maps, no OpenCV.
        visible = geometric_visibility(scene.objects, 192, 192, ss=4)
        for obj, vis in zip(scene.objects, visible):
            expected, box = mask_box(vis), obj.box()
            assert expected is not None and box is not None, seed
            # Occluder edges are cut at whole pixels (>= half covered): at most 1 px apart.
            assert max(abs(a / 4 - b) for a, b in zip(expected, box)) <= 1.0, (seed, expected, box)
            checked += 1
            occluded += int(vis.sum() < centre_mask(obj.shape, 192, 192, ss=4).sum() * 0.97)
            x0, y0, x1, y1 = obj.shape.extent()
            cut += int(x0 < 0 or y0 < 0 or x1 > 192 or y1 > 192)
    # The rules below are only tested if the generator really occludes and cuts objects.
    assert checked > 150 and occluded >= 5 and cut > 15


def test_unoccluded_objects_inside_the_image_get_their_exact_extent():
    exact = 0
    for _, scene in scenes(40, 320):
        masks = [centre_mask(o.shape, 320, 320) for o in scene.objects]
        for j, obj in enumerate(scene.objects):
            shape = obj.shape
            if any((masks[j] & later).any() for later in masks[j + 1:]):
                continue
            if shape.vertices is None:
                (cx, cy), r = shape.center, shape.radius
                truth = (cx - r, cy - r, cx + r, cy + r)
            else:
                truth = (*shape.vertices.min(axis=0), *shape.vertices.max(axis=0))
            if min(truth[:2]) < 0 or max(truth[2:]) > 320:
                continue
            assert obj.box() == pytest.approx(truth, abs=1e-9)
            exact += 1
    assert exact > 50


def test_border_cut_labels_are_the_visible_part_clipped_to_the_image():
    # A square half off the left edge and a circle off the top-right corner.
    square = Placed.create(make_square(0.0, 50.0, 40.0, 0.0), 100, 100)
    circle = Placed.create(make_circle(95.0, 3.0, 30.0), 100, 100)
    assert square is not None and circle is not None
    assert square.box() == pytest.approx((0.0, 30.0, 20.0, 70.0))
    assert circle.box() == pytest.approx((80.0, 0.0, 100.0, 18.0))
    assert square.visible_fraction() == pytest.approx(0.5, abs=0.02)
    assert rasterise(make_circle(-50.0, -50.0, 20.0), 100, 100) is None


def full_coverage(obj: Placed, width: int, height: int) -> np.ndarray:
    out = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = obj.roi
    out[y0:y1, x0:x1] = obj.coverage
    return out


def test_drawn_pixels_carry_the_object_colour_where_the_label_says():
    for seed, scene in scenes(25, 256):
        covs = [full_coverage(o, 256, 256) for o in scene.objects]
        for j, obj in enumerate(scene.objects):
            # Fully covered by this object and untouched by any later one: exactly its colour.
            pure = covs[j] == 255
            for later in covs[j + 1:]:
                pure &= later == 0
            colour = np.clip(np.asarray(obj.color) + 0.5, 0, 255).astype(np.uint8)
            assert np.abs(scene.image[pure].astype(int) - colour).max(initial=0) <= 1, seed
            assert pure.sum() >= 0.5 * obj.visible.sum() - 4 * math.sqrt(obj.shape.area), seed
            rows, cols = np.flatnonzero(pure.any(axis=1)), np.flatnonzero(pure.any(axis=0))
            x0, y0, x1, y1 = obj.box()
            assert x0 <= cols[0] and cols[-1] < x1 and y0 <= rows[0] and rows[-1] < y1


def test_no_label_is_less_visible_than_the_rule_allows():
    for seed, scene in scenes(60, 256, "alt"):
        visible = geometric_visibility(scene.objects, 256, 256)
        for obj, vis in zip(scene.objects, visible):
            assert obj.labelled(), seed
            # Independent count; a little slack for half-covered edge pixels.
            assert vis.sum() / obj.shape.area >= MIN_VISIBLE - 0.05, seed
            box = obj.box()
            assert box[2] - box[0] >= MIN_BOX_PX and box[3] - box[1] >= MIN_BOX_PX


def test_heavily_occluded_objects_lose_their_label():
    low = Placed.create(make_circle(50.0, 50.0, 30.0), 100, 100)
    top = Placed.create(make_square(48.0, 50.0, 34.0, 0.0), 100, 100)
    assert low is not None and top is not None
    assert low.labelled() and not low.labelled(low.under(top))
    low.visible = low.under(top)
    low.color = top.color = (255.0, 0.0, 0.0)
    assert yolo_labels([low, top], 100, 100).count("\n") == 1
    anns = coco_annotations([low, top], frame=3, first_id=7)
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [(7, 3, 1)]


def test_yolo_label_text_is_normalised_and_in_class_order():
    seen = set()
    for _, scene in scenes(30, 200):
        text = yolo_labels(scene.objects, 200, 200)
        lines = text.splitlines()
        assert len(lines) == len(scene.objects) <= 8
        for line in lines:
            assert LABEL_LINE.match(line), line
            cls, *vals = line.split()
            seen.add(int(cls))
            cx, cy, w, h = map(float, vals)
            assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6 and w > 0
            assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6 and h > 0
    assert seen == {0, 1, 2} and CLASS_NAMES == ("circle", "square", "triangle")


def test_triangles_vary_and_coverage_is_unbiased():
    rng = np.random.default_rng(5)
    smallest = []
    for _ in range(50):
        tri = make_triangle(50.0, 50.0, 60.0, rng.uniform(0, 6.3), triangle_arcs(rng))
        v = tri.vertices
        angles = []
        for i in range(3):
            a, b = v[(i + 1) % 3] - v[i], v[(i + 2) % 3] - v[i]
            angles.append(math.degrees(math.acos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))))
        smallest.append(min(angles))
        bbox = tri.extent()
        assert max(bbox[2] - bbox[0], bbox[3] - bbox[1]) == pytest.approx(60.0)
        _, cov = rasterise(tri, 100, 100)
        assert cov.sum() / 255.0 == pytest.approx(tri.area, rel=0.01)
    assert min(smallest) >= 25.0 - 1e-6 and max(smallest) - min(smallest) > 15.0


def test_sizes_scale_with_the_image():
    assert size_range(640, 640) == (12.0, 300.0)
    assert size_range(128, 128) == (8.0, 60.0)
    assert size_range(1280, 1280) == (24.0, 600.0)
    assert size_range(1280, 200) == (24.0, 180.0)  # never over 90% of the shorter side
    sizes = []
    for _, scene in scenes(20, 128):
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.shape.extent()
            sizes.append(max(x1 - x0, y1 - y0))
    assert min(sizes) >= 8.0 - 1e-6 and max(sizes) <= 60.0 + 1e-6 and max(sizes) > 30.0


def test_same_seed_same_scene_and_styles_differ():
    a = render_scene(image_rng(3, "default", "train", 4))
    b = render_scene(image_rng(3, "default", "train", 4))
    c = render_scene(image_rng(4, "default", "train", 4))
    assert np.array_equal(a.image, b.image) and a.jpeg_quality == b.jpeg_quality
    assert yolo_labels(a.objects, 640, 640) == yolo_labels(b.objects, 640, 640)
    assert not np.array_equal(a.image, c.image)
    kinds = {render_scene(np.random.default_rng(s), 96, 96, "alt").background for s in range(30)}
    assert kinds <= set(ALT_BACKGROUNDS) and len(kinds) >= 4 and not kinds & set(DEFAULT_BACKGROUNDS)


def test_make_dataset_writes_a_yolo_layout(tmp_path: Path):
    yaml_path = make_dataset(tmp_path / "ds", train=7, val=3, imgsz=128, seed=1, workers=2)
    data = yaml.safe_load(yaml_path.read_text())
    assert data["path"] == str((tmp_path / "ds").resolve()) and Path(data["path"]).is_absolute()
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == {0: "circle", 1: "square", 2: "triangle"}
    for split, count in (("train", 7), ("val", 3)):
        images = sorted((tmp_path / "ds" / "images" / split).iterdir())
        labels = sorted((tmp_path / "ds" / "labels" / split).iterdir())
        assert [p.stem for p in images] == [p.stem for p in labels] == [f"{i:06d}" for i in range(count)]
        for i, (img, lab) in enumerate(zip(images, labels)):
            assert cv2.imread(str(img)).shape == (128, 128, 3)
            scene = render_scene(image_rng(1, "default", split, i), 128, 128)
            assert lab.read_text() == yolo_labels(scene.objects, 128, 128)


def test_make_dataset_is_byte_identical_for_a_seed(tmp_path: Path):
    def files(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
                and p.name != "data.yaml"}

    make_dataset(tmp_path / "a", 6, 2, imgsz=96, seed=9, workers=1)
    make_dataset(tmp_path / "b", 6, 2, imgsz=96, seed=9, workers=3)
    make_dataset(tmp_path / "c", 6, 2, imgsz=96, seed=10)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 16 and a == b
    assert a.keys() == c.keys() and a != c


def test_make_dataset_non_square_and_overwrite(tmp_path: Path):
    make_dataset(tmp_path, 3, 1, width=160, height=96, style="alt")
    assert cv2.imread(str(tmp_path / "images" / "train" / "000000.jpg")).shape == (96, 160, 3)
    with pytest.raises(DataError, match="already holds"):
        make_dataset(tmp_path, 1, 1, imgsz=64)
    make_dataset(tmp_path, 1, 1, imgsz=64, overwrite=True)
    assert len(list((tmp_path / "images" / "train").iterdir())) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"train": -1, "val": 1}, "train"),
    ({"train": 1, "val": 2.5}, "val"),
    ({"train": 0, "val": 0}, "at least 1"),
    ({"train": 1, "val": 1, "imgsz": 32}, "imgsz"),
    ({"train": 1, "val": 1, "width": 32}, "width"),
    ({"train": 1, "val": 1, "height": 63}, "height"),
    ({"train": 1, "val": 1, "style": "fancy"}, "style"),
    ({"train": 1, "val": 1, "seed": -3}, "seed"),
])
def test_make_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(DataError, match=message):
        make_dataset(tmp_path / "out", **kwargs)


def test_make_dataset_rejects_an_unusable_folder(tmp_path: Path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_dataset(blocker, 1, 1)
    with pytest.raises(DataError, match=r"file\.txt"):
        make_dataset(blocker / "sub", 1, 1)


def test_bounce_reflects_into_range_and_movers_stay_in_bounds():
    assert _bounce(12.0, 0.0, 10.0) == pytest.approx(8.0)
    assert _bounce(-3.0, 0.0, 10.0) == pytest.approx(3.0)
    assert _bounce(25.0, 0.0, 10.0) == pytest.approx(5.0)
    mover = Mover(1, 20.0, (50.0, 40.0), (7.3, -4.1), 0.0, 0.05, (2.0, 2.0, 2.283), (0, 0, 0))
    for k in range(0, 300, 7):
        cx, cy = mover.shape_at(k, 160, 120).center
        assert 5.0 <= cx <= 155.0 and 5.0 <= cy <= 115.0


def test_make_video_frames_and_ground_truth_agree(tmp_path: Path):
    json_path = make_video(tmp_path / "clip.mp4", frames=12, fps=10, seed=2, width=160, height=128)
    assert json_path == tmp_path / "clip.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.mot.txt", "clip.mp4"]
    gt = json.loads(json_path.read_text())
    assert [im["id"] for im in gt["images"]] == list(range(12))
    assert gt["images"][5] == {"id": 5, "file_name": "clip.mp4#5", "width": 160, "height": 128}
    assert gt["categories"] == [{"id": i, "name": n, "supercategory": "shape"}
                                for i, n in enumerate(CLASS_NAMES)]
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"]) > 12
    assert all(a["iscrowd"] == 0 and a["category_id"] in (0, 1, 2) for a in gt["annotations"])

    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == 12 and decoded[0].shape == (128, 160, 3)

    scene = VideoScene(2, 160, 128, 10.0)
    for k in (0, 5, 11):
        rendered, objects, _ = scene.render(k)
        assert coco_annotations(objects, k, 1) == [
            dict(a, id=1 + i) for i, a in enumerate(a for a in gt["annotations"] if a["image_id"] == k)]
        # Where the objects are, the decoded frame is this frame's render, not a neighbour's.
        where = np.any([o.mask(160, 128) for o in objects], axis=0)
        diff = np.abs(decoded[k].astype(int) - rendered.astype(int))[where].mean()
        other = np.abs(decoded[k].astype(int) - scene.render(k + 6 if k < 6 else k - 6)[0].astype(int))[where]
        assert diff < 20.0 and other.mean() > diff * 2
        for obj in objects:
            if obj.labelled():
                inner = cv2.erode(obj.mask(160, 128).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                if inner.sum() > 20:
                    mean = decoded[k][inner].mean(axis=0)
                    assert np.linalg.norm(mean - np.asarray(obj.color)) < 30.0
    boxes = [[a["bbox"] for a in gt["annotations"] if a["image_id"] == k] for k in (0, 11)]
    assert boxes[0] != boxes[1]


def test_make_video_is_deterministic_and_validates(tmp_path: Path):
    a = make_video(tmp_path / "a.mp4", frames=3, seed=4, width=96, height=64)
    b = make_video(tmp_path / "b.mp4", frames=3, seed=4, width=96, height=64)
    ga, gb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ga["annotations"] == gb["annotations"] and ga["annotations"]
    with pytest.raises(DataError, match="must end in"):
        make_video(tmp_path / "clip.gif", frames=3)
    with pytest.raises(DataError, match="frames"):
        make_video(tmp_path / "clip.mp4", frames=0)
    with pytest.raises(DataError, match="fps"):
        make_video(tmp_path / "clip.mp4", frames=2, fps=0)
    with pytest.raises(DataError, match="width"):
        make_video(tmp_path / "clip.mp4", frames=2, width=10)
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="f"):
        make_video(tmp_path / "f" / "clip.mp4", frames=2)
    assert not (tmp_path / "clip.mp4").exists()


def test_make_video_leaves_no_half_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    original = VideoScene.render

    def broken(self: VideoScene, frame: int):
        if frame == 2:
            raise RuntimeError("boom")
        return original(self, frame)

    monkeypatch.setattr(VideoScene, "render", broken)
    with pytest.raises(RuntimeError, match="boom"):
        make_video(tmp_path / "clip.mp4", frames=5, width=96, height=64)
    assert list(tmp_path.iterdir()) == []


def test_make_video_reports_a_writer_that_cannot_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    class Closed:
        fourcc = staticmethod(video.cv2.VideoWriter.fourcc)

        def __init__(self, *args: object) -> None:
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(video.cv2, "VideoWriter", Closed)
    with pytest.raises(DataError, match=r"clip\.mp4.*mp4v"):
        make_video(tmp_path / "clip.mp4", frames=2, width=96, height=64)


def test_video_ground_truth_loads_in_pycocotools(tmp_path: Path):
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    gt = coco.COCO(str(make_video(tmp_path / "clip.mp4", frames=4, seed=1, width=128, height=96)))
    assert sorted(gt.getCatIds()) == [0, 1, 2] and sorted(gt.getImgIds()) == [0, 1, 2, 3]
    dets = gt.loadRes([dict(a, score=1.0) for a in gt.dataset["annotations"]])
    ev = cocoeval.COCOeval(gt, dets, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the ground truth scored against itself
