"""ByteTrack association: identities through crossings, low-score boxes, gaps measured in
seconds at any frame rate, confirmation after min_hits, ids from a shared source."""

import itertools

import numpy as np
import pytest

from agent.tracking import ByteTracker, TrackingSettings
from agent.tracking.tracker import LOST, TRACKED
from agent.types import Detections

SETTINGS = TrackingSettings(enabled=True, high_threshold=0.5, low_threshold=0.1, match_iou=0.3,
                            lost_after_s=1.0, min_hits=3)


def box(cx, cy, size=40.0):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def dets(boxes, scores=None, classes=None):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(n, 4),
                      np.array(scores if scores is not None else [0.9] * n, np.float32),
                      np.array(classes if classes is not None else [0] * n, np.int32))


def ids(step):
    return [t.track_id if t is not None else None for t in step.det_tracks]


def test_a_track_is_confirmed_after_min_hits_frames_and_only_then_takes_an_id():
    tracker = ByteTracker(SETTINGS)
    got = [ids(tracker.update(dets([box(100 + 5 * k, 100)]), k / 10, k)) for k in range(5)]
    assert got == [[None], [None], [1], [1], [1]]


def test_a_tentative_track_that_misses_a_frame_is_dropped_and_consumes_no_id():
    tracker = ByteTracker(SETTINGS)
    tracker.update(dets([box(100, 100)]), 0.0, 0)  # clutter for one frame
    tracker.update(dets([]), 0.1, 1)
    assert tracker.tracks == []
    got = [ids(tracker.update(dets([box(300, 300)]), 0.2 + k / 10, 2 + k)) for k in range(3)]
    assert got[-1] == [1]  # the first real track is id 1: ids are dense


def test_two_objects_crossing_paths_keep_their_ids():
    tracker = ByteTracker(SETTINGS)
    seen = {}
    for k in range(40):
        a = box(100 + 10 * k, 200 + 2 * k)  # moving right
        b = box(500 - 10 * k, 200 + 2 * k)  # moving left, same height: they overlap mid-way
        step = tracker.update(dets([a, b], [0.9, 0.8]), k / 15, k)
        for who, tid in zip("ab", ids(step)):
            if tid is not None:
                seen.setdefault(who, set()).add(tid)
    assert seen == {"a": {1}, "b": {2}}


def test_a_box_of_another_class_on_the_same_object_is_no_second_track_but_votes_for_the_label():
    tracker = ByteTracker(SETTINGS)
    for k in range(6):  # a square the detector also calls a triangle, a little less sure each time
        x = 100 + 4 * k
        step = tracker.update(dets([box(x, 100), box(x + 1, 101)], [0.6, 0.55], [1, 2]), k / 10, k)
    assert ids(step) == [1, None] and len(tracker.tracks) == 1
    assert step.tracks[0].votes == pytest.approx({1: 3.6, 2: 3.3})
    apart = ByteTracker(SETTINGS)  # the same two boxes overlapping less are two objects
    for k in range(3):
        step = apart.update(dets([box(100, 100), box(120, 100)], [0.6, 0.55], [1, 2]), k / 10, k)
    assert ids(step) == [1, 2]


def test_low_score_boxes_keep_a_track_alive_but_never_start_one():
    tracker = ByteTracker(SETTINGS)
    for k in range(4):
        tracker.update(dets([box(100 + 4 * k, 100)]), k / 10, k)
    for k in range(4, 10):  # partly hidden: the detector's score falls to 0.2
        step = tracker.update(dets([box(100 + 4 * k, 100), box(400, 400)], [0.2, 0.3]), k / 10, k)
        assert ids(step) == [1, None]  # the lone low-score box starts nothing
        assert step.tracks[0].state == TRACKED
    step = tracker.update(dets([box(140, 100)], [0.05]), 1.0, 10)  # under low_threshold: ignored
    assert ids(step) == [None] and step.tracks[0].state == LOST


def test_low_score_boxes_do_not_revive_a_lost_track():
    tracker = ByteTracker(SETTINGS)
    for k in range(4):
        tracker.update(dets([box(100, 100)]), k / 10, k)
    tracker.update(dets([]), 0.4, 4)
    step = tracker.update(dets([box(100, 100)], [0.3]), 0.5, 5)
    assert ids(step) == [None] and step.tracks[0].state == LOST
    step = tracker.update(dets([box(100, 100)], [0.9]), 0.6, 6)
    assert ids(step) == [1] and step.tracks[0].state == TRACKED


