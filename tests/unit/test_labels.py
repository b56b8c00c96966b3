"""agent.inference.labels: the class names file every model kind can take."""

from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.inference.labels import read_names


def test_names_one_per_line_blank_lines_and_spaces_dropped(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("person\n\n  car \r\ntraffic light\n", encoding="utf-8")
    assert read_names(path) == ["person", "car", "traffic light"]
    assert read_names(str(path)) == ["person", "car", "traffic light"]


def test_unreadable_names_file_is_a_model_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing\.names: cannot read class names"):
        read_names(tmp_path / "missing.names")


def test_darknet_module_reads_names_through_the_shared_reader() -> None:
    # The darknet cfg reader keeps no copy of its own: one reader for every model.
    from agent.modeltools.darknet import cfg

    assert cfg.read_names is read_names
