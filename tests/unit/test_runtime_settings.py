"""tracking: and cameras[].lines in the config, and the RuntimeSettings the pipeline reads."""

import dataclasses

import numpy as np
import pytest

from agent.config import loader
from agent.errors import ConfigError
from agent.runtime.settings import RuntimeSettings, runtime_settings
from agent.types import Detections

NAMES = ["circle", "square", "triangle"]


def write(tmp_path, text):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return str(path)


BASE = """\
cameras:
  - name: door
    source: clip.mp4
    lines:
      - {name: door, points: [[0.1, 0.5], [0.9, 0.5]], units: fraction, classes: [square]}
    tracking: {min_hits: 2, low_threshold: 0.05}
  - name: yard
    source: clip2.mp4
model: {path: m.onnx}
inference: {conf_threshold: 0.3, class_thresholds: {triangle: 0.6}}
tracking:
  enabled: true
  lost_after_s: 2
"""


def test_camera_tracking_overrides_the_top_level_which_overrides_the_defaults(tmp_path):
    cfg = loader.load(write(tmp_path, BASE))
    settings = runtime_settings(cfg, NAMES, "agent.yaml")
    door, yard = settings.camera("door"), settings.camera("yard")
    assert (door.tracking.min_hits, door.tracking.lost_after_s, door.tracking.low_threshold) == (2, 2.0, 0.05)
    assert (yard.tracking.min_hits, yard.tracking.lost_after_s, yard.tracking.low_threshold) == (3, 2.0, 0.1)
    assert door.tracking.enabled and yard.tracking.enabled
    (line,) = door.lines
    assert line.name == "door" and line.relative and line.class_ids == frozenset({1})
    # The decoder keeps boxes down to the lowest low_threshold of the tracking cameras...
    assert settings.decode.conf_threshold == 0.05 and settings.postprocess.conf_threshold == 0.3
    # ...and only boxes at the publishing threshold (or their class's own) are published.
    dets = Detections(np.array([[0, 0, 1, 1]] * 4, np.float32), np.array([0.06, 0.35, 0.5, 0.7], np.float32),
                      np.array([0, 1, 2, 2], np.int32))
    assert settings.publish_mask(dets, NAMES).tolist() == [False, True, False, True]


def test_settings_are_one_immutable_value(tmp_path):
    settings = runtime_settings(loader.load(write(tmp_path, BASE)), NAMES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.postprocess = None  # type: ignore[misc]  # the point of the test
    assert RuntimeSettings().camera("nowhere").tracking.enabled is False


def test_bad_tracking_values_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"agent\.yaml:6: cameras\.0\.tracking\.min_hits"):
        loader.load(write(tmp_path, BASE.replace("min_hits: 2", "min_hits: 0")))
    with pytest.raises(ConfigError, match=r"agent\.yaml:\d+: cameras\.0\.lines\.1\.name: duplicate line"):
        loader.load(write(tmp_path, BASE.replace(
            "units: fraction, classes: [square]}",
            "units: fraction, classes: [square]}\n      - {name: door, points: [[0, 0], [1, 1]]}")))


def test_thresholds_that_only_conflict_once_merged_name_the_camera(tmp_path):
    text = BASE.replace("tracking: {min_hits: 2, low_threshold: 0.05}", "tracking: {high_threshold: 0.05}")
    text = text.replace("lost_after_s: 2", "lost_after_s: 2\n  low_threshold: 0.2")
    cfg = loader.load(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"agent\.yaml: cameras\.0: tracking\.low_threshold: 0\.2 is above"):
        runtime_settings(cfg, NAMES, "agent.yaml")


def test_line_classes_are_checked_against_the_model(tmp_path):
    cfg = loader.load(write(tmp_path, BASE.replace("classes: [square]", "classes: [person]")))
    with pytest.raises(ConfigError, match=r"agent\.yaml: cameras\.0\.lines\.0\.classes: 'person' not in"):
        runtime_settings(cfg, NAMES, "agent.yaml")


def test_inference_threads_leave_cores_to_capture_and_decode(tmp_path):
    from agent.inference.detector import DetectorSettings, inference_threads, usable_cores

    assert inference_threads(1, cores=2) == 1  # this machine: one core for inference, one for the rest
    assert inference_threads(1, cores=8) == 7
    assert inference_threads(8, cores=8) == 6  # a core per four cameras for their capture threads
    assert inference_threads(4, cores=1) == 1
    cfg = loader.load(write(tmp_path, BASE))
    assert DetectorSettings.from_config(cfg).threads == inference_threads(2, usable_cores())
    text = BASE.replace("model: {path: m.onnx}", "model: {path: m.onnx, threads: 3}")
    pinned = loader.load(write(tmp_path, text))
    assert DetectorSettings.from_config(pinned).threads == 3
