"""events/1 and counts/1: their examples, and what the engine really produces, validate;
detections/1 accepts the optional track_id."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from agent.errors import ConfigError
from agent.tracking import CountingLine, EventEngine, TrackingSettings
from agent.tracking.zones import Zone, ZoneFilter
from agent.types import Detections

ROOT = Path(__file__).resolve().parents[3]
PUBLISHER_KEYS = {"device": "jetson-01", "camera": "door", "run": "20260501T081500Z-3f9a2c"}


def validator(name):
    schema = json.loads((ROOT / f"schemas/{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema), schema


@pytest.mark.parametrize("name", ["events", "counts"])
def test_the_schema_examples_validate(name):
    check, schema = validator(name)
    assert schema["examples"]
    for example in schema["examples"]:
        check.validate(example)


def test_every_kind_of_event_the_engine_makes_validates():
    check, _ = validator("events")
    counts_check, _ = validator("counts")
    zone = Zone("porch", np.array([[0, 240], [640, 240], [640, 480], [0, 480]], np.float64), False,
                "bottom_center", None)
    line = CountingLine("door", (0.0, 300.0), (640.0, 300.0))
    settings = TrackingSettings(enabled=True, stationary_after_s=0.5, update_interval_s=1.0)
    engine = EventEngine(settings, ["person"], ["porch"], [line])
    zones = ZoneFilter([zone])
    events, counts = [], []
    for k in range(60):
        y = 100 + 6 * k if k < 40 else 340  # walks down across the porch edge and the line, then stops
        d, z = zones.apply(Detections(np.array([[300, y - 60, 340, y]], np.float32), np.array([0.8]),
                                      np.array([0])), 640, 480)
        result = engine.update(d, z, k, 1777623300.0 + k / 15, 640, 480)
        events += result.events
        counts.append(result.counts)
    events += engine.finish(60, 1777623304.0).events
    kinds = {e["type"] for e in events}
    assert kinds == {"track_start", "track_update", "track_end", "zone_enter", "zone_exit", "line_cross"}
    for seq, event in enumerate(events, 1):
        check.validate({"schema": "events/1", **PUBLISHER_KEYS, "seq": seq, **event})
    for c in counts:
        counts_check.validate({"schema": "counts/1", **PUBLISHER_KEYS, "ts": 1777623304.0, **c})


def test_detections_carry_an_optional_track_id():
    check, _ = validator("detections")
    message = {"schema": "detections/1", **PUBLISHER_KEYS, "seq": 1, "frame": 0, "skipped": 0, "ts": 1.0,
               "width": 640, "height": 480, "model": "m", "latency_ms": {},
               "detections": [{"label": "person", "class_id": 0, "score": 0.9, "box": [1, 2, 3, 4]}]}
    check.validate(message)
    for track_id in (7, None):
        message["detections"][0]["track_id"] = track_id
        check.validate(message)
    for bad in (0, "7", 1.5):
        message["detections"][0]["track_id"] = bad
        with pytest.raises(jsonschema.ValidationError):
            check.validate(message)


def test_settings_name_every_bad_value():
    with pytest.raises(ConfigError) as err:
        TrackingSettings(high_threshold=0.2, low_threshold=0.3, match_iou=1.5, lost_after_s=0, min_hits=0,
                         zone_inertia=2.5)
    text = str(err.value)
    for key in ("tracking.low_threshold", "tracking.match_iou", "tracking.lost_after_s", "tracking.min_hits",
                "tracking.zone_inertia"):
        assert key in text
    assert TrackingSettings().problems() == []
