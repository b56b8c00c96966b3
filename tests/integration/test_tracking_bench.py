"""The tracking bench on a short clip: on/off windows in ABBA order through Pipeline.apply,
and the tracker really runs in the "on" windows (its stage is timed, tracks are made)."""

from pathlib import Path

import pytest

from agent.bench.tracking_cost import run_tracking_bench
from agent.datasets.video import make_video

MODEL = Path("models/shapes-yolov3-tiny.onnx")


@pytest.mark.skipif(not MODEL.exists(), reason="needs the shipped model")
def test_tracking_bench_compares_on_and_off_in_one_run(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_video(clip, frames=30, fps=15, seed=3, width=320, height=240)
    report = run_tracking_bench(MODEL, clip, threads=1, rounds=2, window_s=1.0)
    assert report["fps_on"] > 0 and report["fps_off"] > 0
    assert 0.2 < report["on_over_off"] < 5  # a ratio of two measured rates, not a constant
    assert report["tracking_ms"]["p50"] is not None  # the "on" windows went through the tracker
