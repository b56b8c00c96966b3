# ruff: noqa: F811 - fixtures imported from backend_fixtures are, by design, redefined as arguments
"""agent.modeltools.tensorrt.deploy: is the TensorRT engine current, and ``detection-agent
ensure-engine`` (detection-agent-engine.service).

The decision is checked against sidecars written by the builder's own ``EngineMeta`` (so a
change of the sidecar format shows up here), with the running TensorRT version and GPU given
or faked; ``ensure-engine`` runs once for real, through the fake TensorRT/pycuda pair and the
real ``build_engine``, over a fresh device, a restart, a JetPack upgrade and a GPU swap.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent / "backends"))  # the fake_gpu fixture

from backend_fixtures import fake_gpu, model_path  # noqa: F401

from agent.cli.main import main
from agent.inference.backends.engine_meta import EngineMeta, read_sidecar, sidecar_path
from agent.modeltools.tensorrt import deploy
from agent.modeltools.tensorrt.deploy import (
    CannotDecide,
    GpuInfo,
    engine_needs_build,
    ensure_engine,
    gpu_difference,
)
from agent.types import ModelInfo

REPO = Path(__file__).resolve().parents[2]
ORIN = GpuInfo("Orin", (8, 7), "cuda")
TRT = "8.6.2.3"
ENSURE_ENGINE = [sys.executable, "-m", "agent", "ensure-engine", "--config"]


def write_engine(engine: Path, *, trt: str = TRT, gpu: str = "Orin", cc: tuple = (8, 7),
                 onnx: Optional[Path] = None, **build: Any) -> Path:
    """An engine file and the sidecar ``build-engine`` would write beside it."""
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(b"serialized plan")
    flags: Dict[str, Any] = {"fp16": True, "int8": False, "batch": 1, "nms": None}
    if onnx is not None:
        flags.update(source=str(onnx), source_sha256=hashlib.sha256(onnx.read_bytes()).hexdigest())
    flags.update(build)
    meta = EngineMeta(ModelInfo(class_names=["a", "b"]), trt, gpu, cc, ["output0"], flags)
    sidecar_path(engine).write_text(meta.to_json(), encoding="utf-8")
    return engine


@pytest.fixture
def onnx(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx model, version 1")
    return path


def decide(engine: Path, onnx: Optional[Path] = None, *, precision: str = "fp16", batch: int = 1,
           trt: str = TRT, gpu: GpuInfo = ORIN) -> deploy.Decision:
    return engine_needs_build(engine, onnx, precision, batch, tensorrt_version=trt, gpu=gpu)


# -- engine_needs_build ---------------------------------------------------------------------------

def test_current_engine_needs_no_build(tmp_path: Path, onnx: Path) -> None:
    engine = write_engine(tmp_path / "model.engine", onnx=onnx)
    decision = decide(engine, onnx)
    assert decision.needs_build is False and decision.kind == "current"
    assert "TensorRT 8.6.2.3" in decision.reason and "Orin" in decision.reason


def test_missing_engine_or_sidecar_needs_a_build(tmp_path: Path) -> None:
    assert decide(tmp_path / "absent.engine")[::2] == (True, "missing")
    engine = write_engine(tmp_path / "model.engine")
    sidecar_path(engine).unlink()
    decision = decide(engine)
    assert (decision.needs_build, decision.kind) == (True, "sidecar")
    assert "model.engine.json" in decision.reason


def test_unreadable_sidecar_needs_a_build(tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "model.engine")
    sidecar_path(engine).write_text("{not json", encoding="utf-8")
    assert decide(engine)[::2] == (True, "sidecar")
    sidecar_path(engine).write_text(json.dumps({"schema": "something/else"}), encoding="utf-8")
    assert decide(engine)[::2] == (True, "sidecar")


@pytest.mark.parametrize(("built", "running", "rebuild"), [
    ("8.5.2.2", "8.5.2.2", False),   # JetPack 5.1
    ("8.5.2.2", "8.6.2.3", True),    # JetPack 5.1 -> 6.0
    ("8.6.2.3", "10.3.0.30", True),  # JetPack 6.0 -> 6.1/6.2
    ("10.3.0", "10.3.0.30", True),   # not provably the same release: rebuild, as the backend refuses it
    ("10.10.0.1", "10.9.0.1", True),  # numeric, not string, comparison
])
def test_tensorrt_version_change_needs_a_build(tmp_path: Path, built: str, running: str,
                                               rebuild: bool) -> None:
    engine = write_engine(tmp_path / "model.engine", trt=built)
    decision = decide(engine, trt=running)
    assert decision.needs_build is rebuild
    if rebuild:
        assert decision.kind == "tensorrt" and built in decision.reason and running in decision.reason


def test_changed_onnx_model_needs_a_build_even_without_tensorrt(tmp_path: Path, onnx: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    engine = write_engine(tmp_path / "model.engine", onnx=onnx)
    onnx.write_bytes(b"onnx model, version 2")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    decision = engine_needs_build(engine, onnx, gpu=ORIN)
    assert (decision.needs_build, decision.kind) == (True, "model")


def test_without_tensorrt_the_version_cannot_be_decided(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = write_engine(tmp_path / "model.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CannotDecide, match="cannot import tensorrt"):
        engine_needs_build(engine, gpu=ORIN)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    assert deploy.running_tensorrt_version() == "10.3.0.30"
    assert engine_needs_build(engine, gpu=ORIN)[::2] == (True, "tensorrt")


@pytest.mark.parametrize(("flags", "wanted", "rebuild"), [
    ({"fp16": True, "int8": False}, "fp16", False),
    ({"fp16": True, "int8": True}, "int8", False),  # INT8 engines carry the FP16 flag too
    ({"fp16": False, "int8": False}, "fp32", False),
    ({"fp16": True, "int8": False}, "int8", True),
    ({"fp16": True, "int8": True}, "fp16", True),
    ({"fp16": False, "int8": False}, "fp16", True),
])
def test_precision_change_needs_a_build(tmp_path: Path, flags: Dict[str, bool], wanted: str,
                                        rebuild: bool) -> None:
    engine = write_engine(tmp_path / "model.engine", **flags)
    decision = decide(engine, precision=wanted)
    assert decision.needs_build is rebuild
    assert decision.kind == ("precision" if rebuild else "current")


def test_batch_change_needs_a_build(tmp_path: Path) -> None:
    engine = write_engine(tmp_path / "model.engine", batch=1)
    assert decide(engine, batch=1).needs_build is False
    assert decide(engine, batch=4)[::2] == (True, "batch")


@pytest.mark.parametrize(("built", "cc", "here", "rebuild"), [
    # the builder's own source (pycuda): names and compute capabilities compare exactly
    ("Orin", (8, 7), GpuInfo("Orin", (8, 7), "cuda"), False),
    ("Orin", (8, 7), GpuInfo("Xavier", (7, 2), "cuda"), True),
    ("NVIDIA Tegra X1", (5, 3), GpuInfo("Orin", (8, 7), "cuda"), True),
    ("NVIDIA GeForce RTX 3080", (8, 6), GpuInfo("NVIDIA GeForce RTX 3090", (8, 6), "cuda"), True),
    # nvidia-smi: JetPack 6 calls the iGPU "Orin (nvgpu)"; desktop names match CUDA's
    ("Orin", (8, 7), GpuInfo("Orin (nvgpu)", None, "nvidia-smi"), False),
    ("NVIDIA GeForce RTX 3090", (8, 6), GpuInfo("NVIDIA GeForce RTX 3090", (8, 6), "nvidia-smi"), False),
    ("NVIDIA GeForce RTX 3090", (8, 6), GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), "nvidia-smi"), True),
    ("NVIDIA GeForce RTX 3080", (8, 6), GpuInfo("NVIDIA GeForce RTX 3090", None, "nvidia-smi"), True),
    # board names: same family fits, another Jetson family does not, an unknown board is not judged
    ("Orin", (8, 7), GpuInfo("NVIDIA Jetson AGX Orin Developer Kit", None, "device-tree"), False),
    ("Orin", (8, 7), GpuInfo("NVIDIA Jetson Orin Nano Developer Kit", None, "device-tree"), False),
    ("NVIDIA Tegra X1", (5, 3), GpuInfo("NVIDIA Jetson Nano Developer Kit", None, "device-tree"), False),
    ("Orin", (8, 7), GpuInfo("NVIDIA Jetson Xavier NX Developer Kit", None, "device-tree"), True),
    ("Xavier", (7, 2), GpuInfo("NVIDIA Jetson AGX Orin Developer Kit", None, "device-tree"), True),
    ("Orin", (8, 7), GpuInfo("Seeed reComputer J4012", None, "device-tree"), False),
])
def test_gpu_change_needs_a_build(tmp_path: Path, built: str, cc: tuple, here: GpuInfo,
                                  rebuild: bool) -> None:
    assert (gpu_difference(built, cc, here) is not None) is rebuild
    engine = write_engine(tmp_path / "model.engine", gpu=built, cc=cc)
    assert decide(engine, gpu=here)[::2] == ((True, "gpu") if rebuild else (False, "current"))


def test_unknown_gpu_keeps_a_current_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = write_engine(tmp_path / "model.engine")
    monkeypatch.setattr(deploy, "detect_gpu", lambda: None)
    decision = engine_needs_build(engine, tensorrt_version=TRT)
    assert decision.needs_build is False and "not compared" in decision.reason


# -- detect_gpu -----------------------------------------------------------------------------------

@pytest.fixture
def no_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


def test_detect_gpu_asks_cuda_first(monkeypatch: pytest.MonkeyPatch) -> None:
    device = types.SimpleNamespace(name=lambda: "Orin", compute_capability=lambda: (8, 7))
    driver = types.SimpleNamespace(init=lambda: None, Device=lambda index: device)
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    assert deploy.detect_gpu() == GpuInfo("Orin", (8, 7), "cuda")


def test_detect_gpu_falls_back_to_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             no_pycuda: None) -> None:
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 3090, 8.6'\n", encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(smi.parent))
    assert deploy.detect_gpu(tmp_path / "no-device-tree") == GpuInfo("NVIDIA GeForce RTX 3090", (8, 6),
                                                                     "nvidia-smi")
    # an old driver refuses compute_cap: the name alone still answers
    smi.write_text('#!/bin/sh\ncase "$1" in *compute_cap*) exit 6;; esac\necho "Orin (nvgpu)"\n',
                   encoding="utf-8")
    assert deploy.detect_gpu(tmp_path / "no-device-tree") == GpuInfo("Orin (nvgpu)", None, "nvidia-smi")


def test_detect_gpu_reads_the_board_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_pycuda: None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")  # as /proc/device-tree/model reads
    assert deploy.detect_gpu(model) == GpuInfo("NVIDIA Jetson AGX Orin Developer Kit", None, "device-tree")
    assert deploy.detect_gpu(tmp_path / "absent") is None


# -- ensure-engine --------------------------------------------------------------------------------

def write_config(tmp_path: Path, model: str, **model_keys: Any) -> Path:
    extra = "".join(f"\n  {key}: {json.dumps(value)}" for key, value in model_keys.items())
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - name: front
            source: /dev/video0
        model:
          path: {json.dumps(model)}""") + extra + "\n", encoding="utf-8")
    return path


