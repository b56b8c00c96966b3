"""Deployment on the device: keep the TensorRT engine in step with the device that runs it.

A serialized TensorRT engine only runs under the TensorRT release and on the GPU that built
it, so a fresh device, a JetPack upgrade or a new model all need a rebuild before the agent
can start. ``detection-agent-engine.service`` runs, before every start of the agent::

    detection-agent ensure-engine --config /etc/detection-agent/agent.yaml

``engine_needs_build`` decides from the engine's JSON sidecar (written by ``build-engine``):
missing engine or sidecar, another ONNX file (by SHA-256), another precision or batch than the
config asks for, another TensorRT version, another GPU. When it cannot tell (no ``tensorrt``
to ask for its version), it says so and a present engine is left alone: the agent's backend
then reports the actual problem. ``ensure_engine`` returns the command's exit code: 0 the
engine is current (or was just built, or ``model.path`` is no engine), 1 it is needed and could
not be built, 2 (raised as ``BadInputError``) bad config or input. The command is in
agent/cli/models.py.

Nothing heavy is imported at module level: ``tensorrt``, ``pycuda`` and the builder are
imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

from agent.errors import BackendError, ModelError

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

# Jetson GPU families, as CUDA names them ("Orin", "Xavier", "NVIDIA Tegra X1") and as board
# names in the device tree say them ("NVIDIA Jetson Orin Nano Developer Kit"). Order matters:
# an "Orin Nano" is an Orin, not a Nano.
_FAMILIES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("orin", ("orin",)),
    ("xavier", ("xavier",)),
    ("tx2", ("tegra x2", "tx2")),
    ("tx1", ("tegra x1", "tx1", "nano")),
)


class GpuInfo(NamedTuple):
    """The GPU this process would build for: its name, compute capability, and where we read it."""

    name: str
    compute_capability: Optional[Tuple[int, int]]
    source: str  # "cuda" (the builder's own source), "nvidia-smi" or "device-tree" (board name)


class CannotDecide(BackendError):
    """Whether the engine is current cannot be told here (no TensorRT to ask)."""


class Decision(NamedTuple):
    """``engine_needs_build``'s answer: rebuild or not, why in words for the journal, and why
    as one word: ``missing`` | ``sidecar`` | ``model`` | ``precision`` | ``batch`` |
    ``tensorrt`` | ``gpu`` | ``forced`` | ``current``."""

    needs_build: bool
    reason: str
    kind: str


# ---------------------------------------------------------------- what runs here


def running_tensorrt_version() -> str:
    """The TensorRT version this interpreter imports; CannotDecide without one."""
    try:
        import tensorrt
    except ImportError as exc:
        raise CannotDecide(f"cannot import tensorrt ({exc}); on a Jetson the venv needs "
                           "--system-site-packages and JetPack's python3-libnvinfer") from None
    return str(tensorrt.__version__)


def detect_gpu(device_tree_model: Path = DEVICE_TREE_MODEL) -> Optional[GpuInfo]:
    """This device's GPU: from CUDA (what the builder records), else nvidia-smi, else the board.

    None when nothing answers (no GPU visible to this process).
    """
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        major, minor = (int(v) for v in device.compute_capability())
        return GpuInfo(str(device.name()), (major, minor), "cuda")
    except Exception as exc:  # ImportError, or pycuda's own errors (no device, no permission)
        log.debug("GPU from pycuda: %s", exc)
    gpu = _gpu_from_nvidia_smi()
    if gpu is not None:
        return gpu
    try:
        board = device_tree_model.read_bytes().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None
    return GpuInfo(board, None, "device-tree") if board else None


def _gpu_from_nvidia_smi() -> Optional[GpuInfo]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    # compute_cap needs a 510+ driver; older ones (and Jetsons) fail the query: ask for the name.
    for fields in ("name,compute_cap", "name"):
        try:
            done = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("nvidia-smi: %s", exc)
            return None
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            parts = [p.strip() for p in lines[0].split(",")]
            cc = _parse_cc(parts[1]) if len(parts) > 1 else None
            return GpuInfo(parts[0], cc, "nvidia-smi")
    return None


def _parse_cc(text: str) -> Optional[Tuple[int, int]]:
    match = re.fullmatch(r"(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _family(name: str) -> Optional[str]:
    lower = name.lower()
    for family, words in _FAMILIES:
        if any(word in lower for word in words):
            return family
    return None


def _plain(name: str) -> str:
    # "Orin (nvgpu)" (nvidia-smi on JetPack 6) and "NVIDIA GeForce RTX 3090" compare as words.
    name = re.sub(r"\(.*?\)", " ", name.lower()).replace("nvidia", " ")
    return " ".join(name.split())


def gpu_difference(built_name: str, built_cc: Optional[Sequence[int]], gpu: GpuInfo) -> Optional[str]:
    """Why an engine built on ``built_name`` does not fit ``gpu``; None when it fits or nobody knows.

    A board name from the device tree only proves a difference when it names another Jetson
    family: custom carrier boards have names of their own, and a rebuild at every boot
    would be worse than keeping a good engine.
    """
    if built_cc and gpu.compute_capability and tuple(built_cc) != tuple(gpu.compute_capability):
        return (f"built for compute capability {built_cc[0]}.{built_cc[1]} ({built_name}), "
                f"this GPU is {gpu.compute_capability[0]}.{gpu.compute_capability[1]} ({gpu.name})")
    if gpu.source == "cuda":
        return None if built_name == gpu.name else f"built on {built_name}, this GPU is {gpu.name}"
    built_family, here_family = _family(built_name), _family(gpu.name)
    if built_family and here_family:
        return None if built_family == here_family else f"built on {built_name}, this device is {gpu.name}"
    if gpu.source == "nvidia-smi" and _plain(built_name) != _plain(gpu.name):
        return f"built on {built_name}, this GPU is {gpu.name}"
    return None


# ---------------------------------------------------------------- the decision


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _precision(build: Dict[str, Any]) -> str:
    return "int8" if build.get("int8") else "fp16" if build.get("fp16") else "fp32"


def engine_needs_build(engine_path: Path, onnx_path: Optional[Path] = None, precision: str = "fp16",
                       batch: int = 1, tensorrt_version: Optional[str] = None,
                       gpu: Optional[GpuInfo] = None) -> Decision:
    """Does ``engine_path`` have to be (re)built before the agent can use it, and why.

    Cheap checks first (files, the ONNX digest, precision, batch), so a changed model is
    rebuilt even where TensorRT cannot be asked. ``tensorrt_version`` and ``gpu`` default to
    what this device runs (``running_tensorrt_version``, ``detect_gpu``). Raises CannotDecide
    when the engine's TensorRT version matters and no TensorRT can be imported.
    """
    from agent.inference.backends.engine_meta import parse_version, read_sidecar, sidecar_path

    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return Decision(True, f"no engine at {engine_path}", "missing")
    try:
        meta = read_sidecar(engine_path)
    except ModelError as exc:
        return Decision(True, str(exc), "sidecar")
    if meta is None:
        return Decision(True, f"{engine_path} has no sidecar {sidecar_path(engine_path).name}: "
                              "which TensorRT and GPU built it is unknown", "sidecar")
    build = meta.build
    built_sha = build.get("source_sha256")
    if onnx_path is not None and Path(onnx_path).is_file() and built_sha \
            and built_sha != _sha256(Path(onnx_path)):
        return Decision(True, f"{onnx_path} changed since the engine was built from "
                              f"{build.get('source')}", "model")
    if _precision(build) != precision:
        return Decision(True, f"engine is {_precision(build)}, model.precision asks for {precision}",
                        "precision")
    if int(build.get("batch", 1)) != batch:
        return Decision(True, f"engine takes batch {build.get('batch')}, inference.batch_size is {batch}",
                        "batch")
    running = running_tensorrt_version() if tensorrt_version is None else tensorrt_version
    try:
        same_version = parse_version(meta.tensorrt_version) == parse_version(running)
    except ValueError:
        same_version = False
    if not same_version:
        return Decision(True, f"built by TensorRT {meta.tensorrt_version}, this device runs "
                              f"TensorRT {running}", "tensorrt")
    here = detect_gpu() if gpu is None else gpu
    if here is None:
        return Decision(False, f"current for TensorRT {running} ({_precision(build)}, batch {batch}); "
                               "the GPU could not be read, so it was not compared", "current")
    difference = gpu_difference(meta.gpu_name, meta.compute_capability, here)
    if difference:
        return Decision(True, difference, "gpu")
    return Decision(False, f"current: TensorRT {running}, {meta.gpu_name}, {_precision(build)}, "
                           f"batch {batch}", "current")


# ---------------------------------------------------------------- ensure-engine


def _previous_build(engine_path: Path) -> Dict[str, Any]:
    """The build flags of the engine being replaced, {} when unreadable: its NMS settings carry over."""
    from agent.inference.backends.engine_meta import read_sidecar

    try:
        meta = read_sidecar(engine_path)
    except ModelError:
        return {}
    return dict(meta.build) if meta is not None else {}


def ensure_engine(config_path: Path, check_only: bool = False, force: bool = False) -> int:
    """Build the configured engine when it is missing or stale; the exit code (see module doc)."""
    from agent.config.loader import load

    cfg = load(config_path)
    engine = Path(cfg.model.path)
    if engine.suffix.lower() not in ENGINE_SUFFIXES:
        log.info("model.path %s is not a TensorRT engine: nothing to build", engine)
        return 0
    onnx = Path(cfg.model.onnx_path) if cfg.model.onnx_path else engine.with_suffix(".onnx")
    precision, batch = cfg.model.precision, cfg.inference.batch_size
    if not onnx.is_file():
        if engine.is_file():
            # Not ours to rebuild (built by hand, or the ONNX was removed): say if it looks stale.
            try:
                decision = engine_needs_build(engine, None, precision, batch)
            except CannotDecide as exc:
                decision = Decision(False, f"not checked: {exc}", "current")
            log.log(logging.WARNING if decision.needs_build else logging.INFO,
                    "no ONNX model at %s (model.onnx_path) to rebuild from: keeping %s (%s)", onnx, engine,
                    decision.reason)
            return 0
        log.error("no engine at %s and no ONNX model at %s to build it from: copy the model there "
                  "or set model.onnx_path in %s", engine, onnx, config_path)
        return 1
    try:
        decision = (Decision(True, "--force", "forced") if force
                    else engine_needs_build(engine, onnx, precision, batch))
    except CannotDecide as exc:
        if engine.is_file():
            log.warning("cannot tell whether %s is current: %s; keeping it", engine, exc)
            return 0
        log.error("cannot build %s: %s", engine, exc)
        return 1
    if not decision.needs_build:
        log.info("%s is %s", engine, decision.reason)
        return 0
    if check_only:
        log.info("%s needs a build: %s", engine, decision.reason)
        return 1
    log.info("building %s from %s: %s", engine, onnx, decision.reason)
    calib_images = cfg.model.calib_images if precision == "int8" else None
    if precision == "int8" and decision.kind in ("model", "tensorrt"):
        _retire_calibration_cache(engine, decision.kind, calib_images)
    _build(engine, onnx, precision, batch, calib_images)
    return 0


def _retire_calibration_cache(engine: Path, kind: str, calib_images: Optional[str]) -> None:
    """INT8 scales belong to one network (and are not promised across TensorRT releases).

    For a new model the old cache is wrong: it is moved aside, so the build calibrates
    afresh (or says it needs ``model.calib_images``). After a TensorRT upgrade it is only
    moved aside when images are there to calibrate with.
    """
    cache = Path(f"{engine}.calib")
    if not cache.is_file() or (kind == "tensorrt" and not calib_images):
        if cache.is_file():
            log.warning("reusing %s from the previous TensorRT; set model.calib_images to recalibrate", cache)
        return
    stale = cache.with_name(cache.name + ".stale")
    cache.replace(stale)
    log.info("calibration cache %s is stale (%s): moved to %s", cache, kind, stale.name)


def _build(engine: Path, onnx: Path, precision: str, batch: int, calib_images: Optional[str]) -> None:
    from agent.modeltools.tensorrt.build import BuildOptions, build_engine

    previous = _previous_build(engine)
    nms = previous.get("nms") if isinstance(previous.get("nms"), dict) else None
    options = BuildOptions(
        onnx_path=onnx, output=engine, fp16=precision == "fp16", int8=precision == "int8",
        calib_images=Path(calib_images) if calib_images else None,
        batch=batch, workspace_mb=int(previous.get("workspace_mb", 1024)), nms=nms is not None)
    if nms is not None:  # an engine built with --nms keeps its in-engine NMS
        options.iou = float(nms.get("iou", options.iou))
        options.score = float(nms.get("score", options.score))
        options.max_det = int(nms.get("max_det", options.max_det))
    meta = build_engine(options)
    log.info("engine written: %s (TensorRT %s, %s, %s, batch %d)", engine, meta.tensorrt_version,
             meta.gpu_name, precision, batch)

