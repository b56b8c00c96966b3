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


#: Floors of docs/architecture.md: a package imports only packages on lower floors.
FLOORS = {"cli": 6, "bench": 5, "training": 4, "evaluate": 4, "runtime": 3, "modeltools": 3, "datasets": 3,
          "publish": 2, "capture": 2, "inference": 2, "tracking": 2, "config": 1}
#: The one sanctioned exception: resolving a model file (.cfg -> cached ONNX) is the step
#: above the backends, and it needs the darknet tools (imported lazily, only for .cfg files).
ALLOWED_UP = {("agent/inference/model_path.py", "modeltools")}


def test_packages_import_only_packages_on_lower_floors() -> None:
    found = []
    for folder in (AGENT / name for name in FLOORS):
        for path, module in imports(folder):
            parts = module.split(".")
            if parts[0] != "agent" or len(parts) < 2 or parts[1] not in FLOORS or parts[1] == folder.name:
                continue
            where = str(path.relative_to(AGENT.parent))
            if FLOORS[parts[1]] >= FLOORS[folder.name] and (where, parts[1]) not in ALLOWED_UP:
                found.append(f"{where}: {module}")
    assert found == []


def test_backends_import_no_model_tools_and_nothing_above_them() -> None:
    assert offenders(AGENT / "inference" / "backends", "agent.modeltools", "agent.inference.model_path",
                     "agent.inference.detector", "agent.runtime", "agent.cli") == []


def test_postprocessing_takes_its_types_from_the_core_only() -> None:
    assert offenders(AGENT / "inference" / "postprocess", "agent.inference.preprocess",
                     "agent.inference.backends", "agent.modeltools") == []


def test_nothing_below_the_command_line_imports_it() -> None:
    below = [p for p in AGENT.iterdir() if p.is_dir() and p.name not in ("cli", "__pycache__")]
    assert [o for folder in below for o in offenders(folder, "agent.cli")] == []


def test_only_the_command_line_builds_argument_parsers() -> None:
    # Library modules export functions; a harness that is a program of its own (python -m
    # agent.bench.soak, agent.training.compare: it has a __main__ block) keeps its parser.
    found = []
    for folder in (p for p in AGENT.iterdir() if p.is_dir() and p.name not in ("cli", "__pycache__")):
        for path in sorted(folder.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            program = 'if __name__ == "__main__":' in text
            if not program and ("add_argument(" in text or "add_parser(" in text):
                found.append(str(path.relative_to(AGENT.parent)))
    assert found == []


def test_building_every_parser_loads_no_runtime_library() -> None:
    # `run` installs its SIGHUP handler after the parser is built and before the runtime loads:
    # a parser module that imports OpenCV at the top would let a reload kill it at start-up.
    import subprocess
    import sys

    code = ("import sys; from agent.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('cv2', 'numpy', 'onnxruntime', 'paho', 'pydantic', 'torch') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=AGENT.parent, timeout=60)
    assert done.stdout.strip() == "[]"
