"""The builder side: ``Builder``, ``OnnxParser``, ``IBuilderConfig``, profiles, calibrators, timing caches.

``build_serialized_network`` checks what the real builder checks (an optimization profile
for every dynamic input, shapes inside it, a parsed network), runs INT8 calibration through
the calibrator's ``get_batch`` (reading the device pointers it returns, in the input's own
data type) or its cache, and returns an ``IHostMemory`` plan, or None with an error logged.
``IOptimizationProfile.set_shape`` raises RuntimeError on inconsistent shapes, as the
bindings do; a timing cache remembers the GPU it was made on and ``set_timing_cache``
refuses another GPU's (returns False) unless ``ignore_mismatch``. A ``Builder`` holds device
resources of the CUDA context that is current when it is made, like the real one.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._common import (
    STATE,
    BuilderFlag,
    BuildRecord,
    CalibrationAlgoType,
    DataType,
    Dims,
    Gated,
    ILogger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    adopt_logger,
    check_logger,
    error,
    numpy_of,
    public_dtype,
    warning,
)
from ._plan import NetworkSpec, ParseFailure, bytes_of, network_from_onnx, serialize, shape_matches
from ._runtime import IHostMemory, _driver

_TIMING_MAGIC = b"FTRTTC"


class ITensor:
    def __init__(self, name: str, shape: Tuple[int, ...], dtype: int) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = public_dtype(dtype)


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = int(flags)
        self.spec: Optional[NetworkSpec] = None
        self._inputs: List[ITensor] = []
        self._outputs: List[ITensor] = []
        self.name = "network"

    @property
    def has_explicit_batch(self) -> bool:
        return True

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers if self.spec else 0

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class ParserError:
    def __init__(self, desc: str, node: int) -> None:
        self._desc, self._node = desc, node

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def code(self) -> int:
        return 8  # ErrorCode.UNSUPPORTED_NODE

    def __str__(self) -> str:
        return f"In node {self._node} (parseGraph): {self._desc}"


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        check_logger(logger)
        self.network = network
        self.logger = logger
        self._errors: List[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors = []

    def parse(self, model: bytes, path: Optional[str] = None) -> bool:
        explicit = 1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if STATE.version.startswith("8.") and not self.network.flags & explicit:
            self._errors.append(ParserError("This version of TensorRT only supports explicit batch ONNX "
                                            "models: "
                                            "create the network with "
                                            "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                                            -1))
            return False
        try:
            spec = network_from_onnx(bytes(model), STATE.plugins)
        except ParseFailure as exc:
            self._errors.append(ParserError(str(exc), exc.node))
            self.logger.log(ILogger.Severity.ERROR, str(exc))  # the parser logs through its own logger
            return False
        self.network.spec = spec
        self.network._inputs = [ITensor(t.name, t.shape, t.dtype) for t in spec.inputs]
        self.network._outputs = [ITensor(t.name, t.shape, t.dtype) for t in spec.outputs]
        return True

    def parse_from_file(self, model: str) -> bool:
        with open(model, "rb") as handle:
            return self.parse(handle.read(), model)


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: Dict[str, List[Tuple[int, ...]]] = {}
        self._valid = True

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        """setDimensions for MIN, then OPT, then MAX; the bindings raise on the first refusal."""
        given: List[Tuple[int, ...]] = []
        for selector, dims in (("min", min), ("opt", opt), ("max", max)):
            shape = tuple(int(d) for d in dims)
            consistent = all(d >= 0 for d in shape) and all(
                len(prev) == len(shape) and all(a <= b for a, b in zip(prev, shape)) for prev in given)
            if not consistent:
                error(f"4: [optimizationProfile.cpp::setDimensions] Error Code 4: API Usage Error ({input}: "
                      f"{selector} dimensions {shape} are inconsistent with {given})")
                self._valid = False
                raise RuntimeError(f"Shape provided for {selector} is inconsistent with other shapes.")
            given.append(shape)
        self.shapes[input] = given

    def get_shape(self, input: str) -> List[Dims]:
        return [Dims(s) for s in self.shapes.get(input, [])]

    def __bool__(self) -> bool:
        return self._valid


def _this_device() -> List[Any]:
    fake_gpu = _driver().FAKE
    return [fake_gpu.device_name, list(fake_gpu.compute_capability)]


class ITimingCache:
    def __init__(self, entries: int = 0, device: Optional[List[Any]] = None) -> None:
        self.entries = entries
        self.device = device if device is not None else _this_device()  # where its timings were taken

    def serialize(self) -> IHostMemory:
        body = json.dumps({"version": STATE.version, "device": self.device, "entries": self.entries}).encode()
        return IHostMemory(_TIMING_MAGIC + body)

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.entries += input_cache.entries
        return True

    def reset(self) -> bool:
        self.entries = 0
        return True


class IInt8Calibrator:
    def __init__(self) -> None:
        self._trt_initialised = True

    def get_batch_size(self) -> int:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::get_batch_size"')

    def get_batch(self, names: List[str]) -> Optional[List[int]]:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::get_batch"')

    def read_calibration_cache(self) -> Optional[bytes]:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::read_calibration_cache"')

    def write_calibration_cache(self, cache: Any) -> None:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::write_calibration_cache"')

    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.LEGACY_CALIBRATION


class IInt8EntropyCalibrator2(IInt8Calibrator):
    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.ENTROPY_CALIBRATION_2


class IBuilderConfig(Gated):
    def __init__(self) -> None:
        self._flags: set = set()
        self._pools: Dict[MemoryPoolType, int] = {}
        self._int8_calibrator: Optional[IInt8Calibrator] = None
        self.profiles: List[IOptimizationProfile] = []
        self._calibration_profile: Optional[IOptimizationProfile] = None
        self._timing_cache: Optional[ITimingCache] = None

    @property
    def int8_calibrator(self) -> Optional[IInt8Calibrator]:
        return self._int8_calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: Optional[IInt8Calibrator]) -> None:
        self._int8_calibrator = calibrator

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self._flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self._pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(MemoryPoolType(pool), _driver().FAKE.total_memory)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        self._calibration_profile = profile
        return bool(profile)

    def get_calibration_profile(self) -> Optional[IOptimizationProfile]:
        return self._calibration_profile

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[ITimingCache]:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache()
        if not data.startswith(_TIMING_MAGIC):
            error("1: [timingCache.cpp] Error Code 1: Serialization (Magic tag does not match)")
            return None  # the real one logs and returns nullptr
        header = json.loads(data[len(_TIMING_MAGIC):])
        if header.get("version") != STATE.version:
            error(f"1: [timingCache.cpp] Error Code 1: Serialization (timing cache of TensorRT "
                  f"{header.get('version')}, this is {STATE.version})")
            return None
        return ITimingCache(int(header["entries"]), header.get("device"))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if cache.device != _this_device() and not ignore_mismatch:
            error(f"1: [timingCache.cpp] Error Code 1: Timing cache header mismatch: made on {cache.device}, "
                  f"this device is {_this_device()} (pass ignoreMismatch to use it anyway)")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> Optional[ITimingCache]:
        return self._timing_cache


#: Device memory a Builder holds from its creation (handles, tactic scratch) in the fake.
BUILDER_BYTES = 1 << 20


class Builder(Gated):
    def __init__(self, logger: ILogger) -> None:
        adopt_logger(self, logger, "createInferBuilder")
        self.logger = logger  # pybind11 keep_alive: the logger lives as long as the builder
        self._driver = _driver()  # kept: __del__ may run after the test took the fake modules away
        self._resources = self._driver.allocate_internal(BUILDER_BYTES, "builder resources")

    def __del__(self) -> None:
        if "_resources" in self.__dict__:
            self._driver.free_internal(self._resources)

    @property
    def platform_has_fast_fp16(self) -> bool:
        return STATE.fast_fp16

    @property
    def platform_has_fast_int8(self) -> bool:
        return STATE.fast_int8

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig
                                 ) -> Optional[IHostMemory]:
        spec = network.spec
        if spec is None or not network.num_outputs:
            error("4: [network.cpp::validate::2789] Error Code 4: Internal Error (Network must "
                               "have "
                  "at least one output)")
            return None
        profile = config.profiles[0] if config.profiles else None
        shapes: Dict[str, List[Tuple[int, ...]]] = {}
        for tensor in network._inputs:
            dynamic = -1 in tuple(tensor.shape)
            given = profile.shapes.get(tensor.name) if profile else None
            if dynamic and given is None:
                error("4: [network.cpp::validate::3100] Error Code 4: Internal Error (Network "
                                   "has "
                      f"dynamic or shape inputs, but no optimization profile has been defined for "
                      f"{tensor.name})")
                return None
            if given is not None:
                if not all(shape_matches(s, tuple(tensor.shape)) for s in given):
                    error(f"4: [network.cpp::validate] Error Code 4: Internal Error "
                                       f"({tensor.name}: "
                          f"optimization profile {given} does not match the network's dims "
                          f"{tuple(tensor.shape)})")
                    return None
                shapes[tensor.name] = given
        flags = {BuilderFlag(f).name for f in config._flags}
        record = BuildRecord(flags, config._pools.get(MemoryPoolType.WORKSPACE), shapes,
                             input_dtypes={t.name: DataType(t.dtype).name for t in network._inputs})
        if config._timing_cache is not None:
            record.timing_cache_entries_before = config._timing_cache.entries
        if BuilderFlag.INT8 in config._flags and not self._calibrate(network, config, shapes, record):
            return None
        if config._timing_cache is not None:
            config._timing_cache.entries += spec.num_layers  # every layer's tactics timed once
        STATE.builds.append(record)
        fake_gpu = _driver().FAKE
        batch = max((s[2][0] for s in shapes.values()), default=max(spec.inputs[0].shape[0], 1))
        header = {"version": STATE.version, "gpu": fake_gpu.device_name,
                  "cc": list(fake_gpu.compute_capability),
                  "fp16": BuilderFlag.FP16 in config._flags, "int8": BuilderFlag.INT8 in config._flags,
                  "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype),
                              "onnx_dtype": spec.onnx_input_dtypes[t.name]} for t in network._inputs],
                  "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype)}
                              for t in network._outputs],
                  "run_outputs": spec.run_outputs, "nms": spec.nms, "profile": shapes,
                  "reorder": STATE.reorder_outputs, "num_layers": spec.num_layers,
                  "activation_bytes": (4 << 20) * max(batch, 1)}
        return IHostMemory(serialize(header, spec.onnx_bytes))

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig,
                   shapes: Dict[str, List[Tuple[int, ...]]], record: BuildRecord) -> bool:
        calibrator = config._int8_calibrator
        if calibrator is None:
            warning("Calibrator is not being used. Users must provide dynamic range for all "
                                 "tensors "
                    "that are not Int32 or Bool.")
            return True
        if not getattr(calibrator, "_trt_initialised", False):
            raise TypeError("tensorrt.IInt8EntropyCalibrator2.__init__() must be called when overriding "
                            "__init__")
        header = self._cache_header(calibrator)
        cache = calibrator.read_calibration_cache()
        if cache:
            text = bytes(cache).decode("latin-1")
            if text.splitlines()[0] == header:
                record.calibration_from_cache = True
                return True
            warning("Calibration table does not match this TensorRT version or algorithm; "
                    "calibrating again")
        inputs = network._inputs
        calib_profile = config._calibration_profile
        if calib_profile is None and shapes:
            warning("Calibration Profile is not defined. Calibrating with Profile 0")
        source = calib_profile.shapes if calib_profile is not None else shapes
        # Calibration runs at the profile's opt shape, or the network's own for a static input.
        calib_shapes = {t.name: tuple(source[t.name][1]) if t.name in source else tuple(t.shape)
                        for t in inputs}
        calibrator.get_batch_size()
        amax: Dict[str, float] = {t.name: 0.0 for t in inputs}
        while True:
            pointers = calibrator.get_batch([t.name for t in inputs])
            if not pointers:
                break
            if len(pointers) != len(inputs):
                error(f"Calibrator returned {len(pointers)} bindings for {len(inputs)} inputs")
                return False
            for tensor, pointer in zip(inputs, pointers):
                shape = calib_shapes[tensor.name]
                raw = _driver().device_bytes(int(pointer), bytes_of(tensor.dtype, shape))
                batch = raw.view(numpy_of(tensor.dtype)).reshape(shape).copy()
                record.calibration_batches.append(batch)
                amax[tensor.name] = max(amax[tensor.name], float(np.abs(batch).max()))
        if not record.calibration_batches:
            error("2: [calibrator.cpp::calibrateEngine] Error Code 2: Internal Error (Assertion "
                  "context->executeV2(&bindings[0]) failed.) Calibration failure occurred with no scaling "
                  "factors "
                  "detected. This could be due to no int8 calibrator or insufficient custom scales for "
                  "network layers.")
            return False
        lines = [header] + [f"{name}: {struct.pack('>f', value / 127.0).hex()}"
                            for name, value in amax.items()]
        calibrator.write_calibration_cache(memoryview(("\n".join(lines) + "\n").encode("latin-1")))
        return True

    @staticmethod
    def _cache_header(calibrator: IInt8Calibrator) -> str:
        major, minor, patch = (int(v) for v in STATE.version.split(".")[:3])
        algo = {CalibrationAlgoType.ENTROPY_CALIBRATION_2: "EntropyCalibration2",
                CalibrationAlgoType.ENTROPY_CALIBRATION: "EntropyCalibration",
                CalibrationAlgoType.MINMAX_CALIBRATION: "MinMaxCalibration"}.get(calibrator.get_algorithm(),
                                                                                  "LegacyCalibration")
        return f"TRT-{major}{minor:02d}{patch:02d}-{algo}"
