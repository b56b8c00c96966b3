"""The event engine: what a subscriber receives for objects that appear, move through zones,
cross counting lines, stop, move on and leave."""

import numpy as np
import pytest

from agent.tracking import CountingLine, EventEngine, TrackingSettings
from agent.tracking.zones import Zone, ZoneFilter
from agent.types import Detections

NAMES = ["person", "car"]
SETTINGS = TrackingSettings(enabled=True, min_hits=3, lost_after_s=1.0, zone_inertia=3, stationary_iou=0.9,
                            stationary_after_s=2.0, update_interval_s=5.0)
FPS = 10.0
W, H = 640, 480


def box(cx, cy, size=40.0):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def dets(boxes, scores=None, classes=None):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(n, 4),
                      np.array(scores if scores is not None else [0.9] * n, np.float32),
                      np.array(classes if classes is not None else [0] * n, np.int32))


class Run:
    """Feeds frames at FPS through an engine, with zone membership from a real ZoneFilter."""

    def __init__(self, zones=(), lines=(), settings=SETTINGS):
        self.filter = ZoneFilter(list(zones))
        self.engine = EventEngine(settings, NAMES, [z.name for z in zones], list(lines), start_ts=1000.0)
        self.k = 0
        self.events = []
        self.results = []

    def frame(self, boxes, scores=None, classes=None):
        d, zones = self.filter.apply(dets(boxes, scores, classes), W, H)
        result = self.engine.update(d, zones, self.k, 1000.0 + self.k / FPS, W, H)
        self.k += 1
        self.events += result.events
        self.results.append(result)
        return result

    def types(self, track_id=None):
        return [e["type"] for e in self.events if track_id is None or e["track_id"] == track_id]


LEFT = Zone("left", np.array([[0, 0], [320, 0], [320, 480], [0, 480]], np.float64), False, "center", None)


def test_track_start_comes_with_the_confirmation_and_ids_only_then():
    run = Run()
    got = [run.frame([box(100 + 3 * k, 100)]).track_ids for k in range(4)]
    assert got == [[None], [None], [1], [1]]
    (start,) = run.events
    assert start == {"type": "track_start", "ts": 1000.2, "frame": 2, "track_id": 1, "label": "person",
                     "score": 0.9, "box": [86.0, 80.0, 126.0, 120.0], "zones": [], "first_seen": 1000.0,
                     "first_frame": 0}


def test_an_object_born_in_a_zone_enters_it_with_its_start():
    run = Run(zones=[LEFT])
    for _ in range(3):
        run.frame([box(100, 100)])
    assert run.types() == ["track_start", "zone_enter"]
    assert run.events[1]["zone"] == "left" and run.events[1]["zones"] == ["left"]
    assert run.results[-1].counts["zones"] == {"left": {"total": 1, "by_label": {"person": 1}}}


def test_a_box_jittering_on_a_zone_edge_does_not_flap():
    run = Run(zones=[LEFT])
    for _ in range(3):
        run.frame([box(300, 100)])
    for k in range(21):  # centre alternating 318 / 322: in, out, in, out ..., in
        run.frame([box(318 + 4 * (k % 2), 100)])
    assert run.types() == ["track_start", "zone_enter"]
    run.frame([box(323, 100)])
    run.frame([box(325, 100)])
    assert run.types()[-1] == "zone_enter"  # two frames out: still in
    run.frame([box(327, 100)])
    assert run.types()[-2:] == ["zone_exit", "track_update"]  # the third frame out: left
    assert run.events[-1]["reason"] == "zones" and run.events[-1]["zones"] == []
    assert run.results[-1].counts_changed
    assert run.results[-1].counts["zones"]["left"]["total"] == 0


