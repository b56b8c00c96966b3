"""``detection-agent train``: YOLOv3-family training with a named augmentation recipe and a
fine-tuning strategy, through ultralytics (imported here, never on the runtime path)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

from ..errors import BadInputError, DataError
from ..fileio import atomic_write_text
from .recipe import Recipe, ultralytics_overrides
from .strategy import FineTunePlan, choose_strategy, plan

log = logging.getLogger(__name__)

#: Topologies that can be built from scratch (ultralytics model descriptions).
ARCHITECTURES = ("yolov3-tiny", "yolov3", "yolov3-spp")


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_weights: Path
    plan: FineTunePlan


def read_data_yaml(data: Path) -> Dict[str, Any]:
    """The ultralytics data description; checked here so mistakes surface before torch loads."""
    try:
        spec = yaml.safe_load(Path(data).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{data}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{data}: invalid YAML: {exc}") from None
    if not isinstance(spec, dict) or "names" not in spec or "train" not in spec:
        raise DataError(f"{data}: a data YAML needs 'train', 'val' and 'names' keys")
    names = spec["names"]
    spec["names"] = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return spec


def prepare_model(model: str, num_classes: int, width: Optional[float], run_dir: Path
                  ) -> Tuple[str, bool, Dict[str, Any]]:
    """(what to hand to ``YOLO()``, whether it is pretrained, its layer description)."""
    from ultralytics.nn.tasks import yaml_model_load

    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise BadInputError(f"--model: {model}: no such weights file")
        if width is not None:
            raise BadInputError("--width only applies to a model built from scratch, not to weights")
        from ultralytics import YOLO

        return model, True, dict(YOLO(model).model.yaml)
    name = model[:-5] if model.endswith(".yaml") else model
    if name not in ARCHITECTURES:
        raise BadInputError(f"--model: expected {', '.join(ARCHITECTURES)} or a .pt file, got {model!r}")
    spec = yaml_model_load(f"{name}.yaml")
    spec["nc"] = num_classes
    if width is not None:
        spec["width_multiple"] = width
    spec.pop("yaml_file", None)
    spec.pop("scale", None)
    path = run_dir / f"{name}-w{spec.get('width_multiple', 1.0):g}.yaml"
    atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False))
    return str(path), False, spec


def train(data: Path, recipe: Recipe, model: str = "yolov3-tiny", strategy: str = "auto",
          data_size: Optional[str] = None, similarity: Optional[str] = None,
          width: Optional[float] = None, device: str = "cpu", project: Path = Path("runs/train"),
          name: str = "exp", overrides: Optional[Dict[str, Any]] = None) -> TrainResult:
    """Train and return the best weights. ``overrides`` replace recipe train settings."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # devices and CI have no hub access
    settings = recipe.train.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    spec = read_data_yaml(data)
    run_dir = (Path(project) / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    source, pretrained, layers = prepare_model(model, len(spec["names"]), width, run_dir)
    chosen = choose_strategy(strategy, data_size, similarity) if pretrained else "full"
    if not pretrained and strategy not in ("auto", "full"):
        log.warning("strategy %r ignored: a model built from scratch has no pretrained layers to keep",
                    strategy)
    fine_tune = plan(layers, chosen, pretrained, settings.pretrained_lr_scale)
    print(fine_tune.describe())

    optimizer, lr0 = settings.optimizer, settings.lr0
    if fine_tune.lr_scale < 1.0:
        # ultralytics' "auto" optimizer ignores lr0, so name one to make the scaling take effect.
        optimizer = "SGD" if optimizer == "auto" else optimizer
        lr0 = (lr0 or 0.01) * fine_tune.lr_scale
    args: Dict[str, Any] = dict(
        data=str(Path(data).resolve()), epochs=settings.epochs, imgsz=settings.imgsz, batch=settings.batch,
        device=device, workers=settings.workers, seed=settings.seed, deterministic=True,
        optimizer=optimizer, lrf=settings.lrf, warmup_epochs=settings.warmup_epochs,
        patience=settings.patience, cache=settings.cache, freeze=fine_tune.frozen_layers or None,
        project=str(run_dir.parent), name=run_dir.name, exist_ok=True, plots=False, amp=False,
        **ultralytics_overrides(recipe),
    )
    if lr0 is not None:
        args["lr0"] = lr0
    record = {"recipe": recipe.model_dump(), "strategy": fine_tune.to_dict(), "model": model,
              "width": width, "data": str(data), "ultralytics_args": args}
    atomic_write_text(run_dir / "training.json", json.dumps(record, indent=2, default=str) + "\n")

    from ultralytics import YOLO

    trainer_model = YOLO(source)
    trainer_model.train(**args)
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        best = run_dir / "weights" / "last.pt"
    return TrainResult(run_dir, best, fine_tune)


def dataset_fingerprint(data: Path, splits: Sequence[str] = ("train", "val")) -> str:
    """A short hash of the labels and image names, so an exported model names its data."""
    import hashlib

    spec = read_data_yaml(data)
    root = Path(spec.get("path") or Path(data).parent)
    digest = hashlib.sha256()
    for split in splits:
        if split not in spec:
            continue
        labels = root / str(spec[split]).replace("images", "labels", 1)
        for label in sorted(labels.glob("*.txt")):
            digest.update(label.name.encode())
            digest.update(label.read_bytes())
    return digest.hexdigest()[:16]
