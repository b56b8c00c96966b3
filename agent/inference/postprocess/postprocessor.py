"""From raw network outputs to final ``Detections`` in source pixels.

decode (confidence filter first, non-finite boxes dropped) -> class filters -> NMS ->
``max_detections`` -> map boxes back through each frame's ``FitTransform`` -> minimum box
area. The thresholds live on the object so a command (``set thresholds``) can change them
between frames. ``nonfinite_dropped`` counts the boxes thrown away for NaN or infinity.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from agent.errors import ModelError
from agent.inference.postprocess.decode import Candidates, decode_counted, resolve_format
from agent.inference.postprocess.nms import nms
from agent.types import Detections, FitTransform, ModelInfo

log = logging.getLogger(__name__)

#: Candidates kept for NMS, best first; bounds the time of a frame with a near-zero threshold.
MAX_NMS_CANDIDATES = 30000
#: Seconds between two warnings about non-finite model outputs (a broken engine repeats it every frame).
NONFINITE_WARN_EVERY_S = 60.0


@dataclasses.dataclass
class PostprocessSettings:
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False
    multi_label: bool = False
    classes: Optional[Sequence[str]] = None  # keep only these labels
    class_thresholds: Dict[str, float] = dataclasses.field(default_factory=dict)
    min_box_area: float = 0.0  # in source pixels
    output_format: Optional[str] = None  # override the detected layout


class Postprocessor:
    def __init__(self, info: ModelInfo, settings: Optional[PostprocessSettings] = None) -> None:
        self.info = info
        self.settings = settings or PostprocessSettings()
        self._class_keep: Optional[np.ndarray] = None
        self._class_min_score: Optional[np.ndarray] = None
        self._compile_class_filters()
        #: Boxes dropped so far because a coordinate or score was NaN or infinite.
        self.nonfinite_dropped = 0
        self._nonfinite_warned_at: Optional[float] = None

    def update(self, settings: PostprocessSettings) -> None:
        """Switch to new thresholds and filters (a reload or a ``set`` command); validated first."""
        previous = self.settings
        self.settings = settings
        try:
            self._compile_class_filters()
        except ModelError:
            self.settings = previous
            self._compile_class_filters()
            raise

    def _class_index(self, name: str) -> int:
        try:
            return self.info.class_names.index(name)
        except ValueError:
            raise ModelError(f"class {name!r} is not in the model's labels "
                             f"({', '.join(self.info.class_names[:10])}...)") from None

    def _compile_class_filters(self) -> None:
        """Turn label-based filters into lookup arrays indexed by class id, once."""
        s = self.settings
        nc = max(self.info.num_classes, 1)
        self._class_keep = self._class_min_score = None
        if s.classes:
            self._class_keep = np.zeros(nc, bool)
            self._class_keep[[self._class_index(n) for n in s.classes]] = True
        if s.class_thresholds:
            self._class_min_score = np.full(nc, s.conf_threshold, np.float32)
            for name, threshold in s.class_thresholds.items():
                self._class_min_score[self._class_index(name)] = threshold

    def __call__(self, outputs: Sequence[np.ndarray], transforms: Sequence[FitTransform]) -> List[Detections]:
        s = self.settings
        # Per-class thresholds may be lower than the global one: decode at the lowest.
        conf = s.conf_threshold if self._class_min_score is None else float(self._class_min_score.min())
        fmt = resolve_format(outputs, self.info, s.output_format)
        batch, nonfinite = decode_counted(outputs, self.info, conf, fmt, s.multi_label)
        if nonfinite:
            self._count_nonfinite(nonfinite)
        already_suppressed = fmt == "efficient_nms"
        if len(batch) < len(transforms):
            raise ModelError(f"model returned {len(batch)} results for a batch of {len(transforms)}")
        return [self._finish(c, t, already_suppressed) for c, t in zip(batch, transforms)]

    def _count_nonfinite(self, count: int) -> None:
        self.nonfinite_dropped += count
        now = time.monotonic()
        if self._nonfinite_warned_at is None or now - self._nonfinite_warned_at >= NONFINITE_WARN_EVERY_S:
            self._nonfinite_warned_at = now
            log.warning("model output held NaN or infinite values: dropped %d box(es), %d since start "
                        "(an FP16 engine overflowing? counted in stats as boxes_nonfinite)",
                        count, self.nonfinite_dropped)

    def _finish(self, cand: Candidates, transform: FitTransform, already_suppressed: bool) -> Detections:
        s = self.settings
        boxes, scores, class_ids = cand
        keep = self._class_mask(scores, class_ids)
        if keep is not None:
            boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        if scores.size > MAX_NMS_CANDIDATES:
            top = np.argpartition(-scores, MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
            boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
        if already_suppressed:
            order = np.argsort(-scores, kind="stable")[: s.max_detections]
        else:
            order = nms(boxes, scores, s.iou_threshold, None if s.class_agnostic else class_ids,
                        max_det=s.max_detections)
        dets = Detections(transform.boxes_to_source(boxes[order]), scores[order], class_ids[order])
        if s.min_box_area > 0:
            dets = dets[dets.area >= s.min_box_area]
        return dets

    def _class_mask(self, scores: np.ndarray, class_ids: np.ndarray) -> Optional[np.ndarray]:
        if self._class_keep is None and self._class_min_score is None:
            return None
        ids_ok = (class_ids >= 0) & (class_ids < max(self.info.num_classes, 1))
        ids = np.where(ids_ok, class_ids, 0)
        keep = ids_ok.copy()
        if self._class_keep is not None:
            keep &= self._class_keep[ids]
        if self._class_min_score is not None:
            keep &= scores > self._class_min_score[ids]
        return keep
