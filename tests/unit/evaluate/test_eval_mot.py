"""eval --track: MOT scores of a recording by py-motmetrics, hand-checked cases, ignored
boxes, line counts, and the command's errors."""

import json

import pytest

from agent.cli.main import main
from agent.datasets.video_truth import TruthBox, mot_text
from agent.errors import DataError
from agent.evaluate.mot import evaluate_tracks, line_counts, read_recording, score_tracks, truth_paths

pytest.importorskip("motmetrics")


def box(x, y=100.0, size=20.0):
    return (x, y, x + size, y + size)


def message(frame, dets, camera="cam", seq=None):
    return json.dumps({"schema": "detections/1", "device": "d", "camera": camera, "run": "r",
                       "seq": seq or frame + 1, "frame": frame, "skipped": 0, "ts": frame / 10, "width": 640,
                       "height": 480, "model": "m", "latency_ms": {},
                       "detections": [{"label": "circle", "class_id": 0, "score": 0.9, "box": list(b),
                                       "track_id": tid} for tid, b in dets]})


def event(seq, kind="line_cross", line="door", direction="in", run="r"):
    return json.dumps({"schema": "events/1", "device": "d", "camera": "cam", "run": run, "seq": seq,
                       "ts": 1.0, "frame": 3, "type": kind, "track_id": 1, "label": "circle", "score": 0.9,
                       "box": [0, 0, 1, 1], "zones": [], "line": line, "direction": direction})


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def two_objects(frames=10):
    return [TruthBox(k, i + 1, 0, box(100 + 200 * i + 5 * k), True, 1.0)
            for k in range(frames) for i in range(2)]


def test_a_perfect_recording_scores_one(tmp_path):
    truth = two_objects()
    rec = write(tmp_path, "rec.jsonl", [message(k, [(7 + r.identity, r.box) for r in truth if r.frame == k])
                                        for k in range(10)])
    s = score_tracks(truth, read_recording(rec))
    assert (s["mota"], s["idf1"], s["num_switches"], s["num_objects"]) == (1.0, 1.0, 0, 20)
    assert s["mean_iou"] == 1.0


def test_ids_that_swap_halfway_by_hand(tmp_path):
    # Two switches among 20 boxes: MOTA = 1 - 2/20. Identity: each object keeps its best id for
    # 5 of its 10 frames, so IDTP = 10 of 20 boxes on each side and IDF1 = 0.5.
    truth = two_objects()
    lines = []
    for k in range(10):
        a, b = (1, 2) if k < 5 else (2, 1)
        lines.append(message(k, [(a, truth[2 * k].box), (b, truth[2 * k + 1].box)]))
    s = score_tracks(truth, read_recording(write(tmp_path, "rec.jsonl", lines)))
    assert s["num_switches"] == 2 and s["mota"] == pytest.approx(0.9) and s["idf1"] == pytest.approx(0.5)
    assert s["id_switches_per_1000"] == pytest.approx(100.0)


def test_misses_and_false_positives_and_untracked_boxes(tmp_path):
    truth = two_objects(4)
    lines = [message(k, [(1, truth[2 * k].box), (None, truth[2 * k + 1].box), (9, box(500, 400))])
             for k in range(4)]
    s = score_tracks(truth, read_recording(write(tmp_path, "rec.jsonl", lines)))
    # The null-id boxes are no hypotheses: object 2 is missed 4 times; the box at 500 is false 4 times.
    assert (s["num_misses"], s["num_false_positives"], s["num_predictions"]) == (4, 4, 8)
    assert s["mota"] == pytest.approx(1 - 8 / 8)


def test_a_box_on_an_ignored_object_is_neither_false_nor_missed(tmp_path):
    truth = [TruthBox(0, 1, 0, box(100), True, 1.0), TruthBox(0, 2, 0, box(300), False, 0.2)]
    rec = write(tmp_path, "rec.jsonl", [message(0, [(1, box(100)), (2, box(301))])])
    s = score_tracks(truth, read_recording(rec))
    assert (s["num_objects"], s["num_false_positives"], s["num_misses"]) == (1, 0, 0)
    assert s["ignored_hypotheses"] == 1


