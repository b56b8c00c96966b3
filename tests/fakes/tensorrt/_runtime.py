"""``Runtime``, ``ICudaEngine``, ``IExecutionContext``: deserialization and execution rules.

What the real runtime does on misuse, the fake does: ``deserialize_cuda_engine`` returns
None and logs an error for a corrupt plan, another TensorRT version, another compute
capability or a plugin nobody registered; ``set_input_shape`` outside the optimization
profile logs and returns False; ``execute_async_v3`` with an input shape or a tensor
address not set logs and returns False. Execution is queued on the pycuda stream and runs
when it is synchronized, reading inputs from and writing outputs to the addresses given.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._common import (
    STATE,
    DataType,
    Dims,
    Gated,
    ILogger,
    TensorIOMode,
    adopt_logger,
    error,
    numpy_of,
    public_dtype,
    volume,
)
from ._plan import Executor, PlanError, bytes_of, deserialize, serialize, shape_matches


def _driver() -> Any:
    import pycuda.driver as driver  # the fake one: tests put tests/fakes first on sys.path

    return driver


class IHostMemory(bytes):
    """Serialized data; bytes-like, as the real one supports the buffer protocol."""

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self) -> Any:
        return public_dtype(DataType.UINT8 if "UINT8" in STATE.generation.dtypes else DataType.INT8)


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        adopt_logger(self, logger, "createInferRuntime")
        self.logger = logger  # pybind11 keep_alive: the logger lives as long as the runtime

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Optional[ICudaEngine]:
        try:
            header, payload = deserialize(bytes(serialized_engine))
        except PlanError as exc:
            error(str(exc))
            return None
        if header["version"] != STATE.version:
            error("1: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization "
                  "(Serialization assertion stdVersionRead == serializationVersion failed.Version tag does "
                  "not "
                  f"match. The engine plan file is not compatible with this version of TensorRT, expecting "
                  f"library version {STATE.version} got {header['version']}, please rebuild.)")
            return None
        cc = tuple(_driver().FAKE.compute_capability)
        if tuple(header["cc"]) != cc:
            error("6: The engine plan file is generated on an incompatible device, expecting "
                               "compute "
                  f"{cc[0]}.{cc[1]} got compute {header['cc'][0]}.{header['cc'][1]}, please rebuild.")
            return None
        if header.get("nms") and not STATE.plugins:
            error("1: [pluginV2Runner.cpp::load::300] Error Code 1: Serialization "
                               "(Serialization "
                  "assertion creator failed.Cannot deserialize plugin since corresponding IPluginCreator not "
                  "found in Plugin Registry)")
            return None
        driver = _driver()
        try:
            return ICudaEngine(header, payload, self)
        except driver.MemoryError:
            error(f"2: Requested amount of GPU memory ({len(payload)} bytes) could not be "
                               "allocated. "
                  "There may not be enough free memory for allocation to succeed.")
            return None


class ICudaEngine(Gated):
    def __init__(self, header: Dict[str, Any], payload: bytes, runtime: Runtime) -> None:
        self._header = header
        self._payload = payload
        self._runtime = runtime  # keep_alive: an engine keeps its runtime (and so the logger) alive
        outputs = list(header["outputs"])
        if header.get("reorder"):
            outputs.reverse()  # TensorRT does not promise the ONNX order
        self._io: List[Dict[str, Any]] = [{**t, "input": True} for t in header["inputs"]] + \
                                         [{**t, "input": False} for t in outputs]
        self._by_name = {t["name"]: t for t in self._io}
        self._driver = _driver()  # kept: __del__ may run after the test took the fake modules away
        self._weights = self._driver.allocate_internal(len(payload), "engine weights")
        self.executor = Executor(header, payload)
        self.device_memory_size = int(header["activation_bytes"])
        self.num_optimization_profiles = 1
        self.num_layers = int(header["num_layers"])
        self.name = "fake-engine"

    def __del__(self) -> None:
        if "_weights" in self.__dict__:
            self._driver.free_internal(self._weights)

    def _tensor(self, key: Union[int, str]) -> Dict[str, Any]:
        return self._io[key] if isinstance(key, int) else self._by_name[key]

    def profile(self, name: str) -> Optional[List[Tuple[int, ...]]]:
        shapes = self._header["profile"].get(name)
        return [tuple(s) for s in shapes] if shapes else None

    def serialize(self) -> IHostMemory:
        return IHostMemory(serialize(self._header, self._payload))

    def create_execution_context(self) -> Optional[IExecutionContext]:
        try:
            return IExecutionContext(self)
        except _driver().MemoryError:
            error(f"1: [executionContext.cpp::ExecutionContext::xx] Error Code 1: Cuda Runtime "
                  f"(out of memory): could not allocate {self.device_memory_size} bytes of activation memory")
            return None

    # named tensors (8.5+)
    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return self._io[index]["name"]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        t = self._by_name.get(name)
        return TensorIOMode.NONE if t is None else (TensorIOMode.INPUT if t["input"] else TensorIOMode.OUTPUT)

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._by_name[name]["shape"])

    def get_tensor_dtype(self, name: str) -> Any:
        return public_dtype(self._by_name[name]["dtype"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
        return self._profile_shape(name, profile_index)

    def _profile_shape(self, name: str, profile_index: int) -> List[Dims]:
        shapes = self.profile(name) if profile_index == 0 else None
        if shapes is None:
            error(f"3: getProfileShape: profile {profile_index} has no shapes for {name!r}")
            return []
        return [Dims(s) for s in shapes]

    # bindings (8.x)
    @property
    def num_bindings(self) -> int:
        return len(self._io)

    @property
    def max_batch_size(self) -> int:
        return 1

    @property
    def has_implicit_batch_dimension(self) -> bool:
        return False

    def get_binding_name(self, index: int) -> str:
        return self._io[index]["name"]

    def get_binding_index(self, name: str) -> int:
        return next((i for i, t in enumerate(self._io) if t["name"] == name), -1)

    def get_binding_shape(self, binding: Union[int, str]) -> Dims:
        return Dims(self._tensor(binding)["shape"])

    def get_binding_dtype(self, binding: Union[int, str]) -> Any:
        return public_dtype(self._tensor(binding)["dtype"])

    def binding_is_input(self, binding: Union[int, str]) -> bool:
        return bool(self._tensor(binding)["input"])

    def get_profile_shape(self, profile_index: int, binding: Union[int, str]) -> List[Dims]:
        return self._profile_shape(self._tensor(binding)["name"], profile_index)


class IExecutionContext(Gated):
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._driver = engine._driver
        self._activations = self._driver.allocate_internal(engine.device_memory_size,
                                                           "execution context activations")
        self._shapes: Dict[str, Tuple[int, ...]] = {t["name"]: tuple(t["shape"])
                                                    for t in engine._io if t["input"]}
        self._addresses: Dict[str, int] = {}
        self.active_optimization_profile = 0

    def __del__(self) -> None:
        if "_activations" in self.__dict__:
            self._driver.free_internal(self._activations)

    def _error(self, message: str) -> bool:
        error(message)
        return False

    def _inputs_specified(self) -> bool:
        return all(min(shape, default=0) >= 0 for shape in self._shapes.values())

    # named tensors (8.5+)
    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        return self._set_shape(name, shape)

    def _set_shape(self, name: str, shape: Sequence[int]) -> bool:
        tensor = self.engine._by_name.get(name)
        if tensor is None or not tensor["input"]:
            return self._error(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error "
                               f"(Parameter check failed, condition: {name!r} is not an input tensor)")
        shape = tuple(int(d) for d in shape)
        if not shape_matches(shape, tuple(tensor["shape"])) or min(shape, default=0) < 0:
            return self._error(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error "
                               f"(Parameter check failed, condition: engineDims matches {shape} for "
                               f"{name!r}, "
                               f"engine dims {tuple(tensor['shape'])})")
        profile = self.engine.profile(name)
        if profile is not None and not all(lo <= d <= hi for d, lo, hi in zip(shape, profile[0], profile[2])):
            return self._error(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error "
                               f"(Parameter check failed, condition: satisfyProfile Set dimension {shape} "
                               "for "
                               f"tensor {name} does not satisfy any optimization profiles: min {profile[0]}, "
                               f"max {profile[2]})")
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        return self._shape(name)

    def _shape(self, name: str) -> Dims:
        if name in self._shapes:
            return Dims(self._shapes[name])
        if not self._inputs_specified():
            return Dims(self.engine._by_name[name]["shape"])
        return Dims(self.engine.executor.output_shapes(self._shapes)[name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._by_name:
            return self._error(f"3: [executionContext.cpp::setTensorAddress] Error Code 3: API Usage Error "
                               f"(Parameter check failed, condition: tensor {name!r} not found)")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        return self._enqueue(self._addresses, stream_handle, "enqueueV3")

    # bindings (8.x)
    def set_binding_shape(self, binding: int, shape: Sequence[int]) -> bool:
        return self._set_shape(self.engine._io[binding]["name"], shape)

    def get_binding_shape(self, binding: int) -> Dims:
        return self._shape(self.engine._io[binding]["name"])

    @property
    def all_binding_shapes_specified(self) -> bool:
        return self._inputs_specified()

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        if profile_index != 0:
            return self._error(f"3: setOptimizationProfileAsync: profile {profile_index} does not exist")
        return True

    def execute_async_v2(self, bindings: Sequence[int], stream_handle: int) -> bool:
        if len(bindings) != len(self.engine._io):
            return self._error(f"3: [executionContext.cpp::enqueueV2] bindings has {len(bindings)} entries, "
                               f"the engine has {len(self.engine._io)} bindings")
        addresses = {t["name"]: int(p) for t, p in zip(self.engine._io, bindings) if int(p)}
        return self._enqueue(addresses, stream_handle, "enqueueV2")

    def execute_v2(self, bindings: Sequence[int]) -> bool:
        return self._error("execute_v2 is synchronous on the default stream; the fake supports the async "
                           "form only")

    # execution
    def _enqueue(self, addresses: Dict[str, int], stream_handle: int, call: str) -> bool:
        engine = self.engine
        unset = [n for n, s in self._shapes.items() if min(s, default=0) < 0]
        if unset:
            return self._error(f"3: [executionContext.cpp::{call}] Error Code 3: API Usage Error (Parameter "
                               "check "
                               f"failed, condition: all input dimensions specified; not set: {unset})")
        missing = [t["name"] for t in engine._io if not addresses.get(t["name"])]
        if missing:
            return self._error(f"3: [executionContext.cpp::{call}] Error Code 3: API Usage Error (Parameter "
                               "check "
                               f"failed, condition: address is set for every I/O tensor; missing: {missing})")
        driver = _driver()
        stream = driver.FAKE.streams.get(int(stream_handle))
        if stream is None:
            return self._error(f"1: [executionContext.cpp::{call}] Error Code 1: Cuda Runtime (invalid "
                               "resource "
                               "handle)")
        shapes = dict(self._shapes)
        out_shapes = engine.executor.output_shapes(shapes)
        addrs = dict(addresses)

        def run() -> None:
            feeds = {}
            for t in engine._io:
                if t["input"]:
                    raw = driver.device_bytes(addrs[t["name"]], bytes_of(t["dtype"], shapes[t["name"]]))
                    array = raw.view(numpy_of(t["dtype"]))
                    feeds[t["name"]] = array.reshape(shapes[t["name"]]).copy()
            results = engine.executor.run(feeds)
            for t in engine._io:
                if not t["input"]:
                    value = np.ascontiguousarray(results[t["name"]], dtype=numpy_of(t["dtype"]))
                    assert value.shape == tuple(out_shapes[t["name"]]), (value.shape, out_shapes[t["name"]])
                    raw = driver.device_bytes(addrs[t["name"]], value.nbytes)
                    raw[:] = value.reshape(-1).view(np.uint8)

        stream.enqueue(run)
        STATE.executions += 1
        return True


__all__ = ["ICudaEngine", "IExecutionContext", "IHostMemory", "Runtime", "volume"]
