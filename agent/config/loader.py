"""Load the agent's YAML configuration into ``AgentConfig``, with errors a user can act on.

``load()`` reports every problem at once, one line each, ``FILE:LINE: key.path: message``,
so an editor can jump to it. To know lines, the YAML is composed into nodes and turned into
plain data here (not by PyYAML's constructor), which also lets us

- reject duplicate keys (PyYAML keeps the last one silently),
- keep keys as written (``on:`` stays "on", not True),
- substitute ``${VAR}`` / ``${VAR:-default}`` inside string values, ``$$`` for a literal
  ``$``, after parsing, so lines stay right and YAML syntax in a secret cannot break the file,
- cap what aliases expand to (``MAX_ALIAS_NODES``): a few lines of nested aliases (a "billion
  laughs" file) would otherwise take minutes and gigabytes to build.

Files the agent reads at start (MQTT password and TLS files) are checked here too, so
``check-config`` (the unit's ExecStartPre) refuses a config that ``run`` would refuse.

``--set a.b=value`` overrides are applied to that data before validation; a problem they
cause is reported as ``--set a.b: message``. The schema itself is in ``agent.config.schema``.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.schema import (
    MASK,
    AgentConfig,
    CameraConfig,
    CommandsConfig,
    CsiOptions,
    DeviceConfig,
    HomeAssistantConfig,
    InferenceConfig,
    LoggingConfig,
    ModelConfig,
    MqttConfig,
    RtspOptions,
    ServiceConfig,
    SnapshotConfig,
    SpoolConfig,
    TlsConfig,
    TopicQosConfig,
    mask_url,
)
from agent.errors import ConfigError

__all__ = [
    "MASK", "AgentConfig", "CameraConfig", "CommandsConfig", "CsiOptions", "DeviceConfig",
    "HomeAssistantConfig", "InferenceConfig", "LoggingConfig", "ModelConfig", "MqttConfig",
    "RtspOptions", "ServiceConfig", "SnapshotConfig", "SpoolConfig", "TlsConfig", "TopicQosConfig",
    "load", "load_text", "resolved_yaml",
]

#: The pydantic model a file is validated against (AgentConfig, or e.g. a training recipe).
Schema = TypeVar("Schema", bound=BaseModel)

KeyPath = Tuple[Union[str, int], ...]
# Where a value came from: a line of the file (int) or the key of a --set override (str).
Origin = Union[int, str]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR_REF = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
# Keys whose values are never echoed back in an error message.
_SECRET_KEYS = frozenset({"password"})
#: Nodes that may be built again through aliases, all aliases together. Real configs repeat a
#: few dozen (shared camera settings); an alias bomb needs millions.
MAX_ALIAS_NODES = 10000


def dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path)


class _Problems:
    """Problem lines, sorted by file line at the end (overrides after the file's problems)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self._items: List[Tuple[int, int, str]] = []
        self.override_rank: Dict[str, int] = {}  # --set problems keep the command line's order

    def at(self, origin: Origin, path: KeyPath, message: str) -> None:
        if isinstance(origin, str):  # from --set KEY
            key = "" if dotted(path) in ("", origin) else f"{dotted(path)}: "
            rank = self.override_rank.get(origin, len(self.override_rank))
            self._items.append((1, rank, f"--set {origin}: {key}{message}"))
        else:
            key = f"{dotted(path)}: " if path else ""
            self._items.append((0, origin, f"{self.filename}:{origin}: {key}{message}"))

    def lines(self) -> List[str]:
        return [text for _, _, text in sorted(self._items, key=lambda item: item[:2])]

    def __bool__(self) -> bool:
        return bool(self._items)


class _Loader(yaml.SafeLoader):
    """Composes nodes only; ``_Builder`` turns them into data."""


class _Builder:
    """Turns a YAML node tree into dicts, lists and scalars, recording each key's line."""

    def __init__(self, loader: _Loader, problems: _Problems, environ: Optional[Mapping[str, str]]) -> None:
        self.loader = loader
        self.problems = problems
        self.environ = environ  # None: no substitution (override values)
        self.origins: Dict[KeyPath, Origin] = {(): 1}
        # Substitution failures, kept apart so an override of that key can cancel them.
        self.env_problems: Dict[KeyPath, Tuple[int, str]] = {}
        self._stack: List[int] = []
        self._built: Set[int] = set()  # ids of nodes built once; meeting one again is an alias
        self._repeats = 0

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self._stack:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        if id(node) in self._built:
            self._repeats += 1
            if self._repeats > MAX_ALIAS_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"aliases expand to more than {MAX_ALIAS_NODES} repeated values "
                    "(nested aliases multiply; write the values out)", node.start_mark)
        else:
            self._built.add(id(node))
        self._stack.append(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.origins[(*path, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*path, index)))
                return items
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str) and node.tag == _STR_TAG and self.environ is not None:
                value = self._substitute(value, node.start_mark.line + 1, path)
            return value
        finally:
            self._stack.pop()

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> Dict[str, Any]:
        first_line: Dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.at(line, path, "keys must be plain names, not lists or mappings")
            elif key_node.value in first_line:
                self.problems.at(line, (*path, key_node.value),
                                 f"duplicate key (first set on line {first_line[key_node.value]})")
            else:
                first_line[key_node.value] = line
        self.loader.flatten_mapping(node)  # resolves "<<: *anchor" merges; later keys win
        result: Dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                self.origins[child] = key_node.start_mark.line + 1
                result[key_node.value] = self.build(value_node, child)
        return result

    def _substitute(self, text: str, line: int, path: KeyPath) -> str:
        environ = self.environ or {}
        errors: List[str] = []

        def replace(match: re.Match) -> str:
            if match.group(1):
                return "$"
            if match.group(3):
                errors.append("'${' without a closing '}'; write $$ for a literal '$'")
                return match.group(0)
            name, sep, default = match.group(2).partition(":-")
            if not _VAR_NAME.match(name):
                errors.append(f"bad variable reference '{match.group(0)}': expected ${{NAME}} or "
                              "${NAME:-default}")
                return match.group(0)
            value = environ.get(name)
            if sep and not value:  # like the shell: the default also replaces an empty value
                return default
            if value is None:
                errors.append(f"environment variable {name} is not set "
                              f"(write ${{{name}:-default}} to make it optional)")
                return match.group(0)
            return value

        result = _VAR_REF.sub(replace, text)
        if errors:
            self.env_problems[path] = (line, "; ".join(errors))
        return result