def test_line_counts_from_events_once_per_message_or_recomputed_from_tracks(tmp_path):
    truth = {"lines": [{"name": "door", "points": [[200, 0], [200, 480]], "units": "pixels",
                        "anchor": "center"}], "counts": {"door": {"in": 1, "out": 1}}, "width": 640,
             "height": 480}
    rec = write(tmp_path, "rec.jsonl", [message(0, []), event(1), event(1), event(2, direction="out"),
                                        event(3, kind="track_start")])
    got = line_counts(read_recording(rec), truth)
    assert got["source"] == "events"
    assert got["lines"]["door"] == {"in": 1, "out": 1, "true_in": 1, "true_out": 1, "exact": True}
    walk = [message(k, [(4, box(150 + 20 * k))]) for k in range(6)]  # moves right across x = 200
    got = line_counts(read_recording(write(tmp_path, "walk.jsonl", walk)), truth)
    assert got["source"].startswith("recomputed") and got["lines"]["door"]["out"] == 1
    assert got["lines"]["door"]["in"] == 0 and not got["all_exact"]


def test_several_recordings_read_as_one_and_a_redelivered_message_once(tmp_path):
    a = write(tmp_path, "a.jsonl", [message(0, [(1, box(100))]), message(1, [(1, box(105))]), event(1)])
    b = write(tmp_path, "b.jsonl", [message(1, [(1, box(105))]), message(2, [(1, box(110))]), event(1)])
    rec = read_recording([a, b])
    assert sorted(rec.frames) == [0, 1, 2] and len(rec.crossings) == 1


def test_recordings_that_are_wrong_say_where(tmp_path):
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_recording(write(tmp_path, "bad.jsonl", [message(0, []), "{"]))
    with pytest.raises(DataError, match=r"two.jsonl: messages of 2 cameras \(a, b\)"):
        read_recording(write(tmp_path, "two.jsonl", [message(0, [], camera="a"), message(0, [], camera="b")]))
    assert list(read_recording(tmp_path / "two.jsonl", camera="b").frames) == [0]
    with pytest.raises(DataError, match=r"dup.jsonl:2: frame 0 was already recorded at .*dup.jsonl:1"):
        read_recording(write(tmp_path, "dup.jsonl", [message(0, [], seq=1), message(0, [], seq=2)]))
    with pytest.raises(DataError, match=r"id.jsonl:1: a tracked detection needs"):
        read_recording(write(tmp_path, "id.jsonl", [message(0, [("7", box(1))])]))


def test_the_command_finds_the_truth_beside_the_clip_and_writes_json(tmp_path, capsys):
    truth = two_objects()
    (tmp_path / "clip.json").write_text("{}")
    (tmp_path / "clip.mot.txt").write_text(mot_text(truth))
    (tmp_path / "clip.lines.json").write_text(json.dumps(
        {"lines": [{"name": "door", "points": [[0, 0], [1, 1]]}], "counts": {"door": {"in": 0, "out": 0}}}))
    found = truth_paths(tmp_path / "clip.json", None)
    assert found == (tmp_path / "clip.mot.txt", tmp_path / "clip.lines.json")
    rec = write(tmp_path, "rec.jsonl", [message(k, [(r.identity, r.box) for r in truth if r.frame == k])
                                        for k in range(10)] + [event(1, kind="track_start")])
    out = tmp_path / "scores.json"
    assert main(["eval", "--track", "--gt", str(tmp_path / "clip.json"), "--pred", str(rec),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MOTA 1.000  IDF1 1.000  ID switches 0" in text and "line door: in 0 / true 0" in text
    data = json.loads(out.read_text())
    assert data["scores"]["idf1"] == 1.0 and data["line_counts"]["all_exact"]
    assert evaluate_tracks(tmp_path / "clip.mot.txt", rec)["scores"]["mota"] == 1.0


def test_the_command_refuses_what_it_cannot_score(tmp_path, capsys):
    assert main(["eval", "--track", "--pred", "x.jsonl"]) == 2
    assert "give --gt CLIP.mot.txt --pred RECORDING.jsonl" in capsys.readouterr().err
    assert main(["eval", "--track", "--gt", str(tmp_path / "none.json"), "--pred", "x"]) == 2
    assert "none.mot.txt: no MOT ground truth there" in capsys.readouterr().err
    assert main(["eval", "--lines", "l.json", "--gt", "a", "--pred", "b"]) == 2
    assert "--lines goes with --track" in capsys.readouterr().err


def test_scores_are_plain_json_numbers(tmp_path):
    truth = two_objects(3)
    rec = write(tmp_path, "rec.jsonl", [message(k, []) for k in range(3)])
    s = score_tracks(truth, read_recording(rec))
    json.dumps(s, allow_nan=False)
    assert s["num_misses"] == 6 and s["mota"] == 0.0 and s["idf1"] == 0.0
    assert isinstance(s["num_misses"], int) and s["mean_iou"] is None  # no match: undefined, not NaN
