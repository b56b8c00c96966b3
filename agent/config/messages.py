"""Validation errors -> problem lines a user can act on: the key's line, what is wrong, and
for an unknown key the closest valid one. Secrets are never echoed back.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional, Type, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from agent.config.base import MASK, mask_url
from agent.config.yamldoc import Builder, KeyPath, Problems, origin_of

# Keys whose values are never echoed back in an error message.
_SECRET_KEYS = frozenset({"password"})


def model_at(schema: Type[BaseModel], path: KeyPath) -> Optional[Type[BaseModel]]:
    """The model class that validates the mapping at ``path``, or None."""
    current: Any = schema
    for part in path:
        if get_origin(current) is Union:  # Optional[X]
            current = next(arg for arg in get_args(current) if arg is not type(None))
        if isinstance(part, int) and get_origin(current) is list:
            current = get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def message_for(schema: Type[BaseModel], error: Mapping[str, Any], path: KeyPath) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        model = model_at(schema, path[:-1])
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        return f"unknown key; expected one of: {', '.join(allowed)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {show_value(value, path)}"
    if kind == "list_type":
        return f"expected a list, got {show_value(value, path)}"
    message = str(error["msg"])
    if message.startswith("Value error, "):  # our validators' ValueErrors carry their own wording
        return message[len("Value error, "):]
    if kind == "conflict":
        return message
    if message.startswith("Input "):
        message = "i" + message[1:]
    if not isinstance(value, (dict, list)):
        message += f" (got {show_value(value, path)})"
    return message


def show_value(value: Any, path: KeyPath) -> str:
    if path and path[-1] in _SECRET_KEYS:
        return MASK
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def report_errors(schema: Type[BaseModel], exc: ValidationError, builder: Builder,
                  problems: Problems) -> None:
    """One problem line per validation error, at the line where the key (or its section) was written."""
    for error in exc.errors():
        path: KeyPath = tuple(error["loc"])
        if error["type"] == "conflict":  # a cross-field check names the key to change
            extra = str(error.get("ctx", {}).get("field", ""))
            path += tuple(int(p) if p.isdigit() else p for p in extra.split(".") if p)
        if any(path[:len(p)] == p for p in builder.env_problems):
            continue  # the unset variable is the problem; its raw "${...}" text would only add noise
        problems.at(origin_of(builder, path), path, message_for(schema, error, path))