class FakeBuilder:
    """Stands in for ``agent.modeltools.tensorrt.build.build_engine``: records the options,
    writes engine and sidecar."""

    def __init__(self, trt: str = TRT, gpu: str = "Orin") -> None:
        self.calls: List[Any] = []
        self.trt, self.gpu = trt, gpu

    def __call__(self, options: Any) -> EngineMeta:
        self.calls.append(options)
        options.check()  # the real option rules (INT8 needs images or a cache)
        write_engine(Path(options.output), trt=self.trt, gpu=self.gpu, onnx=Path(options.onnx_path),
                     fp16=options.fp16 or options.int8, int8=options.int8, batch=options.batch)
        meta = read_sidecar(Path(options.output))
        assert meta is not None
        return meta


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> FakeBuilder:
    """A device running TensorRT 8.6.2.3 on an Orin, with a fake builder."""
    builder = FakeBuilder()
    monkeypatch.setattr("agent.modeltools.tensorrt.build.build_engine", builder)
    monkeypatch.setattr(deploy, "running_tensorrt_version", lambda: builder.trt)
    monkeypatch.setattr(deploy, "detect_gpu", lambda: GpuInfo(builder.gpu, (8, 7), "cuda"))
    return builder


def test_ensure_engine_builds_once_then_keeps(tmp_path: Path, onnx: Path, device: FakeBuilder) -> None:
    engine = tmp_path / "model.engine"
    config = write_config(tmp_path, str(engine), onnx_path=str(onnx), precision="fp16")
    assert ensure_engine(config) == 0
    assert len(device.calls) == 1 and engine.is_file()
    options = device.calls[0]
    assert (Path(options.onnx_path), Path(options.output)) == (onnx, engine)
    assert (options.fp16, options.int8, options.batch, options.nms) == (True, False, 1, False)
    assert ensure_engine(config) == 0  # the next start: current, nothing built
    assert len(device.calls) == 1
    device.trt = "10.3.0.30"  # JetPack upgrade
    assert ensure_engine(config, check_only=True) == 1 and len(device.calls) == 1
    assert ensure_engine(config) == 0 and len(device.calls) == 2
    assert read_sidecar(engine).tensorrt_version == "10.3.0.30"  # type: ignore[union-attr]
    assert ensure_engine(config, check_only=True) == 0
    assert ensure_engine(config, force=True) == 0 and len(device.calls) == 3