def _parse(text: str, filename: str, environ: Optional[Mapping[str, str]],
           problems: _Problems, schema: Type[BaseModel]) -> Tuple[Dict[str, Any], _Builder]:
    loader = _Loader(text)
    builder = _Builder(loader, problems, environ)
    try:
        node = loader.get_single_node()
        data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = exc.problem or exc.context or "cannot parse"
        if exc.context and exc.context_mark and exc.problem:
            detail += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise ConfigError([f"{filename}:{line}: invalid YAML: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}:1: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    if data is None and schema is not AgentConfig:
        data = {}  # other files (training recipes) may rely on defaults throughout
    if data is None:
        raise ConfigError([f"{filename}:1: the file is empty; expected a mapping with at least "
                           "'cameras:' and 'model:' (see configs/agent.yaml)"])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the value {data!r}"
        raise ConfigError([f"{filename}:1: the top level must be a mapping of sections "
                           f"(device, cameras, model, ...), not {kind}"])
    return data, builder


def _parse_value(text: str) -> Any:
    """An override's value, read as one YAML value: 18830 -> int, true -> bool, [1, 2] -> list."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _Builder(loader, _Problems("--set"), None).build(node, ())
    finally:
        loader.dispose()


def _apply_override(data: Dict[str, Any], builder: _Builder, item: str, problems: _Problems) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    problems.override_rank.setdefault(key or item, len(problems.override_rank))
    if not sep or not _OVERRIDE_KEY.match(key):
        problems.at(key or item, (), "expected KEY=VALUE with a dotted key, e.g. mqtt.port=1883 "
                                     "or cameras.0.source=clip.mp4")
        return
    try:
        value = _parse_value(text)
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


def _model_at(schema: Type[BaseModel], path: KeyPath) -> Optional[type]:
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


def _message(schema: Type[BaseModel], error: Dict[str, Any], path: KeyPath) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        model = _model_at(schema, path[:-1])
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        return f"unknown key; expected one of: {', '.join(allowed)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_show(value, path)}"
    if kind == "list_type":
        return f"expected a list, got {_show(value, path)}"
    message = str(error["msg"])
    if message.startswith("Value error, "):  # our validators' ValueErrors carry their own wording
        return message[len("Value error, "):]
    if kind == "conflict":
        return message
    if message.startswith("Input "):
        message = "i" + message[1:]
    if not isinstance(value, (dict, list)):
        message += f" (got {_show(value, path)})"
    return message


def _show(value: Any, path: KeyPath) -> str:
    if path and path[-1] in _SECRET_KEYS:
        return MASK
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _origin(builder: _Builder, path: KeyPath) -> Origin:
    """Where the value at ``path`` (or the nearest mapping above it) was written."""
    for size in range(len(path), -1, -1):
        if path[:size] in builder.origins:
            return builder.origins[path[:size]]
    return 1


def _check_files(config: AgentConfig, builder: _Builder, problems: _Problems) -> None:
    """Files ``run`` opens at start must be readable now (as the user the check runs as)."""
    mq = config.mqtt
    if not mq.enabled:
        return
    files: List[Tuple[KeyPath, Optional[str]]] = [(("mqtt", "password_file"), mq.password_file)]
    if mq.tls.enabled:
        files += [(("mqtt", "tls", key), getattr(mq.tls, key))
                  for key in ("ca_file", "cert_file", "key_file")]
    for path, name in files:
        if name is None:
            continue
        try:
            with open(name, "rb"):
                pass
        except OSError as exc:
            problems.at(_origin(builder, path), path, f"cannot read {name}: {exc.strerror or exc}")


def _report(schema: Type[BaseModel], exc: ValidationError, builder: _Builder, problems: _Problems) -> None:
    for error in exc.errors():
        path: KeyPath = tuple(error["loc"])
        if error["type"] == "conflict":  # a cross-field check names the key to change
            extra = str(error.get("ctx", {}).get("field", ""))
            path += tuple(int(p) if p.isdigit() else p for p in extra.split(".") if p)
        if any(path[:len(p)] == p for p in builder.env_problems):
            continue  # the unset variable is the problem; its raw "${...}" text would only add noise
        problems.at(_origin(builder, path), path, _message(schema, error, path))


def load_text(text: str, filename: str = "<config>", overrides: Sequence[str] = (),
              environ: Optional[Mapping[str, str]] = None, schema: Type[Schema] = AgentConfig) -> Schema:
    """Like ``load`` for YAML text already in memory; ``filename`` only names it in problems."""
    problems = _Problems(filename)
    data, builder = _parse(text, filename, os.environ if environ is None else environ, problems, schema)
    for item in overrides:
        _apply_override(data, builder, item, problems)
    for path, (line, message) in builder.env_problems.items():
        problems.at(line, path, message)
    config: Optional[Schema] = None
    try:
        config = schema.model_validate(data)
    except ValidationError as exc:
        _report(schema, exc, builder, problems)
    if isinstance(config, AgentConfig):
        _check_files(config, builder, problems)
    if problems or config is None:
        raise ConfigError(problems.lines())
    return config


def load(path: Union[str, os.PathLike], overrides: Sequence[str] = (),
         environ: Optional[Mapping[str, str]] = None, schema: Type[Schema] = AgentConfig) -> Schema:
    """Read, substitute, override and validate a config file.

    ``overrides`` are ``KEY=VALUE`` strings (``cameras.0.source=clip.mp4``); ``environ``
    (default ``os.environ``) feeds ``${VAR}`` substitution. Raises ``ConfigError`` whose
    ``problems`` hold one ``FILE:LINE: key.path: message`` line per problem.
    """
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}: cannot read: not UTF-8 text (bad byte at offset {exc.start})"]) \
            from None
    return load_text(text, filename, overrides, environ, schema)


def resolved_yaml(config: AgentConfig) -> str:
    """The complete configuration, defaults filled in, secrets shown as ``***``.

    It loads back into an equal config, except that masked secrets read as ``***``.
    """
    data = config.model_dump(mode="json")  # the schema's JSON serializers mask secrets
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
