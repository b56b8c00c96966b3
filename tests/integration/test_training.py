"""A real (tiny) ultralytics training run, fine-tuning with frozen layers, and ONNX export.

Tiny settings keep it to well under a minute on two cores; the real training is
``make model``, not a test.
"""

import json

import numpy as np
import onnx
import pytest

pytest.importorskip("ultralytics")

from agent.datasets.synthetic import make_dataset
from agent.inference.backends.onnxruntime import OnnxRuntimeBackend
from agent.training.export import export_onnx, read_training_metadata
from agent.training.recipe import load_recipe
from agent.training.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "shapes", train=8, val=4, imgsz=64, seed=3)
    recipe = load_recipe("configs/train/augment-default.yaml")
    result = train(data, recipe, "yolov3-tiny", width=0.25, project=root / "runs", name="scratch",
                   overrides={"epochs": 1, "imgsz": 64, "batch": 4})
    return root, data, result


def test_training_from_scratch_writes_weights_and_a_record(trained):
    _, _, result = trained
    assert result.best_weights.is_file() and result.plan.strategy == "full"
    record = json.loads((result.run_dir / "training.json").read_text())
    assert record["recipe"]["name"] == "augment-default"
    assert record["ultralytics_args"]["degrees"] == 10.0 and record["ultralytics_args"]["freeze"] is None


def test_head_only_fine_tuning_leaves_frozen_layers_untouched(trained):
    import torch

    root, data, result = trained
    tuned = train(data, load_recipe("configs/train/no-augment.yaml"), str(result.best_weights),
                  strategy="auto", data_size="small", similarity="high", project=root / "runs", name="head",
                  overrides={"epochs": 1, "imgsz": 64, "batch": 4})
    assert tuned.plan.strategy == "head" and tuned.plan.frozen_layers == list(range(20))
    before = torch.load(result.best_weights, map_location="cpu", weights_only=False)["model"].state_dict()
    after = torch.load(tuned.run_dir / "weights" / "last.pt", map_location="cpu",
                       weights_only=False)["model"].state_dict()
    frozen = [k for k in before if k.startswith("model.0.conv") or k.startswith("model.13.conv")]
    head = [k for k in before if k.startswith("model.20.") and k.endswith("weight")]
    assert frozen and head
    assert all(torch.equal(before[k].float(), after[k].float()) for k in frozen)
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in head)


def test_export_is_self_describing_and_matches_pytorch(trained):
    root, _, result = trained
    out = root / "model.onnx"
    images = sorted((root / "shapes" / "images" / "val").glob("*.jpg"))[:2]
    report = export_onnx(result.best_weights, out, imgsz=64, verify_images=images,
                         provenance={"recipe": "augment-default"})
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-2
    backend = OnnxRuntimeBackend(out)
    info = backend.info
    assert info.class_names == ["circle", "square", "triangle"]
    assert info.input_size == (64, 64) and info.output_format == "anchor_free"
    assert info.resize_mode == "letterbox" and info.strides == [16, 32]
    assert read_training_metadata(out)["recipe"] == "augment-default"
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["description"].endswith("trained on data.yaml")  # not the build machine's path
    assert not any(str(root) in value for value in props.values())
    (output,) = backend.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert output.shape == (1, 4 + 3, (64 // 16) ** 2 + (64 // 32) ** 2)


def test_export_command_verifies_a_png_data_set_on_its_images(trained, capsys):
    import cv2

    from agent.cli.main import main

    root, _, result = trained
    pngs = root / "png-val"
    pngs.mkdir()
    for jpg in sorted((root / "shapes" / "images" / "val").glob("*.jpg"))[:3]:
        cv2.imwrite(str(pngs / f"{jpg.stem}.png"), cv2.imread(str(jpg)))
    out = root / "png.onnx"
    assert main(["export", "--weights", str(result.best_weights), "-o", str(out), "--imgsz", "64",
                 "--verify-images", str(pngs)]) == 0
    assert "ONNX Runtime vs PyTorch on 3 images" in capsys.readouterr().out
