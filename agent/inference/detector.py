"""One object that turns images into ``Detections``: preprocess -> backend -> postprocess.

``build_detector(model_path, settings)`` is the one way to make it: ``run`` (the daemon's
inference thread), ``detect``, ``eval --model`` and ``bench`` all call it, with a
``DetectorSettings`` value (``DetectorSettings.from_config`` for a config file), so the
four cannot drift apart: same backend, input size, resize mode, warm-up and thresholds.

Not thread-safe: it owns one backend and one reused input buffer; only ``prepare`` may be
called from other threads (each call allocates its own input).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from agent.inference.backends.base import Backend
from agent.inference.model_path import open_backend
from agent.inference.postprocess.postprocessor import Postprocessor, PostprocessSettings
from agent.inference.preprocess import Preprocessor
from agent.types import Detections, FitTransform

if TYPE_CHECKING:
    from agent.config.schema import AgentConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """Everything besides the model file that decides what a Detector outputs."""

    backend: str = "auto"
    batch_size: int = 1
    threads: Optional[int] = None  # CPU backends; None: the runtime's default
    labels: Optional[str] = None  # a names file, one class per line; overrides the model's metadata
    class_names: Optional[Tuple[str, ...]] = None  # the names themselves (overrides ``labels``)
    input_size: Optional[Tuple[int, int]] = None  # (height, width); None: the model's own
    resize_mode: Optional[str] = None  # letterbox | resize; None: the model's own
    warmup_runs: int = 0
    postprocess: PostprocessSettings = dataclasses.field(default_factory=PostprocessSettings)

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> DetectorSettings:
        """The settings ``run`` uses for ``cfg`` (``model:`` and ``inference:``); ``model.threads``
        unset: ``inference_threads`` for its cameras."""
        model = cfg.model
        size = (int(model.input_size[0]), int(model.input_size[1])) if model.input_size else None
        threads = model.threads or inference_threads(len(cfg.enabled_cameras))
        return cls(backend=model.backend, batch_size=cfg.inference.batch_size, threads=threads,
                   labels=model.labels, input_size=size, resize_mode=model.resize_mode,
                   warmup_runs=model.warmup_runs, postprocess=postprocess_settings(cfg))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def inference_threads(cameras: int, cores: Optional[int] = None) -> int:
    """Threads for a CPU backend (ONNX Runtime, OpenCV): the cores the other stages leave.

    Besides inference the pipeline runs one capture thread per camera (video decoding and the
    letterbox) and the publish thread (decoding outputs, NMS, tracking, MQTT); together they
    keep about one core busy for up to four cameras. So one core is left to them per four
    cameras (at least one), and inference takes the rest (at least one thread). Measured on
    the 2-core development machine (bench.tracking_cost's thread sweep, README): ONNX
    Runtime's default of a thread per core made the backend alone 2x slower there whenever
    other work ran, its threads spinning against capture and decode; one thread gave the
    best backend and pipeline FPS. ``model.threads`` overrides this.
    """
    total = usable_cores() if cores is None else cores
    return max(1, total - max(1, math.ceil(max(cameras, 1) / 4)))


def postprocess_settings(cfg: AgentConfig) -> PostprocessSettings:
    """The thresholds and filters of ``cfg`` (``inference:``, ``model.output_format``)."""
    inf = cfg.inference
    return PostprocessSettings(
        conf_threshold=inf.conf_threshold, iou_threshold=inf.iou_threshold,
        max_detections=inf.max_detections, class_agnostic=inf.class_agnostic, multi_label=inf.multi_label,
        classes=inf.classes, class_thresholds=dict(inf.class_thresholds), min_box_area=inf.min_box_area,
        output_format=cfg.model.output_format)


def build_detector(model_path: Path, settings: Optional[DetectorSettings] = None) -> Detector:
    """The model at ``model_path`` loaded, its overrides applied, warmed up."""
    from agent.inference.labels import read_names

    settings = settings or DetectorSettings()
    names: Optional[Sequence[str]] = settings.class_names
    if names is None and settings.labels:
        names = read_names(Path(settings.labels))
    backend = open_backend(Path(model_path), settings.backend, settings.batch_size, names,
                           threads=settings.threads)
    try:
        detector = Detector(backend, settings.postprocess, settings.resize_mode, settings.input_size)
        detector.warmup(settings.warmup_runs)
    except BaseException:
        backend.close()
        raise
    return detector


class Prepared(NamedTuple):
    """A frame already made into network input (``Detector.prepare``), waiting for inference."""

    tensor: np.ndarray  # (1, 3, H, W)
    transform: FitTransform
    preprocess_ms: float


class Detector:
    def __init__(self, backend: Backend, settings: Optional[PostprocessSettings] = None,
                 resize_mode: Optional[str] = None, input_size: Optional[Tuple[int, int]] = None) -> None:
        self.backend = backend
        # The detector's own view of the model: the backend's info stays as the model says
        # (its shape checks read it); config overrides make a new value.
        changes: Dict[str, object] = {}
        if resize_mode:
            changes["resize_mode"] = resize_mode
        if input_size:
            changes["input_size"] = (int(input_size[0]), int(input_size[1]))
        self.info = dataclasses.replace(backend.info, **changes) if changes else backend.info  # type: ignore[arg-type]  # keys checked above
        batch = int(backend.input_shape[0]) if backend.input_shape[0] else 1
        self.preprocess = Preprocessor(self.info.input_size, self.info.resize_mode, batch,
                                       backend.input_dtype)
        self.postprocess = Postprocessor(self.info, settings)
        #: Milliseconds spent in each stage by the last call.
        self.last_latency_ms: Dict[str, float] = {}

    @classmethod
    def open(cls, model_path: Path, backend: str = "auto", batch_size: int = 1,
             settings: Optional[PostprocessSettings] = None,
             class_names: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> Detector:
        """``build_detector`` with the model's own input size and resize mode, no warm-up."""
        return build_detector(model_path, DetectorSettings(
            backend=backend, batch_size=batch_size, threads=threads,
            class_names=tuple(class_names) if class_names is not None else None,
            postprocess=settings or PostprocessSettings()))

    def warmup(self, runs: int = 1) -> None:
        """Run the network ``runs`` times on zeros of the input it gets (first runs are slow)."""
        if runs <= 0:
            return
        dummy = self.preprocess.buffer(self.preprocess.batch_size).copy()
        dummy[...] = 0
        for _ in range(runs):
            self.backend.infer(dummy)

    @property
    def class_names(self) -> List[str]:
        return self.info.class_names

    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Detections for each BGR image, in source pixels; batches of any length."""
        results = []
        step = self.preprocess.batch_size
        for start in range(0, len(images), step):
            results.extend(self._run_batch(images[start:start + step]))
        return results

    def _run_batch(self, images: Sequence[np.ndarray]) -> List[Detections]:
        t0 = time.perf_counter()
        tensor, transforms = self.preprocess(images)
        return self._infer(tensor, transforms, (time.perf_counter() - t0) * 1e3)

    def prepare(self, image: np.ndarray) -> Prepared:
        """``image`` made into its own network input; thread-safe (capture threads call it)."""
        t0 = time.perf_counter()
        tensor, transform = self.preprocess.prepare(image)
        return Prepared(tensor, transform, (time.perf_counter() - t0) * 1e3)

    def infer_prepared(self, batch: Sequence[Prepared]) -> Tuple[List[np.ndarray], float]:
        """Only the network on inputs made by ``prepare``: (raw outputs, milliseconds).

        The pipeline decodes the outputs (``postprocess``) in another thread, so the
        inference thread is free for the next batch meanwhile; every backend returns
        outputs that the next call does not overwrite.
        """
        tensor = self._stack(batch)
        t0 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        return outputs, (time.perf_counter() - t0) * 1e3

    def _stack(self, batch: Sequence[Prepared]) -> np.ndarray:
        if len(batch) == 1:
            return batch[0].tensor  # already (1, 3, H, W): no copy
        tensor = self.preprocess.buffer(len(batch))
        for slot, item in enumerate(batch):
            tensor[slot] = item.tensor[0]
        return tensor

    def _infer(self, tensor: np.ndarray, transforms: Sequence[FitTransform], preprocess_ms: float
               ) -> List[Detections]:
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(outputs, transforms)
        t3 = time.perf_counter()
        self.last_latency_ms = {"preprocess": preprocess_ms, "inference": (t2 - t1) * 1e3,
                                "postprocess": (t3 - t2) * 1e3}
        return detections

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
