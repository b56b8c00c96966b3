"""Models and images for the backend tests, and a detection comparison with stated tolerances.

The model is the shipped one (models/shapes-yolov3-tiny.onnx) when present; otherwise a
yolov3-tiny at width 0.25, randomly initialised and exported with ultralytics (no training),
its class-score layers re-drawn so that scores spread over (0, 1) instead of all sitting at
the prior's 0.004 (ties would make "the same detections" meaningless). Variants are made
with the ``onnx`` API: a dynamic batch and float16 input/output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from agent.fileio import read_image
from agent.types import Detections

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared"
SHIPPED = REPO / "models" / "shapes-yolov3-tiny.onnx"


def build_random_model(out_dir: Path) -> Path:
    """A train-free yolov3-tiny (width 0.25, 3 classes) exported to ONNX with ModelInfo metadata."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    from agent.training.export import _write_metadata
    from agent.training.train import prepare_model
    from agent.types import ModelInfo

    yaml_path, _, _ = prepare_model("yolov3-tiny", 3, 0.25, out_dir)
    torch.manual_seed(0)
    yolo = YOLO(yaml_path)
    net = yolo.model
    # Untrained BatchNorm layers shrink activations to ~1e-6 and every anchor would predict the
    # same box and score: estimate their statistics on the sample images (no gradients, no
    # training), then draw the last box and class layers so boxes and scores vary per anchor.
    batch = torch.from_numpy(_preprocessed(sample_images()))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration pass
            module.reset_running_stats()
    with torch.no_grad():
        net.train()
        net(batch)
        net.eval()
        head = net.model[-1]
        for boxes, classes in zip(head.cv2, head.cv3):
            boxes[-1].weight.normal_(0.0, 0.3)
            classes[-1].weight.normal_(0.0, 0.3)
            classes[-1].bias.normal_(-3.0, 0.5)
    cwd = os.getcwd()
    os.chdir(out_dir)  # the exporter writes beside the (yaml) model's name, in the working directory
    try:
        exported = Path(yolo.export(format="onnx", imgsz=416, simplify=True, device="cpu")).resolve()
    finally:
        os.chdir(cwd)
    info = ModelInfo(input_size=(416, 416), class_names=["circle", "square", "triangle"],
                     output_format="anchor_free", strides=[16, 32], name="random-yolov3-tiny")
    _write_metadata(exported, info, {"weights": "random init"})
    return exported


def _preprocessed(images: List[np.ndarray]) -> np.ndarray:
    from agent.inference.preprocess import Preprocessor

    tensor, _ = Preprocessor((416, 416), "letterbox", len(images))(images)
    return tensor.copy()


def make_batch_dynamic(src: Path, dst: Path) -> Path:
    """The model with a symbolic batch: its Reshape targets copy dim 0 (0) instead of a baked 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    inits = {i.name: i for i in graph.initializer}
    users = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]])
        if target.ndim == 1 and target.size and target[0] == 1:
            assert set(users[node.input[1]]) == {"Reshape"}, users[node.input[1]]
            fixed = target.copy()
            fixed[0] = 0  # Reshape: 0 copies the input's dimension (allowzero=0)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))
    del graph.value_info[:]  # shapes inferred for batch 1 no longer hold
    onnx.save(model, str(dst))
    return dst


def make_fp16_io(src: Path, dst: Path) -> Path:
    """The model taking and giving float16 (like ``export --half`` on a GPU), computing in float32."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    (inp,) = [i for i in graph.input if i.name not in {w.name for w in graph.initializer}]
    (out,) = graph.output
    for node in graph.node:
        node.input[:] = [f"{inp.name}_f32" if n == inp.name else n for n in node.input]
        node.output[:] = [f"{out.name}_f32" if n == out.name else n for n in node.output]
    graph.node.insert(0, helper.make_node("Cast", [inp.name], [f"{inp.name}_f32"], to=TensorProto.FLOAT))
    graph.node.append(helper.make_node("Cast", [f"{out.name}_f32"], [out.name], to=TensorProto.FLOAT16))
    inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    out.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(model, str(dst))
    return dst


