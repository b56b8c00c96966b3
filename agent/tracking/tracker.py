"""ByteTrack's method: Kalman-predicted boxes matched to detections in two stages.

Per frame (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", 2022), with times in seconds:

1. every track's box is predicted to the frame's timestamp (its own time step);
2. tracks (active and lost) are matched to the high-score detections by IoU;
3. active tracks still unmatched get a second chance against the low-score detections:
   a partly hidden object scores low, and dropping its box is what breaks identities;
   those that still find nothing become lost;
3b. lost tracks still unmatched are tried at the box they were last seen in, not where the
   filter predicts them (an object that stopped or bounced while unseen: OC-SORT's
   observation-centric recovery, Cao et al. 2023);
4. tentative tracks (not yet confirmed) are matched to the high-score detections left;
   a tentative track that misses a frame is dropped, so clutter rarely becomes a track;
5. the high-score detections still unmatched start tentative tracks;
6. a lost track unseen for ``lost_after_s`` ends.

A track is confirmed after ``min_hits`` matched frames in a row and only then takes an id
from the id source, so ids are dense and each names a real, announced track. Association
ignores the class (a detector that wavers between two labels must not split a track); the
track's label is the class with the highest total score over its detections. For the same
reason, a box that overlaps a higher-scoring one of another class by ``duplicate_iou`` is
the same object seen twice: it votes for the label but is not tracked on its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from agent.tracking import kalman
from agent.tracking.matching import iou_matrix, match
from agent.tracking.settings import TrackingSettings
from agent.types import Detections

log = logging.getLogger(__name__)

#: IoU a low-score detection needs to keep a track alive (ByteTrack's second association).
LOW_SCORE_MATCH_IOU = 0.5

TENTATIVE, TRACKED, LOST = "tentative", "tracked", "lost"


@dataclasses.dataclass(eq=False)  # identity, not field equality: tracks are compared as objects
class Track:
    """One object followed over frames. The tracker updates it; others only read it."""

    serial: int  # internal, for tentative tracks too
    mean: np.ndarray  # (8,) Kalman state: cx, cy, w, h and their rates per second
    cov: np.ndarray  # (8, 8)
    first_ts: float
    first_frame: int
    state: str = TENTATIVE
    track_id: Optional[int] = None  # set when confirmed
    hits: int = 1
    last_ts: float = 0.0  # last matched
    last_frame: int = 0
    state_ts: float = 0.0  # time the Kalman state refers to
    score: float = 0.0  # of the last matched detection
    top_score: float = 0.0
    det_box: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))  # last detection, xyxy
    votes: Dict[int, float] = dataclasses.field(default_factory=dict)  # class id -> summed score
    #: The label: the class with the highest total score (kept current by ``_vote``).
    class_id: int = -1
    #: The filtered box (xyxy): smoother than the detections, used for geometry. The tracker
    #: refreshes it for all tracks at once whenever the state changes.
    box: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    def _vote(self, class_id: int, score: float) -> None:
        total = self.votes[class_id] = self.votes.get(class_id, 0.0) + score
        best = self.votes.get(self.class_id, -1.0)
        if total > best or (total == best and class_id < self.class_id):
            self.class_id = class_id

    def _observe(self, box: np.ndarray, score: float, class_id: int, ts: float, frame: int) -> None:
        self.det_box = box
        self.score = score
        self.top_score = max(self.top_score, score)
        self._vote(class_id, score)
        self.last_ts, self.last_frame = ts, frame


@dataclasses.dataclass
class TrackerStep:
    """What one frame did: the track of each detection, and tracks confirmed or ended."""

    det_tracks: List[Optional[Track]]  # per detection, in input order; tentative tracks included
    confirmed: List[Track]  # confirmed in this frame
    ended: List[Track]  # confirmed tracks lost for lost_after_s, removed in this frame
    tracks: List[Track]  # confirmed tracks that still exist (tracked or lost), oldest first


def duplicates_of(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, min_iou: float
                  ) -> np.ndarray:
    """(N,) for each box, the index of the higher-scoring box of another class it duplicates
    (IoU >= ``min_iou``), or its own index. Per-class NMS leaves one box per class on an object
    the detector cannot decide about (square or triangle?); tracked as two, they would start
    a second track. Same-class pairs are NMS's business and are left alone."""
    primary = np.arange(len(boxes))
    if len(boxes) < 2 or min_iou >= 1.0:
        return primary
    iou = iou_matrix(boxes, boxes)
    other = class_ids[:, None] != class_ids[None, :]
    rows, cols = np.nonzero(np.triu((iou >= min_iou) & other, 1))
    if not len(rows):
        return primary
    # Strongest pairs first; each box is kept or absorbed once, by the best box that overlaps it.
    for i, j in sorted(zip(rows.tolist(), cols.tolist()), key=lambda p: -max(scores[p[0]], scores[p[1]])):
        keep, drop = (i, j) if scores[i] >= scores[j] else (j, i)
        if primary[keep] == keep and primary[drop] == drop:
            primary[drop] = keep
    return primary


