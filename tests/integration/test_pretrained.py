"""Darknet weights as a starting point for training (``train --pretrained CFG``).

- exactness: the PyTorch model built from darknet's yolov3-tiny.cfg, with the official COCO
  weights loaded, gives the same feature maps at the head inputs as the darknet -> ONNX
  converter (itself checked against OpenCV's importer) on darknet's sample photos;
- the full yolov3 and yolov3-spp cfgs load exactly too (synthetic weights of the right size:
  only the tiny weights exist offline);
- yolov3-tiny-3l: the tiny weights load into its backbone and necks, the stride-8 branch is new;
- mismatches are one-line errors with exit code 2 before any training;
- strategies on the real weights: frozen layers bit-identical after an epoch, trainable moved.
"""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest

from agent.cli.main import main
from agent.modeltools.darknet import layers as darknet_layers
from agent.modeltools.darknet import to_onnx as darknet_onnx
from agent.modeltools.darknet import weights as darknet_weights
from agent.training import darknet_init

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from ultralytics.nn.tasks import DetectionModel  # noqa: E402

TINY_CFG = Path("../shared/models/yolov3-tiny-coco/yolov3-tiny.cfg")
TINY_WEIGHTS = TINY_CFG.with_suffix(".weights")
CFG_DIR = Path("../shared/models/darknet-cfg")
SAMPLES = sorted(Path("../shared/data/darknet-samples").glob("*.jpg"))


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """Plain resize, RGB, /255: the converter's and OpenCV's preprocessing."""
    rgb = cv2.resize(image, (size, size))[:, :, ::-1]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)


def torch_features(model, layers: List[int], x: np.ndarray) -> Dict[int, np.ndarray]:
    out: Dict[int, np.ndarray] = {}
    hooks = [model.model[k].register_forward_hook(lambda _m, _i, o, k=k: out.__setitem__(k, o.numpy()))
             for k in layers]
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    return out


def onnx_features(cfg: Path, weights: Path, layers: List[int], x: np.ndarray) -> List[np.ndarray]:
    """Outputs of darknet layers ``layers`` (after their activation) in the converted graph."""
    proto = darknet_onnx.build(cfg, weights)
    names = [f"conv_{k}_act" for k in layers]
    for name in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"images": x})


def loaded_model(cfg: Path, weights: Path, nc: int = 3, target_cfg: Optional[Path] = None):
    topo = darknet_init.translate(target_cfg or cfg, nc)
    model = DetectionModel(topo.spec, nc=nc, verbose=False)
    report = darknet_init.load_into(model, topo, cfg, weights)
    return topo, model, report


@pytest.fixture(scope="module")
def tiny():
    return loaded_model(TINY_CFG, TINY_WEIGHTS)


def test_official_tiny_weights_load_with_the_expected_report(tiny):
    _topo, _model, report = tiny
    assert (report.loaded, report.total, report.new) == (11, 13, 0)
    assert report.describe(3) == ("pretrained: 11 of 13 convolutions loaded from yolov3-tiny.weights "
                                  "(COCO, 80 classes: backbone and neck); head: new, 3 classes")


@pytest.mark.parametrize("image", SAMPLES[:3], ids=lambda p: p.name)
def test_head_input_features_equal_the_darknet_conversion(tiny, image):
    topo, model, _ = tiny
    x = to_input(cv2.imread(str(image)), 416)
    ours = torch_features(model, topo.head_layers, x)
    theirs = onnx_features(TINY_CFG, TINY_WEIGHTS, topo.head_inputs, x)
    for k, ref in zip(topo.head_layers, theirs):
        assert ours[k].shape == ref.shape
        assert float(np.abs(ours[k] - ref).max()) < 1e-4, (image.name, k)
        assert float(np.abs(ref).max()) > 1.0  # real features, not a dead network


