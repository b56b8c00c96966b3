"""TensorRT backend: a serialized engine run with pycuda, the Jetson's fast path.

One CUDA context, one stream, one page-locked host buffer and one device buffer per engine
tensor, all made once; each call copies the batch into the page-locked input, then
async copy in -> execute -> async copy out -> synchronize. The context belongs to the thread
that opened the backend (the inference thread); ``close()`` frees every allocation.

Two generations of the TensorRT Python API are in the field, chosen by what the engine
object offers:

- named tensors (TensorRT 8.5+, the only one in 10.x): ``num_io_tensors``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``;
- binding indices (TensorRT 8.4, JetPack 5.0): ``num_bindings``, ``set_binding_shape``,
  ``execute_async_v2``.

Engines built with a dynamic batch (an optimization profile) take any batch up to the
profile's maximum; engines with a fixed batch get smaller batches padded. Tensor types are
mapped to numpy by the project (trt_api.py), never by ``trt.nptype``, which TensorRT 8.4-8.5
break on numpy 1.24; TensorRT's logger is the process's one (trt_api.py says why).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.errors import BackendError, ModelError
from agent.inference.backends.base import WarmupMixin
from agent.inference.backends.cuda_buffers import Buffer, Buffers, import_pycuda, memory_note, open_context
from agent.inference.backends.engine_meta import EngineMeta, check_compatible, read_sidecar
from agent.inference.backends.trt_api import TrtErrors, import_tensorrt, numpy_dtype, process_logger
from agent.types import ModelInfo

__all__ = ["TensorRTBackend", "TensorSpec", "import_tensorrt"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TensorSpec:
    name: str
    index: int  # binding index (8.4 API) or I/O tensor index
    is_input: bool
    shape: Tuple[int, ...]  # -1 where dynamic
    dtype: np.dtype
    profile: Optional[Tuple[Tuple[int, ...], ...]] = None  # (min, opt, max) of a dynamic input


class TensorRTBackend(WarmupMixin):
    name = "tensorrt"

    def __init__(self, model_path: Path, batch_size: int = 1, class_names: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, device: int = 0) -> None:
        del threads  # the GPU does the work; kept for the common backend signature
        model_path = Path(model_path)
        trt = import_tensorrt()
        self._cuda = cuda = import_pycuda()
        self._logger = process_logger(trt)
        self._owner = threading.get_ident()
        self._ctx: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers = Buffers(cuda)
        meta = read_sidecar(model_path)  # a bad sidecar fails before any CUDA work
        self._ctx, gpu = open_context(cuda, device)
        try:
            self.gpu_name, self.compute_capability = str(gpu.name()), tuple(gpu.compute_capability())
            self.tensorrt_version = str(trt.__version__)
            if meta is not None:
                check_compatible(meta, model_path, self.tensorrt_version, self.gpu_name,
                                 self.compute_capability)  # type: ignore[arg-type]  # a 2-tuple from pycuda
            else:
                log.warning("%s: no %s.json sidecar: cannot check the TensorRT version and GPU before "
                            "loading; class names come from --names or the config", model_path,
                            model_path.name)
            with TrtErrors() as errors:
                self._load(trt, model_path, meta, batch_size, class_names, errors)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ loading

    def _load(self, trt: Any, model_path: Path, meta: Optional[EngineMeta], batch_size: int,
              class_names: Optional[Sequence[str]], errors: TrtErrors) -> None:
        # Plugins (EfficientNMS_TRT) must be registered before an engine using them deserializes.
        trt.init_libnvinfer_plugins(self._logger, "")
        try:
            plan = model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{model_path}: cannot read: {exc.strerror or exc}") from None
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(f"{model_path}: TensorRT {trt.__version__} cannot load this engine "
                             f"({errors.text()}). The file is corrupt, or was built by another "
                             "TensorRT version or for another GPU: run `detection-agent build-engine` on "
                             "this device")
        self.api = "v3" if hasattr(self._engine, "num_io_tensors") else "v2"
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"{model_path}: TensorRT cannot create an execution context "
                               f"({errors.text()}){memory_note(self._cuda)}: out of GPU memory?")
        specs = self._describe(trt)
        inputs = [s for s in specs if s.is_input]
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{model_path}: expected one NCHW image input, the engine has "
                             f"{[(s.name, s.shape) for s in inputs]}")
        self._in_spec = inputs[0]
        # Channels and size: the engine's, or the profile's largest where they are dynamic.
        chw = self._in_spec.profile[2][1:] if self._in_spec.profile else self._in_spec.shape[1:]
        self._chw = (int(chw[0]), int(chw[1]), int(chw[2]))
        if self._chw[0] != 3:
            raise ModelError(f"{model_path}: expected a 3-channel image input, the engine takes {self._chw}")
        if self._in_spec.dtype not in (np.float32, np.float16):
            raise ModelError(f"{model_path}: engine input is {self._in_spec.dtype}, not float32 or float16")
        self._out_specs = self._ordered_outputs([s for s in specs if not s.is_input], meta)
        self._dynamic = self._in_spec.shape[0] == -1
        self._batch = self._choose_batch(batch_size, model_path)
        self.info = self._model_info(meta, model_path, self._chw[1:], class_names)
        self._allocate()
        log.info("TensorRT %s engine %s: %s API, batch %d%s, input %s %s, outputs %s", trt.__version__,
                 model_path.name, self.api, self._batch, " (dynamic)" if self._dynamic else "",
                 self.input_shape, self._in_spec.dtype, [s.name for s in self._out_specs])

    def _describe(self, trt: Any) -> List[TensorSpec]:
        engine = self._engine
        specs = []
        if self.api == "v3":
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                profile = None
                if is_input and -1 in shape:
                    shapes = engine.get_tensor_profile_shape(name, 0)
                    profile = tuple(tuple(int(d) for d in s) for s in shapes)
                dtype = numpy_dtype(engine.get_tensor_dtype(name), f"engine tensor {name!r}")
                specs.append(TensorSpec(name, i, is_input, shape, dtype, profile))
        else:
            for i in range(engine.num_bindings):
                is_input = bool(engine.binding_is_input(i))
                shape = tuple(int(d) for d in engine.get_binding_shape(i))
                profile = None
                if is_input and -1 in shape:
                    profile = tuple(tuple(int(d) for d in s) for s in engine.get_profile_shape(0, i))
                name = engine.get_binding_name(i)
                dtype = numpy_dtype(engine.get_binding_dtype(i), f"engine tensor {name!r}")
                specs.append(TensorSpec(name, i, is_input, shape, dtype, profile))
        return specs

    @staticmethod
    def _ordered_outputs(outputs: List[TensorSpec], meta: Optional[EngineMeta]) -> List[TensorSpec]:
        """Outputs in the ONNX model's order: TensorRT does not promise to keep it."""
        if meta is None or sorted(meta.output_names) != sorted(s.name for s in outputs):
            return outputs
        by_name = {s.name: s for s in outputs}
        return [by_name[n] for n in meta.output_names]

    def _choose_batch(self, requested: int, model_path: Path) -> int:
        if not self._dynamic:
            if requested not in (1, self._in_spec.shape[0]):
                log.warning("%s: the engine has a fixed batch of %d (asked for %d)", model_path,
                            self._in_spec.shape[0], requested)
            return int(self._in_spec.shape[0])
        if self._in_spec.profile is None:
            raise ModelError(f"{model_path}: dynamic input without an optimization profile")
        low, high = int(self._in_spec.profile[0][0]), int(self._in_spec.profile[2][0])
        if not low <= requested <= high:
            log.warning("%s: the engine takes batches of %d..%d; using %d", model_path, low, high,
                        min(max(requested, low), high))
        return min(max(int(requested), low), high)

    def _model_info(self, meta: Optional[EngineMeta], model_path: Path, hw: Tuple[int, int],
                    class_names: Optional[Sequence[str]]) -> ModelInfo:
        info = meta.info if meta is not None else ModelInfo(input_size=hw, name=model_path.stem)
        if tuple(info.input_size) != hw:
            raise ModelError(f"{model_path}: the sidecar says input {info.input_size}, the engine takes {hw}")
        if class_names is not None:
            info = dataclasses.replace(info, class_names=list(class_names))
        return info

    def _set_batch(self, n: int) -> None:
        shape = (n, *self._chw)
        with TrtErrors() as errors:
            if self.api == "v3":
                ok = self._context.set_input_shape(self._in_spec.name, shape)
            else:
                ok = self._context.set_binding_shape(self._in_spec.index, shape)
        if not ok:
            raise BackendError(f"TensorRT refused input shape {shape} ({errors.text()})")
        self._current_batch = n
        self._out_shapes = [self._output_shape(spec) for spec in self._out_specs]

    def _output_shape(self, spec: TensorSpec) -> Tuple[int, ...]:
        if self.api == "v3":
            return tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
        return tuple(int(d) for d in self._context.get_binding_shape(spec.index))

    def _allocate(self) -> None:
        """Buffers for the largest batch; shapes of smaller batches are prefixes of them."""
        self._current_batch = 0
        self._out_shapes = [s.shape for s in self._out_specs]
        if -1 in self._in_spec.shape:
            self._set_batch(self._batch)
        self._in = self._buffers.allocate(self._in_spec.name, True, (self._batch, *self._chw),
                                          self._in_spec.dtype)
        self._outs: List[Buffer] = []
        for spec, shape in zip(self._out_specs, self._out_shapes):
            if min(shape, default=0) < 0:
                raise ModelError(f"output {spec.name!r} has no definite shape ({shape}) for batch "
                                 f"{self._batch}")
            self._outs.append(self._buffers.allocate(spec.name, False, shape, spec.dtype))
        try:
            self._stream = self._cuda.Stream()
        except self._cuda.Error as exc:
            raise BackendError(f"cannot create a CUDA stream: {exc}") from None
        if self.api == "v3":
            for buffer in [self._in, *self._outs]:
                with TrtErrors() as errors:
                    ok = self._context.set_tensor_address(buffer.name, buffer.address)
                if not ok:
                    raise BackendError(f"TensorRT refused the address of {buffer.name!r} ({errors.text()})")
        else:
            bindings = [0] * self._engine.num_bindings
            for spec, buffer in zip([self._in_spec, *self._out_specs], [self._in, *self._outs]):
                bindings[spec.index] = buffer.address
            self._bindings = bindings

    # ------------------------------------------------------------------ Backend protocol

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self._batch, 3, *self.info.input_size)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._in_spec.dtype)

    @property
    def output_names(self) -> List[str]:
        return [s.name for s in self._out_specs]

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Outputs for a batch of 1..``input_shape[0]`` images; float16 outputs come back as float32."""
        if self._ctx is None:
            raise BackendError("the tensorrt backend is closed")
        if threading.get_ident() != self._owner:
            raise BackendError("the tensorrt backend was called from a thread that does not own its CUDA "
                               "context; create, use and close it in the inference thread")
        n = int(batch.shape[0]) if batch.ndim == 4 else 0
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape[1:] or not 1 <= n <= self._batch:
            raise BackendError(f"input batch has shape {batch.shape}, the engine takes up to "
                               f"{self.input_shape}")
        rows = n if self._dynamic else self._batch
        host = self._in.host
        # Into the page-locked buffer by copy (float32 -> float16 for FP16-input engines).
        np.copyto(host[:n], batch, casting="same_kind")
        if rows > n:
            host[n:] = 0  # a fixed-batch engine: pad with empty images
        if self._dynamic and n != self._current_batch:
            self._set_batch(n)
        cuda = self._cuda
        try:
            cuda.memcpy_htod_async(self._in.device, host[:rows], self._stream)
            with TrtErrors() as errors:
                if self.api == "v3":
                    ok = self._context.execute_async_v3(self._stream.handle)
                else:
                    ok = self._context.execute_async_v2(self._bindings, self._stream.handle)
            if not ok:
                raise BackendError(f"TensorRT execution failed ({errors.text()})")
            views = []
            for out, shape in zip(self._outs, self._out_shapes):
                # The current shape's elements are a prefix of the buffer made for the largest batch.
                view = out.host.reshape(-1)[:int(np.prod(shape))].reshape(shape)
                cuda.memcpy_dtoh_async(view, out.device, self._stream)
                views.append(view)
            self._stream.synchronize()
        except cuda.Error as exc:
            raise BackendError(f"CUDA error during inference: {exc}") from None
        results = []
        for view in views:
            view = view if self._dynamic else view[:n]
            # A copy: the page-locked buffers are overwritten by the next call.
            results.append(view.astype(np.float32) if view.dtype == np.float16 else view.copy())
        return results

    def close(self) -> None:
        """Free device and pinned memory, release TensorRT objects, destroy the CUDA context.

        Call it from the thread that opened the backend, or from another one once that thread
        no longer uses CUDA (a shutdown after the inference thread ended).
        """
        if self._ctx is None:
            return
        cuda = self._cuda
        try:
            if threading.get_ident() != self._owner:
                self._ctx.push()  # make the context current here so the frees below reach it
            if self._stream is not None:
                try:
                    self._stream.synchronize()  # nothing may still write into buffers being freed
                except cuda.Error as exc:
                    log.error("CUDA stream failed while closing: %s", exc)
            self._buffers.free()
            # TensorRT's objects hold device memory of this context: release them while it lives.
            self._context = self._engine = self._runtime = self._stream = None
        finally:
            ctx, self._ctx = self._ctx, None
            try:
                ctx.detach()  # destroys the context (and pops it: it is current here)
            except cuda.Error as exc:
                log.error("destroying the CUDA context failed: %s", exc)

    def describe(self) -> Dict[str, Any]:
        """What runs where, for logs and ``bench``."""
        return {"tensorrt": self.tensorrt_version, "gpu": self.gpu_name, "api": self.api,
                "batch": self._batch, "dynamic_batch": self._dynamic, "input_dtype": str(self._in_spec.dtype)}
