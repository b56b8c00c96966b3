"""``make model-compare``: the lessons of models/README.md, measured at a reduced protocol.

Same data, image size and epochs within each table (a CPU budget, not the shipped model's):

- data: synthetic shapes at 160 px, half of them on crops of real photos; a small set (the
  first 200 training images) and a large one (800), the same 100 validation images, and 100
  images drawn differently (``--style alt``) to see what generalises;
- from scratch vs from the COCO yolov3-tiny weights, each with and without augmentation
  (``transfer-3l`` and ``transfer-3l-no-augment``), yolov3-tiny-3l, small set, 6 epochs;
- the four fine-tuning strategies from the COCO weights, on the small set (6 epochs) and on
  the large set (3 epochs: twice the images seen).

Scores are ultralytics' validation mAP@0.5 and mAP@0.5:0.95 of the final weights. Writes
``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.datasets.synthetic import make_dataset
from agent.fileio import atomic_write_text
from agent.training.recipe import Recipe, load_recipe
from agent.training.train import train

log = logging.getLogger(__name__)

IMGSZ = 160
SMALL, LARGE, VAL = 200, 800, 100
EPOCHS_SMALL, EPOCHS_LARGE = 6, 3
STRATEGIES = ("head", "partial-early", "partial-late", "full")


def _datasets(out: Path, backgrounds: Path) -> Dict[str, Path]:
    """Small and large sets (same seed: the small set's images are the large set's first 200)."""
    sets = {}
    for name, count in (("small", SMALL), ("large", LARGE)):
        yaml_path = out / "data" / name / "data.yaml"
        sets[name] = yaml_path if yaml_path.is_file() else make_dataset(
            yaml_path.parent, train=count, val=VAL, imgsz=IMGSZ, seed=11, backgrounds=backgrounds,
            background_ratio=0.5, overwrite=True)
    alt = out / "data" / "alt" / "data.yaml"
    sets["alt"] = alt if alt.is_file() else make_dataset(alt.parent, train=0, val=VAL, imgsz=IMGSZ, seed=12,
                                                         style="alt", overwrite=True)
    return sets


def _final_metrics(run_dir: Path) -> Dict[str, float]:
    with open(run_dir / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    last = {k.strip(): v for k, v in rows[-1].items()}
    return {"map50": float(last["metrics/mAP50(B)"]), "map": float(last["metrics/mAP50-95(B)"])}


def _alt_metrics(weights: Path, alt: Path) -> Dict[str, float]:
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(data=str(alt), imgsz=IMGSZ, batch=16, device="cpu", plots=False,
                                     verbose=False, project=str(weights.parent.parent), name="val-alt",
                                     exist_ok=True)
    return {"alt_map50": float(metrics.box.map50), "alt_map": float(metrics.box.map)}


def _untimed(recipe: Recipe) -> Recipe:
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"time": None})})


def run(out: Path, pretrained: Path, backgrounds: Path, only: Optional[List[str]] = None
        ) -> List[Dict[str, Any]]:
    out = out.resolve()
    sets = _datasets(out, backgrounds)
    # The recipes' wall-time budget is the shipped model's: here the epochs decide.
    aug, no_aug = (_untimed(load_recipe(f"configs/train/{name}.yaml"))
                   for name in ("transfer-3l", "transfer-3l-no-augment"))
    jobs = []
    for start in ("scratch", "coco"):
        for recipe in (aug, no_aug):
            jobs.append((f"2x2-{start}-{recipe.name}", "small", EPOCHS_SMALL, recipe, start, "full"))
    for size, epochs in (("small", EPOCHS_SMALL), ("large", EPOCHS_LARGE)):
        for strategy in STRATEGIES:
            jobs.append((f"strategy-{size}-{strategy}", size, epochs, aug, "coco", strategy))
    results_path = out / "results.json"
    results: List[Dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {r["name"] for r in results}
    for name, size, epochs, recipe, start, strategy in jobs:
        if name in done or (only and not any(name.startswith(o) for o in only)):
            continue
        began = time.monotonic()
        result = train(sets[size], recipe, "yolov3-tiny-3l", strategy=strategy, project=out / "runs",
                       name=name, pretrained_cfg=pretrained if start == "coco" else None,
                       overrides={"epochs": epochs, "imgsz": IMGSZ, "batch": 16})
        row = {"name": name, "data": size, "epochs": epochs, "recipe": recipe.name, "start": start,
               "strategy": result.plan.strategy, "frozen": result.plan.frozen_layers,
               "minutes": round((time.monotonic() - began) / 60, 1), **_final_metrics(result.run_dir),
               **_alt_metrics(result.best_weights.parent / "last.pt", sets["alt"])}
        results.append(row)
        atomic_write_text(results_path, json.dumps(results, indent=1) + "\n")
        atomic_write_text(out / "results.md", to_markdown(results))
        log.warning("%s: %s", name, row)
    return results


def to_markdown(results: List[Dict[str, Any]]) -> str:
    lines = ["| run | data | epochs | start | recipe | strategy | mAP@0.5 | mAP@0.5:0.95 | alt mAP@0.5 | "
             "alt mAP@0.5:0.95 | minutes |", "|" + " --- |" * 11]
    for r in results:
        lines.append(f"| {r['name']} | {r['data']} | {r['epochs']} | {r['start']} | {r['recipe']} "
                     f"| {r['strategy']} | {r['map50']:.3f} | {r['map']:.3f} | {r['alt_map50']:.3f} "
                     f"| {r['alt_map']:.3f} | {r['minutes']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/compare", help="folder for data, runs and results")
    parser.add_argument("--pretrained", required=True, help="darknet yolov3-tiny.cfg (weights beside it)")
    parser.add_argument("--backgrounds", required=True, help="folder of photos (e.g. coco128/images)")
    parser.add_argument("--only", nargs="*", help="run names starting with these (default: all)")
    args = parser.parse_args(argv)
    results = run(Path(args.out), Path(args.pretrained), Path(args.backgrounds), args.only)
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
