"""``detection-agent train``: YOLOv3-family training with a named augmentation recipe and a
fine-tuning strategy, through ultralytics (imported here, never on the runtime path)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from agent.errors import BadInputError, DataError
from agent.fileio import atomic_write_text, image_files
from agent.inference.labels import read_names
from agent.modeltools.darknet import cfg as darknet
from agent.training.recipe import Recipe, ultralytics_overrides
from agent.training.strategy import FineTunePlan, choose_strategy, estimate, plan
from agent.training.topologies import TOPOLOGIES, topology

log = logging.getLogger(__name__)

#: Topologies that can be built from scratch (ultralytics' descriptions, and this project's).
ARCHITECTURES = ("yolov3-tiny", "yolov3-tiny-3l", "yolov3", "yolov3-spp")


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_weights: Path
    plan: FineTunePlan
    pretrained: Optional[str] = None  # the one-line report of the darknet weights loaded


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

        net: Any = YOLO(model).model  # ultralytics annotates it str | None; loaded, it is the nn.Module
        return model, True, dict(net.yaml)
    name = model[:-5] if model.endswith(".yaml") else model
    if name not in ARCHITECTURES:
        raise BadInputError(f"--model: expected {', '.join(ARCHITECTURES)} or a .pt file, got {model!r}")
    if name in TOPOLOGIES:
        spec = topology(name)
    else:
        spec = yaml_model_load(f"{name}.yaml")
    spec["nc"] = num_classes
    if width is not None:
        spec["width_multiple"] = width
    spec.pop("yaml_file", None)
    spec.pop("scale", None)
    path = run_dir / f"{name}-w{spec.get('width_multiple', 1.0):g}.yaml"
    atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False))
    return str(path), False, spec


def prepare_pretrained(cfg: Path, model: Optional[str], num_classes: int, width: Optional[float],
                       run_dir: Path) -> Tuple[str, Dict[str, Any], str, List[int]]:
    """Build the model described by darknet ``cfg`` (or its ``model`` variant), load the weights
    beside the cfg, save it as the checkpoint training starts from.

    Returns (checkpoint path, layer description, the one-line report, indices of layers the
    weights did not cover, which must stay trainable whatever the strategy)."""
    from agent.training import darknet_init

    cfg = Path(cfg)
    if not cfg.is_file():
        raise BadInputError(f"--pretrained: {cfg}: no such darknet cfg file")
    weights = darknet.weights_for(cfg)
    if width is not None:
        raise BadInputError("--width cannot change a pretrained network: its widths are the weights'")
    family = darknet_init.family_of(cfg)
    name = model[:-5] if model and model.endswith(".yaml") else (model or family)
    if name == "yolov3-tiny-3l" and family == "yolov3-tiny":
        target_cfg = darknet_init.stride8_branch(cfg, run_dir / "yolov3-tiny-3l.cfg")
    elif name == family:
        target_cfg = cfg
    else:
        fits = [family] + (["yolov3-tiny-3l"] if family == "yolov3-tiny" else [])
        raise BadInputError(f"--model {name} does not fit {cfg}: its layers describe {family} "
                            f"(use --model {' or '.join(fits)})")
    target = darknet_init.translate(target_cfg, num_classes)
    darknet_init.darknet_convs(cfg, weights)  # size and fit errors before torch is imported
    import torch
    from ultralytics.nn.tasks import DetectionModel

    net = DetectionModel(target.spec, nc=num_classes, verbose=False)
    report = darknet_init.load_into(net, target, cfg, weights)
    loaded = {c.index for c in darknet_init.translate(cfg, report.classes).convs if c.module}
    new_layers = sorted({int(c.module.split(".")[1]) for c in target.convs
                         if c.module and c.index not in loaded})
    checkpoint = run_dir / "pretrained-init.pt"
    # ultralytics' train() rebuilds the model from its description and copies these weights in.
    torch.save({"model": net, "train_args": {}, "date": None, "version": None}, checkpoint)
    spec_path = run_dir / f"{name}.yaml"
    atomic_write_text(spec_path, yaml.safe_dump(target.spec, sort_keys=False))
    return str(checkpoint), target.spec, report.describe(num_classes), new_layers


def train(data: Path, recipe: Recipe, model: Optional[str] = "yolov3-tiny", strategy: str = "auto",
          data_size: Optional[str] = None, similarity: Optional[str] = None,
          width: Optional[float] = None, device: str = "cpu", project: Path = Path("runs/train"),
          name: str = "exp", overrides: Optional[Dict[str, Any]] = None,
          pretrained_cfg: Optional[Path] = None, time_hours: Optional[float] = None) -> TrainResult:
    """Train and return the best weights. ``overrides`` replace recipe train settings;
    ``pretrained_cfg`` starts from darknet weights (the .weights beside the cfg);
    ``time_hours`` caps the training wall time (ultralytics' ``time``)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # devices and CI have no hub access
    settings = recipe.train.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    spec = read_data_yaml(data)
    run_dir = (Path(project) / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    loaded_line: Optional[str] = None
    keep_trainable: List[int] = []
    if pretrained_cfg is not None:
        source, layers, loaded_line, keep_trainable = prepare_pretrained(
            Path(pretrained_cfg), model, len(spec["names"]), width, run_dir)
        pretrained = True
        print(loaded_line)
        if model is None:
            from agent.training.darknet_init import family_of

            model = family_of(Path(pretrained_cfg))
    else:
        source, pretrained, layers = prepare_model(model or "yolov3-tiny", len(spec["names"]), width, run_dir)
    if pretrained and strategy == "auto" and (data_size is None or similarity is None):
        data_size, similarity, why = estimate(data_size, similarity, count_images(data, spec),
                                              spec["names"], pretrained_names(source, pretrained_cfg))
        print(f"--strategy auto: {why}")
    chosen = choose_strategy(strategy, data_size, similarity) if pretrained else "full"
    if not pretrained and strategy not in ("auto", "full"):
        log.warning("strategy %r ignored: a model built from scratch has no pretrained layers to keep",
                    strategy)
    fine_tune = plan(layers, chosen, pretrained, settings.pretrained_lr_scale, keep_trainable)
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
    budget = time_hours if time_hours is not None else settings.time
    if budget is not None:
        args["time"] = float(budget)
    record = {"recipe": recipe.model_dump(), "strategy": fine_tune.to_dict(), "model": model,
              "width": width, "data": str(data), "pretrained": loaded_line,
              "pretrained_cfg": str(pretrained_cfg) if pretrained_cfg else None, "ultralytics_args": args}
    atomic_write_text(run_dir / "training.json", json.dumps(record, indent=2, default=str) + "\n")

    from ultralytics import YOLO

    trainer_model = YOLO(source)
    trainer_model.train(**args)
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        best = run_dir / "weights" / "last.pt"
    return TrainResult(run_dir, best, fine_tune, loaded_line)


def count_images(data: Path, spec: Dict[str, Any]) -> int:
    """Training images a data YAML names (a folder, or a list of folders)."""
    root = Path(spec.get("path") or Path(data).parent)
    if not root.is_absolute():
        root = Path(data).parent / root
    folders = spec["train"] if isinstance(spec["train"], list) else [spec["train"]]
    return sum(len(image_files(root / str(folder), recursive=True)) for folder in folders)


def pretrained_names(source: str, cfg: Optional[Path]) -> List[str]:
    """Class names the starting weights were trained on (the darknet names file, or the .pt's)."""
    if cfg is not None:
        names_file = darknet.find_names_file(Path(cfg))
        return read_names(names_file) if names_file else []
    from ultralytics import YOLO

    names = YOLO(source).names
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


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
