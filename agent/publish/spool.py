"""The on-disk spool: every QoS 1/2 message waits here until the broker acknowledges it.

One ordered store, oldest first, that the sender reads with a cursor: on each new
connection the cursor starts at 0, so whatever was sent and not acknowledged is sent
again, in order, before anything newer (new messages are always appended with larger
ids). A restart of the agent finds the previous run's backlog and sends it first.

Storage is SQLite in WAL mode with ``synchronous=NORMAL`` (no fsync per commit; a process
crash loses nothing, a power cut at most the last moments) and an exclusive lock, so two
agents cannot share one spool and send everything twice. Writes are batched: one
transaction per batch of messages or acknowledgements.

Bounds: ``max_messages``, ``max_bytes`` (payload bytes) and ``max_age``; the oldest
messages not currently in flight are dropped first, counted per reason and logged: the first
drop at once, then one summary a minute at most (an outage must not flood the journal).

``len(spool)`` and ``spool.bytes`` only ever move by what the store reports it really
inserted or deleted, so they cannot drift from it (a keyed message replaced while in flight
and acknowledged later is deleted once, counted once); ``audit()`` checks them against the
store and the sender does so periodically.

When the disk cannot be used (full, read-only, unopenable, locked by another agent), the
spool degrades to memory, bounded by ``memory_max_messages``, with a loud warning, and
never raises: losing the broker and the disk at once must not stop detection.

Not thread-safe: one thread (the publisher's sender) owns a ``Spool``.
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from agent.publish.spool_store import DiskStore, MemoryStore, Message, SpoolUnavailable
from agent.publish.throttle import Throttled

if TYPE_CHECKING:
    from agent.publish.unrouted import Unrouted

log = logging.getLogger(__name__)

class Spool:
    """Ordered, bounded message store: SQLite on disk, or memory when the disk fails.

    ``path=None`` (``spool.enabled: false``) keeps everything in memory from the start.
    ``dropped`` counts messages removed by the bounds, per reason: ``max_age``,
    ``max_bytes``, ``max_messages``, ``memory`` (the fallback's bound).
    """

    def __init__(self, path: Optional[str], *, max_bytes: int, max_messages: int, max_age: float,
                 memory_max_messages: int, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.max_age = max_age
        self.memory_max_messages = memory_max_messages
        self.clock = clock
        self.dropped: Dict[str, int] = collections.defaultdict(int)
        self.degraded_reason: Optional[str] = None  # why the disk is not used, when it is not
        self.count = 0
        self.bytes = 0
        self._store: Any
        self._drop_log = Throttled(log, logging.WARNING, self._describe_drops)
        if path is None:
            self._store = MemoryStore(0)
            self._bound = min(max_messages, memory_max_messages)
            return
        self.path = Path(path)
        try:
            self._store = DiskStore(self.path)
            self.count, self.bytes, _ = self._store.totals()
            self._bound = max_messages
            if self.count:
                log.info("spool %s: %d message(s) (%d bytes) left by an earlier run will be sent first",
                         path, self.count, self.bytes)
        except SpoolUnavailable as exc:
            self._store = MemoryStore(0)
            self._degrade(f"cannot open {path}: {exc}")

    @property
    def mode(self) -> str:
        """``disk`` or ``memory``."""
        return "disk" if isinstance(self._store, DiskStore) else "memory"

    def __len__(self) -> int:
        return self.count

    # -- operations ------------------------------------------------------------------------

    def add(self, messages: List[Message], inflight_above: int = 0, held: Optional[Unrouted] = None) -> None:
        """Append ``messages`` (their ids are set), then apply the bounds.

        Rows with ids <= ``inflight_above`` are on the wire; the bounds spare them, except the
        ``held`` ones (see ``trim``).
        """
        if not messages:
            return
        keys = sorted({m.key for m in messages if m.key})
        # Within one batch only the last message of a key is kept.
        if keys:
            last = {m.key: i for i, m in enumerate(messages) if m.key}
            messages = [m for i, m in enumerate(messages) if not m.key or last[m.key] == i]
        gone = self._call("insert", messages, keys)
        if gone is None:  # the disk failed: the memory store got nothing yet
            gone = self._store.insert(messages, keys)
        self.count += len(messages) - len(gone)
        self.bytes += sum(m.size for m in messages) - sum(size for _, size in gone)
        self.trim(inflight_above, held=held)

    def last_id(self) -> int:
        """The largest id ever given out (0 for an empty new spool)."""
        totals = self._call("totals")
        if totals is None or self.mode == "memory":
            return int(self._store.next_id)
        return int(totals[2])

    def after(self, cursor: int, limit: int) -> List[Message]:
        """Up to ``limit`` messages with id > ``cursor``, oldest first."""
        rows = self._call("after", cursor, limit)
        return self._store.after(cursor, limit) if rows is None else rows

    def remove(self, messages: Iterable[Message]) -> None:
        """Forget messages the broker acknowledged (or refused for good)."""
        ids = [m.id for m in messages if m.id]
        if ids:
            self._delete(ids)

    def oldest_created(self) -> Optional[float]:
        """When the oldest message waiting was created (Unix seconds); None when none waits."""
        if not self.count:
            return None
        rows = self._call("oldest", 0, 1)  # the primary key's first row: one index lookup
        if rows is None:
            rows = self._store.oldest(0, 1)
        return float(rows[0][2]) if rows else None

    def has_after(self, cursor: int) -> bool:
        """Whether a message with id > ``cursor`` waits (not sent on this connection yet)."""
        found = self._call("has_after", cursor)
        return self._store.has_after(cursor) if found is None else bool(found)

    def audit(self) -> bool:
        """Check the running totals against the store itself; fix them and log if they differ.

        The totals only ever move by what the store reports it inserted or deleted, so they
        should never differ: a difference is a bug, reported (False) for the owner to count.
        """
        totals = self._call("totals")
        if totals is None or self.mode == "memory":
            totals = self._store.totals()
        count, size = int(totals[0]), int(totals[1])
        if (count, size) == (self.count, self.bytes):
            return True
        log.error("spool: running totals (%d messages, %d bytes) differed from the store (%d, %d); "
                  "corrected", self.count, self.bytes, count, size)
        self.count, self.bytes = count, size
        return False

    def trim(self, inflight_above: int = 0, check_age: bool = False, held: Optional[Unrouted] = None) -> int:
        """Apply max_messages and max_bytes (and max_age with ``check_age``, a periodic job).

        ``held``: messages below ``inflight_above`` that are not on the wire but wait for a
        resend (unrouted.py); being the oldest, they are dropped first, and forgotten there.
        Returns how many messages were dropped.
        """
        if not check_age and self.count <= self._bound and self.bytes <= self.max_bytes:
            return 0
        dropped = 0
        by_reason: Dict[str, int] = collections.defaultdict(int)
        horizon = self.clock() - self.max_age
        if held is not None and len(held):
            rows = sorted((msg_id, msg.size, msg.created) for msg_id, msg in held.held.items())
            victims = self._victims(rows, check_age, horizon, by_reason)
            if victims:
                held.forget(victims)
                self._delete(victims)
                dropped += len(victims)
        while self.count:
            rows = self._call("oldest", inflight_above, 256)
            if rows is None:
                rows = self._store.oldest(inflight_above, 256)
            if not rows:
                break
            victims = self._victims(rows, check_age, horizon, by_reason)
            if not victims:
                break
            self._delete(victims)
            dropped += len(victims)
            if len(victims) < len(rows):
                break
        for reason, n in by_reason.items():
            self.dropped[reason] += n
        self._drop_log.note(by_reason)
        return dropped

    def _victims(self, rows: Sequence[Tuple[int, int, float]], check_age: bool, horizon: float,
                 by_reason: Dict[str, int]) -> List[int]:
        """The ids among ``rows`` (id, size, created; oldest first) that the bounds drop now."""
        excess_n = self.count - self._bound
        excess_b = self.bytes - self.max_bytes
        victims: List[int] = []
        for msg_id, size, created in rows:
            if check_age and created < horizon:
                reason = "max_age"
            elif excess_n > 0:
                reason = "memory" if self.mode == "memory" and self._bound < self.max_messages \
                    else "max_messages"
            elif excess_b > 0:
                reason = "max_bytes"
            else:
                break
            victims.append(msg_id)
            by_reason[reason] += 1
            excess_n -= 1
            excess_b -= size
        return victims

    def flush_log(self) -> None:
        """Log the drops not reported yet, once the summary interval has passed (a periodic job)."""
        self._drop_log.flush()

    def _describe_drops(self, count: int, by_reason: Dict[str, int]) -> str:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(by_reason.items()))
        return (f"spool full: dropped the {count} oldest message(s) ({reasons}); {self.dropped_total} "
                f"dropped since the start, now {self.count} message(s), {self.bytes} bytes waiting "
                f"(further drops are summarised at most once a minute)")

    def close(self) -> None:
        self._drop_log.close()
        self._store.close()

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    # -- failure handling -----------------------------------------------------------------

    def _delete(self, ids: List[int]) -> int:
        """Delete ``ids``; the totals go down by what the store really deleted (an id may be gone
        already: a keyed message replaced while in flight, then acknowledged). Returns that count."""
        done = self._call("delete", ids)
        if done is None:  # the disk failed and the memory store took over: delete there
            done = self._store.delete(ids)
        self.count -= done[0]
        self.bytes -= done[1]
        return int(done[0])

    def _call(self, name: str, *args: Any) -> Any:
        """Run a store operation; on a disk failure switch to memory and return None."""
        try:
            result = getattr(self._store, name)(*args)
        except SpoolUnavailable as exc:
            self._to_memory(str(exc))
            return None
        return [] if result is None else result

    def _to_memory(self, reason: str) -> None:
        disk = self._store
        rows: List[Message] = []
        last_id = self.count
        try:  # the disk may still be readable (full, not broken): keep its newest messages
            rows = disk.tail(self.memory_max_messages)
            last_id = max(last_id, disk.totals()[2])
        except SpoolUnavailable:
            pass
        disk.close()
        memory = MemoryStore(last_id)
        for msg in rows:
            memory.rows[msg.id] = msg
        memory.next_id = max([last_id] + [m.id for m in rows])
        lost = self.count - len(rows)
        self._store = memory
        self.count = len(rows)
        self.bytes = sum(m.size for m in rows)
        if lost > 0:
            self.dropped["memory"] += lost
            self._drop_log.note({"memory": lost})
        self._degrade(f"{self.path}: {reason}")

    def _degrade(self, reason: str) -> None:
        self.degraded_reason = reason
        self._bound = min(self.max_messages, self.memory_max_messages)
        log.error("SPOOL DEGRADED: %s. Messages now wait in memory only (at most %d; the oldest are "
                  "dropped beyond that) and are lost if the agent stops before the broker takes them. "
                  "Free disk space or fix spool.path, then restart the agent.", reason, self._bound)


def spool_from_config(spool_cfg: Any) -> Spool:
    """A ``Spool`` from ``AgentConfig.spool``."""
    return Spool(spool_cfg.path if spool_cfg.enabled else None, max_bytes=spool_cfg.max_bytes,
                 max_messages=spool_cfg.max_messages, max_age=spool_cfg.max_age,
                 memory_max_messages=spool_cfg.memory_max_messages)


__all__ = ["Message", "Spool", "spool_from_config"]
