"""The JSON Schemas are valid, and every example message in docs/mqtt.md validates against
its schema (so the documentation cannot drift from the contract)."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = sorted((ROOT / "schemas").glob("*.schema.json"))
EXAMPLE = re.compile(r"<!-- example: ([\w-]+)(?: (\w+))? -->\n```(\w+)\n(.*?)```", re.S)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_files_are_valid_json_schema(path):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("/2020-12/schema") and schema.get("description")


def examples():
    return EXAMPLE.findall((ROOT / "docs/mqtt.md").read_text())


def test_the_docs_show_an_example_of_every_payload():
    kinds = {name for name, _, _, _ in examples()}
    assert kinds >= {"status", "detections", "stats", "command", "command-result", "events", "counts"}


@pytest.mark.parametrize("name, definition, language, text", examples(),
                         ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_doc_examples_validate(name, definition, language, text):
    schema = json.loads((ROOT / f"schemas/{name}.schema.json").read_text())
    if definition:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    instance = text.strip() if language == "text" else json.loads(text)
    jsonschema.Draft202012Validator(schema).validate(instance)
