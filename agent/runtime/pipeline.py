"""The real-time pipeline: cameras -> one inference thread -> one publish thread -> sinks.

- Each ``Camera`` reads in its own thread (newest frame for live sources, every frame for
  files) and wakes the inference thread when a frame is ready.
- Each camera's thread also makes its frame into network input (``Detector.prepare``:
  letterbox, RGB, scale), so that work overlaps the inference of the previous frame.
- The inference thread owns the ``Detector`` (and so the CUDA context): it creates it,
  batches the frames of several cameras when the model takes a batch, runs the network
  and hands the raw outputs on: it does nothing else, so it is free for the next batch.
- The publish thread decodes the outputs (NMS, class filters), then per camera applies
  zones, tracking and counting lines (``Scene``), and gives each result to the sinks (MQTT,
  an annotated video...). The queue between them is bounded; a full queue is waited on in
  short steps that check the stop event, so nothing blocks forever and shutdown always
  finishes.

Wiring is by constructor: the cameras get their frame callback and preparation function
in ``Camera.start``; sinks that need the model's labels come from ``setup(detector)``,
called once the model is loaded and before the cameras start. Settings that change while
running are one immutable ``RuntimeSettings`` value, replaced whole by ``apply``.

``heartbeat`` moves every time the inference loop goes round, idle or not; the daemon pings
the systemd watchdog only while it moves, so a hung backend gets the service restarted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from agent.capture import Camera
from agent.inference.detector import Detector
from agent.runtime.metrics import StageMetrics
from agent.runtime.results import FrameResult, Sink
from agent.runtime.scene import Scene
from agent.runtime.settings import RuntimeSettings
from agent.types import FitTransform, Frame

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # inferred batches waiting to be decoded and published
POLL_S = 0.1  # the longest any thread waits before it looks at the stop event again


class _Inferred(NamedTuple):
    """One batch between the inference and the publish thread: raw outputs, not yet decoded."""

    frames: List[Frame]
    outputs: List[np.ndarray]
    transforms: List[FitTransform]
    stages: Dict[str, float]  # milliseconds per stage so far


class Wiring(NamedTuple):
    """What ``setup(detector)`` returns once the model is loaded: the settings to start with
    (they name the model's labels) and the sinks that need the labels."""

    settings: Optional[RuntimeSettings]
    sinks: Sequence[Sink] = ()


class Pipeline:
    def __init__(self, cameras: Sequence[Camera], detector_factory: Callable[[], Detector],
                 sinks: Sequence[Sink] = (), max_frames: Optional[int] = None,
                 settings: Optional[RuntimeSettings] = None,
                 setup: Optional[Callable[[Detector], Wiring]] = None) -> None:
        """``settings`` None: the detector's own thresholds, no zones, no tracking."""
        self.cameras = list(cameras)
        self._settings = settings  # replaced whole by apply(), read once per batch
        self._setup = setup
        self.sinks = list(sinks)
        self.metrics = StageMetrics()
        self.max_frames = max_frames
        self.detector: Optional[Detector] = None
        self.heartbeat = time.monotonic()
        self.first_frame_done = threading.Event()
        self.finished = threading.Event()  # every file source is done, or max_frames reached
        self.error: Optional[BaseException] = None
        self._factory = detector_factory
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._frame_ready = threading.Event()
        self._results: queue.Queue = queue.Queue(QUEUE_SIZE)  # _Inferred batches, or None at the end
        self._loaded = threading.Event()
        self._threads: List[threading.Thread] = []
        self._requests: queue.Queue = queue.Queue()  # reset_counts camera names (None: all)
        self._applied: Union[RuntimeSettings, bool, None] = False  # the settings the decoder has
        self._scene: Optional[Scene] = None
        self.frames_processed = 0

    # ------------------------------------------------------------ control

    def start(self, load_timeout: float = 300.0) -> None:
        """Start the threads; returns once the model is loaded (raises if it failed).

        ``setup`` (constructor) runs after the model loads and before the cameras start, so
        sinks that need the model's labels miss no frame.
        """
        self._threads = [threading.Thread(target=self._infer_loop, name="inference", daemon=True),
                         threading.Thread(target=self._publish_loop, name="publish", daemon=True)]
        for thread in self._threads:
            thread.start()
        if not self._loaded.wait(load_timeout) or self.error is not None:
            self.stop()
            raise self.error or TimeoutError("the model did not load in time")
        detector = self.detector
        if detector is None:
            raise RuntimeError("the model did not load")
        if self._setup is not None:
            wiring = self._setup(detector)
            self._settings = wiring.settings
            self.sinks.extend(wiring.sinks)
        self._scene = Scene(detector.class_names, self.metrics,
                            trails=any(getattr(sink, "draws_tracks", False) for sink in self.sinks))
        for camera in self.cameras:
            # Preprocessing runs in the capture threads, overlapping inference.
            camera.start(on_frame=self._frame_ready.set, prepare=detector.prepare)

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    @property
    def settings(self) -> Optional[RuntimeSettings]:
        return self._settings

    def apply(self, settings: RuntimeSettings) -> None:
        """New settings (a reload, a command): the publish thread takes them at its next batch."""
        self._settings = settings

    def reset_counts(self, camera: Optional[str] = None) -> None:
        """Counting-line totals of ``camera`` (None: every camera) back to zero, in the publish thread."""
        self._requests.put(camera)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capture, finish the frame in flight, drain the results to the sinks, close them."""
        deadline = time.monotonic() + timeout
        for camera in self.cameras:  # all at once: one camera stuck in its driver delays no other
            camera.request_stop()
        for camera in self.cameras:
            camera.stop(timeout=max(0.1, (deadline - time.monotonic()) / 3))
        self._stop.set()
        self._frame_ready.set()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s thread did not finish within the stop timeout", thread.name)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # one broken sink must not keep the others from closing
                log.exception("closing %s failed", type(sink).__name__)

    # ------------------------------------------------------------ inference thread

    def _infer_loop(self) -> None:
        try:
            self.detector = self._factory()
        except BaseException as exc:  # reported to start(), which re-raises in the caller
            self.error = exc
            self._loaded.set()
            return
        self._loaded.set()
        try:
            self._process_frames(self.detector)
        except Exception as exc:
            log.exception("inference failed")
            self.error = exc
            self.finished.set()
        finally:
            self._results_put(None)  # tells the publish thread that no more results come
            self.detector.close()

    def _process_frames(self, detector: Detector) -> None:
        batch_size = detector.preprocess.batch_size
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            self._frame_ready.clear()
            frames = self._collect(batch_size)
            if not frames:
                if all(c.finished for c in self.cameras):
                    self.finished.set()
                    return
                self._frame_ready.wait(POLL_S)
                continue
            if self._paused.is_set():
                self.metrics.count("frames_paused", len(frames))
                continue
            prepared = [f.prepared if f.prepared is not None else detector.prepare(f.image) for f in frames]
            outputs, inference_ms = detector.infer_prepared(prepared)
            for frame in frames:
                frame.prepared = None  # the input tensor is done with: do not queue it to the sinks
            stages = {"preprocess": max(p.preprocess_ms for p in prepared), "inference": inference_ms}
            for name, value in stages.items():
                self.metrics.observe(name, value)
            self._results_put(_Inferred(frames, outputs, [p.transform for p in prepared], stages))
            self.frames_processed += len(frames)
            self.first_frame_done.set()
            if self.max_frames is not None and self.frames_processed >= self.max_frames:
                self.finished.set()
                return

    def _collect(self, limit: int) -> List[Frame]:
        """Up to ``limit`` ready frames, at most one per camera per round so none starves."""
        frames: List[Frame] = []
        for camera in self.cameras:
            frame = camera.read(0)
            if frame is not None:
                frames.append(frame)
                if len(frames) == limit:
                    break
        if frames:
            # Cameras that came first this time go last next time.
            self.cameras.append(self.cameras.pop(0))
        return frames

    def _apply_settings(self, detector: Detector) -> Optional[RuntimeSettings]:
        """The settings for this batch; the decoder takes new thresholds when they changed."""
        settings = self._settings
        if settings is not self._applied:
            self._applied = settings
            if settings is not None:
                try:
                    detector.postprocess.update(settings.decode)
                except Exception:
                    log.exception("could not apply the new thresholds; keeping the previous ones")
        return settings

    def _results_put(self, item: Optional[_Inferred]) -> None:
        while True:
            try:
                self._results.put(item, timeout=POLL_S)
                return
            except queue.Full:
                self.metrics.count("publish_queue_waits")
                if self._stop.is_set() and item is not None:
                    self.metrics.count("results_dropped_at_stop")
                    return

    # ------------------------------------------------------------ publish thread

    def _publish_loop(self) -> None:
        while True:
            self._serve_requests()
            try:
                item = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set() and not any(t.is_alive() for t in self._threads[:1]):
                    break
                continue
            if item is None:
                break
            detector = self.detector
            if detector is None:  # cannot happen: results come only from a loaded detector
                continue
            settings = self._apply_settings(detector)  # thresholds change between batches
            try:
                results = self._decode(detector, settings, item)
            except Exception as exc:  # a model whose outputs cannot be decoded: stop, say why
                log.exception("decoding the model's outputs failed")
                self.error = exc
                self.finished.set()
                continue
            self._deliver(results)
        if self._scene is not None:
            self._deliver(self._scene.finish())  # every track ends: track_end, zone_exit, counts

    def _serve_requests(self) -> None:
        while self._scene is not None:
            try:
                camera = self._requests.get_nowait()
            except queue.Empty:
                return
            self._deliver(self._scene.reset_counts(camera))

    def _deliver(self, results: Sequence[FrameResult]) -> None:
        for result in results:
            for sink in self.sinks:
                try:
                    sink.handle(result)
                except Exception:  # a sink failing must not stop the others or the pipeline
                    self.metrics.count(f"sink_errors_{type(sink).__name__}")
                    log.exception("sink %s failed", type(sink).__name__)
            if result.kind == "frame":
                self.metrics.observe("capture_to_publish", (time.monotonic() - result.frame.mono_time) * 1e3,
                                     result.frame.camera)  # per camera: also the processed-frames counter

    def _decode(self, detector: Detector, settings: Optional[RuntimeSettings], item: _Inferred
                ) -> List[FrameResult]:
        """Raw outputs -> detections (NMS, class filters) -> zones, tracking, lines (``Scene``),
        one ``FrameResult`` per frame."""
        started = time.perf_counter()
        nonfinite_before = detector.postprocess.nonfinite_dropped
        batch = detector.postprocess(item.outputs, item.transforms)
        nonfinite = detector.postprocess.nonfinite_dropped - nonfinite_before
        if nonfinite:
            self.metrics.count("boxes_nonfinite", nonfinite)
        stages = dict(item.stages, postprocess=(time.perf_counter() - started) * 1e3)
        self.metrics.observe("postprocess", stages["postprocess"])
        scene = self._scene
        results = []
        for frame, dets in zip(item.frames, batch):
            self.metrics.fps.tick()
            if scene is None:  # cannot happen: the scene is made before the cameras start
                results.append(FrameResult(frame, dets, stages))
            else:
                results.append(scene.frame(settings, frame, dets, stages))
        return results

    def stats(self) -> Dict[str, object]:
        stats = self.metrics.snapshot()
        stats["frames"] = self.frames_processed
        stats["paused"] = self.paused
        stats["cameras"] = {c.name: vars(c.stats()) for c in self.cameras}
        return stats
