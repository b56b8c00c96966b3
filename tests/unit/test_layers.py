"""The import graph points down (docs/architecture.md): checked on the source, without importing it."""

import ast
from pathlib import Path
from typing import Iterator, Tuple

AGENT = Path(__file__).resolve().parents[2] / "agent"


def imports(folder: Path) -> Iterator[Tuple[Path, str]]:
    """(file, imported module) for every import statement under ``folder``, nested ones too."""
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield path, node.module


def offenders(folder: Path, *forbidden: str) -> list:
    return [f"{path.relative_to(AGENT.parent)}: {module}" for path, module in imports(folder)
            if module.startswith(forbidden)]


def test_backends_import_no_model_tools_and_nothing_above_them() -> None:
    assert offenders(AGENT / "inference" / "backends", "agent.modeltools", "agent.inference.model_path",
                     "agent.inference.detector", "agent.runtime", "agent.cli") == []


def test_postprocessing_takes_its_types_from_the_core_only() -> None:
    assert offenders(AGENT / "inference" / "postprocess", "agent.inference.preprocess",
                     "agent.inference.backends", "agent.modeltools") == []

