"""Tracking ground truth of generated clips: identities in MOT layout, and line crossings."""

import json
from pathlib import Path

import numpy as np
import pytest

from agent.datasets.video import VideoScene, make_video
from agent.datasets.video_truth import (
    TruthBox,
    load_lines,
    read_lines_truth,
    read_mot,
    true_crossings,
)
from agent.errors import ConfigError, DataError
from agent.tracking import CountingLine


def test_the_mot_file_holds_every_annotated_box_with_a_stable_identity(tmp_path: Path):
    coco = json.loads(make_video(tmp_path / "clip.mp4", frames=30, fps=10, seed=3, width=192, height=144)
                      .read_text())
    rows = read_mot(tmp_path / "clip.mot.txt")
    considered = [r for r in rows if r.considered]
    assert len(considered) == len(coco["annotations"])
    for k in (0, 14, 29):
        truth = sorted(tuple(np.round(r.box, 2)) for r in considered if r.frame == k)
        boxes = sorted(tuple(np.round([x, y, x + w, y + h], 2)) for x, y, w, h in
                       (a["bbox"] for a in coco["annotations"] if a["image_id"] == k))
        assert truth == boxes
    movers = VideoScene(3, 192, 144, 10.0).movers
    assert {r.identity for r in rows} <= set(range(1, len(movers) + 1))
    for identity in {r.identity for r in rows}:
        mine = sorted((r for r in rows if r.identity == identity), key=lambda r: r.frame)
        assert {r.class_id for r in mine} == {movers[identity - 1].class_id}
        assert len({r.frame for r in mine}) == len(mine)  # one box per identity per frame
    text = (tmp_path / "clip.mot.txt").read_text().splitlines()[0].split(",")
    assert len(text) == 9 and text[0] == "1"  # MOTChallenge: frames count from 1


def test_hidden_objects_are_marked_ignore_not_left_out():
    scene = VideoScene(11, 320, 240, 15.0)
    hidden = 0
    for k in range(0, 150, 5):
        _, objects, ids = scene.render(k)
        assert len(ids) == len(objects) and len(set(ids)) == len(ids)
        hidden += sum(1 for o in objects if o.box() is not None and not o.labelled())
    assert hidden > 0  # this clip has occlusions; the MOT file keeps them with consider = 0


def walk(identity, xs, y=100.0, class_id=0, considered=True, start=0):
    return [TruthBox(start + i, identity, class_id, (x - 10, y - 10, x + 10, y + 10), considered, 1.0)
            for i, x in enumerate(xs)]


def test_true_crossings_follow_each_identity_across_gaps_and_respect_class_filters():
    door = CountingLine("door", (100.0, 0.0), (100.0, 200.0))  # drawn downwards: moving right is "out"
    squares = CountingLine("squares", (150.0, 0.0), (150.0, 200.0), class_ids=frozenset([1]))
    rows = (walk(1, [80, 90, 95]) + walk(1, [120, 160], start=10)  # a gap between frames 2 and 10
            + walk(2, [170, 140, 90], class_id=1)
            + walk(3, [80, 120], considered=False))  # never annotated: not counted
    got = true_crossings(rows, [door, squares], 640, 480)
    assert [(c["line"], c["direction"], c["identity"], c["frame"], c["label"]) for c in got] == [
        ("squares", "in", 2, 1, "square"), ("door", "in", 2, 2, "square"), ("door", "out", 1, 10, "circle")]


def test_make_video_writes_the_crossings_of_the_lines_it_is_given(tmp_path: Path):
    lines = [CountingLine("middle", (0.5, 0.0), (0.5, 1.0), relative=True, anchor="center")]
    make_video(tmp_path / "clip.mp4", frames=60, fps=10, seed=5, width=192, height=144, lines=lines)
    truth = read_lines_truth(tmp_path / "clip.lines.json")
    assert truth["lines"] == [{"name": "middle", "points": [[0.5, 0.0], [0.5, 1.0]], "units": "fraction",
                               "anchor": "center"}]
    assert truth["crossings"], "seed 5 has shapes crossing the middle"
    counts = truth["counts"]["middle"]
    assert counts["in"] + counts["out"] == len(truth["crossings"])
    rows = [r for r in read_mot(tmp_path / "clip.mot.txt") if r.considered]
    for c in truth["crossings"]:  # the anchor is on each side of x = 96 before and at the crossing
        mine = sorted((r for r in rows if r.identity == c["identity"] and r.frame <= c["frame"]),
                      key=lambda r: r.frame)
        before, at = [(r.box[0] + r.box[2]) / 2 for r in mine[-2:]]
        assert (before - 96) * (at - 96) < 0
        assert c["direction"] == ("in" if at < 96 else "out")  # A->B downwards: left is the positive side


def test_line_files_and_mot_files_that_are_wrong_say_where(tmp_path: Path):
    good = tmp_path / "lines.yaml"
    good.write_text("- {name: door, points: [[0.5, 0], [0.5, 1]], units: fraction, classes: [circle]}\n")
    assert load_lines(good)[0].class_ids == frozenset([0])
    dup = tmp_path / "dup.yaml"
    dup.write_text("lines:\n- {name: a, points: [[0, 0], [1, 1]]}\n- {name: a, points: [[0, 1], [1, 0]]}\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: lines: line names must be unique; repeated: a"):
        load_lines(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: a, points: [[0, 0], [0, 0]]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: lines.0.points: the two points are the same"):
        load_lines(bad)
    with pytest.raises(DataError, match="expected a list of lines"):
        (tmp_path / "empty.yaml").write_text("{}\n")
        load_lines(tmp_path / "empty.yaml")
    mot = tmp_path / "gt.txt"
    mot.write_text("1,1,0,0,10,10,1,0,1\n0,1,0,0,10,10\n")
    with pytest.raises(DataError, match=r"gt.txt:2: expected frame \(>= 1\)"):
        read_mot(mot)
    mot.write_text("1,1,0,0,10,10,1,0,1\n\nx,y\n")
    with pytest.raises(DataError, match=r"gt\.txt:3: expected comma-separated numbers"):
        read_mot(mot)


def test_make_video_command_with_lines_and_a_bad_lines_file(tmp_path: Path, capsys):
    from agent.cli.main import main

    lines = tmp_path / "lines.yaml"
    lines.write_text("- {name: middle, points: [[0.5, 0], [0.5, 1]], units: fraction}\n")
    assert main(["make-video", "--out", str(tmp_path / "a.mp4"), "--frames", "3", "--width", "96", "--height",
                 "64", "--lines", str(lines)]) == 0
    assert "identities:" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.lines.json", "a.mot.txt", "a.mp4",
                                                          "lines.yaml"]
    lines.write_text("- {name: middle, points: [[0.5, 0], [0.5, 2]], units: fraction}\n")
    assert main(["make-video", "--out", str(tmp_path / "b.mp4"), "--frames", "3", "--lines", str(lines)]) == 2
    assert f"error: {lines}: lines.0.points: with units: fraction" in capsys.readouterr().err
    assert not list(tmp_path.glob("b.*")) and not list(tmp_path.glob(".b*"))
