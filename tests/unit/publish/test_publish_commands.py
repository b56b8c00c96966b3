"""Command validation and dispatch: every malformed input is an answer, never an exception,
and the parser agrees with schemas/command.schema.json."""

import json
from pathlib import Path

import jsonschema
import pytest

from agent.publish.commands import CommandError, Commands, parse, request_id, response_topic_allowed

CAMERAS = ["front", "back"]
NAMES = ["person", "car", "dog"]
SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas/command.schema.json").read_text())


def run(name, body, max_payload=4096):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse(name, payload, cameras=CAMERAS, class_names=NAMES, max_payload=max_payload)


def test_valid_commands():
    assert run("pause", b"{}") == {}
    assert run("pause", {"camera": "front", "id": "x"}) == {"camera": "front"}
    assert run("resume", {"camera": None}) == {}
    assert run("snapshot", b" {} ") == {}
    both = {"conf_threshold": 1.0, "iou_threshold": 0.0}
    assert run("set", {"conf_threshold": 1, "iou_threshold": 0.0}) == both
    assert run("set", {"classes": ["dog", "dog", "car"]}) == {"classes": ["dog", "car"]}
    assert run("set", {"classes": None}) == {"classes": None}


@pytest.mark.parametrize("name, body, fragment", [
    ("reboot", {}, "unknown command 'reboot'"),
    ("set", b"{bad", "not valid UTF-8 JSON"),
    ("set", b"\xff\xfe", "not valid UTF-8 JSON"),
    ("set", b"x" * 5000, "over the 4096-byte limit"),
    ("set", [1], "must be a JSON object, got list"),
    ("set", "text", "must be a JSON object, got str"),
    ("set", {}, "at least one of"),
    ("set", {"camera": "front"}, "at least one of"),
    ("set", {"conf_threshold": "0.5"}, "must be a number from 0 to 1"),
    ("set", {"conf_threshold": True}, "must be a number from 0 to 1"),
    ("set", {"conf_threshold": -0.1}, "must be a number from 0 to 1"),
    ("set", {"iou_threshold": 1.01}, "must be a number from 0 to 1"),
    ("set", {"classes": []}, "non-empty list"),
    ("set", {"classes": ["person", 3]}, "non-empty list"),
    ("set", {"classes": ["unicorn"]}, "unknown class name(s): \"unicorn\""),
    ("set", {"threshold": 0.5}, "unknown key(s) for set: threshold"),
    ("pause", {"camera": "garage"}, "camera must be one of: front, back"),
    ("pause", {"camera": 1}, "camera must be one of"),
    ("pause", {"conf_threshold": 0.3}, "unknown key(s) for pause"),
])
def test_invalid_commands_say_what_is_wrong(name, body, fragment):
    with pytest.raises(CommandError) as info:
        run(name, body)
    assert fragment in str(info.value)


def test_nesting_past_the_recursion_limit_is_refused_not_raised():
    with pytest.raises(CommandError, match="not valid UTF-8 JSON"):
        run("set", b"[" * 5000 + b"]" * 5000, max_payload=10**6)


def test_nan_is_refused():
    with pytest.raises(CommandError, match="from 0 to 1"):
        run("set", b'{"conf_threshold": NaN}')


@pytest.mark.parametrize("body, accepted", [
    ({"conf_threshold": 0.3}, True), ({"iou_threshold": 0.6, "camera": "back", "id": 3}, True),
    ({"classes": ["car"]}, True), ({"classes": None}, True), ({}, False), ({"conf_threshold": 2}, False),
    ({"classes": []}, False), ({"colour": 1}, False), ({"conf_threshold": "x"}, False),
])
def test_parser_and_json_schema_agree(body, accepted):
    schema = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/set"}
    valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        run("set", body)
        parsed = True
    except CommandError:
        parsed = False
    assert valid == parsed == accepted


def test_request_id_is_read_even_from_a_refused_command():
    assert request_id(b'{"id": "abc", "bogus": 1}', 4096) == "abc"
    assert request_id(b'{"id": 12}', 4096) == 12
    assert request_id(b'{"id": true}', 4096) is None
    assert request_id(b'{"id": "' + b"x" * 200 + b'"}', 4096) is None
    assert request_id(b"not json", 4096) is None
    assert request_id(b'{"id": "a"}' + b" " * 100, 50) is None  # too large to even look at


def test_dispatch_outcomes():
    commands = Commands(CAMERAS, NAMES, 4096)
    seen = []
    commands.register("pause", lambda args: seen.append(args) or {"paused": True})
    commands.register("resume", lambda args: 42)

    def refuse(args):
        raise CommandError("not now")

    def crash(args):
        raise ZeroDivisionError("boom")

    commands.register("snapshot", refuse)
    commands.register("set", crash)
    assert commands.handle("pause", b'{"camera": "back"}') == {"ok": True, "result": {"paused": True}}
    assert seen == [{"camera": "back"}]
    assert commands.handle("resume", b"{}") == {"ok": True, "result": {"value": 42}}
    assert commands.handle("snapshot", b"{}") == {"ok": False, "error": "not now"}
    crashed = commands.handle("set", b'{"conf_threshold": 0.2}')
    assert not crashed["ok"] and "ZeroDivisionError: boom" in crashed["error"]
    retained = commands.handle("pause", b"{}", retained=True)
    assert not retained["ok"] and "retained" in retained["error"] and len(seen) == 1
    assert (commands.handled, commands.failed) == (2, 3)


def test_unregistered_and_unknown():
    commands = Commands(CAMERAS, NAMES, 4096)
    assert commands.handle("pause", b"{}") == {"ok": False, "error": "pause is not available in this agent"}
    assert "unknown command" in commands.handle("../../etc", b"{}")["error"]
    with pytest.raises(ValueError):
        commands.register("reboot", lambda args: None)


@pytest.mark.parametrize("payload", [b"", b"  ", b"\n"])
def test_an_empty_message_is_not_a_command(payload):
    # An empty retained publish is how a retained command is cleared; it must never pause.
    commands = Commands(CAMERAS, NAMES, 4096)
    seen = []
    commands.register("pause", seen.append)
    outcome = commands.handle("pause", payload)
    assert not outcome["ok"] and "an empty message is not a command" in outcome["error"]
    assert seen == [] and commands.failed == 1


def test_a_refusal_from_the_transport_stops_the_command():
    commands = Commands(CAMERAS, NAMES, 4096)
    seen = []
    commands.register("pause", seen.append)
    outcome = commands.handle("pause", b"{}", refusal="response topic 'x' is not allowed")
    assert outcome == {"ok": False, "error": "response topic 'x' is not allowed"} and seen == []


RESULT = "detection-agent/box-1/cmd/result"


@pytest.mark.parametrize("topic, prefix, allowed", [
    (RESULT, None, True),
    (RESULT + "/ops-console-7", None, True),
    ("detection-agent/box-1/cmd/resultx", None, False),
    ("detection-agent/box-1/status", None, False),  # the agent's own retained status
    ("detection-agent/box-2/cmd/result", None, False),  # another device's answers
    ("evil/injected", None, False),
    ("replies/me", None, False),
    ("replies/me", "replies", True),
    ("replies", "replies", False),
    ("repliesX/me", "replies", False),
    ("site/a/replies/x", "site/a/replies", True),
    (RESULT + "/+", None, False),
    ("replies/#", "replies", False),
    ("", "replies", False),
])
def test_response_topics_are_limited_to_the_devices_own_or_a_configured_prefix(topic, prefix, allowed):
    assert response_topic_allowed(topic, RESULT, prefix) is allowed