@pytest.mark.parametrize("fps", [5.0, 15.0, 30.0])
def test_a_gap_under_lost_after_s_keeps_the_id_and_a_longer_one_ends_the_track_at_any_rate(fps):
    tracker = ByteTracker(SETTINGS)
    ended_at = None
    got = set()
    hidden = [(1.0, 1.7), (3.0, 4.3)]  # seconds: 0.7 s (kept), then 1.3 s (> lost_after_s)
    for k in range(int(6 * fps)):
        t = k / fps
        visible = not any(lo <= t < hi for lo, hi in hidden)
        step = tracker.update(dets([box(100 + 20 * t, 100 + 10 * t)] if visible else []), 1000.0 + t, k)
        got.update(i for i in ids(step) if i is not None)
        if step.ended:
            assert ended_at is None
            ended_at = t
            assert step.ended[0].track_id == 1
            assert step.ended[0].last_ts == pytest.approx(1000.0 + 3.0 - 1 / fps)
    assert got == {1, 2}
    # The first frame at least lost_after_s after the last sighting ends it.
    assert ended_at == pytest.approx(3.0 - 1 / fps + 1.0, abs=1 / fps + 1e-9)


def test_an_object_that_stops_while_hidden_is_found_again_where_it_was_last_seen():
    tracker = ByteTracker(SETTINGS)
    for k in range(10):  # moving right at 20 px per frame: the filter learns that speed
        tracker.update(dets([box(100 + 20 * k, 100)]), k / 10, k)
    for k in range(10, 15):  # hidden for half a second, during which it stopped
        tracker.update(dets([]), k / 10, k)
    predicted = tracker.tracks[0].box
    assert predicted[0] > 280 + 40  # the prediction ran on, away from where the object is
    step = tracker.update(dets([box(280, 100)]), 1.5, 15)
    assert ids(step) == [1]


def test_ids_are_unique_across_trackers_sharing_one_source():
    source = itertools.count(1)
    a, b = ByteTracker(SETTINGS, source), ByteTracker(SETTINGS, source)
    got = []
    for k in range(3):
        got += ids(a.update(dets([box(100, 100)]), k / 10, k))
        got += ids(b.update(dets([box(100, 100), box(300, 300)]), k / 10, k))
    assert sorted(i for i in got if i is not None) == [1, 2, 3]


def test_the_label_is_the_class_with_the_highest_total_score():
    tracker = ByteTracker(SETTINGS)
    for k, (cls, score) in enumerate([(1, 0.6), (2, 0.9), (1, 0.6), (1, 0.55)]):
        step = tracker.update(dets([box(100, 100)], [score], [cls]), k / 10, k)
    assert step.tracks[0].class_id == 1


def test_a_clock_that_steps_back_holds_time_still():
    tracker = ByteTracker(SETTINGS)
    for k in range(4):
        tracker.update(dets([box(100 + 10 * k, 100)]), 10.0 + k / 10, k)
    step = tracker.update(dets([box(140, 100)]), 5.0, 4)  # a looping file restarts its clock
    assert ids(step) == [1] and tracker.now == pytest.approx(10.3)


def test_fifty_objects_moving_with_noisy_boxes_keep_fifty_ids():
    rng = np.random.default_rng(0)
    start = np.column_stack([np.repeat(np.arange(10) * 60 + 40, 5), np.tile(np.arange(5) * 90 + 40, 10)])
    velocity = rng.uniform(-15, 15, (50, 2))  # px/s
    tracker = ByteTracker(SETTINGS)
    history = {}
    for k in range(90):
        t = k / 15
        centres = start + velocity * t + rng.normal(0, 1.0, (50, 2))
        step = tracker.update(dets([box(x, y, 36) for x, y in centres], rng.uniform(0.3, 1.0, 50).tolist()),
                              t, k)
        for obj, tid in enumerate(ids(step)):
            if tid is not None:
                history.setdefault(obj, set()).add(tid)
    assert len(history) == 50 and all(len(v) == 1 for v in history.values())
