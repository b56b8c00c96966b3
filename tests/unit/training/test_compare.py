"""make model-compare's bookkeeping: recipes without the time budget, metrics from results.csv."""

from agent.training.compare import _final_metrics, _untimed, to_markdown
from agent.training.recipe import load_recipe


def test_comparisons_run_by_epochs_not_by_the_shipped_models_time_budget():
    recipe = load_recipe("configs/train/transfer-3l.yaml")
    assert recipe.train.time == 1.75
    untimed = _untimed(recipe)
    assert untimed.train.time is None and untimed.train.lr0 == recipe.train.lr0 and recipe.train.time == 1.75


def test_the_augmented_and_plain_recipes_differ_only_in_augmentation():
    aug, plain = (load_recipe(f"configs/train/{n}.yaml") for n in ("transfer-3l", "transfer-3l-no-augment"))
    assert aug.train == plain.train
    assert not plain.augment.enabled and aug.augment.enabled


def test_final_metrics_are_the_last_rows_and_the_table_lists_every_run(tmp_path):
    # ultralytics pads its results.csv header with spaces in some versions
    (tmp_path / "results.csv").write_text(
        "epoch, metrics/mAP50(B), metrics/mAP50-95(B)\n1,0.2,0.1\n2,0.61,0.42\n")
    assert _final_metrics(tmp_path) == {"map50": 0.61, "map": 0.42}
    rows = [{"name": "2x2-coco-transfer-3l", "data": "small", "epochs": 6, "start": "coco",
             "recipe": "transfer-3l", "strategy": "full", "map50": 0.61, "map": 0.42, "alt_map50": 0.3,
             "alt_map": 0.2, "minutes": 3.5}]
    table = to_markdown(rows).splitlines()
    assert len(table) == 3 and "| 0.610 | 0.420 | 0.300 | 0.200 | 3.5 |" in table[2]
