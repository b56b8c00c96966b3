"""Commands in over MQTT: ``{prefix}/{device}/cmd/{name}``, answered on ``cmd/result``.

Enabled with ``mqtt.commands.enabled`` (off by default). The body is a JSON object (``{}``
for no arguments); every command accepts an optional ``id`` (string or integer, echoed in
the answer) and ``camera`` (one camera; absent: all cameras). An empty message is not a
command: it is how a retained message is cleared, and must never pause anything.

============  =====================================================================
name          body
============  =====================================================================
pause         ``{"camera"?}``: stop publishing detections (inference may go on)
resume        ``{"camera"?}``
snapshot      ``{"camera"?}``: publish a JPEG with boxes to ``{camera}/snapshot``
set           ``{"conf_threshold"?: 0..1, "iou_threshold"?: 0..1, "classes"?: [names] | null}``
reset_counts  ``{"camera"?}``: counting lines back to 0 (tracking on); ``counts`` is republished
============  =====================================================================

Validation happens here, so the pipeline's callbacks only ever see well-formed
arguments. A malformed body (bad JSON, wrong types, too large, unknown keys, empty), an
unknown name, a retained message, a response topic outside the allowed ones
(``response_topic_allowed``), or a callback that raises is answered with ``"ok": false``
and an ``error`` and logged; nothing a sender does can stop the agent.

The pipeline registers one callback per command::

    publisher.commands.register("pause", lambda args: pipeline.pause(args.get("camera")))

A callback gets the validated arguments (without ``id``) and returns a dict for the
answer's ``result`` (or None); raising ``CommandError`` refuses the command with its
message. Callbacks run on the commands thread, never on the network or sender thread.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any, Callable, Dict, Optional, Sequence

log = logging.getLogger(__name__)

NAMES = ("pause", "resume", "snapshot", "set", "reset_counts")
_COMMON = ("id", "camera")
_KEYS = {
    "pause": _COMMON,
    "resume": _COMMON,
    "snapshot": _COMMON,
    "set": (*_COMMON, "conf_threshold", "iou_threshold", "classes"),
    "reset_counts": _COMMON,
}

Callback = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]


class CommandError(Exception):
    """A command refused: its message becomes the answer's ``error``."""


def parse(name: str, payload: bytes, *, cameras: Sequence[str], class_names: Sequence[str],
          max_payload: int) -> Dict[str, Any]:
    """The validated arguments of command ``name``; ``CommandError`` says what is wrong."""
    if name not in _KEYS:
        raise CommandError(f"unknown command {name[:64]!r}; expected one of: {', '.join(NAMES)}")
    if len(payload) > max_payload:
        raise CommandError(f"payload of {len(payload)} bytes is over the {max_payload}-byte limit "
                           "(mqtt.commands.max_payload)")
    if not payload.strip():
        raise CommandError("an empty message is not a command (empty retained messages clear retained "
                           "ones); send {} for a command without arguments")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandError(f"body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(_KEYS[name]))
    if unknown:
        raise CommandError(f"unknown key(s) for {name}: {', '.join(k[:32] for k in unknown)}; "
                           f"expected: {', '.join(_KEYS[name])}")
    args: Dict[str, Any] = {}
    if "camera" in body and body["camera"] is not None:
        camera = body["camera"]
        if not isinstance(camera, str) or camera not in cameras:
            raise CommandError(f"camera must be one of: {', '.join(cameras)}; got {_short(camera)}")
        args["camera"] = camera
    if name == "set":
        for key in ("conf_threshold", "iou_threshold"):
            if key in body:
                args[key] = _unit_float(key, body[key])
        if "classes" in body:
            args["classes"] = _classes(body["classes"], class_names)
        if not set(args) - {"camera"}:
            raise CommandError("set needs at least one of: conf_threshold, iou_threshold, classes")
    return args


def response_topic_allowed(topic: str, result_topic: str, prefix: Optional[str]) -> bool:
    """Whether an MQTT 5 response topic may receive an answer: the device's own ``cmd/result``
    or a topic under it, or a topic under the configured ``prefix``. Anything else would let
    whoever may publish a command make the agent publish anywhere its credentials allow."""
    if not topic or set(topic) & {"+", "#", "\x00"}:
        return False
    if topic == result_topic or topic.startswith(result_topic + "/"):
        return True
    if not prefix:
        return False
    return topic.startswith(f"{prefix}/") and len(topic) > len(prefix) + 1


def request_id(payload: bytes, max_payload: int) -> Any:
    """The ``id`` of a command body, when one can be read (also from an invalid command)."""
    if len(payload) > max_payload:
        return None
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(body, dict):
        value = body.get("id")
        if isinstance(value, str) and len(value) <= 128:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _unit_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise CommandError(f"{key} must be a number from 0 to 1, got {_short(value)}")
    return float(value)


def _classes(value: Any, class_names: Sequence[str]) -> Optional[list]:
    if value is None:
        return None  # no filter: every class
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise CommandError(f"classes must be a non-empty list of class names or null, got {_short(value)}")
    if class_names:
        unknown = [v for v in value if v not in class_names]
        if unknown:
            raise CommandError(f"unknown class name(s): {', '.join(_short(v) for v in unknown[:5])}")
    return list(dict.fromkeys(value))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Commands:
    """Validates commands and runs the pipeline's callbacks for them."""

    def __init__(self, cameras: Sequence[str], class_names: Sequence[str], max_payload: int) -> None:
        self.cameras = list(cameras)
        self.class_names = list(class_names)
        self.max_payload = max_payload
        self._callbacks: Dict[str, Callback] = {}
        self._lock = threading.Lock()
        self.handled = 0
        self.failed = 0

    def register(self, name: str, callback: Callback) -> None:
        """Run ``callback(args)`` for command ``name`` (one of ``NAMES``)."""
        if name not in _KEYS:
            raise ValueError(f"unknown command {name!r}; expected one of: {', '.join(NAMES)}")
        with self._lock:
            self._callbacks[name] = callback

    def handle(self, name: str, payload: bytes, retained: bool = False,
               refusal: Optional[str] = None) -> Dict[str, Any]:
        """Run one command; returns ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``.

        ``refusal``: a reason found by the caller (the transport) not to run it at all.
        """
        try:
            if retained:
                raise CommandError("retained commands are ignored (they would run again on every "
                                   "reconnect); publish commands with retain=false")
            if refusal:
                raise CommandError(refusal)
            args = parse(name, payload, cameras=self.cameras, class_names=self.class_names,
                         max_payload=self.max_payload)
            with self._lock:
                callback = self._callbacks.get(name)
            if callback is None:
                raise CommandError(f"{name} is not available in this agent")
            result = callback(args)
            if result is not None and not isinstance(result, dict):
                result = {"value": result}
        except CommandError as exc:
            self.failed += 1
            log.warning("command %s refused: %s", name[:64], exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a pipeline callback failed: answer, log, keep running
            self.failed += 1
            log.exception("command %s failed", name[:64])
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        self.handled += 1
        log.info("command %s done: %s", name, args)
        return {"ok": True, "result": result or {}}


__all__ = ["NAMES", "Callback", "CommandError", "Commands", "parse", "request_id", "response_topic_allowed"]
