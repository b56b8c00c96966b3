"""From the model path a user names to the file a backend loads: one step above the backends.

Model files come in kinds the backends do not all read: a TensorRT engine, an ONNX model, a
darknet ``.cfg`` with its ``.weights``. Working out what to load happens here, once, for
every command (``run``, ``detect``, ``eval --model``, ``bench``), so no backend imports the
model tools:

- a darknet ``.cfg`` for ONNX Runtime is converted once into a cached ONNX model
  (agent/modeltools/darknet/cache.py); for OpenCV, whose importer reads darknet files
  itself, the weights beside the cfg and the ``ModelInfo`` read from the cfg go with it;
- an engine on a machine without TensorRT (a device config tried on a laptop) runs the ONNX
  model it was built from, when that lies beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

from agent.errors import ModelError
from agent.inference.backends import base
from agent.inference.backends.base import Backend, DarknetNetwork, ModelFile, choose_backend, load_backend

log = logging.getLogger(__name__)


def resolve_model(model_path: Union[str, Path], requested: str = "auto",
                  class_names: Optional[Sequence[str]] = None) -> ModelFile:
    """The backend and the file it loads for ``model_path`` (``requested``: a backend name or auto).

    ``class_names`` override a darknet cfg's names file (they are checked against its classes).
    """
    model_path = Path(model_path)
    if not model_path.exists():
        raise ModelError(f"{model_path}: model file not found")
    name = choose_backend(model_path, requested)
    if name == "tensorrt" and requested == "auto" and not base.installed("tensorrt"):
        # A device config on a machine without TensorRT: run the ONNX model the engine came from.
        onnx_path = model_path.with_suffix(".onnx")
        if onnx_path.is_file():
            log.warning("%s: TensorRT is not installed; running %s instead", model_path, onnx_path.name)
            model_path, name = onnx_path, choose_backend(onnx_path, "auto")
    if model_path.suffix.lower() != ".cfg":
        return ModelFile(model_path, name)
    from agent.modeltools.darknet import cfg as darknet

    if name == "opencv":
        return ModelFile(model_path, name, DarknetNetwork(darknet.weights_for(model_path),
                                                          darknet.model_info(model_path, class_names)))
    from agent.modeltools.darknet.cache import cached_onnx

    return ModelFile(cached_onnx(model_path), name)


def open_backend(model_path: Union[str, Path], requested: str = "auto", batch_size: int = 1,
                 class_names: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> Backend:
    """Load ``model_path`` with the chosen backend; ``threads`` (CPU backends) None: runtime default."""
    model = resolve_model(model_path, requested, class_names)
    return load_backend(model, batch_size, class_names, threads)
