"""``train`` and ``export``: augmentation-trained weights and a verified ONNX export (agent/training/).

Nothing from agent/training is imported until the command runs: it brings torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train YOLOv3 weights with an augmentation recipe (ultralytics)")
    p.add_argument("--data", required=True, help="data YAML (ultralytics format)")
    p.add_argument("--model", help="yolov3-tiny (default) | yolov3-tiny-3l | yolov3 | yolov3-spp | PATH.pt; "
                                    "with --pretrained, the cfg's own network or yolov3-tiny-3l")
    p.add_argument("--pretrained", metavar="CFG",
                   help="start from darknet weights: a .cfg with its .weights beside it "
                        "(e.g. yolov3-tiny.cfg)")
    p.add_argument("--time", type=float, metavar="HOURS",
                   help="stop training after this many hours (epochs are then fitted to the budget)")
    p.add_argument("--recipe", default="configs/train/augment-default.yaml", help="augmentation recipe YAML")
    p.add_argument("--strategy", default="auto",
                   help="fine-tuning: auto | full | partial-late | partial-early | head")
    p.add_argument("--data-size", choices=["small", "large"], help="for --strategy auto")
    p.add_argument("--similarity", choices=["low", "high"],
                   help="similarity to the pretraining data, for --strategy auto")
    p.add_argument("--width", type=float, help="channel width multiple for a model built from scratch")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--imgsz", type=int, help="override the recipe's training size")
    p.add_argument("--batch", type=int, help="override the recipe's batch size")
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA device index (default cpu)")
    p.add_argument("--project", default="runs/train", help="folder for training runs (default runs/train)")
    p.add_argument("--name", default="exp", help="run name (default exp)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("export", help="export trained weights to a self-describing, verified ONNX model")
    p.add_argument("--weights", required=True, help="trained .pt weights")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--imgsz", type=int, default=416, help="input size (default 416)")
    p.add_argument("--half", action="store_true", help="FP16 weights (needs a CUDA device to export)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and input size")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    p.add_argument("--data", help="data YAML, to record the data set's fingerprint in the model")
    p.add_argument("--verify-images", metavar="DIR", help="compare ONNX Runtime with PyTorch on images here")
    p.set_defaults(handler=cmd_export)


def cmd_train(args: argparse.Namespace) -> int:
    from agent.training.recipe import load_recipe
    from agent.training.train import train

    recipe = load_recipe(args.recipe)  # a bad recipe fails before torch loads
    result = train(Path(args.data), recipe, model=args.model, strategy=args.strategy,
                   data_size=args.data_size, similarity=args.similarity, width=args.width, device=args.device,
                   project=Path(args.project), name=args.name,
                   overrides={"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch},
                   pretrained_cfg=Path(args.pretrained) if args.pretrained else None, time_hours=args.time)
    print(f"best weights: {result.best_weights}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent.training.export import export_onnx
    from agent.training.train import dataset_fingerprint

    provenance: Dict[str, object] = {"weights": Path(args.weights).name}
    if args.data:
        provenance["data_fingerprint"] = dataset_fingerprint(Path(args.data))
    training_json = Path(args.weights).parent.parent / "training.json"
    if training_json.is_file():
        record = json.loads(training_json.read_text(encoding="utf-8"))
        provenance.update(recipe=record["recipe"]["name"], strategy=record["strategy"]["strategy"],
                          model=record["model"], width=record["width"])
    images = verify_images(Path(args.verify_images)) if args.verify_images else []
    report = export_onnx(Path(args.weights), Path(args.output), imgsz=args.imgsz, half=args.half,
                         dynamic=args.dynamic, batch=args.batch, verify_images=images, provenance=provenance)
    print(f"exported {report.path} ({report.path.stat().st_size / 1e6:.1f} MB, input "
          f"{report.info.input_size}, classes {report.info.class_names})")
    if report.max_abs_diff is not None:
        print(f"ONNX Runtime vs PyTorch on {report.images_checked} images: max abs difference "
              f"{report.max_abs_diff:.2e}")
    return 0


#: How many images of --verify-images the export compares ONNX Runtime with PyTorch on.
VERIFY_IMAGES = 4


def verify_images(folder: Path) -> List[Path]:
    """The first images of ``folder`` (any image type); bad input when it holds none."""
    from agent.errors import DataError
    from agent.fileio import IMAGE_SUFFIXES, image_files

    images = image_files(folder)[:VERIFY_IMAGES]
    if not images:
        raise DataError(f"--verify-images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return images
