"""Multi-object tracking, counting lines and the events and counts built on them.

``EventEngine`` (events.py) is the one object the pipeline needs per camera; the tracker,
the Kalman filter and the line geometry beneath it are usable on their own.
"""

from agent.tracking.counts import Counts
from agent.tracking.events import EventEngine, FrameResult
from agent.tracking.lines import CountingLine, crossing
from agent.tracking.settings import TrackingSettings
from agent.tracking.tracker import ByteTracker, Track, TrackerStep

__all__ = ["ByteTracker", "CountingLine", "Counts", "EventEngine", "FrameResult", "Track", "TrackerStep",
           "TrackingSettings", "crossing"]
