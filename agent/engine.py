"""``detection-agent build-engine``: ONNX -> TensorRT engine, on the device that will run it.

The TensorRT builder API, step by step: the ONNX parser fills a network (explicit batch);
the builder config gets a workspace limit, FP16/INT8 flags, an optimization profile when
the batch is dynamic, an INT8 entropy calibrator that feeds images through the agent's own
``Preprocessor`` (so calibration sees exactly what inference will see), and a timing cache
that makes rebuilds fast. ``--nms`` first appends the EfficientNMS plugin (engine_nms.py).
Beside ``model.engine`` goes ``model.engine.json``: ``ModelInfo``, TensorRT version, GPU
and build flags, which the backend checks before it deserializes.

Nothing heavy is imported at module level: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import BackendError, BadInputError, ModelError

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
    from .backends.engine_meta import parse_version

    if parse_version(trt.__version__)[0] >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def build_engine(options: BuildOptions) -> Any:
    """Build and write the engine and its sidecar; returns the ``EngineMeta`` written."""
    from .backends.cuda_buffers import import_pycuda, open_context
    from .backends.onnx_info import load_onnx, summarize
    from .backends.tensorrt import import_tensorrt

    options.check()
    trt = import_tensorrt("build-engine")
    cuda = import_pycuda("build-engine")
    model = load_onnx(options.onnx_path, "build-engine")
    summary = summarize(model, options.onnx_path)
    info = summary.info
    output_names = list(summary.output_names)
    if options.nms:
        from .engine_nms import OUTPUT_NAMES, add_efficient_nms

        model = add_efficient_nms(model, info, options.score, options.iou, options.max_det)
        info = dataclasses.replace(info, output_format="efficient_nms")
        output_names = list(OUTPUT_NAMES)
    ctx, device = open_context(cuda, options.device)
    try:
        # In a function of its own so TensorRT's objects are gone before the context is destroyed.
        plan, flags, dynamic = _run_builder(trt, cuda, model.SerializeToString(), info, options,
                                            device.name())
    finally:
        ctx.detach()
    return _write(options, plan, info, output_names, trt.__version__, device, flags, dynamic)


def _run_builder(trt: Any, cuda: Any, data: bytes, info: Any, options: BuildOptions, gpu: str) -> Any:
    from .backends.tensorrt import make_logger

    logger = make_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT is one of the bundled plugins
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{options.onnx_path}: TensorRT's ONNX parser failed: "
                         f"{errors or logger.take_errors()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * MB)
    flags = _precision_flags(trt, builder, config, options)
    profile, dynamic = _profile(builder, config, network, info.input_size, options.batch)
    calibrator = None
    try:
        if options.int8:
            images = _calibration_images(options)
            calibrator = make_calibrator(trt, cuda, images, info, options.batch, options.cache_path)
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
            raise BackendError(f"TensorRT could not build the engine: {logger.take_errors()}. Out of memory? "
                               "Try a smaller --workspace or --batch")
        log.info("built in %.0f s", time.monotonic() - started)
        _save_timing_cache(timing, options.timing_path)
        return bytes(plan), flags, dynamic
    finally:
        if calibrator is not None:
            calibrator.free()


def _precision_flags(trt: Any, builder: Any, config: Any, options: BuildOptions) -> List[str]:
    flags = []
    # INT8 layers TensorRT cannot quantize fall back to FP16 rather than FP32, NVIDIA's advice.
    if options.fp16 or options.int8:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16: the FP16 engine may be no faster than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("fp16")
    if options.int8:
        if not builder.platform_has_fast_int8:
            log.warning("this GPU has no fast INT8 (a Jetson Nano has none): expect little gain")
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("int8")
    return flags


def _profile(builder: Any, config: Any, network: Any, input_size: Any, batch: int) -> Any:
    """(profile or None, dynamic batch?) for the network's image input."""
    tensor = network.get_input(0)
    shape = tuple(int(d) for d in tensor.shape)
    if -1 not in shape:
        if batch != shape[0]:
            raise BadInputError(f"--batch {batch}: the model has a fixed batch of {shape[0]}; export it with "
                                f"--dynamic, or with --batch {batch}")
        return None, False
    h, w = input_size
    channels = shape[1] if shape[1] > 0 else 3
    low = 1 if shape[0] == -1 else shape[0]
    profile = builder.create_optimization_profile()
    # The camera batch is what runs all the time: optimise for it, allow fewer frames.
    profile.set_shape(tensor.name, (low, channels, h, w), (batch, channels, h, w), (batch, channels, h, w))
    if config.add_optimization_profile(profile) < 0:
        raise ModelError(f"TensorRT rejected the optimization profile for {tensor.name} {shape}")
    return profile, shape[0] == -1


def _calibration_images(options: BuildOptions) -> List[Path]:
    if options.calib_images is None:
        return []  # the cache will do
    from .fileio import list_images

    images = list_images([str(options.calib_images)])
    if len(images) < options.batch:
        raise BadInputError(f"--calib-images {options.calib_images}: {len(images)} images, fewer than one "
                            "batch "
                            f"of {options.batch}")
    if len(images) > options.calib_max:
        step = len(images) / options.calib_max
        images = [images[int(i * step)] for i in range(options.calib_max)]  # spread over the whole set
    return images


