"""Log lines for events that can repeat many times a second: the first at once, then a summary.

During a long outage a full spool drops one message per frame; one WARNING each would flood
journald and push out every other line. ``Throttled`` logs the first occurrence at once,
then at most one summary per ``interval`` seconds with how many happened since, and
``flush()`` writes what is still pending (at shutdown).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable, Dict, Optional


class Throttled:
    """Counts one kind of event by reason and logs it at most once per ``interval`` seconds.

    ``describe(count, by_reason)`` turns what accumulated into the message text.
    """

    def __init__(self, logger: logging.Logger, level: int, describe: Callable[[int, Dict[str, int]], str],
                 interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.describe = describe
        self.interval = interval
        self.clock = clock
        self.total = 0
        self.lines = 0  # log lines written: what the throttling saves is visible in tests
        self._pending: Dict[str, int] = collections.defaultdict(int)
        self._next: Optional[float] = None  # None: the next event is logged at once

    def note(self, counts: Dict[str, int], exc_info: Optional[BaseException] = None) -> None:
        """More events, counted by reason; logs now when the interval allows (with the traceback
        of ``exc_info`` when given)."""
        counts = {reason: n for reason, n in counts.items() if n > 0}
        if not counts:
            return
        for reason, n in counts.items():
            self.total += n
            self._pending[reason] += n
        now = self.clock()
        if self._next is None or now >= self._next:
            self._emit(now, exc_info)

    def flush(self) -> None:
        """Log what accumulated since the last line, if anything (a periodic job, and at the end)."""
        if self._pending and (self._next is None or self.clock() >= self._next):
            self._emit(self.clock())

    def close(self) -> None:
        """Log whatever is pending, whatever the interval."""
        if self._pending:
            self._emit(self.clock())

    def _emit(self, now: float, exc_info: Optional[BaseException] = None) -> None:
        pending = dict(self._pending)
        self._pending.clear()
        self._next = now + self.interval
        self.lines += 1
        self.logger.log(self.level, "%s", self.describe(sum(pending.values()), pending), exc_info=exc_info)


__all__ = ["Throttled"]
