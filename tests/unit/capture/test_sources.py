import cv2
import pytest

from agent.capture.sources import csi_pipeline, rtsp_jetson_pipeline, source_spec
from agent.config.schema import CameraConfig


def test_csi_pipeline_uses_the_isp_and_drops_stale_buffers():
    spec = source_spec(CameraConfig(name="c", source="csi://1", width=1920, height=1080, fps=30,
                                    csi={"flip_method": 2, "sensor_mode": 0}))
    assert spec.kind == "csi" and spec.api == cv2.CAP_GSTREAMER
    assert spec.target == (
        "nvarguscamerasrc sensor-id=1 sensor-mode=0 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! "
        "nvvidconv flip-method=2 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1 sync=false")
    assert csi_pipeline(0, 1280, 720, 60).startswith("nvarguscamerasrc sensor-id=0 ! ")


def test_rtsp_jetson_pipeline_decodes_in_hardware():
    pipe = rtsp_jetson_pipeline("rtsp://cam/s", 300, "tcp", codec="h265")
    assert "rtspsrc location=rtsp://cam/s latency=300 protocols=tcp ! rtph265depay ! h265parse ! " \
           "nvv4l2decoder" in pipe and pipe.endswith("appsink drop=1 max-buffers=1 sync=false")


def test_network_sources_use_ffmpeg_with_timeouts_and_masked_descriptions():
    spec = source_spec(CameraConfig(name="r", source="rtsp://admin:secret@10.0.0.5/live"))
    assert spec.api == cv2.CAP_FFMPEG and cv2.CAP_PROP_READ_TIMEOUT_MSEC in spec.params
    assert "secret" not in spec.description and "admin:***@" in spec.description
    http = source_spec(CameraConfig(name="h", source="http://u:pw@cam/mjpg"))
    assert http.kind == "http" and "pw" not in http.description


def test_usb_camera_settings_become_capture_properties():
    spec = source_spec(CameraConfig(name="u", source="/dev/video2", width=1280, height=720, fps=30,
                                    fourcc="MJPG"))
    assert spec.kind == "usb" and spec.api == cv2.CAP_V4L2 and spec.target == "/dev/video2"
    props = dict(zip(spec.params[0::2], spec.params[1::2]))
    assert props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert (props[cv2.CAP_PROP_FRAME_WIDTH], props[cv2.CAP_PROP_FRAME_HEIGHT], props[cv2.CAP_PROP_FPS]) == \
        (1280, 720, 30)
    assert source_spec(CameraConfig(name="i", source=0)).target == 0


def test_raw_gstreamer_pipeline_is_passed_through():
    spec = source_spec(CameraConfig(name="g", source="gstreamer: videotestsrc ! appsink"))
    assert (spec.kind, spec.target, spec.api) == ("gstreamer", "videotestsrc ! appsink", cv2.CAP_GSTREAMER)


@pytest.mark.parametrize("live", ["csi://0", "rtsp://x/y", "0"])
def test_live_sources_default_to_realtime(live):
    assert CameraConfig(name="c", source=live).effective_realtime
