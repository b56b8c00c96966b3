"""The settings the running pipeline reads: one immutable value, replaced whole.

``RuntimeSettings`` holds what may change while the agent runs (SIGHUP, the ``set``
command): thresholds and filters, and per camera its zones, counting lines and tracking
settings. The pipeline keeps one reference and reads it once per batch; a reload builds a
new value and hands it over with ``Pipeline.apply`` (one assignment), so the publish
thread sees either the old settings or the new ones, never half of each. Every
``FrameResult`` carries the camera settings it was made with, so the sinks that draw zones
and lines (preview, annotated video) need no settings of their own.

Thresholds with tracking on: the tracker needs the weak boxes too (ByteTrack's second
association), so the decoder keeps boxes down to the lowest ``low_threshold`` of the
cameras that track (``decode``), and each camera then publishes only the boxes at or above
its own threshold (``publish_mask``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.config.schema import AgentConfig, CameraConfig
from agent.config.tracking import TrackingConfig
from agent.errors import ConfigError
from agent.inference.detector import postprocess_settings
from agent.inference.postprocess.postprocessor import PostprocessSettings
from agent.tracking.lines import CountingLine
from agent.tracking.settings import TrackingSettings
from agent.tracking.zones import ZoneFilter, zone_filters
from agent.types import Detections


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    """What one camera's results are made with after inference."""

    zones: Optional[ZoneFilter] = None
    lines: Tuple[CountingLine, ...] = ()
    tracking: TrackingSettings = dataclasses.field(default_factory=TrackingSettings)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    postprocess: PostprocessSettings = dataclasses.field(default_factory=PostprocessSettings)
    cameras: Mapping[str, CameraSettings] = dataclasses.field(default_factory=dict)

    def camera(self, name: str) -> CameraSettings:
        return self.cameras.get(name) or _NO_CAMERA_SETTINGS

    @property
    def tracking(self) -> bool:
        """Whether any camera tracks."""
        return any(c.tracking.enabled for c in self.cameras.values())

    @property
    def decode(self) -> PostprocessSettings:
        """The decoder's settings: ``postprocess`` with the confidence threshold lowered to the
        lowest ``low_threshold`` of the tracking cameras (their trackers need the weak boxes)."""
        lows = [c.tracking.low_threshold for c in self.cameras.values() if c.tracking.enabled]
        conf = min([self.postprocess.conf_threshold, *lows])
        if conf == self.postprocess.conf_threshold:
            return self.postprocess
        return dataclasses.replace(self.postprocess, conf_threshold=conf)

    def publish_mask(self, dets: Detections, class_names: Sequence[str]) -> np.ndarray:
        """Which boxes reach the subscribers: score >= ``conf_threshold`` (or the box class's
        own entry of ``class_thresholds``)."""
        limits = np.full(max(len(class_names), int(dets.class_ids.max(initial=-1)) + 1),
                         self.postprocess.conf_threshold, np.float32)
        for name, value in self.postprocess.class_thresholds.items():
            if name in class_names:
                limits[list(class_names).index(name)] = value
        return dets.scores >= limits[dets.class_ids] if len(dets) else np.zeros(0, bool)


_NO_CAMERA_SETTINGS = CameraSettings()


def tracking_for(top: TrackingConfig, camera: Optional[TrackingConfig], where: str) -> TrackingSettings:
    """One camera's tracking settings: defaults <- ``tracking:`` <- the camera's ``tracking:``.

    ``where`` names the camera's section in an error (``agent.yaml: cameras.1.tracking``).
    """
    merged = dict(top.overrides())
    if camera is not None:
        merged.update(camera.overrides())
    try:
        return TrackingSettings(**merged)
    except ConfigError as exc:
        raise ConfigError([f"{where}: {problem}" for problem in exc.problems]) from None


def runtime_settings(cfg: AgentConfig, class_names: Sequence[str], source: str = "config",
                     cameras: Optional[Sequence[CameraConfig]] = None) -> RuntimeSettings:
    """The settings of ``cfg`` for a model with ``class_names`` (zones and lines name classes).

    ``cameras`` (default ``cfg.cameras``): the camera configs to read zones, lines and tracking
    from. ``source`` names the file in errors (``ConfigError`` naming the key).
    """
    chosen = list(cfg.cameras if cameras is None else cameras)
    zones = zone_filters(chosen, class_names, source)
    out: Dict[str, CameraSettings] = {}
    for index, camera in enumerate(chosen):
        lines = tuple(CountingLine.from_mapping(line.as_mapping(), class_names,
                                                f"{source}: cameras.{index}.lines.{k}")
                      for k, line in enumerate(camera.lines))
        tracking = tracking_for(cfg.tracking, camera.tracking, f"{source}: cameras.{index}")
        out[camera.name] = CameraSettings(zones.get(camera.name), lines, tracking)
    return RuntimeSettings(postprocess_settings(cfg), out)


__all__ = ["CameraSettings", "RuntimeSettings", "runtime_settings", "tracking_for"]
