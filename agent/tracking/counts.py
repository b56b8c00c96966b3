"""Counts of one camera: line crossings since start (or a reset) and who is in each zone now."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Sequence, Tuple

log = logging.getLogger(__name__)


class Counts:
    """Per line ``in``/``out`` totals; per zone the confirmed tracks in it, by label."""

    def __init__(self, line_names: Sequence[str], zone_names: Sequence[str], since: float = 0.0) -> None:
        self.line_names = list(line_names)
        self.zone_names = list(zone_names)
        self.since = since
        self._lines: Dict[str, Dict[str, int]] = {n: {"in": 0, "out": 0} for n in self.line_names}
        self._last: Dict[str, Any] = self.snapshot(())

    def cross(self, line: str, direction: str) -> None:
        self._lines[line][direction] += 1

    def reset(self, since: float) -> None:
        """Line totals back to zero (``cmd/reset_counts``); occupancy is what is there now, kept."""
        self.since = since
        for totals in self._lines.values():
            totals["in"] = totals["out"] = 0

    def snapshot(self, occupants: Iterable[Tuple[str, str]]) -> Dict[str, Any]:
        """The counts object, with the zone occupancy given as (zone, label) per confirmed
        track in a zone (a track in two zones appears twice)."""
        zones: Dict[str, Dict[str, Any]] = {n: {"total": 0, "by_label": {}} for n in self.zone_names}
        for zone, label in occupants:
            entry = zones.setdefault(zone, {"total": 0, "by_label": {}})
            entry["total"] += 1
            entry["by_label"][label] = entry["by_label"].get(label, 0) + 1
        return {"since": round(float(self.since), 6),
                "lines": {n: dict(t) for n, t in self._lines.items()},
                "zones": {n: {"total": z["total"], "by_label": dict(sorted(z["by_label"].items()))}
                          for n, z in zones.items()}}

    def take(self, occupants: Iterable[Tuple[str, str]]) -> Tuple[Dict[str, Any], bool]:
        """The counts now, and whether they differ from those of the previous call."""
        now = self.snapshot(occupants)
        changed = now != self._last
        self._last = now
        return now, changed
