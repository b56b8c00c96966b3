"""The CLI as users run it: a subprocess, exit codes, one-line errors, files written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path("../shared")
CFG = SHARED / "models/yolov3-tiny-coco/yolov3-tiny.cfg"
DOG = SHARED / "data/darknet-samples/dog.jpg"


def agent(*args, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "agent", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.mark.parametrize("config", ["configs/agent.yaml", "configs/demo.yaml"])
def test_shipped_configs_are_valid(config):
    proc = agent("check-config", config, check_rc=0)
    assert proc.stdout.strip() == f"{config}: ok"


def test_check_config_print_masks_secrets():
    proc = agent("check-config", "configs/agent.yaml", "--print", "--set", "mqtt.password=hunter2",
                 check_rc=0)
    assert "hunter2" not in proc.stdout and "password: '***'" in proc.stdout


BAD = """\
device:
  id: jetson-01
cameras:
  - name: front
    source: /dev/video0
    fps: many
model:
  path: model.onnx
  backnd: auto
inference:
  conf_threshold: 1.5
"""


def test_bad_config_gives_one_line_per_problem_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = agent("check-config", bad, check_rc=2)
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: {bad}:6: cameras.0.fps: input should be a valid number, unable to parse string as a "
        "number (got 'many')",
        f"error: {bad}:9: model.backnd: unknown key; did you mean 'backend'?",
        f"error: {bad}:11: inference.conf_threshold: input should be less than or equal to 1 (got 1.5)",
    ]
    assert "Traceback" not in proc.stderr


def test_broken_yaml_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("device:\n  id: [unclosed\ncameras: []\n")
    proc = agent("check-config", bad, check_rc=2)
    assert proc.stderr.startswith(f"error: {bad}:3: invalid YAML:")


@pytest.mark.skipif(not CFG.exists(), reason="shared yolov3-tiny model not present")
def test_detect_prints_writes_json_and_saves_images(tmp_path):
    out = tmp_path / "dets.json"
    proc = agent("detect", "--model", CFG, DOG, "--json", out, "--save", tmp_path / "img", check_rc=0)
    assert proc.stdout.startswith(f"{DOG}: dog 0.8")
    assert len(proc.stdout.splitlines()) == 4  # one line per detection: dog, car, truck, bicycle
    (image,) = json.loads(out.read_text())
    assert (image["width"], image["height"]) == (768, 576)
    labels = {d["label"] for d in image["detections"]}
    assert {"dog", "car", "truck"} <= labels
    assert all(len(d["box"]) == 4 and 0 < d["score"] <= 1 for d in image["detections"])
    assert (tmp_path / "img" / "dog.jpg").stat().st_size > 10_000


def test_detect_bad_inputs_exit_2_without_traceback(tmp_path):
    proc = agent("detect", "--model", CFG, tmp_path / "missing.jpg", check_rc=2)
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.jpg'}: no such file or folder"
    proc = agent("detect", "--model", tmp_path / "model.xyz", DOG, check_rc=2)
    assert "model file not found" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "model.pt").write_bytes(b"x")
    proc = agent("detect", "--model", tmp_path / "model.pt", DOG, check_rc=2)
    assert "unsupported model file type '.pt'" in proc.stderr
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    proc = agent("detect", "--model", CFG, not_image, check_rc=2)
    assert proc.stderr.strip() == f"error: {not_image}: not a readable image"


def test_debug_shows_the_traceback(tmp_path):
    proc = agent("--debug", "detect", "--model", tmp_path / "m.cfg", DOG, check_rc=2)
    assert "Traceback" in proc.stderr and "model file not found" in proc.stderr


def test_usage_errors_exit_2():
    assert agent("no-such-command").returncode == 2
    assert agent("bench").returncode == 2
