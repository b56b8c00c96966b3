"""Zones: point-in-polygon, anchors, class limits, require_zone, config checks, drawing."""

import textwrap
from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load
from agent.errors import ConfigError
from agent.runtime.draw import ZONE_COLOUR, draw_detections
from agent.tracking.zones import Zone, ZoneFilter, points_in_polygon, zone_filters
from agent.types import Detections

NAMES = ["circle", "square", "triangle"]
# An L shape (concave): the notch at the top right is outside.
L_SHAPE = np.array([[0, 0], [50, 0], [50, 50], [100, 50], [100, 100], [0, 100]], np.float64)


def zone(name, points, relative=False, anchor="bottom_center", classes=None):
    return Zone(name, np.asarray(points, np.float64), relative, anchor, classes)


def dets(*boxes, class_ids=None):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(n, 4), np.full(n, 0.9),
                      class_ids if class_ids is not None else np.zeros(n, np.int32))


def test_points_in_a_concave_polygon():
    points = np.array([[25, 25], [75, 25], [75, 75], [25, 75], [150, 50], [-1, 50], [49.9, 10]])
    assert points_in_polygon(points, L_SHAPE).tolist() == [True, False, True, True, False, False, True]


def test_points_in_polygon_agree_with_opencv():
    import cv2

    rng = np.random.default_rng(3)
    polygon = rng.uniform(0, 200, (9, 2))  # a random, self-intersecting polygon: even-odd holds
    points = rng.uniform(-10, 210, (2000, 2))
    ours = points_in_polygon(points, polygon)
    # OpenCV's test is non-zero winding for self-intersecting shapes; compare on a convex hull.
    hull = cv2.convexHull(polygon.astype(np.float32))[:, 0].astype(np.float64)
    theirs = np.array([cv2.pointPolygonTest(hull.astype(np.float32), (float(x), float(y)), False) > 0
                       for x, y in points])
    assert (points_in_polygon(points, hull) == theirs).mean() > 0.999  # boundary ties aside
    assert ours.any() and not ours.all()


def test_empty_input():
    assert points_in_polygon(np.zeros((0, 2)), L_SHAPE).shape == (0,)
    kept, zones = ZoneFilter([zone("a", L_SHAPE)]).apply(Detections.empty(), 100, 100)
    assert len(kept) == 0 and zones == []


def test_bottom_centre_anchor_is_where_the_object_stands():
    floor = zone("floor", [[0, 60], [100, 60], [100, 100], [0, 100]])
    tall = dets([40, 10, 60, 80])  # the box reaches into the floor zone with its feet
    high = dets([40, 10, 60, 50])  # entirely above the floor
    assert ZoneFilter([floor]).apply(tall, 100, 100)[1] == [["floor"]]
    assert ZoneFilter([floor]).apply(high, 100, 100)[1] == [[]]
    centred = zone("floor", floor.points, anchor="center")
    assert ZoneFilter([centred]).apply(tall, 100, 100)[1] == [[]]  # centre y = 45: above the floor


def test_fraction_units_scale_with_the_frame():
    right = zone("right", [[0.5, 0], [1, 0], [1, 1], [0.5, 1]], relative=True)
    box = dets([700, 100, 800, 300])
    assert ZoneFilter([right]).apply(box, 1280, 720)[1] == [["right"]]
    assert ZoneFilter([right]).apply(box, 2560, 1440)[1] == [[]]


def test_class_limits_and_overlapping_zones_and_require_zone():
    everything = zone("all", [[0, 0], [100, 0], [100, 100], [0, 100]])
    squares = zone("squares", [[0, 0], [100, 0], [100, 100], [0, 100]], classes=frozenset({1}))
    left = zone("left", [[0, 0], [50, 0], [50, 100], [0, 100]])
    boxes = dets([10, 10, 20, 20], [60, 10, 70, 20], [200, 200, 220, 220], class_ids=np.array([1, 0, 1]))
    kept, zones = ZoneFilter([everything, squares, left]).apply(boxes, 300, 300)
    assert len(kept) == 3 and zones == [["all", "squares", "left"], ["all"], []]
    kept, zones = ZoneFilter([everything, squares, left], require_zone=True).apply(boxes, 300, 300)
    assert kept.xyxy.tolist() == [[10, 10, 20, 20], [60, 10, 70, 20]] and zones == [
        ["all", "squares", "left"], ["all"]]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


ZONED = """\
cameras:
  - name: door
    source: clip.mp4
    zones:
      - name: step
        polygon: [[0, 0], [100, 0], [100, 80]]
      - name: porch
        polygon: [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]
        units: fraction
        anchor: center
        classes: [square]
    require_zone: true
  - name: yard
    source: clip.mp4
model: {path: m.onnx}
"""


def test_config_zones_compile_per_camera(tmp_path):
    cfg = load(write(tmp_path, ZONED), environ={})
    filters = zone_filters(cfg.cameras, NAMES, "agent.yaml")
    assert set(filters) == {"door"} and filters["door"].require_zone
    step, porch = filters["door"].zones
    assert step.points.tolist() == [[0, 0], [100, 0], [100, 80]] and not step.relative
    assert porch.relative and porch.anchor == "center" and porch.class_ids == frozenset({1})
    assert porch.polygon(200, 100).tolist() == [[20, 10], [180, 10], [100, 90]]


def test_a_zone_class_the_model_lacks_is_named_with_file_and_key(tmp_path):
    cfg = load(write(tmp_path, ZONED.replace("[square]", "[car]")), environ={})
    with pytest.raises(ConfigError) as info:
        zone_filters(cfg.cameras, NAMES, "agent.yaml")
    assert str(info.value).startswith(
        "agent.yaml: cameras.0.zones.1.classes: 'car' not in the model's labels")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("change, expected", [
    ("[[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]", None),
    ("[[0.1, 0.1], [1.9, 0.1], [0.5, 0.9]]", "8: cameras.0.zones.1.polygon: with units: fraction every"),
    ("[[0.1, 0.1], [0.9, 0.1]]", "8: cameras.0.zones.1.polygon: List should have at least 3 items"),
    ("[[-1, 0.1], [0.9, 0.1], [0.5, 0.9]]", "8: cameras.0.zones.1.polygon: with units: fraction"),
])
def test_config_rejects_bad_polygons(tmp_path, change, expected):
    text = ZONED.replace("[[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]", change)
    if expected is None:
        load(write(tmp_path, text), environ={})
        return
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), environ={})
    assert expected in str(info.value), str(info.value)
    assert "agent.yaml:" in str(info.value)


def test_config_rejects_duplicate_zone_names_and_require_zone_without_zones(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, ZONED.replace("name: porch", "name: step")), environ={})
    assert "cameras.0.zones.1.name: duplicate zone name 'step'" in str(info.value)
    lonely = ZONED.replace("  - name: yard\n    source: clip.mp4\n",
                           "  - name: yard\n    source: clip.mp4\n    require_zone: true\n")
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, lonely), environ={})
    assert "cameras.1.require_zone: needs at least one zone" in str(info.value)


def test_zone_outlines_are_drawn_on_a_copy():
    image = np.zeros((100, 100, 3), np.uint8)
    square = [("sq", np.array([[10, 10], [90, 10], [90, 90], [10, 90]], np.float64))]
    drawn = draw_detections(image, Detections.empty(), NAMES, square)
    assert not image.any()  # the original is untouched
    assert tuple(drawn[50, 10]) == ZONE_COLOUR and tuple(drawn[50, 50]) == (0, 0, 0)