class ByteTracker:
    """Multi-object tracker of one camera. ``ids`` is the source of track ids: pass one
    shared counter to every camera's tracker to make ids unique across the run."""

    def __init__(self, settings: TrackingSettings, ids: Optional[Iterator[int]] = None) -> None:
        self.settings = settings
        self._ids = ids if ids is not None else itertools.count(1)
        self._serials = itertools.count()
        self._tracks: List[Track] = []
        self._last_ts: Optional[float] = None
        self._warned_clock = False

    def apply(self, settings: TrackingSettings) -> None:
        """New settings (SIGHUP); tracks and ids carry on under them."""
        self.settings = settings

    @property
    def now(self) -> Optional[float]:
        """The time of the last frame (held still when the clock stepped back)."""
        return self._last_ts

    @property
    def tracks(self) -> List[Track]:
        """Every live track, tentative ones included."""
        return list(self._tracks)

    def update(self, dets: Detections, ts: float, frame: int) -> TrackerStep:
        """Advance to the frame taken at ``ts`` (seconds) holding ``dets``."""
        s = self.settings
        ts = self._clock(float(ts))
        self._predict(ts)
        scores = dets.scores.astype(np.float64)
        boxes = dets.xyxy.astype(np.float64)
        considered = np.flatnonzero(scores >= s.low_threshold)  # the rest are ignored anyway
        primary = np.arange(len(dets))
        primary[considered] = considered[duplicates_of(boxes[considered], scores[considered],
                                                       dets.class_ids[considered], s.duplicate_iou)]
        single = primary == np.arange(len(dets))
        high = np.flatnonzero((scores >= s.high_threshold) & single)
        low = np.flatnonzero((scores >= s.low_threshold) & (scores < s.high_threshold) & single)
        det_tracks: List[Optional[Track]] = [None] * len(dets)
        updates: List[Tuple[Track, int]] = []

        pool = [t for t in self._tracks if t.state in (TRACKED, LOST)]
        pairs, left_tracks, left_high = self._associate(pool, boxes[high], s.match_iou)
        updates += [(pool[r], int(high[c])) for r, c in pairs]
        active = [pool[r] for r in left_tracks if pool[r].state == TRACKED]
        pairs, left_active, _ = self._associate(active, boxes[low], LOW_SCORE_MATCH_IOU)
        updates += [(active[r], int(low[c])) for r, c in pairs]
        for r in left_active:
            active[r].state = LOST

        rest = high[left_high]
        # Lost tracks whose prediction drifted (an object that stopped or turned while unseen)
        # get a last chance at the box they were last seen in (OC-SORT's recovery step).
        lost = [pool[r] for r in left_tracks if pool[r].state == LOST]
        if lost and len(rest):
            iou = iou_matrix(np.stack([t.det_box for t in lost]), boxes[rest])
            pairs, _, left_recovered = match(iou, s.match_iou)
            updates += [(lost[r], int(rest[c])) for r, c in pairs]
            rest = rest[left_recovered]

        tentative = [t for t in self._tracks if t.state == TENTATIVE]
        pairs, left_tentative, left_rest = self._associate(tentative, boxes[rest], s.match_iou)
        updates += [(tentative[r], int(rest[c])) for r, c in pairs]
        dropped = {id(tentative[r]) for r in left_tentative}

        self._correct(updates, boxes)
        confirmed: List[Track] = []
        for track, d in updates:
            track._observe(boxes[d], float(scores[d]), int(dets.class_ids[d]), ts, frame)
            det_tracks[d] = track
            track.hits += 1
            if track.state != TENTATIVE:
                track.state = TRACKED
            elif track.hits >= s.min_hits:
                self._confirm(track)
                confirmed.append(track)

        new = [int(d) for d in rest[left_rest]]
        for track, d in zip(self._start(boxes[new], ts, frame), new):
            track._observe(boxes[d], float(scores[d]), int(dets.class_ids[d]), ts, frame)
            det_tracks[d] = track
            if s.min_hits <= 1:
                self._confirm(track)
                confirmed.append(track)

        for dup in np.flatnonzero(~single).tolist():  # a duplicate's class still votes for the label
            owner = det_tracks[int(primary[dup])]
            if owner is not None:
                owner._vote(int(dets.class_ids[dup]), float(scores[dup]))

        ended = [t for t in self._tracks if t.state == LOST and ts - t.last_ts >= s.lost_after_s]
        gone = dropped | {id(t) for t in ended}
        self._tracks = [t for t in self._tracks if id(t) not in gone]
        live = [t for t in self._tracks if t.confirmed]
        return TrackerStep(det_tracks, confirmed, ended, live)

    def end_all(self) -> List[Track]:
        """Every confirmed track, ended now (at shutdown); the tracker is empty afterwards."""
        ended = [t for t in self._tracks if t.confirmed]
        self._tracks = []
        return ended

    # ------------------------------------------------------------------ internals

    def _clock(self, ts: float) -> float:
        # A clock that steps back (a file looping, NTP) must not predict boxes backwards.
        if self._last_ts is not None and ts < self._last_ts:
            if not self._warned_clock:
                log.warning("frame time went back %.3f s; tracking holds time still", self._last_ts - ts)
                self._warned_clock = True
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def _predict(self, ts: float) -> None:
        if not self._tracks:
            return
        for t in self._tracks:
            if t.state == LOST:
                t.mean[6:] = 0.0  # an unseen box keeps its size, not its growth
        mean = np.stack([t.mean for t in self._tracks])
        cov = np.stack([t.cov for t in self._tracks])
        dt = np.array([ts - t.state_ts for t in self._tracks])
        mean, cov = kalman.predict(mean, cov, dt)
        for t, m, c, b in zip(self._tracks, mean, cov, kalman.xywh_to_xyxy(mean[:, :4])):
            t.mean, t.cov, t.state_ts, t.box = m, c, ts, b

    @staticmethod
    def _associate(tracks: List[Track], boxes: np.ndarray, min_iou: float
                   ) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
        if not tracks or not len(boxes):
            return [], list(range(len(tracks))), list(range(len(boxes)))
        return match(iou_matrix(np.stack([t.box for t in tracks]), boxes), min_iou)

    @staticmethod
    def _correct(updates: List[Tuple[Track, int]], boxes: np.ndarray) -> None:
        if not updates:
            return
        mean = np.stack([t.mean for t, _ in updates])
        cov = np.stack([t.cov for t, _ in updates])
        z = kalman.xyxy_to_xywh(boxes[[d for _, d in updates]])
        mean, cov = kalman.update(mean, cov, z)
        for (t, _), m, c, b in zip(updates, mean, cov, kalman.xywh_to_xyxy(mean[:, :4])):
            t.mean, t.cov, t.box = m, c, b

    def _start(self, boxes: np.ndarray, ts: float, frame: int) -> List[Track]:
        mean, cov = kalman.initiate(kalman.xyxy_to_xywh(boxes))
        new = [Track(next(self._serials), m, c, first_ts=ts, first_frame=frame, state_ts=ts, box=b)
               for m, c, b in zip(mean, cov, kalman.xywh_to_xyxy(mean[:, :4]))]
        self._tracks += new
        return new

    def _confirm(self, track: Track) -> None:
        track.track_id = int(next(self._ids))
        track.state = TRACKED