def add_typed_outputs(src: Path, dst: Path, types: Sequence[str]) -> Path:
    """The model with extra outputs derived from its own: ``bool`` (score > 0.5), ``uint8``,
    ``int32``, ``int64`` (casts), for the engine's data-type plumbing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    (out,) = graph.output
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out.type.tensor_type.shape.dim]
    elem = {"bool": TensorProto.BOOL, "uint8": TensorProto.UINT8, "int32": TensorProto.INT32,
            "int64": TensorProto.INT64}
    for name in types:
        if name == "bool":
            graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "typed/half"))
            graph.node.append(helper.make_node("Greater", [out.name, "typed/half"], ["out_bool"]))
        else:
            graph.node.append(helper.make_node("Cast", [out.name], [f"out_{name}"], to=elem[name]))
        graph.output.append(helper.make_tensor_value_info(f"out_{name}", elem[name], dims))
    onnx.save(model, str(dst))
    return dst


def sample_images() -> List[np.ndarray]:
    """Real photos (darknet's samples, COCO val) and synthetic shape scenes the model knows."""
    from agent.datasets.synthetic import render_scene

    paths = sorted((SHARED / "data" / "darknet-samples").glob("*.jpg"))
    paths += sorted((SHARED / "data" / "coco-val128" / "images").rglob("*.jpg"))[:3]
    images = [read_image(p) for p in paths]
    images += [render_scene(np.random.default_rng(seed), 640, 480).image for seed in (1, 2, 3, 4)]
    return images


def assert_same_detections(got: Sequence[Detections], want: Sequence[Detections], box_rtol: float = 1e-3,
                           box_atol: float = 1e-2, score_atol: float = 1e-4,
                           min_total: Optional[int] = 1) -> None:
    """Same boxes (within ``box_rtol`` relative, ``box_atol`` pixels near 0), classes, scores, per image.

    Detections are compared in score order (ties broken by class, then box), which is how
    every backend's output leaves the shared postprocessor.
    """
    assert len(got) == len(want)
    total = 0
    for index, (a, b) in enumerate(zip(got, want)):
        assert len(a) == len(b), f"image {index}: {len(a)} detections, expected {len(b)}"
        oa, ob = _order(a), _order(b)
        np.testing.assert_array_equal(a.class_ids[oa], b.class_ids[ob], err_msg=f"image {index}: classes")
        where = f"image {index}"
        np.testing.assert_allclose(a.scores[oa], b.scores[ob], rtol=0, atol=score_atol, err_msg=where)
        np.testing.assert_allclose(a.xyxy[oa], b.xyxy[ob], rtol=box_rtol, atol=box_atol, err_msg=where)
        total += len(a)
    if min_total is not None:
        assert total >= min_total, "no detections at all: the comparison would prove nothing"


def matched_fraction(got: Sequence[Detections], want: Sequence[Detections], min_iou: float = 0.9,
                     score_atol: float = 0.02) -> float:
    """Share of ``want``'s detections with a same-class partner in ``got`` (IoU >= ``min_iou``,
    score within ``score_atol``); each partner is used once, best score first."""
    matched = total = 0
    for a, b in zip(got, want):
        free = np.ones(len(a), bool)
        for k in np.argsort(-b.scores, kind="stable"):
            total += 1
            candidates = np.flatnonzero(free & (a.class_ids == b.class_ids[k])
                                        & (np.abs(a.scores - b.scores[k]) <= score_atol))
            if candidates.size:
                ious = _iou(a.xyxy[candidates], b.xyxy[k])
                best = int(np.argmax(ious))
                if ious[best] >= min_iou:
                    free[candidates[best]] = False
                    matched += 1
    return matched / total if total else 1.0


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(box[2:] - box[:2])
    return inter / np.maximum(area - inter, 1e-9)


def _order(d: Detections) -> np.ndarray:
    keys = np.round(d.xyxy, 1)
    return np.lexsort((keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0], d.class_ids, -np.round(d.scores, 3)))


def assert_released(fake: Any) -> None:
    """Nothing left on the fake GPU: device memory, pinned memory, and no misuse recorded by
    the driver or by TensorRT (a logger used after Python freed it)."""
    assert fake.cuda.live_allocations() == []
    assert fake.cuda.live_pinned() == 0
    assert fake.cuda.FAKE.problems == []
    assert fake.knobs.STATE.problems == []