def test_ensure_engine_default_onnx_is_beside_the_engine(tmp_path: Path, device: FakeBuilder) -> None:
    engine = tmp_path / "state" / "model.engine"
    engine.parent.mkdir()
    config = write_config(tmp_path, str(engine))
    assert ensure_engine(config) == 1 and not device.calls  # nothing to build from
    engine.with_suffix(".onnx").write_bytes(b"onnx")
    assert ensure_engine(config) == 0 and len(device.calls) == 1


def test_ensure_engine_leaves_what_it_cannot_manage(tmp_path: Path, device: FakeBuilder,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # an ONNX model runs as it is
    assert ensure_engine(write_config(tmp_path, str(tmp_path / "model.onnx"))) == 0
    # an engine without its ONNX source (built by hand) is kept, with a warning when it looks stale
    engine = write_engine(tmp_path / "hand.engine", trt="8.5.2.2")
    caplog.set_level("INFO", logger="agent.modeltools.tensorrt.deploy")
    assert ensure_engine(write_config(tmp_path, str(engine))) == 0
    assert any(r.levelname == "WARNING" and "8.5.2.2" in r.getMessage() for r in caplog.records)
    # no tensorrt to ask: a present engine is kept, for the backend to judge
    (tmp_path / "hand.onnx").write_bytes(b"onnx")
    def no_tensorrt() -> str:
        raise CannotDecide("cannot import tensorrt")

    monkeypatch.setattr(deploy, "running_tensorrt_version", no_tensorrt)
    assert ensure_engine(write_config(tmp_path, str(engine))) == 0
    assert not device.calls


def test_rebuild_keeps_in_engine_nms_and_takes_the_batch(tmp_path: Path, onnx: Path,
                                                         device: FakeBuilder) -> None:
    engine = write_engine(tmp_path / "model.engine", onnx=onnx, trt="8.5.2.2",
                          nms={"iou": 0.5, "score": 0.3, "max_det": 50}, workspace_mb=512)
    config = write_config(tmp_path, str(engine), onnx_path=str(onnx))
    config.write_text(config.read_text() + "inference:\n  batch_size: 2\n", encoding="utf-8")
    assert ensure_engine(config) == 0
    options = device.calls[0]
    assert (options.nms, options.iou, options.score, options.max_det) == (True, 0.5, 0.3, 50)
    assert (options.batch, options.workspace_mb) == (2, 512)


def test_int8_rebuild_for_a_new_model_drops_the_stale_calibration(tmp_path: Path, onnx: Path,
                                                                   device: FakeBuilder) -> None:
    engine = write_engine(tmp_path / "model.engine", onnx=onnx, int8=True)
    cache = Path(f"{engine}.calib")
    cache.write_bytes(b"scales of the old network")
    onnx.write_bytes(b"onnx model, version 2")
    config = write_config(tmp_path, str(engine), onnx_path=str(onnx), precision="int8")
    # without images the build must refuse, not calibrate the new network with the old scales
    assert main(["ensure-engine", "--config", str(config)]) == 2
    assert not cache.exists() and Path(f"{cache}.stale").read_bytes() == b"scales of the old network"
    images = tmp_path / "calib"
    images.mkdir()
    config = write_config(tmp_path, str(engine), onnx_path=str(onnx), precision="int8",
                          calib_images=str(images))
    assert ensure_engine(config) == 0
    assert device.calls[-1].int8 and Path(device.calls[-1].calib_images) == images


def test_the_command_as_the_unit_runs_it(tmp_path: Path) -> None:
    """``detection-agent ensure-engine --config FILE`` (``python -m agent`` is the same program),
    as the oneshot unit calls it: what it decided is logged at INFO without --log-level."""
    config = write_config(tmp_path, str(tmp_path / "model.onnx"))
    done = subprocess.run([*ENSURE_ENGINE, str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "not a TensorRT engine: nothing to build" in done.stderr
    assert "INFO agent.modeltools.tensorrt.deploy: model.path" in done.stderr
    assert "tensorrt" not in done.stderr.lower().replace("a tensorrt engine", "").replace(".tensorrt.", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: []\nmodel: {path: m.engine}\n", encoding="utf-8")
    done = subprocess.run([*ENSURE_ENGINE, str(bad)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "bad.yaml" in done.stderr


# -- end to end, through the real builder and the fake TensorRT/pycuda pair -------------------------

def test_first_boot_upgrade_and_gpu_swap_with_the_real_builder(tmp_path: Path, model_path: Path,
                                                                fake_gpu: types.SimpleNamespace) -> None:
    engine = tmp_path / "state" / "model.engine"
    engine.parent.mkdir()
    config = write_config(tmp_path, str(engine), onnx_path=str(model_path), precision="fp16")
    trt, cuda = fake_gpu.trt, fake_gpu.cuda

    assert ensure_engine(config) == 0  # fresh device
    meta = read_sidecar(engine)
    assert meta is not None and meta.tensorrt_version == trt.__version__ and meta.build["fp16"] is True
    assert deploy.detect_gpu() == GpuInfo(cuda.FAKE.device_name, tuple(cuda.FAKE.compute_capability), "cuda")
    assert len(fake_gpu.knobs.STATE.builds) == 1
    assert ensure_engine(config) == 0  # restart: current
    assert len(fake_gpu.knobs.STATE.builds) == 1

    fake_gpu.knobs.configure(version="10.9.0.34")  # JetPack upgrade
    assert ensure_engine(config) == 0
    assert len(fake_gpu.knobs.STATE.builds) == 2 and read_sidecar(engine).tensorrt_version == "10.9.0.34"  # type: ignore[union-attr]

    cuda.FAKE.device_name, cuda.FAKE.compute_capability = "Xavier (fake)", (7, 2)  # SD card moved
    assert ensure_engine(config, check_only=True) == 1
    assert ensure_engine(config) == 0
    assert len(fake_gpu.knobs.STATE.builds) == 3
    assert read_sidecar(engine).compute_capability == (7, 2)  # type: ignore[union-attr]


def test_int8_on_a_tensorrt_without_calibration_stops_with_one_line(tmp_path: Path, model_path: Path,
                                                                     fake_gpu: types.SimpleNamespace,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """TensorRT's main branch removed INT8 calibration: the engine unit fails with what to do (exit 2)."""
    fake_gpu.knobs.configure(generation="11")
    engine = tmp_path / "model.engine"
    config = write_config(tmp_path, str(engine), onnx_path=str(model_path), precision="int8",
                          calib_images=str(tmp_path))
    assert main(["ensure-engine", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --int8 (model.precision: int8): TensorRT 11.")
    assert "Q/DQ" in err[-1] and not engine.exists()
    assert fake_gpu.knobs.STATE.builds == []
