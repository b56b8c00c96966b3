import pytest

from agent.errors import BadInputError
from agent.training.strategy import backbone_strides, choose_strategy, plan

# ultralytics' yolov3-tiny description (backbone and head), as its YAML defines it.
TINY = {
    "backbone": [
        [-1, 1, "Conv", [16, 3, 1]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]],
        [-1, 1, "Conv", [32, 3, 1]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]],
        [-1, 1, "Conv", [64, 3, 1]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]],
        [-1, 1, "Conv", [128, 3, 1]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]],
        [-1, 1, "Conv", [256, 3, 1]], [-1, 1, "nn.MaxPool2d", [2, 2, 0]],
        [-1, 1, "Conv", [512, 3, 1]], [-1, 1, "nn.ZeroPad2d", [[0, 1, 0, 1]]],
        [-1, 1, "nn.MaxPool2d", [2, 1, 0]],
    ],
    "head": [
        [-1, 1, "Conv", [1024, 3, 1]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "Conv", [512, 3, 1]],
        [-2, 1, "Conv", [128, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 8], 1, "Concat", [1]], [-1, 1, "Conv", [256, 3, 1]], [[19, 15], 1, "Detect", ["nc"]],
    ],
}
# yolov3 downsamples with stride-2 convolutions instead of pools.
STRIDED = {"backbone": [[-1, 1, "Conv", [32, 3, 1]], [-1, 1, "Conv", [64, 3, 2]],
                        [-1, 1, "Bottleneck", [64]], [-1, 1, "Conv", [128, 3, 2]]],
           "head": [[-1, 1, "Conv", [256, 3, 1]], [[4], 1, "Detect", ["nc"]]]}


@pytest.mark.parametrize("size, similarity, expected", [
    ("large", "low", "full"), ("large", "high", "partial-late"),
    ("small", "low", "partial-early"), ("small", "high", "head"),
])
def test_quadrants_map_to_strategies(size, similarity, expected):
    assert choose_strategy("auto", size, similarity) == expected


def test_explicit_and_bad_strategies():
    assert choose_strategy("head") == "head"
    with pytest.raises(BadInputError, match="unknown strategy 'last'"):
        choose_strategy("last")
    with pytest.raises(BadInputError, match=r"--data-size small\|large"):
        choose_strategy("auto", "small", None)


def test_backbone_strides_follow_pools_and_strided_convs():
    assert backbone_strides(TINY) == [1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 32]
    assert backbone_strides(STRIDED) == [1, 2, 2, 4]


def test_each_strategy_freezes_the_expected_layers_of_yolov3_tiny():
    every = list(range(21))
    full = plan(TINY, "full", pretrained=True)
    assert full.frozen_layers == [] and full.lr_scale == 0.1
    late = plan(TINY, "partial-late", pretrained=True)
    assert late.frozen_layers == [0, 1, 2, 3, 4, 5, 6] and late.lr_scale == 0.1  # up to stride 8
    early = plan(TINY, "partial-early", pretrained=True)
    assert early.frozen_layers == [0, 1, 2, 3, 4] and early.lr_scale == 0.1  # the stem, up to stride 4
    head = plan(TINY, "head", pretrained=True)
    assert head.frozen_layers == every[:-1] and head.trainable_layers == [20]
    assert head.lr_scale == 1.0  # no pretrained backbone layer retrains: no reason to slow down
    assert "frozen layers 0-19" in head.describe()


def test_models_from_scratch_always_train_everything():
    scratch = plan(TINY, "head", pretrained=False)
    assert scratch.frozen_layers == [] and scratch.lr_scale == 1.0 and "random" in scratch.reason


def test_auto_estimates_what_is_not_given_and_says_why():
    from agent.training.strategy import estimate

    size, similarity, why = estimate(None, None, 1600, ["circle", "square", "triangle"], ["person", "car"])
    assert (size, similarity) == ("large", "low")
    assert "1600 training images" in why and "0 of the 3 class names" in why
    size, similarity, why = estimate(None, None, 200, ["car", "person", "kite"], ["person", "car", "dog"])
    assert (size, similarity) == ("small", "high") and "2 of the 3" in why
    assert estimate("large", "high", 10, ["x"], []) == ("large", "high", "")  # given: kept


def test_new_layers_always_train():
    head = plan(TINY, "head", pretrained=True, new_layers=[16, 19])
    assert 16 not in head.frozen_layers and 19 not in head.frozen_layers and 15 in head.frozen_layers
