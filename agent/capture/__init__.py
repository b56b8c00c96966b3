"""Camera capture: one ``Camera`` per configured source, each in its own thread.

``sources.py`` turns a camera's config into what OpenCV opens (device index, GStreamer
pipeline, FFmpeg URL, file, image folder); ``camera.py`` runs the reading thread, keeps
the newest frame (live) or every frame (files), and reconnects failed sources.
"""

from agent.capture.camera import Camera, CameraStats, join_readers

__all__ = ["Camera", "CameraStats", "join_readers"]
