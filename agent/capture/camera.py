"""One camera in its own thread: open, read, hand frames over, reconnect on failure.

Hand-over depends on the mode:
- realtime (live sources by default): a one-frame slot holding the newest frame; a frame
  the consumer did not take in time is replaced and counted as dropped, so inference
  always sees the present, never a backlog;
- every frame (files and folders by default): a short bounded queue; the reader waits for
  room, so nothing is dropped and order is kept. A file in realtime mode is paced at its
  own frame rate, as a camera would deliver it.

A live source that fails to open, errors, stalls or sends only blank frames is closed and
reopened with exponential backoff and jitter; its state (``online``, ``reconnecting``,
``failed: reason``, ``finished``) is for ``stats`` and the per-camera status topic. No
frame is ever handed out twice, and all-black frames (what some drivers emit while a
sensor restarts) never are.

A reader thread spends most of its life inside OpenCV (FFmpeg, GStreamer, V4L2), which no
other thread can interrupt; FFmpeg's own timeouts (``sources.py``) bound a network read. If
the interpreter shut down while one of those calls is still running, the thread would be
torn down inside C++ when it returns (``FATAL: exception not rethrown``, SIGABRT). So
``stop`` only asks; ``join_readers`` waits for every reader started in this process, and
the CLI ends the process without interpreter teardown if one is still stuck.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
import weakref
from typing import Any, Callable, Deque, List, MutableSet, Optional, Tuple

import cv2
import numpy as np

from agent.capture.sources import Capture, SourceSpec, open_capture, source_spec
from agent.config.schema import CameraConfig
from agent.errors import CaptureError
from agent.types import Frame

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4  # every-frame mode: enough to ride out jitter, small enough for memory

# Every reader thread of this process, until it ends (see join_readers).
_READERS: MutableSet[threading.Thread] = weakref.WeakSet()


@dataclasses.dataclass
class CameraStats:
    state: str
    frames: int  # frames read from the source
    delivered: int  # frames handed to the consumer
    dropped: int  # realtime frames replaced before the consumer took them
    blank: int  # all-black frames discarded
    reconnects: int
    last_error: Optional[str]


def is_blank(image: np.ndarray) -> bool:
    """All black, judged on a sparse grid of pixels (cheap on a 1080p frame)."""
    return int(image[::16, ::16].max()) == 0


class Camera:
    def __init__(self, config: CameraConfig, spec: Optional[SourceSpec] = None,
                 on_frame: Optional[Callable[[], None]] = None) -> None:
        self.config = config
        self._on_frame = on_frame  # wakes a consumer that waits on several cameras at once
        # Runs on each frame in this camera's thread before delivery (the pipeline passes it to
        # ``start`` to make the network input here, in parallel with inference); its result
        # is ``prepared``.
        self._prepare: Optional[Callable[[np.ndarray], Any]] = None
        self.name = config.name
        self.spec = spec or source_spec(config)
        self.realtime = config.effective_realtime
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._queue: Deque[Frame] = collections.deque()
        self._thread: Optional[threading.Thread] = None
        self._finished = False
        self.state = "starting"
        self.frames = self.delivered = self.dropped = self.blank = self.reconnects = 0
        self.last_error: Optional[str] = None

    # ------------------------------------------------------------ consumer side

    def start(self, on_frame: Optional[Callable[[], None]] = None,
              prepare: Optional[Callable[[np.ndarray], Any]] = None) -> Camera:
        """Start reading. ``on_frame`` (instead of the constructor's) is called when a frame is
        ready; ``prepare(image)`` runs in this camera's thread, its result is ``Frame.prepared``."""
        if on_frame is not None:
            self._on_frame = on_frame
        self._prepare = prepare
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        _READERS.add(self._thread)
        self._thread.start()
        return self

    def read(self, timeout: float = 0.0) -> Optional[Frame]:
        """The next frame, waiting up to ``timeout`` s; None when there is none (yet, or any more)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self._take()
                if frame is not None or self._finished or self._stop.is_set():
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _take(self) -> Optional[Frame]:
        frame: Optional[Frame] = None
        if self._latest is not None:
            frame, self._latest = self._latest, None
        elif self._queue:
            frame = self._queue.popleft()
        if frame is not None:
            self.delivered += 1
            self._cond.notify_all()  # the reader may be waiting for room
        return frame

    @property
    def finished(self) -> bool:
        """True once a file or folder has delivered its last frame (and it was taken)."""
        with self._cond:
            return self._finished and self._latest is None and not self._queue

    def request_stop(self) -> None:
        """Ask the reader to stop at its next chance (after the driver call it is in)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 3.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera %s: reader thread still inside %s after %.1f s; it ends when the "
                            "driver returns", self.name, self.spec.description, timeout)

    @property
    def reader_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> CameraStats:
        return CameraStats(self.state, self.frames, self.delivered, self.dropped, self.blank,
                           self.reconnects, self.last_error)

    # ------------------------------------------------------------ reader thread

    def _run(self) -> None:
        backoff = self.config.reconnect_min
        index = 0
        while not self._stop.is_set():
            try:
                cap = open_capture(self.spec)
            except CaptureError as exc:
                self.last_error = str(exc)
                if not self.spec.is_live:
                    self._end(f"failed: {exc}")
                    return
                self._set_state("reconnecting", f"cannot open: {exc}")
                self._stop.wait(self._jitter(backoff))
                backoff = min(backoff * 2, self.config.reconnect_max)
                continue
            self._set_state("online")
            delivered_before = self.frames
            try:
                reason, index = self._pump(cap, index)
            except Exception as exc:  # a driver or decoder fault must not kill the thread
                log.exception("camera %s: capture failed", self.name)
                reason = f"error: {exc}"
            finally:
                cap.release()
            if self._stop.is_set():
                break
            if reason == "end":
                if self.config.loop:
                    continue
                self._end("finished")
                return
            if self.frames > delivered_before:
                backoff = self.config.reconnect_min  # it worked for a while: start over gently
            self.reconnects += 1
            self._set_state("reconnecting", reason)
            self._stop.wait(self._jitter(backoff))
            backoff = min(backoff * 2, self.config.reconnect_max)
        self._end(self.state if self.state.startswith("failed") else "stopped")

    def _pump(self, cap: Capture, index: int) -> Tuple[str, int]:
        """Read until the source ends, fails or stalls; returns (reason, next frame index)."""
        live = self.spec.is_live
        stall = self.config.stall_timeout
        last_good = time.monotonic()
        pace = self._frame_interval(cap) if (self.realtime and not live) else 0.0
        next_due = time.monotonic()
        while not self._stop.is_set():
            ok, image = cap.read()
            now = time.monotonic()
            if not ok or image is None or image.size == 0:
                return ("end" if not live else "read failed (stream ended or timed out)"), index
            self.frames += 1
            if is_blank(image):
                self.blank += 1
                if live and now - last_good > stall:
                    return f"stalled: only blank frames for {stall:g} s", index
                continue
            last_good = now
            frame = Frame(image, self.name, index)
            index += 1
            if self._prepare is not None:
                frame.prepared = self._prepare(image)
            if pace:
                next_due += pace
                if next_due < now - pace:
                    next_due = now  # fell behind: resume the rate rather than catch up in a burst
                self._stop.wait(max(0.0, next_due - time.monotonic()))
            self._deliver(frame)
        return "stopped", index

    def _frame_interval(self, cap: Capture) -> float:
        fps = self.config.fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
        return 1.0 / float(fps)

    def _deliver(self, frame: Frame) -> None:
        with self._cond:
            if self.realtime:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = frame
            else:
                while len(self._queue) >= QUEUE_FRAMES and not self._stop.is_set():
                    self._cond.wait(0.1)
                self._queue.append(frame)
            self._cond.notify_all()
        if self._on_frame is not None:
            self._on_frame()

    def _set_state(self, state: str, reason: Optional[str] = None) -> None:
        if state != self.state:
            if reason:
                self.last_error = reason
                log.warning("camera %s (%s): %s: %s", self.name, self.spec.description, state, reason)
            else:
                log.info("camera %s (%s): %s", self.name, self.spec.description, state)
        self.state = state

    def _end(self, state: str) -> None:
        self._set_state(state)
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        if self._on_frame is not None:
            self._on_frame()  # a consumer waiting for frames must learn that none will come

    def _jitter(self, delay: float) -> float:
        """Up to 25% either way, so cameras behind one failed switch do not retry in lockstep."""
        return delay * random.uniform(0.75, 1.25)


def join_readers(timeout: float) -> List[str]:
    """Wait up to ``timeout`` s for every reader thread started in this process to end.

    Returns the names of those still running (inside a driver call that has not returned).
    """
    deadline = time.monotonic() + timeout
    for thread in list(_READERS):
        thread.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in list(_READERS) if t.is_alive())
