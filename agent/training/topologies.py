"""Model descriptions this project adds to ultralytics' own (built from scratch with ``--model``).

``yolov3-tiny-3l`` is exactly what ``darknet_init.translate`` makes of darknet's yolov3-tiny.cfg
with ``stride8_branch`` added (a test checks that), so a model trained from scratch and one
started from the COCO weights have the same layers: yolov3-tiny with darknet's activation
(LeakyReLU 0.1), its exact size-2 stride-1 pool, and a third detection scale at stride 8.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

_TINY_3L: Dict[str, Any] = {
    "nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0, "activation": "nn.LeakyReLU(0.1)",
    "backbone": [
        [-1, 1, "Conv", [16, 3, 1]],
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 1 P1/2
        [-1, 1, "Conv", [32, 3, 1]],
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 3 P2/4
        [-1, 1, "Conv", [64, 3, 1]],
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 5 P3/8
        [-1, 1, "Conv", [128, 3, 1]],  # 6: joined by the stride-8 head
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 7 P4/16
        [-1, 1, "Conv", [256, 3, 1]],  # 8
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 9 P5/32
        [-1, 1, "Conv", [512, 3, 1]],
        [-1, 1, "nn.ReplicationPad2d", [[0, 1, 0, 1]]],  # darknet's pool pads with values that never win
        [-1, 1, "nn.MaxPool2d", [2, 1, 0]],
        [-1, 1, "Conv", [1024, 3, 1]],
    ],
    "head": [
        [-1, 1, "Conv", [256, 1, 1]],  # 14
        [-1, 1, "Conv", [512, 3, 1]],  # 15 (P5/32)
        [14, 1, "Conv", [128, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 8], 1, "Concat", [1]],
        [-1, 1, "Conv", [256, 3, 1]],  # 19 (P4/16)
        [-1, 1, "Conv", [128, 1, 1]],  # new: the stride-8 branch
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 1, "Conv", [128, 3, 1]],  # 23 (P3/8)
        [[23, 19, 15], 1, "Detect", ["nc"]],
    ],
}

TOPOLOGIES = {"yolov3-tiny-3l": _TINY_3L}


def topology(name: str) -> Dict[str, Any]:
    """A fresh copy of a named model description."""
    return copy.deepcopy(TOPOLOGIES[name])
