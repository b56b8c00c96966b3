"""Darknet -> ONNX converter checked layer by layer against OpenCV 4's darknet importer.

What is compared: the per-head rows OpenCV's ``[yolo]`` layer emits (``yolo_<N>``, shape
``[H*W*na, 5+nc]``) against the converter's decoded outputs of the same name, row by row.
OpenCV normalises boxes by the input size (ours are in input pixels: divided here) and
writes class scores as objectness x sigmoid(class), zeroed where that product is below the
cfg's ``thresh`` (0.2 by default); so class scores are compared as products where OpenCV
kept them, and where it zeroed them ours must be below the threshold (plus the tolerance).
Tolerance: 1e-3 absolute in OpenCV's units.
"""

import json
import re
import time
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest

from agent.modeltools.darknet import layers as darknet_layers
from agent.modeltools.darknet import to_onnx as darknet_onnx
from agent.modeltools.darknet import weights as darknet_weights

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.skipif(not hasattr(cv2.dnn, "readNetFromDarknet"),
                                reason="OpenCV 5 dropped the darknet importer; the reference needs 4.x")

TINY_DIR = Path("../shared/models/yolov3-tiny-coco")
TINY_CFG = TINY_DIR / "yolov3-tiny.cfg"
CFG_DIR = Path("../shared/models/darknet-cfg")
SAMPLES = sorted(Path("../shared/data/darknet-samples").glob("*.jpg"))
ATOL = 1e-3
#: Largest differences seen per case, printed by the last test (pytest -s) for the issue note.
MAX_DIFFS: Dict[str, float] = {}


