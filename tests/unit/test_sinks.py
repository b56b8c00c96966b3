"""agent.runtime.sinks.VideoSink: a video it cannot write is an output error, not a camera's."""

from pathlib import Path

import numpy as np
import pytest

from agent.errors import CaptureError, OutputError
from agent.runtime.results import FrameResult
from agent.runtime.sinks import VideoSink
from agent.types import Detections, Frame


def result(camera: str = "front") -> FrameResult:
    return FrameResult(Frame(np.zeros((48, 64, 3), np.uint8), camera, 0), Detections.empty(), {})


def test_an_unwritable_video_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / ".front.partial.mp4").mkdir()  # the writer cannot open a folder
    sink = VideoSink(tmp_path, ["a"])
    with pytest.raises(OutputError, match=r"cannot write the annotated video .*front\.partial") as info:
        sink.handle(result())
    assert not isinstance(info.value, CaptureError) and info.value.exit_code == 1
    sink.close()


def test_a_written_video_is_finished_under_the_camera_name(tmp_path: Path) -> None:
    sink = VideoSink(tmp_path, ["a"])
    for _ in range(3):
        sink.handle(result())
    sink.close()
    assert (tmp_path / "front.mp4").stat().st_size > 0 and not (tmp_path / ".front.partial.mp4").exists()
