from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.training.recipe import load_recipe, ultralytics_overrides

RECIPES = sorted(Path("configs/train").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    assert load_recipe(path).name == path.stem


def test_recipes_translate_to_ultralytics_names():
    default = ultralytics_overrides(load_recipe("configs/train/augment-default.yaml"))
    assert default["fliplr"] == 0.5 and default["degrees"] == 10.0 and default["mosaic"] == 1.0
    assert default["hsv_s"] == 0.7 and default["close_mosaic"] == 5


def test_no_augment_zeroes_every_augmentation():
    none = ultralytics_overrides(load_recipe("configs/train/no-augment.yaml"))
    assert all(value == 0 for value in none.values())
    assert {"fliplr", "flipud", "degrees", "scale", "translate", "shear", "perspective", "hsv_h", "hsv_s",
            "hsv_v", "mosaic", "mixup"} <= set(none)


def test_one_switch_turns_one_augmentation_off(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("augment:\n  flip:\n    enabled: false\n    horizontal: 0.9\n")
    out = ultralytics_overrides(load_recipe(path))
    assert out["fliplr"] == 0.0 and out["mosaic"] == 1.0  # only the flip is off
    out = ultralytics_overrides(load_recipe(path, ["augment.flip.enabled=true"]))
    assert out["fliplr"] == 0.9


def test_recipe_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("augment:\n  rotate:\n    degree: 10\ntrain:\n  imgsz: 300\n")
    with pytest.raises(ConfigError) as caught:
        load_recipe(path)
    assert caught.value.problems == [
        f"{path}:3: augment.rotate.degree: unknown key; did you mean 'degrees'?",
        f"{path}:5: train.imgsz: input should be a multiple of 32 (got 300)",
    ]


#: Words a recipe's comments use for each augmentation it turns on.
_WORDS = {"fliplr": "flip", "flipud": "up-down", "degrees": "rotation", "scale": "zoom", "translate": "shift",
          "shear": "shear", "perspective": "perspective", "hsv_h": "hue", "hsv_s": "saturation",
          "hsv_v": "brightness", "mosaic": "mosaic", "mixup": "mixup"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_each_recipe_says_what_it_turns_on(path):
    lines = path.read_text().splitlines()
    comments = " ".join(line for line in lines if line.lstrip().startswith("#")).lower()
    on = {k for k, v in ultralytics_overrides(load_recipe(path)).items() if v and k in _WORDS}
    missing = [k for k in on if _WORDS[k] not in comments]
    assert not missing, f"{path.name} turns on {missing} without saying so in its comments"
    assert "blur" in comments and "noise" in comments  # where blur and noise come from
