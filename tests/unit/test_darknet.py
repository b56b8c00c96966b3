from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.modeltools.darknet import cfg as darknet

SHARED_CFG = Path("../shared/models/darknet-cfg")


def write(tmp_path: Path, text: str, name: str = "net.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_keeps_sections_options_and_lines(tmp_path):
    cfg = write(tmp_path, "# comment\n[net]\n width = 320 \nheight=256 # trailing\n\n[yolo]\n;x\nclasses=2\n")
    net, yolo = darknet.parse_cfg(cfg)
    assert (net.kind, net.line, net.options) == ("net", 2, {"width": "320", "height": "256"})
    assert yolo.option_lines == {"classes": 8}


@pytest.mark.parametrize("text, message", [
    ("[net\nwidth=1\n", ":1: malformed section header"),
    ("width=1\n[net]\n", ":1: option outside any [section]"),
    ("[net]\nwidth\n", ":2: expected [section] or key=value"),
    ("[convolutional]\n", ":1: a darknet cfg starts with a [net] section"),
])
def test_parse_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ModelError) as caught:
        darknet.parse_cfg(write(tmp_path, text))
    assert str(caught.value).startswith(f"{tmp_path / 'net.cfg'}{message}")


def test_model_info_of_the_official_cfgs():
    tiny = darknet.model_info(SHARED_CFG / "yolov3-tiny.cfg")
    assert tiny.input_size == (416, 416) and tiny.num_classes == 80
    assert tiny.class_names[:3] == ["person", "bicycle", "car"]  # coco.names beside the cfg
    assert tiny.anchors == [[(81, 82), (135, 169), (344, 319)], [(10, 14), (23, 27), (37, 58)]]
    assert tiny.resize_mode == "resize"
    full = darknet.model_info(SHARED_CFG / "yolov3.cfg")
    assert len(full.anchors) == 3 and full.anchors[2] == [(10, 13), (16, 30), (33, 23)]
    voc = darknet.model_info(SHARED_CFG / "yolov3-voc.cfg", names=[str(i) for i in range(20)])
    assert voc.num_classes == 20


def test_model_info_errors(tmp_path):
    with pytest.raises(ModelError, match="no \\[yolo\\] section"):
        darknet.model_info(write(tmp_path, "[net]\nwidth=32\nheight=32\n"))
    with pytest.raises(ModelError, match=":2: \\[net\\] width: expected int"):
        darknet.model_info(write(tmp_path, "[net]\nwidth=abc\nheight=32\n"))
    cfg = write(tmp_path, "[net]\nwidth=32\nheight=32\n[yolo]\nclasses=3\nanchors=1,2,3\n")
    with pytest.raises(ModelError, match=":6: \\[yolo\\] anchors: odd number"):
        darknet.model_info(cfg)
    cfg = write(tmp_path, "[net]\nwidth=32\nheight=32\n[yolo]\nclasses=3\nanchors=1,2\n")
    with pytest.raises(ModelError, match="3 classes but the names list has 2"):
        darknet.model_info(cfg, names=["a", "b"])
    with pytest.raises(ModelError, match="no weights file beside it"):
        darknet.weights_for(cfg)
    with pytest.raises(ModelError, match="cannot read"):
        darknet.parse_cfg(tmp_path / "missing.cfg")
