"""The config schema, split by section: what it exports and the literals it spells out."""

from typing import get_args

from agent.config import schema
from agent.config.inference import OutputFormat, ResizeMode
from agent.types import OUTPUT_FORMATS, RESIZE_MODES


def test_the_config_literals_are_the_core_types_own() -> None:
    # Written out for the type checker; the decoder and preprocessing know these values only.
    assert get_args(OutputFormat) == OUTPUT_FORMATS
    assert get_args(ResizeMode) == RESIZE_MODES


def test_the_schema_exports_every_section_model() -> None:
    from pydantic import BaseModel

    sections = {name for name, field in schema.AgentConfig.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    assert sections == {"device", "model", "inference", "mqtt", "spool", "preview", "tracking", "metrics",
                        "service", "logging"}
    assert all(hasattr(schema, name) for name in schema.__all__)
    # Only cameras and model are required: every other section has its defaults.
    config = schema.AgentConfig.model_validate({"cameras": [{"name": "a", "source": "0"}],
                                                "model": {"path": "m.onnx"}})
    for name in sections:
        assert isinstance(getattr(config, name), schema.AgentConfig.model_fields[name].annotation)