def random_weights(cfg: Path, out: Path, seed: int = 0) -> None:
    """A weights file of the right size with activations kept in range (fan-in scaled kernels)."""
    rng = np.random.default_rng(seed)
    _, layers = darknet_layers.plan(cfg)
    parts = []
    for layer in layers:
        if layer.section.kind != "convolutional":
            continue
        filters = layer.shape[0]
        bn = layer.section.options.get("batch_normalize") == "1"
        fan_in = layer.params // filters - (4 if bn else 1)
        if bn:
            parts += [rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters),
                      rng.normal(0, 0.1, filters), rng.uniform(0.2, 2.0, filters)]
        else:
            parts.append(rng.normal(0, 0.1, filters))
        parts.append(rng.standard_normal(fan_in * filters, np.float32) / np.float32(np.sqrt(fan_in)))
    darknet_weights.write_weights(out, np.concatenate(parts).astype(np.float32))


# yolov3-spp has one more convolution (after its pools) than yolov3's 75.
@pytest.mark.parametrize("name, convolutions", [("yolov3", 75), ("yolov3-spp", 76)])
def test_full_yolov3_cfgs_load_exactly_from_weights_of_their_size(tmp_path, name, convolutions):
    text = (CFG_DIR / f"{name}.cfg").read_text()
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(text.replace("width=608", "width=64").replace("height=608", "height=64")
                   .replace("width=416", "width=64").replace("height=416", "height=64"))
    weights = cfg.with_suffix(".weights")
    random_weights(cfg, weights)
    topo, model, report = loaded_model(cfg, weights, nc=3)
    # all but the three 255-channel head convolutions
    assert (report.loaded, report.total) == (convolutions - 3, convolutions)
    modules = [entry[2] for entry in topo.spec["backbone"] + topo.spec["head"]]
    assert modules.count("Bottleneck") == 23  # darknet-53's residual blocks (1 + 2 + 8 + 8 + 4)
    assert modules.count("nn.MaxPool2d") == (3 if name == "yolov3-spp" else 0)
    x = to_input(cv2.imread(str(SAMPLES[0])), 64)
    ours = torch_features(model, topo.head_layers, x)
    theirs = onnx_features(cfg, weights, topo.head_inputs, x)
    for k, ref in zip(topo.head_layers, theirs):
        scale = float(np.abs(ref).max())
        assert scale > 0.1
        assert float(np.abs(ours[k] - ref).max()) < 1e-4 * max(1.0, scale), (name, k)


def test_tiny_3l_loads_the_tiny_weights_and_adds_a_stride_8_head(tmp_path, tiny):
    target = darknet_init.stride8_branch(TINY_CFG, tmp_path / "yolov3-tiny-3l.cfg")
    topo, model, report = loaded_model(TINY_CFG, TINY_WEIGHTS, target_cfg=target)
    assert (report.loaded, report.total, report.new) == (11, 13, 2)
    assert "new: 2 neck convolutions" in report.describe(3)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 416, 416))
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    # The two original heads' features are exactly the tiny model's.
    x = to_input(cv2.imread(str(SAMPLES[0])), 416)
    tiny_topo, tiny_model, _ = tiny
    ours = torch_features(model, topo.head_layers[1:], x)
    ref = torch_features(tiny_model, tiny_topo.head_layers, x)
    for k in tiny_topo.head_layers:
        assert np.array_equal(ours[k], ref[k])


def run_cli(capsys, *argv: str):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from agent.datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("pretrained")
    return root, make_dataset(root / "shapes", train=8, val=4, imgsz=64, seed=5)


def test_mismatches_are_one_line_errors_before_training(tmp_path, capsys, shapes):
    _, data = shapes
    project = tmp_path / "runs"
    lonely = tmp_path / "lonely" / "yolov3-tiny.cfg"
    lonely.parent.mkdir()
    shutil.copy(TINY_CFG, lonely)
    truncated = tmp_path / "cut" / "yolov3-tiny.cfg"
    truncated.parent.mkdir()
    shutil.copy(TINY_CFG, truncated)
    truncated.with_suffix(".weights").write_bytes(TINY_WEIGHTS.read_bytes()[:1_000_000])
    cases = [
        ([str(lonely)], "no weights file beside it"),
        ([str(truncated)], "truncated: holds 249995 float32 parameters"),
        ([str(TINY_CFG), "--model", "yolov3"], "--model yolov3 does not fit"),
        ([str(TINY_CFG), "--width", "0.5"], "--width cannot change a pretrained network"),
        ([str(tmp_path / "missing.cfg")], "no such darknet cfg file"),
    ]
    for extra, message in cases:
        code, lines = run_cli(capsys, "train", "--data", str(data), "--project", str(project),
                              "--name", "bad", "--epochs", "1", "--pretrained", *extra[:1], *extra[1:])
        assert code == 2, (extra, lines)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (extra, lines)
        assert not (project / "bad" / "weights").exists()  # nothing trained


