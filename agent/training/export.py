"""``detection-agent export``: trained weights -> a self-describing ONNX model, verified.

The ONNX file carries ``ModelInfo`` (class names, input size, strides, output layout,
letterbox, normalisation) and the training provenance (recipe, data set fingerprint) in its
``metadata_props``, so the agent, the evaluator and the engine builder need nothing else.
The export is checked by running ONNX Runtime and the PyTorch model on the same images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from agent.errors import BadInputError
from agent.fileio import read_image
from agent.inference.preprocess import Preprocessor
from agent.types import ModelInfo

log = logging.getLogger(__name__)

TRAINING_KEY = "detection_agent.training"


@dataclasses.dataclass
class ExportReport:
    path: Path
    info: ModelInfo
    max_abs_diff: Optional[float]  # ONNX Runtime vs PyTorch on the verification images
    images_checked: int


def export_onnx(weights: Path, out: Path, imgsz: int = 416, half: bool = False, dynamic: bool = False,
                batch: int = 1, verify_images: Sequence[Path] = (),
                provenance: Optional[Dict[str, Any]] = None) -> ExportReport:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    weights = Path(weights)
    if not weights.is_file():
        raise BadInputError(f"--weights: {weights}: no such file")
    if half and dynamic:
        raise BadInputError("--half and --dynamic cannot be combined by the ONNX exporter")
    from ultralytics import YOLO

    yolo = YOLO(str(weights))
    with tempfile.TemporaryDirectory() as tmp:
        # Export from a copy so the exporter's output lands in a scratch folder.
        scratch = Path(tmp) / weights.name
        shutil.copy2(weights, scratch)
        exported = Path(YOLO(str(scratch)).export(format="onnx", imgsz=imgsz, half=half, dynamic=dynamic,
                                                  batch=batch, simplify=True, device="cpu"))
        net: Any = yolo.model  # ultralytics annotates it str | None; loaded, it is the nn.Module
        names = net.names
        strides = [int(s) for s in net.stride.tolist()]
        info = ModelInfo(input_size=(imgsz, imgsz), class_names=[names[k] for k in sorted(names)],
                         output_format="anchor_free", resize_mode="letterbox", strides=strides,
                         name=Path(out).stem)
        _edge_pads_as_concat(exported)
        _write_metadata(exported, info, provenance or {})
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp_out = Path(out).with_name(f".{Path(out).name}.tmp")
        shutil.copyfile(exported, tmp_out)
        os.replace(tmp_out, out)
    diff = verify(yolo, Path(out), info, verify_images) if verify_images else None
    return ExportReport(Path(out), info, diff, len(verify_images))


def _edge_pads_as_concat(path: Path) -> int:
    """Rewrite ``Pad`` nodes of mode ``edge`` as Slice + Concat (the same numbers).

    Darknet's size-2 stride-1 max pool (yolov3-tiny) pads its right and bottom edge with
    values that never win, which an edge (replicate) pad reproduces exactly; TensorRT's ONNX
    parser before 8.6 takes only constant-zero padding, while Slice and Concat parse
    everywhere. Returns how many nodes were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    nodes, rewritten = [], 0
    for node in graph.node:
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        if node.op_type != "Pad" or mode != "edge" or len(node.input) < 2 or node.input[1] not in known:
            nodes.append(node)
            continue
        pads = [int(v) for v in known[node.input[1]]]
        rank = len(pads) // 2
        x, tag = node.input[0], f"edgepad{rewritten}"
        steps = [(axis, at_end) for axis in range(rank) for at_end, count in
                 ((False, pads[axis]), (True, pads[rank + axis])) for _ in range(count)]
        for k, (axis, at_end) in enumerate(steps):
            start, end = (-1, np.iinfo(np.int64).max) if at_end else (0, 1)
            consts = []
            for label, value in (("starts", start), ("ends", end), ("axes", axis)):
                name = f"{tag}_{k}_{label}"
                graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
                consts.append(name)
            edge = f"{tag}_{k}_edge"
            nodes.append(helper.make_node("Slice", [x, *consts], [edge], name=edge))
            out = node.output[0] if k == len(steps) - 1 else f"{tag}_{k}_out"
            parts = [x, edge] if at_end else [edge, x]
            nodes.append(helper.make_node("Concat", parts, [out], name=out, axis=axis))
            x = out
        if not steps:
            nodes.append(helper.make_node("Identity", [x], [node.output[0]], name=f"{tag}_identity"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        # The pads tensors now feed nothing: drop them (ONNX Runtime warns at every load otherwise).
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:
            graph.initializer.remove(init)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        log.info("%s: %d edge Pad node(s) rewritten as Slice + Concat", path, rewritten)
    return rewritten


def _write_metadata(path: Path, info: ModelInfo, provenance: Dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    props = dict(info.to_metadata())
    props[TRAINING_KEY] = json.dumps({"normalisation": "RGB, pixel / 255, NCHW", **provenance}, default=str)
    existing = {p.key: p for p in model.metadata_props}
    if "description" in existing:  # ultralytics: "... trained on /abs/path/data.yaml"
        existing["description"].value = _without_local_paths(existing["description"].value)
    for key, value in props.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _without_local_paths(text: str) -> str:
    """Absolute paths made relative to the working directory (or cut to the file name), so
    a shipped model does not carry the directories of the machine that built it."""
    def shorten(match: re.Match) -> str:
        path = Path(match.group(0))
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return path.name

    return re.sub(r"(?<![\w.])/[^\s'\",]+", shorten, text)


def verify(yolo: Any, onnx_path: Path, info: ModelInfo, images: Sequence[Path]) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch outputs on ``images``."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_meta = session.get_inputs()[0]
    dtype = np.float16 if input_meta.type == "tensor(float16)" else np.float32
    preprocess = Preprocessor(info.input_size, info.resize_mode, 1, dtype)
    net = yolo.model.float().eval()
    worst = 0.0
    for path in images:
        tensor, _ = preprocess([read_image(Path(path))])
        onnx_out = session.run(None, {input_meta.name: tensor})[0].astype(np.float32)
        with torch.no_grad():
            torch_out = net(torch.from_numpy(tensor.astype(np.float32)))
        torch_out = (torch_out[0] if isinstance(torch_out, (list, tuple)) else torch_out).numpy()
        worst = max(worst, float(np.abs(onnx_out - torch_out).max()))
    return worst


def read_training_metadata(onnx_path: Path) -> Dict[str, Any]:
    """The provenance an export stored (recipe, data fingerprint); empty if none."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    raw = meta.custom_metadata_map.get(TRAINING_KEY)
    return json.loads(raw) if raw else {}
