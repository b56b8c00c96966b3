"""Fixtures shared by tests/unit/backends/ (through its conftest.py) and tests/unit/test_engine.py.

The fake ``tensorrt``/``pycuda`` (tests/fakes/) are importable only inside the ``fake_gpu``
fixture: it puts them first on ``sys.path``, hides any real or earlier-imported copies, and
restores everything afterwards, so no other test can see a fake ``tensorrt``.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
from backend_models import SHIPPED, build_random_model, make_batch_dynamic, make_fp16_io, sample_images

FAKES = Path(__file__).resolve().parents[2] / "fakes"
_FAKE_PACKAGES = ("tensorrt", "pycuda")


_built: Dict[str, Path] = {}

#: Every TensorRT release the fake emulates (tests/fakes/tensorrt/_generations.py), oldest first.
GENERATIONS = ("8.4", "8.5", "8.6", "10", "11")
#: The numpy each runs with in the tests. JetPack 5's Python 3.8 venv got numpy 1.24 from
#: ``numpy>=1.21`` before the cap: the numpy on which TensorRT 8.4-8.5's ``nptype`` breaks.
#: The others run with the numpy installed here.
DEVICE_NUMPY = {"8.4": "1.24", "8.5": "1.24"}


def use_generation(fake: types.SimpleNamespace, generation: str) -> None:
    """Make the fake TensorRT that release, on the numpy its device would run."""
    fake.knobs.configure(generation=generation, numpy=DEVICE_NUMPY.get(generation))


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model, or a train-free stand-in built once per process (the fixture is
    defined in two modules' namespaces, so pytest would otherwise build it twice)."""
    if SHIPPED.is_file():
        return SHIPPED
    if "random" not in _built:
        _built["random"] = build_random_model(tmp_path_factory.mktemp("random-model"))
    return _built["random"]


@pytest.fixture(scope="session")
def dynamic_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_batch_dynamic(model_path, tmp_path_factory.mktemp("dynamic") / "dynamic.onnx")


@pytest.fixture(scope="session")
def fp16_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fp16_io(model_path, tmp_path_factory.mktemp("fp16") / "fp16-io.onnx")


@pytest.fixture(scope="session")
def images() -> List[np.ndarray]:
    found = sample_images()
    if len(found) < 6:
        pytest.skip("sample images missing (../shared/data)")
    return found


def _take_modules() -> Dict[str, types.ModuleType]:
    taken = {}
    for name in list(sys.modules):
        if name.split(".")[0] in _FAKE_PACKAGES:
            taken[name] = sys.modules.pop(name)
    return taken


@pytest.fixture(params=GENERATIONS, ids=[f"trt{g}" for g in GENERATIONS])
def generation(request: pytest.FixtureRequest, fake_gpu: types.SimpleNamespace) -> str:
    """Runs a test once per emulated TensorRT release."""
    use_generation(fake_gpu, request.param)
    return str(request.param)


@pytest.fixture
def fake_gpu() -> Iterator[types.SimpleNamespace]:
    """The fake TensorRT 10.3 + pycuda, fresh for each test; ``.knobs.configure(generation=...)``
    (or the ``generation`` fixture, or ``use_generation``) makes it another release."""
    saved = _take_modules()
    sys.path.insert(0, str(FAKES))
    importlib.invalidate_caches()
    try:
        import pycuda.driver as cuda
        import tensorrt as trt

        for module in (trt, cuda):  # a real TensorRT on a Jetson must not win here
            assert str(Path(module.__file__).resolve()).startswith(str(FAKES)), module.__file__
        cuda.reset()
        trt._fake.reset()
        yield types.SimpleNamespace(trt=trt, cuda=cuda, knobs=trt._fake)
    finally:
        sys.path.remove(str(FAKES))
        _take_modules()
        sys.modules.update(saved)
        importlib.invalidate_caches()