def state(path: Path) -> Dict[str, "torch.Tensor"]:
    """A checkpoint's tensors as ultralytics stores trained weights (float16; EMA of a frozen
    tensor is the tensor itself, bit for bit)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.half() if v.is_floating_point() else v
            for k, v in (ckpt.get("ema") or ckpt["model"]).state_dict().items()}


@pytest.mark.parametrize("given, strategy, frozen_prefixes, moved_prefixes", [
    # head: everything the weights filled stays; the new stride-8 branch (20, 23) and Detect train
    ("head", "head", ["model.0.", "model.8.", "model.13.", "model.19."],
     ["model.20.", "model.23.", "model.24."]),
    # auto on 8 images of shapes: small and unlike COCO -> partial-early: the stem (stride <= 4:
    # layers 0-4) stays, the rest retrains
    ("auto", "partial-early", ["model.0.", "model.2.", "model.4."], ["model.6.", "model.13.", "model.24."]),
])
def test_strategies_on_the_real_weights_freeze_what_they_say(shapes, capsys, given, strategy, frozen_prefixes,
                                                              moved_prefixes):
    root, data = shapes
    code = main(["train", "--data", str(data), "--model", "yolov3-tiny-3l", "--pretrained", str(TINY_CFG),
                 "--strategy", given, "--recipe", "configs/train/no-augment.yaml", "--epochs", "1",
                 "--imgsz", "64", "--batch", "4", "--project", str(root / "runs"), "--name", given])
    out = capsys.readouterr().out
    assert code == 0
    if given == "auto":
        assert ("--strategy auto: data size 'small' estimated: 8 training images (small means under "
                "1000); similarity 'low' estimated: 0 of the 3 class names are among the 80 pretraining "
                "classes") in out
    run = root / "runs" / given
    record = json.loads((run / "training.json").read_text())
    assert record["pretrained"].startswith("pretrained: 11 of 13 convolutions loaded from "
                                           "yolov3-tiny.weights")
    assert record["strategy"]["strategy"] == strategy and record["model"] == "yolov3-tiny-3l"
    before, after = state(run / "pretrained-init.pt"), state(run / "weights" / "last.pt")
    # BN running statistics of frozen layers stay too: ultralytics keeps frozen BN layers in eval.
    for prefix in frozen_prefixes:
        keys = [k for k in before if k.startswith(prefix) and "num_batches" not in k]
        assert keys and all(torch.equal(before[k], after[k]) for k in keys), prefix
    for prefix in moved_prefixes:
        keys = [k for k in before if k.startswith(prefix) and k.endswith("weight")]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), prefix


def test_the_exported_3l_model_has_no_edge_padding_and_matches_pytorch(tmp_path, shapes):
    """darknet's pool padding exports as Slice + Concat (TensorRT < 8.6 parses only zero Pad)."""
    from agent.inference.backends.onnxruntime import OnnxRuntimeBackend
    from agent.training.export import export_onnx
    from agent.training.train import prepare_pretrained

    root, _ = shapes
    checkpoint, _spec, _line, new_layers = prepare_pretrained(TINY_CFG, "yolov3-tiny-3l", 3, None, tmp_path)
    assert new_layers == [20, 23]
    images = sorted((root / "shapes" / "images" / "val").glob("*.jpg"))[:2]
    report = export_onnx(Path(checkpoint), tmp_path / "m.onnx", imgsz=64, verify_images=images)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-2
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert "Pad" not in ops and ops.count("Concat") >= 4
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    used = {name for n in graph.node for name in n.input}
    assert all(init.name in used for init in graph.initializer)  # no dangling pads tensor
    info = OnnxRuntimeBackend(tmp_path / "m.onnx").info
    assert info.strides == [8, 16, 32]
