"""YAML text -> plain data, keeping the line of every key (the loader's first step).

The YAML is composed into nodes and turned into plain data here (not by PyYAML's
constructor), which lets us reject duplicate keys (PyYAML keeps the last one silently), keep
keys as written (``on:`` stays "on", not True), substitute ``${VAR}`` / ``${VAR:-default}``
inside string values after parsing (``$$`` for a literal ``$``), so lines stay right and
YAML syntax in a secret cannot break the file, and cap what aliases expand to
(``MAX_ALIAS_NODES``): a few lines of nested aliases (a "billion laughs" file) would
otherwise take minutes and gigabytes to build.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

import yaml

from agent.errors import ConfigError

KeyPath = Tuple[Union[str, int], ...]
# Where a value came from: a line of the file (int) or the key of a --set override (str).
Origin = Union[int, str]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR_REF = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Nodes that may be built again through aliases, all aliases together. Real configs repeat a
#: few dozen (shared camera settings); an alias bomb needs millions.
MAX_ALIAS_NODES = 10000


def dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path)


class Problems:
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


class YamlLoader(yaml.SafeLoader):
    """Composes nodes only; ``Builder`` turns them into data."""


class Builder:
    """Turns a YAML node tree into dicts, lists and scalars, recording each key's line."""

    def __init__(self, loader: YamlLoader, problems: Problems, environ: Optional[Mapping[str, str]]) -> None:
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


def parse_document(text: str, filename: str, environ: Optional[Mapping[str, str]], problems: Problems,
                   empty_ok: bool = False) -> Tuple[Dict[str, Any], Builder]:
    """The document's top-level mapping and the builder that knows each key's origin.

    ``empty_ok``: an empty document is ``{}`` (files whose every key has a default, such as
    training recipes), else it is an error.
    """
    loader = YamlLoader(text)
    builder = Builder(loader, problems, environ)
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
    if data is None and empty_ok:
        data = {}
    if data is None:
        raise ConfigError([f"{filename}:1: the file is empty; expected a mapping with at least "
                           "'cameras:' and 'model:' (see configs/agent.yaml)"])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the value {data!r}"
        raise ConfigError([f"{filename}:1: the top level must be a mapping of sections "
                           f"(device, cameras, model, ...), not {kind}"])
    return data, builder


def parse_value(text: str) -> Any:
    """An override's value, read as one YAML value: 18830 -> int, true -> bool, [1, 2] -> list."""
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else Builder(loader, Problems("--set"), None).build(node, ())
    finally:
        loader.dispose()


def origin_of(builder: Builder, path: KeyPath) -> Origin:
    """Where the value at ``path`` (or the nearest mapping above it) was written."""
    for size in range(len(path), -1, -1):
        if path[:size] in builder.origins:
            return builder.origins[path[:size]]
    return 1