def make_calibrator(trt: Any, cuda: Any, images: List[Path], info: Any, batch: int, cache_path: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed by the agent's own preprocessing, with a cache file."""
    import numpy as np

    from .fileio import atomic_write_bytes, read_image
    from .preprocess import Preprocessor

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.preprocess = Preprocessor(info.input_size, info.resize_mode, batch, np.float32)
            # Whole batches only: the engine's calibration shape is the profile's opt shape.
            self.batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]
            self.index = 0
            self.failure: Optional[BaseException] = None
            h, w = info.input_size
            try:
                self.device = cuda.mem_alloc(batch * 3 * h * w * 4)
            except cuda.Error as exc:
                raise BackendError(f"cannot allocate the calibration batch on the GPU: {exc}") from None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            if self.index >= len(self.batches) or self.failure is not None:
                return None
            try:
                tensor, _ = self.preprocess([read_image(p) for p in self.batches[self.index]])
                cuda.memcpy_htod(self.device, np.ascontiguousarray(tensor))
            except Exception as exc:  # an exception must not cross into TensorRT's C++ caller
                self.failure = exc
                return None
            self.index += 1
            if self.index % 10 == 0 or self.index == len(self.batches):
                log.info("calibration batch %d/%d", self.index, len(self.batches))
            return [int(self.device)]

        def read_calibration_cache(self) -> Optional[bytes]:
            if cache_path.is_file():
                log.info("using calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))
            log.info("calibration cache written: %s", cache_path)

        def free(self) -> None:
            self.device.free()

    return EntropyCalibrator()


def _load_timing_cache(config: Any, path: Path) -> Any:
    data = b""
    if path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None:  # corrupt or from another TensorRT: start afresh
        log.warning("%s: unusable timing cache, starting a new one", path)
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(cache: Any, path: Path) -> None:
    from .fileio import atomic_write_bytes

    try:
        atomic_write_bytes(path, bytes(cache.serialize()))
    except OSError as exc:  # only makes the next build slower
        log.warning("cannot write the timing cache %s: %s", path, exc)


def _write(options: BuildOptions, plan: bytes, info: Any, output_names: List[str], trt_version: str,
           device: Any, flags: List[str], dynamic: bool) -> Any:
    from .backends.engine_meta import EngineMeta, sidecar_path
    from .fileio import atomic_write_bytes, atomic_write_text

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


# ---------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``build-engine`` on the CLI's subparsers."""
    p = subparsers.add_parser("build-engine",
                              help="build a TensorRT engine from an ONNX model, on the device")
    p.add_argument("model", help="ONNX model (from `detection-agent export`)")
    p.add_argument("-o", "--output", required=True, help="engine file to write (.engine); a .json sidecar "
                                                         "goes beside it")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (about 2x faster on Jetson)")
    p.add_argument("--int8", action="store_true", help="INT8 with calibration (FP16 where INT8 cannot go)")
    p.add_argument("--calib-images", metavar="DIR", help="images for INT8 calibration, like the camera's")
    p.add_argument("--calib-cache", metavar="FILE", help="calibration cache to reuse or write (default: "
                                                         "OUTPUT.calib)")
    p.add_argument("--calib-max", type=int, default=500, help="most calibration images used (default 500)")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per call, e.g. the number of cameras (needs a --dynamic export above 1; "
                        "default 1)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace (default "
                                                                             "1024)")
    p.add_argument("--nms", action="store_true", help="append TensorRT's EfficientNMS: NMS runs on the GPU")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold with --nms (default 0.45)")
    p.add_argument("--score", type=float, default=0.25,
                   help="score floor with --nms (default 0.25); lower runtime thresholds cannot go below it")
    p.add_argument("--max-det", type=int, default=100, help="most detections per image with --nms (default "
                                                            "100)")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="TensorRT timing cache (default: beside the output)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.set_defaults(handler=cmd_build_engine)
    return p


def cmd_build_engine(args: argparse.Namespace) -> int:
    options = BuildOptions(
        onnx_path=Path(args.model), output=Path(args.output), fp16=args.fp16, int8=args.int8,
        calib_images=Path(args.calib_images) if args.calib_images else None,
        calib_cache=Path(args.calib_cache) if args.calib_cache else None, calib_max=args.calib_max,
        batch=args.batch, workspace_mb=args.workspace, nms=args.nms, iou=args.iou, score=args.score,
        max_det=args.max_det, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        device=args.device)
    meta = build_engine(options)
    size = Path(options.output).stat().st_size / MB
    precision = "int8" if meta.build["int8"] else "fp16" if meta.build["fp16"] else "fp32"
    print(f"engine written: {options.output} ({size:.1f} MB, TensorRT {meta.tensorrt_version}, "
          f"{meta.gpu_name}, "
          f"{precision}, batch {options.batch}{', EfficientNMS' if options.nms else ''})")
    return 0
