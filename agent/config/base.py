"""What every config section shares: the strict base model, cross-field errors, and the
readers of sizes, durations and MQTT topic levels.

Types come from ``typing`` (not ``list[int]`` / ``X | None``) because pydantic evaluates
them at run time and the agent must run on Python 3.8 (JetPack 5).
"""

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

#: What ``resolved_yaml`` and any JSON dump of the config print instead of a secret.
MASK = "***"

# One MQTT topic level: no separator, no wildcards, no whitespace (it would work but breaks
# every shell script that subscribes to it).
_TOPIC_LEVEL = re.compile(r"^[^/+#\s\x00]+$")
# user:password@ inside a URL, masked when the config is printed.
_URL_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)[^@/]*@")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def conflict(field: str, message: str) -> PydanticCustomError:
    """A cross-field error to raise from a model validator.

    Pydantic puts model-validator errors at the model's own location; ``field`` (dotted,
    relative to the model) lets the loader report the key the user has to change instead.
    """
    return PydanticCustomError("conflict", message, {"field": field})


def topic_level(value: str, what: str) -> str:
    if not _TOPIC_LEVEL.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in an MQTT topic: "
                         "use letters, digits, '-' or '_' (no '/', '+', '#' or spaces)")
    return value


def number_to_str(value: Any) -> Any:
    # YAML reads ``protocol: 5`` and ``min_version: 1.2`` as numbers; the schema wants text.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def loose_text(value: Any) -> Any:
    # ``password: ${MQTT_PASSWORD:-}`` yields "" when the variable is unset: that means "none";
    # an unquoted numeric password or user name arrives as a number.
    if value == "":
        return None
    return number_to_str(value)


def parse_size(value: Any) -> Any:
    """``"100MB"`` -> 100000000, ``"64MiB"`` -> 67108864; other values pass through."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"cannot read {value!r} as a size; write bytes (1048576) or 100MB, 64MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_duration(value: Any) -> Any:
    """``"7d"`` -> 604800.0, ``"90m"`` -> 5400.0, ``"30s"`` -> 30.0; other values pass through."""
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"cannot read {value!r} as a duration; write seconds (3600) or 30s, 90m, 12h, 7d")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]


def mask_url(url: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://user:***@cam/stream``."""
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", url)


class StrictModel(BaseModel):
    """Common settings: unknown keys are errors; assignments at run time are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null: treat it as {}.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if data.get(name, {}) is None and isinstance(field.annotation, type) \
                        and issubclass(field.annotation, BaseModel):
                    data = {**data, name: {}}
        return data
