"""``detection-agent build-engine``: ONNX -> TensorRT engine, on the device that will run it.

The TensorRT builder API, step by step: the ONNX parser fills a network (explicit batch);
the builder config gets a workspace limit, FP16/INT8 flags, an optimization profile when
the batch is dynamic, an INT8 entropy calibrator (engine_calib.py) that feeds images
through the agent's own ``Preprocessor`` (so calibration sees exactly what inference will
see), and a timing cache that makes rebuilds fast. ``--nms`` first appends the EfficientNMS
plugin (engine_nms.py). Beside ``model.engine`` goes ``model.engine.json``: ``ModelInfo``,
TensorRT version, GPU and build flags, which the backend checks before it deserializes.

What a release lacks is asked with ``hasattr``, never guessed from its version string: the
INT8 calibrator API and ``platform_has_fast_*`` (deprecated in 10.1 and 10.5, removed on
TensorRT's main branch), the FP16 builder flag (removed with strong typing).

Nothing heavy is imported at module level: tensorrt, pycuda and onnx load inside the functions
that need them. The command (``build-engine``) is agent/cli/models.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.errors import BackendError, BadInputError, ModelError

log = logging.getLogger(__name__)

MB = 1 << 20


@dataclasses.dataclass
class BuildOptions:
    onnx_path: Path
    output: Path
    fp16: bool = False
    int8: bool = False
    calib_images: Optional[Path] = None
    calib_cache: Optional[Path] = None  # default: <output>.calib
    calib_max: int = 500  # TensorRT's guidance: about 500 images are enough
    batch: int = 1
    workspace_mb: int = 1024
    nms: bool = False
    iou: float = 0.45
    score: float = 0.25
    max_det: int = 100
    timing_cache: Optional[Path] = None  # default: tensorrt-timing.cache beside the output
    device: int = 0

    def check(self) -> None:
        if not Path(self.onnx_path).is_file():
            raise BadInputError(f"{self.onnx_path}: no such ONNX model")
        if self.batch < 1 or self.workspace_mb < 1 or self.calib_max < 1:
            raise BadInputError("--batch, --workspace and --calib-max must be at least 1")
        if self.calib_images is not None and not self.int8:
            raise BadInputError("--calib-images only applies with --int8")
        if self.nms and not 0.0 < self.iou <= 1.0:
            # EfficientNMS_TRT's creator rejects an IoU threshold of 0 (TensorRT 8.5+), and the
            # ONNX parse would fail with a bare "Could not create plugin".
            raise BadInputError(f"--iou {self.iou}: the NMS IoU threshold must be above 0 and at most 1")
        if self.int8 and self.calib_images is None and not self.cache_path.is_file():
            raise BadInputError(f"--int8 needs calibration images (--calib-images DIR: a few hundred frames "
                                "like "
                                f"the camera's) or an existing calibration cache ({self.cache_path})")

    @property
    def cache_path(self) -> Path:
        return self.calib_cache or Path(f"{self.output}.calib")

    @property
    def timing_path(self) -> Path:
        return self.timing_cache or Path(self.output).with_name("tensorrt-timing.cache")


def network_flags(trt: Any) -> int:
    """EXPLICIT_BATCH is required by TensorRT 8's ONNX parser and deprecated (ignored) in 10."""
    from agent.inference.backends.engine_meta import parse_version

    if parse_version(trt.__version__)[0] >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def check_release(trt: Any, options: BuildOptions) -> None:
    """Refuse, before any GPU work, a precision this TensorRT release cannot build."""
    from agent.inference.backends.engine_meta import parse_version

    version = str(trt.__version__)
    if options.int8 and not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise BadInputError(f"--int8 (model.precision: int8): TensorRT {version} has no INT8 calibration "
                            "(the calibrator API, deprecated since TensorRT 10.1, is gone). Build with "
                            "--fp16, or quantize the model explicitly (Q/DQ nodes in the ONNX, e.g. with "
                            "NVIDIA's Model Optimizer) and build that model without --int8; see "
                            "docs/deployment.md")
    if (options.fp16 or options.int8) and not hasattr(trt.BuilderFlag, "FP16"):
        raise BadInputError(f"--fp16 (model.precision: fp16): TensorRT {version} has no FP16 builder flag "
                            "(networks are strongly typed): export the model in float16 (detection-agent "
                            "export --half) and build it without --fp16 (model.precision: fp32)")
    if options.int8 and parse_version(version) >= (10, 1):
        log.warning("TensorRT %s deprecates INT8 calibration (since 10.1; later releases remove it): "
                    "explicit quantization (a Q/DQ ONNX model) is the way forward", version)