def test_line_crossings_are_counted_with_their_direction_and_class_filter():
    door = CountingLine("door", (320.0, 0.0), (320.0, 480.0), anchor="center")  # drawn downwards
    cars = CountingLine("cars", (0.5, 0.0), (0.5, 1.0), relative=True, anchor="center",
                        class_ids=frozenset([1]))
    run = Run(lines=[door, cars])
    for k in range(40):  # a person walks right, then back left
        x = 240 + 8 * k if k < 20 else 240 + 8 * (39 - k)
        run.frame([box(x, 240, 80)])
    crossings = [(e["line"], e["direction"], e["track_id"], e["label"]) for e in run.events
                 if e["type"] == "line_cross"]
    # (B - A) x (P - A) for A->B downwards is > 0 on the left: moving right is "out".
    assert crossings == [("door", "out", 1, "person"), ("door", "in", 1, "person")]
    counts = run.results[-1].counts
    assert counts["lines"] == {"door": {"in": 1, "out": 1}, "cars": {"in": 0, "out": 0}}
    after = run.engine.reset_counts(1010.0)
    assert after["lines"]["door"] == {"in": 0, "out": 0} and after["since"] == 1010.0


def test_a_crossing_before_confirmation_is_announced_with_the_start():
    door = CountingLine("door", (100.0, 0.0), (100.0, 480.0), anchor="center")
    run = Run(lines=[door])
    for k in range(3):
        run.frame([box(90 + 10 * k, 240)])  # crosses between frames 1 and 2, confirmed at 2
    assert run.types() == ["track_start", "line_cross"]
    assert run.results[-1].counts["lines"]["door"] == {"in": 0, "out": 1}


def test_stationary_objects_go_quiet_and_moving_ones_report_every_interval():
    run = Run()
    for k in range(60):  # 6 s still
        run.frame([box(200 + (k % 2) * 0.5, 200)])
    updates = [e for e in run.events if e["type"] == "track_update"]
    assert [(u["reason"], u["stationary"]) for u in updates] == [("stationary", True)]
    assert updates[0]["ts"] == pytest.approx(1000.2 + 2.0, abs=0.15)
    for k in range(130):  # then moves for 13 s
        run.frame([box(200 + 3 * (k + 1), 200)])
    updates = [e for e in run.events if e["type"] == "track_update"]
    assert [u["reason"] for u in updates] == ["stationary", "moving", "interval", "interval"]
    assert updates[3]["ts"] - updates[2]["ts"] == pytest.approx(5.0, abs=0.11)


def test_track_end_after_lost_after_s_with_its_history():
    run = Run(zones=[LEFT])
    for k in range(30):
        run.frame([box(100 + 10 * k, 240)], scores=[0.6 + 0.01 * (k % 5)])
    for _ in range(11):
        run.frame([])
    types = run.types()
    assert types[-2:] == ["zone_exit", "track_end"] or types[-1] == "track_end"
    end = run.events[-1]
    assert end["type"] == "track_end" and end["frame"] == 39  # 1.0 s after the last sighting (frame 29)
    assert end["first_seen"] == 1000.0 and end["last_seen"] == pytest.approx(1002.9)
    assert end["duration_s"] == pytest.approx(2.9) and end["first_frame"] == 0 and end["last_frame"] == 29
    assert end["top_score"] == pytest.approx(0.64) and end["zones_visited"] == ["left"] and end["zones"] == []
    assert 2 <= len(end["path"]) <= 8
    assert end["path"][0][0] < 110 and end["path"][-1][0] > 370  # first and last positions kept
    assert run.results[-1].tracks == [] and run.results[-1].counts["zones"]["left"]["total"] == 0


def test_finish_ends_every_track_and_exits_its_zones():
    run = Run(zones=[LEFT])
    for _ in range(3):
        run.frame([box(100, 100), box(500, 100)], classes=[0, 1])
    result = run.engine.finish(3, 1000.4)
    assert [e["type"] for e in result.events] == ["zone_exit", "track_end", "track_end"]
    assert result.counts["zones"]["left"]["total"] == 0 and result.counts_changed


def test_occupancy_by_label_and_the_changed_flag():
    run = Run(zones=[LEFT])
    for _ in range(3):
        run.frame([box(100, 100), box(200, 300), box(500, 100)], classes=[0, 1, 0])
    assert run.results[-1].counts["zones"]["left"] == {"total": 2, "by_label": {"car": 1, "person": 1}}
    assert run.results[-1].counts_changed
    run.frame([box(100, 100), box(200, 300), box(500, 100)], classes=[0, 1, 0])
    assert not run.results[-1].counts_changed


def test_zone_lists_must_match_the_detections():
    engine = EventEngine(SETTINGS, NAMES)
    with pytest.raises(ValueError):
        engine.update(dets([box(1, 1)]), [], 0, 0.0, W, H)
