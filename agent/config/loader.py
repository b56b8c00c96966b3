"""Load the agent's YAML configuration into ``AgentConfig``, with errors a user can act on.

``load()`` reports every problem at once, one line each, ``FILE:LINE: key.path: message``,
so an editor can jump to it. The steps, each in its own module:

- yamldoc.py: YAML text -> plain data that remembers the line of every key (duplicate keys
  rejected, keys kept as written, ``${VAR}`` / ``${VAR:-default}`` substituted after
  parsing, aliases capped);
- overrides.py: ``--set a.b=value`` applied to that data before validation; a problem they
  cause is reported as ``--set a.b: message``;
- the schema (schema.py and its sections) validates it;
- messages.py: turns pydantic's errors into lines at the right key.

Files the agent reads at start (MQTT password and TLS files) are checked here too, so
``check-config`` (the unit's ExecStartPre) refuses a config that ``run`` would refuse.
"""

from __future__ import annotations

import os
from typing import List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union, overload

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.messages import report_errors
from agent.config.overrides import apply_override
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
)
from agent.config.yamldoc import Builder, KeyPath, Problems, origin_of, parse_document
from agent.errors import ConfigError

__all__ = [
    "MASK", "AgentConfig", "CameraConfig", "CommandsConfig", "CsiOptions", "DeviceConfig",
    "HomeAssistantConfig", "InferenceConfig", "LoggingConfig", "ModelConfig", "MqttConfig",
    "RtspOptions", "ServiceConfig", "SnapshotConfig", "SpoolConfig", "TlsConfig", "TopicQosConfig",
    "load", "load_text", "resolved_yaml",
]

#: The pydantic model a file is validated against (AgentConfig, or e.g. a training recipe).
Schema = TypeVar("Schema", bound=BaseModel)


def _check_files(config: AgentConfig, builder: Builder, problems: Problems) -> None:
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
            problems.at(origin_of(builder, path), path, f"cannot read {name}: {exc.strerror or exc}")


@overload
def load_text(text: str, filename: str = ..., overrides: Sequence[str] = ...,
              environ: Optional[Mapping[str, str]] = ...) -> AgentConfig: ...


@overload
def load_text(text: str, filename: str, overrides: Sequence[str], environ: Optional[Mapping[str, str]],
              schema: Type[Schema]) -> Schema: ...


@overload
def load_text(text: str, filename: str = ..., overrides: Sequence[str] = ...,
              environ: Optional[Mapping[str, str]] = ..., *, schema: Type[Schema]) -> Schema: ...


def load_text(text: str, filename: str = "<config>", overrides: Sequence[str] = (),
              environ: Optional[Mapping[str, str]] = None,
              schema: Type[BaseModel] = AgentConfig) -> BaseModel:
    """Like ``load`` for YAML text already in memory; ``filename`` only names it in problems."""
    problems = Problems(filename)
    data, builder = parse_document(text, filename, os.environ if environ is None else environ, problems,
                                   empty_ok=schema is not AgentConfig)
    for item in overrides:
        apply_override(data, builder, item, problems)
    for path, (line, message) in builder.env_problems.items():
        problems.at(line, path, message)
    config: Optional[BaseModel] = None
    try:
        config = schema.model_validate(data)
    except ValidationError as exc:
        report_errors(schema, exc, builder, problems)
    if isinstance(config, AgentConfig):
        _check_files(config, builder, problems)
    if problems or config is None:
        raise ConfigError(problems.lines())
    return config


@overload
def load(path: Union[str, os.PathLike], overrides: Sequence[str] = ...,
         environ: Optional[Mapping[str, str]] = ...) -> AgentConfig: ...


@overload
def load(path: Union[str, os.PathLike], overrides: Sequence[str] = ...,
         environ: Optional[Mapping[str, str]] = ..., *, schema: Type[Schema]) -> Schema: ...


def load(path: Union[str, os.PathLike], overrides: Sequence[str] = (),
         environ: Optional[Mapping[str, str]] = None, schema: Type[BaseModel] = AgentConfig) -> BaseModel:
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
