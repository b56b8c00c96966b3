"""Multi-object tracking, counting lines and the events and counts built on them.

``EventEngine`` (events.py) is the one object the pipeline needs per camera; the tracker,
the Kalman filter and the line geometry beneath it are usable on their own.
"""

from .counts import Counts
from .events import EventEngine, FrameResult
from .lines import CountingLine, crossing
from .settings import TrackingSettings
from .tracker import ByteTracker, Track, TrackerStep

__all__ = ["ByteTracker", "CountingLine", "Counts", "EventEngine", "FrameResult", "Track", "TrackerStep",
           "TrackingSettings", "crossing"]
