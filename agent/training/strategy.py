"""Which layers to retrain when fine-tuning: decided by the data set's size and its
similarity to the data the weights were pretrained on.

- large data set, similar to the pretraining data: ``partial-late``, freeze the early backbone
  (output stride <= 8), train the later stages and the head;
- large, unlike the pretraining data: ``full``, train everything;
- small, similar: ``head``, train only the detection head (the classifier);
- small, unlike: ``partial-early``, freeze the stem (output stride <= 4), train the rest.

Why: early layers hold generic edge and colour filters that transfer to any images and
that a small data set cannot re-learn well; late layers hold features specific to the
pretraining domain. Similar data can keep those features (a small set retrains only the
head, a large one can afford the later stages); dissimilar data must retrain them, and only
a large set can retrain everything. Whenever pretrained backbone layers are retrained,
the learning rate is scaled down (``pretrained_lr_scale``) so training adapts the
weights instead of overwriting them. A model built from scratch has nothing to keep: it
always trains in full.

Pure Python over the ultralytics model description (its YAML dict), so it is testable
without torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.errors import BadInputError

STRATEGIES = ("full", "partial-late", "partial-early", "head")
_QUADRANTS = {("large", "low"): "full", ("large", "high"): "partial-late",
              ("small", "low"): "partial-early", ("small", "high"): "head"}
_REASONS = {
    "full": "large data set unlike the pretraining data: every layer must adapt, and there is "
            "enough data to train them all",
    "partial-late": "large data set similar to the pretraining data: early generic features are kept; "
                    "later backbone stages and the head are retrained",
    "partial-early": "small data set unlike the pretraining data: the generic stem is kept (too little "
                     "data to re-learn it); domain-specific later stages and the head are retrained",
    "head": "small data set similar to the pretraining data: the pretrained features fit; only the "
            "detection head (classifier) is trained, which little data can do without overfitting",
    "scratch": "no pretrained weights: every layer trains from random initialisation",
}
# Backbone layers whose output stride is at most this stay frozen.
_FREEZE_UP_TO_STRIDE = {"partial-late": 8, "partial-early": 4}


@dataclasses.dataclass
class FineTunePlan:
    strategy: str
    frozen_layers: List[int]
    trainable_layers: List[int]
    lr_scale: float
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        frozen = _ranges(self.frozen_layers) or "none"
        return (f"fine-tuning strategy '{self.strategy}': frozen layers {frozen}; "
                f"learning rate x{self.lr_scale:g} ({self.reason})")


def choose_strategy(strategy: str = "auto", data_size: Optional[str] = None,
                    similarity: Optional[str] = None) -> str:
    """The explicit strategy, or the one the data set's size and similarity call for."""
    if strategy != "auto":
        if strategy not in STRATEGIES:
            raise BadInputError(f"--strategy: unknown strategy {strategy!r}; "
                                f"expected auto or one of {', '.join(STRATEGIES)}")
        return strategy
    if data_size not in ("small", "large") or similarity not in ("low", "high"):
        raise BadInputError("--strategy auto needs --data-size small|large and --similarity low|high "
                            "(or name a strategy: " + ", ".join(STRATEGIES) + ")")
    return _QUADRANTS[(data_size, similarity)]


#: Fewer training images than this is a "small" data set when --data-size is not given.
SMALL_DATA_SET = 1000


def estimate(data_size: Optional[str], similarity: Optional[str], train_images: int,
             class_names: Sequence[str], pretrained_names: Sequence[str]) -> Tuple[str, str, str]:
    """(data size, similarity, why) with what was not given estimated from the data set.

    Size: small under ``SMALL_DATA_SET`` training images. Similarity: high when at least half
    of the data set's class names are classes the weights were pretrained on (a detector of
    cars fine-tuned from COCO keeps its features; one of shapes or parts needs new ones).
    """
    reasons = []
    if data_size is None:
        data_size = "small" if train_images < SMALL_DATA_SET else "large"
        reasons.append(f"data size '{data_size}' estimated: {train_images} training images "
                       f"(small means under {SMALL_DATA_SET})")
    if similarity is None:
        known = {n.strip().lower() for n in pretrained_names}
        shared = [n for n in class_names if n.strip().lower() in known]
        similarity = "high" if pretrained_names and 2 * len(shared) >= len(class_names) else "low"
        reasons.append(f"similarity '{similarity}' estimated: {len(shared)} of the {len(class_names)} class "
                       f"names are among the {len(pretrained_names)} pretraining classes")
    return data_size, similarity, "; ".join(reasons)


def backbone_strides(model_yaml: Dict[str, Any]) -> List[int]:
    """Output stride of each backbone layer, from the ultralytics model description."""
    stride, strides = 1, []
    for _source, _repeats, module, args in model_yaml["backbone"]:
        name = str(module).split(".")[-1]
        # Downsampling layers: stride-2 convolutions (args: c_out, k, s) and stride-2 pools (k, s).
        strided_conv = name in ("Conv", "DWConv") and len(args) > 2 and args[2] == 2
        strided_pool = name in ("MaxPool2d", "AvgPool2d") and len(args) > 1 and args[1] == 2
        if strided_conv or strided_pool:
            stride *= 2
        strides.append(stride)
    return strides


def plan(model_yaml: Dict[str, Any], strategy: str, pretrained: bool, pretrained_lr_scale: float = 0.1,
         new_layers: Sequence[int] = ()) -> FineTunePlan:
    """Frozen layer indices and learning-rate factor for ``strategy`` on this model.

    ``new_layers`` had no pretrained weights (e.g. a stride-8 branch added to yolov3-tiny): they
    always train, whatever the strategy, since frozen random weights would only add noise."""
    layer_count = len(model_yaml["backbone"]) + len(model_yaml["head"])
    every = list(range(layer_count))
    if not pretrained:
        return FineTunePlan("full", [], every, 1.0, _REASONS["scratch"])
    if strategy == "full":
        frozen: List[int] = []
    elif strategy == "head":
        frozen = every[:-1]  # the last layer is the Detect head
    else:
        limit = _FREEZE_UP_TO_STRIDE[strategy]
        frozen = [i for i, s in enumerate(backbone_strides(model_yaml)) if s <= limit]
    frozen = [i for i in frozen if i not in set(new_layers)]
    backbone_retrained = any(i not in frozen for i in range(len(model_yaml["backbone"])))
    return FineTunePlan(strategy, frozen, [i for i in every if i not in frozen],
                        pretrained_lr_scale if backbone_retrained else 1.0, _REASONS[strategy])


def _ranges(indices: List[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(f"{start}-{value}" if value != start else str(value))
            start = None
    return ", ".join(parts)
