"""The pipeline on real files with a real model: every frame once, in order; batching; pause."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.capture import Camera
from agent.config.schema import CameraConfig
from agent.datasets.video import make_video
from agent.inference.detector import Detector
from agent.runtime.pipeline import FrameResult, Pipeline

SHIPPED = Path("models/shapes-yolov3-tiny.onnx")
DARKNET = Path("../shared/models/yolov3-tiny-coco/yolov3-tiny.cfg")
MODEL = SHIPPED if SHIPPED.exists() else DARKNET


class ListSink:
    def __init__(self) -> None:
        self.results = []
        self.closed = False
        self._lock = threading.Lock()

    def handle(self, result: FrameResult) -> None:
        with self._lock:
            self.results.append(result)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for seed in (1, 2):
        path = folder / f"clip{seed}.mp4"
        make_video(path, frames=12, fps=15, seed=seed, width=320, height=240)
        paths.append(path)
    return paths


def run_to_end(pipeline: Pipeline, timeout: float = 60.0) -> None:
    pipeline.start()
    assert pipeline.finished.wait(timeout), "pipeline did not finish"
    pipeline.stop()


def test_every_frame_of_a_file_once_and_in_order(clips):
    sink = ListSink()
    pipeline = Pipeline([Camera(CameraConfig(name="a", source=str(clips[0])))], lambda: Detector.open(MODEL),
                        [sink])
    run_to_end(pipeline)
    assert [r.frame.index for r in sink.results] == list(range(12))
    assert sink.closed and pipeline.error is None
    assert set(sink.results[0].latency_ms) == {"preprocess", "inference", "postprocess"}
    stats = pipeline.stats()
    assert stats["frames"] == 12 and stats["latency_ms"]["inference"]["count"] >= 1
    assert stats["cameras"]["a"]["state"] == "finished"


def test_two_cameras_are_batched_together(clips):
    sink = ListSink()
    cameras = [Camera(CameraConfig(name=f"cam{i}", source=str(p))) for i, p in enumerate(clips)]
    batches = []

    def factory() -> Detector:
        detector = Detector.open(DARKNET, batch_size=2)  # OpenCV DNN takes any batch
        original = detector.infer_prepared  # the pipeline's one call into the network
        detector.infer_prepared = lambda batch: batches.append(len(batch)) or original(batch)
        return detector

    run_to_end(Pipeline(cameras, factory, [sink]))
    per_camera = {name: [r.frame.index for r in sink.results if r.frame.camera == name]
                  for name in ("cam0", "cam1")}
    assert per_camera == {"cam0": list(range(12)), "cam1": list(range(12))}
    assert max(batches) == 2  # frames of both cameras went through in one call


def test_pause_discards_frames_and_resume_continues(clips):
    sink = ListSink()
    camera = Camera(CameraConfig(name="a", source=str(clips[0]), realtime=True, loop=True))
    pipeline = Pipeline([camera], lambda: Detector.open(MODEL), [sink])
    pipeline.start()
    try:
        assert pipeline.first_frame_done.wait(30)
        pipeline.pause()
        time.sleep(0.3)  # let a frame in flight land
        count = len(sink.results)
        time.sleep(0.7)
        assert len(sink.results) == count and pipeline.metrics.counter("frames_paused") > 0
        pipeline.resume()
        deadline = time.monotonic() + 10
        while len(sink.results) == count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sink.results) > count
    finally:
        pipeline.stop()


def test_max_frames_and_a_failing_sink_do_not_stop_the_others(clips):
    class Broken:
        def handle(self, result):
            raise RuntimeError("disk on fire")

        def close(self):
            raise RuntimeError("still on fire")

    sink = ListSink()
    pipeline = Pipeline([Camera(CameraConfig(name="a", source=str(clips[0])))], lambda: Detector.open(MODEL),
                        [Broken(), sink], max_frames=5)
    run_to_end(pipeline)
    assert 5 <= len(sink.results) <= 6 and sink.closed
    assert pipeline.metrics.counter("sink_errors_Broken") == len(sink.results)


def test_a_model_that_fails_to_load_is_reported_to_the_caller(clips, tmp_path):
    pipeline = Pipeline([Camera(CameraConfig(name="a", source=str(clips[0])))],
                        lambda: Detector.open(tmp_path / "missing.onnx"), [ListSink()])
    with pytest.raises(Exception, match="model file not found"):
        pipeline.start()


def test_frames_are_prepared_in_the_capture_threads_and_match_direct_detection(clips):
    sink = ListSink()
    prepared_in = set()
    direct = Detector.open(MODEL)

    def factory() -> Detector:
        detector = Detector.open(MODEL)
        original = detector.prepare

        def spy(image):
            prepared_in.add(threading.current_thread().name)
            return original(image)

        detector.prepare = spy
        return detector

    run_to_end(Pipeline([Camera(CameraConfig(name="cam", source=str(clips[0])))], factory, [sink]))
    assert prepared_in == {"capture-cam"}
    assert len(sink.results) == 12
    for result in sink.results:
        assert result.frame.prepared is None  # released once inferred, not carried to the sinks
        expected = direct([result.frame.image])[0]
        np.testing.assert_allclose(result.detections.xyxy, expected.xyxy, atol=1e-3)
        assert result.detections.class_ids.tolist() == expected.class_ids.tolist()
