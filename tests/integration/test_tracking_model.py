"""Tracking with the shipped model: a generated clip through Detector (ONNX Runtime), the
event engine and a recording, scored by `detection-agent eval --track` against the clip's
MOT ground truth and true line crossings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bench.track_clips import LINES, score_clip
from agent.datasets.video import make_video
from agent.tracking import TrackingSettings

pytest.importorskip("motmetrics")
SHIPPED = Path("models/shapes-yolov3-tiny.onnx")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped model is missing")]


def test_the_shipped_models_detections_are_tracked_and_scored(tmp_path):
    from agent.inference.detector import Detector
    from agent.inference.postprocess.postprocessor import PostprocessSettings

    settings = TrackingSettings(enabled=True)
    make_video(tmp_path / "clip-22.mp4", frames=75, fps=15, seed=22, lines=LINES)  # unseen by training
    detector = Detector.open(SHIPPED, "onnxruntime", threads=1,
                             settings=PostprocessSettings(conf_threshold=settings.low_threshold))
    with detector:
        result = score_clip(22, 75, tmp_path, settings, detector)
    s = result["scores"]
    # Measured 0.99 / 0.99 / 0 switches on this clip's 300 frames; the guard sits a little under.
    assert s["num_objects"] > 150 and s["mota"] >= 0.9 and s["idf1"] >= 0.9 and s["num_switches"] <= 1
    recording = tmp_path / "clip-22.model.jsonl"
    done = subprocess.run([sys.executable, "-m", "agent", "eval", "--track", "--gt",
                           str(tmp_path / "clip-22.json"), "--pred", str(recording), "--json",
                           str(tmp_path / "scores.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"IDF1 {s['idf1']:.3f}" in done.stdout and "line middle:" in done.stdout
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == s