def build_engine(options: BuildOptions) -> Any:
    """Build and write the engine and its sidecar; returns the ``EngineMeta`` written."""
    from agent.inference.backends.cuda_buffers import import_pycuda, open_context
    from agent.inference.backends.onnx_info import load_onnx, summarize
    from agent.inference.backends.trt_api import import_tensorrt

    options.check()
    trt = import_tensorrt("build-engine")
    check_release(trt, options)
    cuda = import_pycuda("build-engine")
    model = load_onnx(options.onnx_path, "build-engine")
    summary = summarize(model, options.onnx_path)
    info = summary.info
    output_names = list(summary.output_names)
    if options.nms:
        from agent.modeltools.tensorrt.nms_plugin import OUTPUT_NAMES, add_efficient_nms

        model = add_efficient_nms(model, info, options.score, options.iou, options.max_det)
        info = dataclasses.replace(info, output_format="efficient_nms")
        output_names = list(OUTPUT_NAMES)
    ctx, device = open_context(cuda, options.device)
    try:
        plan, flags, dynamic = _run_builder(trt, cuda, model.SerializeToString(), info, options,
                                            device.name())
    finally:
        ctx.detach()
    return _write(options, plan, info, output_names, trt.__version__, device, flags, dynamic)


def _run_builder(trt: Any, cuda: Any, data: bytes, info: Any, options: BuildOptions, gpu: str) -> Any:
    from agent.inference.backends.trt_api import TrtErrors, process_logger

    logger = process_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT is one of the bundled plugins
    builder = network = parser = config = profile = timing = calibrator = plan = None
    try:
        with TrtErrors() as errors:
            builder = trt.Builder(logger)
            network = builder.create_network(network_flags(trt))
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(data):
                text = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise ModelError(f"{options.onnx_path}: TensorRT's ONNX parser failed: "
                                 f"{text or errors.text()}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * MB)
            flags = _precision_flags(trt, builder, config, options)
            profile, dynamic = _profile(builder, config, network, info.input_size, options)
            if options.int8:
                calibrator = _calibrator(trt, cuda, network, info, options)
                config.int8_calibrator = calibrator
                if profile is not None:
                    config.set_calibration_profile(profile)
            timing = _load_timing_cache(config, options.timing_path)
            log.info("building %s (TensorRT %s, %s, %s); this takes minutes", options.output, trt.__version__,
                     gpu, ", ".join(flags) or "fp32")
            started = time.monotonic()
            plan = builder.build_serialized_network(network, config)
            if calibrator is not None and calibrator.failure is not None:
                raise calibrator.failure
            if plan is None:
                raise BackendError(f"TensorRT could not build the engine: {errors.text()}. Out of memory? "
                                   "Try a smaller --workspace or --batch")
        log.info("built in %.0f s", time.monotonic() - started)
        if timing is not None:
            _save_timing_cache(timing, options.timing_path)
        return bytes(plan), flags, dynamic
    except BaseException as exc:
        # A failure's traceback keeps the frames it passed through, and every TensorRT object
        # in them, alive past the caller's ctx.detach(), and they hold resources of that CUDA
        # context. Clear the helpers' frames here (this one clears below; lines stay readable).
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        if calibrator is not None:
            calibrator.free()
        del builder, network, parser, config, profile, timing, calibrator, plan


def _precision_flags(trt: Any, builder: Any, config: Any, options: BuildOptions) -> List[str]:
    flags = []
    # INT8 layers TensorRT cannot quantize fall back to FP16 rather than FP32, NVIDIA's advice.
    if options.fp16 or options.int8:
        # platform_has_fast_* are deprecated since TensorRT 10.5 and gone later: ask only if present.
        if getattr(builder, "platform_has_fast_fp16", True) is False:
            log.warning("this GPU has no fast FP16: the FP16 engine may be no faster than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("fp16")
    if options.int8:
        if getattr(builder, "platform_has_fast_int8", True) is False:
            log.warning("this GPU has no fast INT8 (a Jetson Nano has none): expect little gain")
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("int8")
    return flags


def _profile(builder: Any, config: Any, network: Any, input_size: Any, options: BuildOptions) -> Any:
    """(profile or None, dynamic batch?) for the network's image input."""
    tensor = network.get_input(0)
    shape = tuple(int(d) for d in tensor.shape)
    batch = options.batch
    if shape[0] != -1 and batch != shape[0]:
        raise BadInputError(f"--batch {batch}: {options.onnx_path} has a fixed batch of {shape[0]} (input "
                            f"{tensor.name} {shape}); export it with --dynamic, or build with "
                            f"--batch {shape[0]}")
    if -1 not in shape:
        return None, False
    h, w = input_size
    channels = shape[1] if shape[1] > 0 else 3
    low = 1 if shape[0] == -1 else shape[0]
    shapes = [(low, channels, h, w), (batch, channels, h, w), (batch, channels, h, w)]
    profile = builder.create_optimization_profile()
    try:
        # The camera batch is what runs all the time: optimise for it, allow fewer frames.
        profile.set_shape(tensor.name, *shapes)
    except RuntimeError as exc:  # the bindings raise when min <= opt <= max does not hold
        raise BadInputError(f"{options.onnx_path}: TensorRT refused the optimization profile of input "
                            f"{tensor.name} {shape}: min/opt/max {shapes} ({exc}); check --batch") from None
    if config.add_optimization_profile(profile) < 0:
        raise ModelError(f"TensorRT rejected the optimization profile for {tensor.name} {shape}")
    return profile, shape[0] == -1


def _calibrator(trt: Any, cuda: Any, network: Any, info: Any, options: BuildOptions) -> Any:
    from agent.inference.backends.trt_api import numpy_dtype
    from agent.modeltools.tensorrt.calibrator import make_calibrator

    tensor = network.get_input(0)
    # Calibration batches are in the input's own type: float16 for an `export --half` model.
    dtype = numpy_dtype(tensor.dtype, f"input {tensor.name!r}")
    return make_calibrator(trt, cuda, _calibration_images(options), info, options.batch, options.cache_path,
                           dtype)


def _calibration_images(options: BuildOptions) -> List[Path]:
    if options.calib_images is None:
        return []  # the cache will do
    from agent.fileio import list_images

    images = list_images([str(options.calib_images)])
    if len(images) < options.batch:
        raise BadInputError(f"--calib-images {options.calib_images}: {len(images)} images, fewer than one "
                            "batch "
                            f"of {options.batch}")
    if len(images) > options.calib_max:
        step = len(images) / options.calib_max
        images = [images[int(i * step)] for i in range(options.calib_max)]  # spread over the whole set
    return images


def _load_timing_cache(config: Any, path: Path) -> Any:
    """The timing cache to build with (None: build without one), from ``path`` when usable."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:  # corrupt or from another TensorRT: start afresh
        log.warning("%s: unusable timing cache, starting a new one", path)
        cache = config.create_timing_cache(b"")
    if config.set_timing_cache(cache, False):
        return cache
    # Refused: timed on another GPU. Its timings would mislead the builder here, so build
    # without them; the fresh cache of this build replaces the file.
    log.warning("%s: timing cache made on another GPU: building without it; this build's timings will "
                "replace it", path)
    cache = config.create_timing_cache(b"")
    return cache if cache is not None and config.set_timing_cache(cache, False) else None


def _save_timing_cache(cache: Any, path: Path) -> None:
    from agent.fileio import atomic_write_bytes

    try:
        atomic_write_bytes(path, bytes(cache.serialize()))
    except OSError as exc:  # only makes the next build slower
        log.warning("cannot write the timing cache %s: %s", path, exc)


def _write(options: BuildOptions, plan: bytes, info: Any, output_names: List[str], trt_version: str,
           device: Any, flags: List[str], dynamic: bool) -> Any:
    from agent.fileio import atomic_write_bytes, atomic_write_text
    from agent.inference.backends.engine_meta import EngineMeta, sidecar_path

    build: Dict[str, Any] = {
        "source": str(options.onnx_path),
        "source_sha256": hashlib.sha256(Path(options.onnx_path).read_bytes()).hexdigest(),
        "fp16": "fp16" in flags, "int8": "int8" in flags, "batch": options.batch,
        "dynamic_batch": dynamic, "workspace_mb": options.workspace_mb,
        "nms": ({"iou": options.iou, "score": options.score, "max_det": options.max_det}
                if options.nms else None),
        "calibration_cache": str(options.cache_path) if options.int8 else None,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta = EngineMeta(info, str(trt_version), str(device.name()), tuple(device.compute_capability()),
                      output_names, build)
    atomic_write_bytes(options.output, plan)
    atomic_write_text(sidecar_path(options.output), meta.to_json())
    return meta