def blob(image: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    return cv2.dnn.blobFromImage(image, 1 / 255.0, (hw[1], hw[0]), swapRB=True, crop=False)


def compare_with_opencv(cfg: Path, weights: Path, onnx_path: Path, batch: np.ndarray,
                        thresh: float = 0.2) -> float:
    """Largest absolute difference between OpenCV's yolo layers and the ONNX outputs."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    names = list(net.getUnconnectedOutLayersNames())
    net.setInput(batch)
    theirs = net.forward(names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # faster start
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names  # same heads, same order, same names
    ours = session.run(names, {"images": batch})
    h, w = batch.shape[2:]
    worst = 0.0
    for ref, out in zip(theirs, ours):
        # OpenCV gives [rows, 5+nc] for one image, [B, rows, 5+nc] for several
        ref, out = ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1])
        assert ref.shape == out.shape
        boxes = out[:, :4] / np.array([w, h, w, h], np.float32)
        scores = out[:, 5:] * out[:, 4:5]
        kept = ref[:, 5:] > 0
        diffs = [np.abs(boxes - ref[:, :4]).max(), np.abs(out[:, 4] - ref[:, 4]).max(),
                 np.abs(scores[kept] - ref[:, 5:][kept]).max(initial=0.0)]
        assert scores[~kept].max(initial=0.0) <= thresh + ATOL
        worst = max(worst, *(float(d) for d in diffs))
    return worst


def random_weights(cfg: Path, out: Path, seed: int = 0) -> None:
    """A weights file of the right size whose values keep activations in a sane range."""
    rng = np.random.default_rng(seed)
    # Kernels are cut from one pool of normal values: drawing 60 M fresh ones costs seconds.
    pool = rng.standard_normal(1 << 20, np.float32)
    path = Path(cfg)
    _, layers = darknet_layers.plan(path)
    parts: List[np.ndarray] = []
    channels = {-1: 3}
    for layer in layers:
        channels[layer.index] = layer.shape[0]
        if layer.section.kind != "convolutional":
            continue
        in_c = channels[layer.inputs[0]]
        filters = layer.shape[0]
        fan_in = layer.params // filters - (4 if "batch_normalize" in layer.section.options else 1)
        start = int(rng.integers(0, pool.size))
        kernel = np.resize(np.roll(pool, -start), fan_in * filters) / np.float32(np.sqrt(fan_in))
        if layer.section.options.get("batch_normalize") == "1":
            # gamma / sqrt(var) about 0.6: 23 residual additions must not blow up to inf
            parts += [rng.normal(0, 0.1, filters), rng.uniform(0.4, 0.9, filters),
                      rng.normal(0, 0.1, filters), rng.uniform(0.5, 2.0, filters)]
        else:
            parts.append(rng.normal(0, 0.5, filters))
            kernel *= 0.5
        assert fan_in == in_c * int(layer.section.options.get("size", 1)) ** 2
        parts.append(kernel)
    params = np.concatenate(parts).astype(np.float32)
    assert params.size == darknet_layers.parameter_count(cfg)
    darknet_weights.write_weights(out, params)


def resized_cfg(src: Path, tmp_path: Path, size: int) -> Path:
    """A copy of ``src`` with its [net] width/height set to ``size`` (OpenCV takes them from the cfg)."""
    text = re.sub(r"(?m)^(\s*(width|height)\s*=\s*)\d+", lambda m: f"{m.group(1)}{size}", src.read_text())
    out = tmp_path / src.name
    out.write_text(text)
    return out


@pytest.mark.parametrize("image", SAMPLES, ids=lambda p: p.name)
def test_official_tiny_matches_opencv_on_real_photos(tmp_path, image):
    onnx_path = darknet_onnx.convert(TINY_CFG, TINY_CFG.with_suffix(".weights"), tmp_path / "tiny.onnx")
    diff = compare_with_opencv(TINY_CFG, TINY_CFG.with_suffix(".weights"), onnx_path,
                               blob(cv2.imread(str(image)), (416, 416)))
    MAX_DIFFS[f"yolov3-tiny official 416 {image.name}"] = diff
    assert diff < ATOL


def test_official_tiny_batch_and_imgsz(tmp_path):
    """A static batch of 2 at --imgsz 320 (OpenCV given a cfg saying 320)."""
    cfg = resized_cfg(TINY_CFG, tmp_path, 320)
    weights = TINY_CFG.with_suffix(".weights")
    onnx_path = darknet_onnx.convert(TINY_CFG, weights, tmp_path / "tiny320.onnx", imgsz=320, batch=2)
    images = [cv2.imread(str(p)) for p in SAMPLES[:2]]
    batch = np.concatenate([blob(im, (320, 320)) for im in images])
    diff = compare_with_opencv(cfg, weights, onnx_path, batch)
    MAX_DIFFS["yolov3-tiny official 320 batch 2"] = diff
    assert diff < ATOL


CFG_CASES = [("yolov3-tiny", 416), ("yolov3", 160), ("yolov3-spp", 160), ("yolov3-voc", 128),
             ("yolov3-openimages", 128)]


@pytest.mark.parametrize("name, size", CFG_CASES, ids=[c[0] for c in CFG_CASES])
def test_every_shipped_cfg_with_random_weights_matches_opencv(tmp_path, name, size):
    start = time.monotonic()
    cfg = resized_cfg(CFG_DIR / f"{name}.cfg", tmp_path, size)
    weights = tmp_path / f"{name}.weights"
    random_weights(cfg, weights)
    names = [str(k) for k in range(20)] if name == "yolov3-voc" else None
    # One dynamic-batch model, two images in one call (static batch 1 is the official tiny's case).
    onnx_path = darknet_onnx.convert(cfg, weights, tmp_path / f"{name}.onnx", names=names, dynamic=True)
    rng = np.random.default_rng(1)
    batch = np.concatenate([blob(cv2.imread(str(SAMPLES[0])), (size, size)),
                            rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32)])
    diff = compare_with_opencv(cfg, weights, onnx_path, batch)
    MAX_DIFFS[f"{name} random {size}"] = diff
    assert diff < ATOL, f"{name}: {diff} ({time.monotonic() - start:.1f} s)"


SYNTHETIC = """
[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=mish
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=swish
[route]
layers=-1
groups=2
group_id=1
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=logistic
[shortcut]
from=-2
activation=leaky
[maxpool]
size=2
stride=1
[maxpool]
size=5
stride=1
[route]
layers=-1,-3,2
[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,5, 8,9, 20,22
classes=2
num=3
scale_x_y=1.1
"""


def test_synthetic_cfg_exercises_every_layer_kind(tmp_path):
    """mish, swish, logistic, route groups, shortcut activation, absolute route index,
    size-2 and size-5 stride-1 maxpools, scale_x_y."""
    cfg = tmp_path / "synthetic.cfg"
    cfg.write_text(SYNTHETIC)
    weights = tmp_path / "synthetic.weights"
    random_weights(cfg, weights, seed=3)
    onnx_path = darknet_onnx.convert(cfg, weights, tmp_path / "synthetic.onnx", names=["a", "b"])
    batch = blob(cv2.imread(str(SAMPLES[0])), (64, 64))
    diff = compare_with_opencv(cfg, weights, onnx_path, batch)
    MAX_DIFFS["synthetic 64"] = diff
    assert diff < ATOL


def test_print_max_diffs():
    for case, diff in MAX_DIFFS.items():
        print(f"max |diff| {case}: {diff:.2e}")


def test_detect_on_a_cfg_runs_the_converted_model_like_opencv(tmp_path, monkeypatch, capsys):
    """``detect --model X.cfg``: converted on the fly into the user cache, run by ONNX Runtime,
    the same detections as ``--backend opencv`` (OpenCV's importer) on darknet's dog.jpg."""
    from agent.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dog = str(SAMPLES[0].parent / "dog.jpg")
    results = {}
    for backend in ("auto", "opencv"):
        out = tmp_path / f"{backend}.json"
        assert main(["detect", "--model", str(TINY_CFG), "--backend", backend, dog, "--json", str(out),
                     "--quiet"]) == 0
        results[backend] = json.loads(out.read_text())[0]["detections"]
    assert list((tmp_path / "cache" / "detection-agent" / "darknet").glob("yolov3-tiny-*.onnx"))
    mine, ref = results["auto"], results["opencv"]
    assert [d["label"] for d in mine] == [d["label"] for d in ref]
    assert {"dog", "car", "truck", "bicycle"} <= {d["label"] for d in mine}
    for a, b in zip(mine, ref):
        assert abs(a["score"] - b["score"]) < 1e-3
        np.testing.assert_allclose(a["box"], b["box"], atol=0.2)


def test_convert_darknet_cli_writes_a_model_build_engine_can_read(tmp_path, capsys):
    from agent.cli.main import main
    from agent.inference.backends.onnx_info import read_summary

    out = tmp_path / "tiny.onnx"
    assert main(["convert-darknet", str(TINY_CFG), str(TINY_CFG.with_suffix(".weights")), "-o", str(out),
                 "--imgsz", "320", "--batch", "2"]) == 0
    assert "yolo_16, yolo_23" in capsys.readouterr().out
    summary = read_summary(out, "test")  # what build-engine reads
    assert summary.input_shape == (2, 3, 320, 320) and summary.info.class_names[16] == "dog"
    assert summary.info.output_format == "objectness" and summary.info.strides == [32, 16]
    assert main(["convert-darknet", str(TINY_CFG), str(out), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not a whole number of float32 values" in capsys.readouterr().err  # an ONNX file as weights
