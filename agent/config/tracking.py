"""Config sections for tracking: ``tracking:`` (top level, and per camera) and ``cameras[].lines``.

Every ``tracking:`` key is optional: the top-level section overrides the defaults of
``agent.tracking.settings.TrackingSettings``, a camera's own ``tracking:`` overrides the
top level for that camera (``agent.runtime.settings.tracking_for``). Cross-field checks
(``low_threshold`` <= ``high_threshold``) run on the merged value, so a camera that only
lowers ``high_threshold`` below the top level's ``low_threshold`` is caught too, naming it.

Counting lines name model classes, which only the loaded model knows: their shape is
checked here, their classes when the model is loaded (``CountingLine.from_mapping``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrackingConfig(BaseModel):
    """``tracking:``; None everywhere means "as the level above" (top level: the defaults)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: Optional[bool] = None  # default false
    high_threshold: Optional[float] = Field(None, ge=0, le=1)  # default 0.25
    low_threshold: Optional[float] = Field(None, ge=0, le=1)  # default 0.1
    match_iou: Optional[float] = Field(None, ge=0, le=1)  # default 0.2
    lost_after_s: Optional[float] = Field(None, gt=0, le=3600)  # seconds; default 1.0
    min_hits: Optional[int] = Field(None, ge=1, le=1000)  # matched frames before a track is announced; 3
    stationary_iou: Optional[float] = Field(None, ge=0, le=1)  # default 0.9
    stationary_after_s: Optional[float] = Field(None, gt=0, le=86400)  # default 5.0
    update_interval_s: Optional[float] = Field(None, gt=0, le=86400)  # default 60
    zone_inertia: Optional[int] = Field(None, ge=1, le=1000)  # frames; default 3
    duplicate_iou: Optional[float] = Field(None, ge=0, le=1)  # default 0.7
    line_margin: Optional[float] = Field(None, ge=0, le=1)  # default 0.1

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        return {} if data is None else data

    def overrides(self) -> Dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class LineConfig(BaseModel):
    """``cameras[].lines[]``: a named counting line A->B (see agent/tracking/lines.py)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(min_length=1)
    points: List[Tuple[float, float]] = Field(min_length=2, max_length=2)  # [[x1, y1], [x2, y2]]
    units: Literal["pixels", "fraction"] = "pixels"
    anchor: Literal["bottom_center", "center"] = "bottom_center"
    classes: Optional[List[str]] = Field(None, min_length=1)  # None: every class

    def as_mapping(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "points": [list(p) for p in self.points],
                               "units": self.units, "anchor": self.anchor}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out


__all__ = ["LineConfig", "TrackingConfig"]
