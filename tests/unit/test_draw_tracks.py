"""Annotated pictures with tracking: counting lines with their totals, trails, track ids."""

import numpy as np

from agent.runtime.draw import LINE_COLOUR, draw_detections, draw_result
from agent.runtime.results import FrameResult
from agent.runtime.settings import CameraSettings
from agent.tracking.lines import CountingLine
from agent.types import Detections, Frame


def test_a_result_draws_its_cameras_line_trails_and_ids_on_a_copy():
    image = np.zeros((240, 320, 3), np.uint8)
    line = CountingLine("door", (0.5, 0.0), (0.5, 1.0), relative=True)
    dets = Detections(np.array([[20, 150, 60, 190]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int32))
    result = FrameResult(Frame(image, "cam", 7), dets, {}, track_ids=[5],
                         trails={5: [(40.0, 100.0), (40.0, 140.0), (40.0, 190.0)]},
                         counts={"lines": {"door": {"in": 2, "out": 1}}, "zones": {}},
                         camera=CameraSettings(lines=(line,)))
    canvas = draw_result(result, ["person"])
    assert image.max() == 0  # the frame itself is never drawn on
    assert tuple(canvas[120, 160]) == LINE_COLOUR  # the line down the middle, in pixels of this frame
    assert canvas[110:130, 38:43].any()  # the trail above the box
    # The label grows by the id: more pixels than the same box drawn without tracking.
    plain = draw_detections(image, dets, ["person"])
    boxed = draw_detections(image, dets, ["person"], track_ids=[5])
    assert (boxed[130:150, 20:120] != 0).sum() > (plain[130:150, 20:120] != 0).sum()
