"""Training recipes: the augmentations by name, with off switches, and training settings.

A recipe is a YAML file (``configs/train/*.yaml``) validated like the agent config, with
``FILE:LINE: key.path: message`` errors. ``ultralytics_overrides()`` translates it into
ultralytics' hyperparameter names, so users never need to know those names, and a
disabled augmentation becomes exactly zero (not "whatever ultralytics defaults to").
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field

from agent.config import loader as config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Flip(_Section):
    enabled: bool = True
    horizontal: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    vertical: float = Field(0.0, ge=0, le=1, description="probability of an up-down flip")


class Rotate(_Section):
    enabled: bool = True
    degrees: float = Field(0.0, ge=0, le=180, description="random rotation within +/- degrees")


class Scale(_Section):
    enabled: bool = True
    gain: float = Field(0.5, ge=0, lt=1, description="random zoom within 1 +/- gain")


class Translate(_Section):
    enabled: bool = True
    fraction: float = Field(0.1, ge=0, le=0.9, description="random shift within +/- fraction of the size")


class Shear(_Section):
    enabled: bool = True
    degrees: float = Field(0.0, ge=0, le=45)


class Perspective(_Section):
    enabled: bool = True
    fraction: float = Field(0.0, ge=0, le=0.001, description="perspective warp; 0-0.001 is sensible")


class Hsv(_Section):
    enabled: bool = True
    hue: float = Field(0.015, ge=0, le=1, description="hue jitter, fraction of the colour wheel")
    saturation: float = Field(0.7, ge=0, le=1)
    value: float = Field(0.4, ge=0, le=1, description="brightness jitter")


class Mosaic(_Section):
    enabled: bool = True
    probability: float = Field(1.0, ge=0, le=1, description="four images tiled into one")
    off_last_epochs: int = Field(10, ge=0, description="train the last N epochs without mosaic")


class Mixup(_Section):
    enabled: bool = True
    probability: float = Field(0.0, ge=0, le=1, description="two images blended, labels merged")


class Augment(_Section):
    enabled: bool = Field(True, description="master switch: false turns every augmentation off")
    flip: Flip = Field(default_factory=Flip)
    rotate: Rotate = Field(default_factory=Rotate)
    scale: Scale = Field(default_factory=Scale)
    translate: Translate = Field(default_factory=Translate)
    shear: Shear = Field(default_factory=Shear)
    perspective: Perspective = Field(default_factory=Perspective)
    hsv: Hsv = Field(default_factory=Hsv)
    mosaic: Mosaic = Field(default_factory=Mosaic)
    mixup: Mixup = Field(default_factory=Mixup)


class TrainSettings(_Section):
    epochs: int = Field(50, ge=1, le=10000)
    imgsz: int = Field(416, ge=32, le=2048, multiple_of=32)
    batch: int = Field(16, ge=1, le=1024)
    optimizer: str = Field("auto", pattern="^(auto|SGD|Adam|AdamW|NAdam|RAdam|RMSProp)$")
    lr0: Optional[float] = Field(None, gt=0, le=1, description="initial learning rate (None: the default)")
    lrf: float = Field(0.01, gt=0, le=1, description="final learning rate as a fraction of lr0")
    warmup_epochs: float = Field(3.0, ge=0)
    patience: int = Field(100, ge=0, description="stop after N epochs without improvement (0: never)")
    seed: int = 0
    workers: int = Field(2, ge=0, le=64)
    cache: bool = Field(False, description="keep decoded images in RAM")
    pretrained_lr_scale: float = Field(
        0.1, gt=0, le=1, description="lr0 factor when pretrained backbone layers retrain")
    time: Optional[float] = Field(
        None, gt=0, le=1000, description="wall-time budget in hours: training stops then (epochs are fitted)")


class Recipe(_Section):
    name: str = "custom"
    description: str = ""
    augment: Augment = Field(default_factory=Augment)
    train: TrainSettings = Field(default_factory=TrainSettings)


def load_recipe(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe file; ``ConfigError`` lines name the file, line and key."""
    return config.load(path, overrides, schema=Recipe)


def ultralytics_overrides(recipe: Recipe) -> Dict[str, Any]:
    """The recipe's augmentations under ultralytics' names; disabled ones are zero."""
    aug = recipe.augment

    def on(section: _Section) -> bool:
        return aug.enabled and bool(getattr(section, "enabled", True))

    def value(section: _Section, amount: float) -> float:
        return float(amount) if on(section) else 0.0

    return {
        "fliplr": value(aug.flip, aug.flip.horizontal),
        "flipud": value(aug.flip, aug.flip.vertical),
        "degrees": value(aug.rotate, aug.rotate.degrees),
        "scale": value(aug.scale, aug.scale.gain),
        "translate": value(aug.translate, aug.translate.fraction),
        "shear": value(aug.shear, aug.shear.degrees),
        "perspective": value(aug.perspective, aug.perspective.fraction),
        "hsv_h": value(aug.hsv, aug.hsv.hue),
        "hsv_s": value(aug.hsv, aug.hsv.saturation),
        "hsv_v": value(aug.hsv, aug.hsv.value),
        "mosaic": value(aug.mosaic, aug.mosaic.probability),
        "close_mosaic": aug.mosaic.off_last_epochs if on(aug.mosaic) else 0,
        "mixup": value(aug.mixup, aug.mixup.probability),
        # Not exposed by the recipe; pinned so an ultralytics upgrade cannot switch them on.
        "cutmix": 0.0,
        "copy_paste": 0.0,
    }
