"""Home Assistant MQTT discovery (``mqtt.homeassistant.enabled``).

On every connect the publisher sends these retained configs, so the device appears in
Home Assistant with

- a connectivity binary sensor fed by the retained ``status`` topic (online / offline,
  the last will included), and
- per camera and class, a sensor counting that class's objects in the latest detections
  message (``state_class: measurement``), and
- with tracking on, per counting line an ``in`` and an ``out`` total and per zone its
  occupancy, read from the retained ``counts`` topic (``counting``: what the camera's
  ``lines`` and ``zones`` are called).

Every entity uses ``status`` as its availability topic, so the counts show "unavailable"
while the agent is offline instead of a stale number. With ``skip_empty`` a count keeps
its last value until the next published frame (documented in docs/mqtt.md).
"""

from __future__ import annotations

import logging
import re
from typing import List, Mapping, Optional, Sequence, Tuple

from agent.publish.payloads import Topics, encode

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def slug(text: str) -> str:
    """``traffic light`` -> ``traffic_light``: what discovery allows in object ids."""
    return _UNSAFE.sub("_", text).strip("_") or "x"


def discovery_messages(*, discovery_prefix: str, topics: Topics, device_id: str, cameras: Sequence[str],
                       classes: Sequence[str], model: str, version: str,
                       location: Optional[str] = None,
                       counting: Optional[Mapping[str, Tuple[Sequence[str], Sequence[str]]]] = None
                       ) -> List[Tuple[str, bytes]]:
    """(topic, payload) of every discovery config, to publish retained.

    ``counting``: per tracking camera, (its line names, its zone names): sensors on ``counts``.
    """
    node = slug(f"detection_agent_{device_id}")
    device = {
        "identifiers": [node],
        "name": f"detection-agent {device_id}",
        "manufacturer": "detection-agent",
        "model": model,
        "sw_version": version,
    }
    if location:
        device["suggested_area"] = location
    availability = {"availability_topic": topics.status, "payload_available": "online",
                    "payload_not_available": "offline"}
    out: List[Tuple[str, bytes]] = [(
        f"{discovery_prefix}/binary_sensor/{node}/online/config",
        encode({
            "name": "Online",
            "unique_id": f"{node}_online",
            "object_id": f"{node}_online",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.status,
            "payload_on": "online",
            "payload_off": "offline",
            "device": device,
        }),
    )]
    for camera in cameras:
        for label in classes:
            object_id = f"{node}_{slug(camera)}_{slug(label)}"
            # Count with a namespace loop: Jinja's selectattr works too, but this form also
            # runs on Home Assistant releases whose sandbox lacks it.
            template = ("{% set ns = namespace(n=0) %}{% for d in value_json.detections %}"
                        f"{{% if d.label == {label!r} %}}{{% set ns.n = ns.n + 1 %}}{{% endif %}}"
                        "{% endfor %}{{ ns.n }}")
            out.append((
                f"{discovery_prefix}/sensor/{node}/{slug(camera)}_{slug(label)}/config",
                encode({
                    "name": f"{camera} {label} count",
                    "unique_id": object_id,
                    "object_id": object_id,
                    "state_topic": topics.detections(camera),
                    "value_template": template,
                    "unit_of_measurement": "objects",
                    "state_class": "measurement",
                    "icon": "mdi:counter",
                    "device": device,
                    **availability,
                }),
            ))
    for camera, (lines, zones) in (counting or {}).items():
        sensors = [(f"line {line} {direction}", f"{slug(line)}_{direction}", "total_increasing",
                    f"{{{{ value_json.lines[{line!r}].{direction} }}}}")
                   for line in lines for direction in ("in", "out")]
        sensors += [(f"zone {zone} occupancy", f"zone_{slug(zone)}", "measurement",
                     f"{{{{ value_json.zones[{zone!r}].total }}}}") for zone in zones]
        for name, key, state_class, template in sensors:
            object_id = f"{node}_{slug(camera)}_{key}"
            out.append((
                f"{discovery_prefix}/sensor/{node}/{slug(camera)}_{key}/config",
                encode({
                    "name": f"{camera} {name}",
                    "unique_id": object_id,
                    "object_id": object_id,
                    "state_topic": topics.counts(camera),
                    "value_template": template,
                    "unit_of_measurement": "objects",
                    "state_class": state_class,  # line totals only grow, until a reset_counts
                    "icon": "mdi:counter",
                    "device": device,
                    **availability,
                }),
            ))
    return out


def chosen_classes(configured: Optional[Sequence[str]], inference_classes: Optional[Sequence[str]],
                   model_classes: Sequence[str]) -> List[str]:
    """Classes that get a count sensor: the configured list, else the inference filter, else all."""
    classes = list(configured or inference_classes or model_classes)
    if len(classes) > 20:
        log.warning("Home Assistant discovery: %d count sensors per camera; set mqtt.homeassistant.classes "
                    "to the classes you care about", len(classes))
    return classes


__all__ = ["chosen_classes", "discovery_messages", "slug"]
