"""cfg -> ultralytics model description, without torch: layouts, the 3l branch, refusals."""

from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.training.darknet_init import family_of, stride8_branch, translate
from agent.training.topologies import topology

TINY_CFG = Path("../shared/models/yolov3-tiny-coco/yolov3-tiny.cfg")
CFG_DIR = Path("../shared/models/darknet-cfg")


def test_tiny_translates_to_ultralytics_layout_with_darknets_pool_and_activation():
    topo = translate(TINY_CFG, 3)
    layers = topo.spec["backbone"] + topo.spec["head"]
    assert topo.spec["activation"] == "nn.LeakyReLU(0.1)" and topo.spec["nc"] == 3
    # ultralytics' yolov3-tiny.yaml layer for layer, except the pool's padding (replicate, not zeros)
    assert [entry[2] for entry in layers] == (
        ["Conv", "nn.MaxPool2d"] * 5 + ["Conv", "nn.ReplicationPad2d", "nn.MaxPool2d", "Conv", "Conv", "Conv",
                                        "Conv", "nn.Upsample", "Concat", "Conv", "Detect"])
    assert layers[-1][0] == [19, 15] and topo.head_inputs == [21, 14]
    # 13 darknet convolutions: 11 map onto layers, the two 255-channel ones feed the old heads
    assert [c.module for c in topo.convs if c.module is None] == [None, None]
    assert [c.index for c in topo.convs if c.module is None] == [15, 22]


def test_the_shipped_3l_description_is_the_translated_cfg_with_its_stride_8_branch(tmp_path):
    cfg = stride8_branch(TINY_CFG, tmp_path / "yolov3-tiny-3l.cfg")
    assert family_of(cfg) == "yolov3-tiny-3l"
    topo = translate(cfg, 80)
    assert topo.spec == topology("yolov3-tiny-3l")
    assert topo.head_inputs == [28, 21, 14]  # strides 8, 16, 32


@pytest.mark.parametrize("name, family", [("yolov3", "yolov3"), ("yolov3-spp", "yolov3-spp"),
                                          ("yolov3-tiny", "yolov3-tiny"), ("yolov3-voc", "yolov3"),
                                          ("yolov3-openimages", "yolov3")])
def test_every_yolov3_cfg_translates(name, family):
    cfg = CFG_DIR / f"{name}.cfg"
    assert family_of(cfg) == family
    topo = translate(cfg, 3)
    assert len(topo.head_inputs) == (2 if "tiny" in name else 3)


def test_stride8_branch_needs_a_two_head_network(tmp_path):
    with pytest.raises(ModelError, match="two-head networks"):
        stride8_branch(CFG_DIR / "yolov3.cfg", tmp_path / "x.cfg")


@pytest.mark.parametrize("change, message", [
    (("activation=leaky", "activation=mish", 1), "only batch-normalised leaky convolutions"),
    (("size=2\nstride=2", "size=3\nstride=2", 1), r"\[maxpool\] size=3 stride=2 is not supported"),
])
def test_layers_that_cannot_train_are_refused_with_file_and_line(tmp_path, change, message):
    old, new, count = change
    cfg = tmp_path / "net.cfg"
    cfg.write_text(TINY_CFG.read_text().replace(old, new, count))
    with pytest.raises(ModelError, match=rf"net.cfg:\d+: .*{message}"):
        translate(cfg, 3)
