"""``--set KEY=VALUE`` overrides, applied to the parsed document before validation.

The value is read as one YAML value (18830 -> int, true -> bool, [1, 2] -> list); the key is a
dotted path with list indices (``cameras.0.source``); a problem is reported as
``--set KEY: message`` in the command line's order.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Union

import yaml

from agent.config.yamldoc import Builder, KeyPath, Problems, dotted, parse_value

_OVERRIDE_KEY = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")


def apply_override(data: Dict[str, Any], builder: Builder, item: str, problems: Problems) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    problems.override_rank.setdefault(key or item, len(problems.override_rank))
    if not sep or not _OVERRIDE_KEY.match(key):
        problems.at(key or item, (), "expected KEY=VALUE with a dotted key, e.g. mqtt.port=1883 "
                                     "or cameras.0.source=clip.mp4")
        return
    try:
        value = parse_value(text)
    except yaml.YAMLError as exc:
        problems.at(key, (), f"invalid value: {getattr(exc, 'problem', None) or exc}")
        return
    parts = key.split(".")
    node: Any = data
    path: KeyPath = ()
    for index, name in enumerate(parts):
        last = index == len(parts) - 1
        part: Union[str, int] = name
        if isinstance(node, list):
            if not name.isdigit():
                problems.at(key, (), f"{dotted(path)} is a list: expected an item number, not {name!r}")
                return
            part = int(name)
            if part > len(node):
                problems.at(key, (), f"{dotted(path)} has {len(node)} item(s): use an index up to "
                                     f"{len(node) - 1}, or {len(node)} to append one")
                return
            if part == len(node):
                node.append(None)
        elif name not in node:
            node[name] = None
        child = node[part]
        path = (*path, part)
        if not last and child is not None and not isinstance(child, (dict, list)):
            problems.at(key, (), f"{dotted(path)} is a single value, not a mapping or list")
            return
        if last or child is None:
            # Replacing a value (or creating a container) hides whatever the file said under it.
            for stale in [p for p in builder.origins if p[:len(path)] == path]:
                del builder.origins[stale]
            for stale in [p for p in builder.env_problems if p[:len(path)] == path]:
                del builder.env_problems[stale]
            builder.origins[path] = key
        if last:
            node[part] = value
        elif child is None:
            node[part] = [] if parts[index + 1].isdigit() else {}
        node = node[part]
