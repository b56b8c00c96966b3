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
messages not currently in flight are dropped first, counted per reason and logged.

When the disk cannot be used (full, read-only, unopenable, locked by another agent), the
spool degrades to memory, bounded by ``memory_max_messages``, with a loud warning, and
never raises: losing the broker and the disk at once must not stop detection.

Not thread-safe: one thread (the publisher's sender) owns a ``Spool``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    key TEXT,
    props TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_key ON messages(key) WHERE key IS NOT NULL;
"""
_COLUMNS = "id, topic, payload, qos, retain, key, props, created"


@dataclasses.dataclass
class Message:
    """One outgoing message. ``id`` is its place in the spool (0 until stored).

    ``key``: a newer message with the same key replaces an older one still waiting (the
    retained stats: only the latest matters after an outage). ``props``: MQTT 5 publish
    properties to restore on resend (``response_topic``, ``correlation_data`` as hex).
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    key: Optional[str] = None
    props: Optional[Dict[str, str]] = None
    created: float = dataclasses.field(default_factory=time.time)
    id: int = 0

    @property
    def size(self) -> int:
        return len(self.payload)


class SpoolUnavailable(Exception):
    """The disk store failed; the spool switches to memory."""


class _Disk:
    """The SQLite store. Every method raises ``SpoolUnavailable`` on a database error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=1.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("spool %s: SQLite refused WAL mode (%s); writes will be slower", path, mode)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_DDL)  # also takes the exclusive lock (first write)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise SpoolUnavailable(f"spool format {version} is newer than this agent's "
                                       f"({_SCHEMA_VERSION})")
            self.db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise SpoolUnavailable(_describe(exc)) from exc

    def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (sqlite3.Error, OSError) as exc:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise SpoolUnavailable(_describe(exc)) from exc

    def totals(self) -> Tuple[int, int, int]:
        """(count, payload bytes, largest id)."""
        row = self._run(lambda: self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MAX(id), 0) "
            "FROM messages").fetchone())
        seq = self._run(lambda: self.db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name='messages'").fetchone())
        return int(row[0]), int(row[1]), max(int(row[2]), int(seq[0]) if seq else 0)

    def insert(self, messages: List[Message], replaced_keys: List[str]) -> List[Tuple[int, int]]:
        """Store ``messages`` (ids set in place); returns (id, size) of rows their keys replaced."""
        def work() -> List[Tuple[int, int]]:
            self.db.execute("BEGIN IMMEDIATE")
            gone: List[Tuple[int, int]] = []
            for key in replaced_keys:
                rows = self.db.execute("SELECT id, LENGTH(payload) FROM messages WHERE key=?",
                                       (key,)).fetchall()
                self.db.execute("DELETE FROM messages WHERE key=?", (key,))
                gone.extend((int(r[0]), int(r[1])) for r in rows)
            for msg in messages:
                cur = self.db.execute(
                    "INSERT INTO messages (topic, payload, qos, retain, key, props, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (msg.topic, msg.payload, msg.qos, int(msg.retain), msg.key,
                     json.dumps(msg.props) if msg.props else None, msg.created))
                msg.id = int(cur.lastrowid)
            self.db.execute("COMMIT")
            return gone
        return self._run(work)

    def after(self, cursor: int, limit: int) -> List[Message]:
        rows = self._run(lambda: self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)).fetchall())
        return [_row_message(row) for row in rows]

    def tail(self, limit: int) -> List[Message]:
        """The newest ``limit`` rows, oldest first."""
        rows = self._run(lambda: self.db.execute(
            f"SELECT {_COLUMNS} FROM messages ORDER BY id DESC LIMIT ?", (limit,)).fetchall())
        return [_row_message(row) for row in reversed(rows)]

    def delete(self, ids: List[int]) -> None:
        def work() -> None:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM messages WHERE id=?", [(i,) for i in ids])
            self.db.execute("COMMIT")
        self._run(work)

    def oldest(self, above: int, limit: int) -> List[Tuple[int, int, float]]:
        """(id, size, created) of the oldest rows with id > ``above``."""
        rows = self._run(lambda: self.db.execute(
            "SELECT id, LENGTH(payload), created FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            (above, limit)).fetchall())
        return [(int(r[0]), int(r[1]), float(r[2])) for r in rows]

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error as exc:
            log.warning("spool %s: close failed: %s", self.path, exc)


class _Memory:
    """The fallback store: the same operations on an ordered dict."""

    def __init__(self, next_id: int) -> None:
        self.rows: Dict[int, Message] = collections.OrderedDict()
        self.next_id = next_id

    def insert(self, messages: List[Message], replaced_keys: List[str]) -> List[Tuple[int, int]]:
        gone = []
        if replaced_keys:
            keys = set(replaced_keys)
            for msg in [m for m in self.rows.values() if m.key in keys]:
                del self.rows[msg.id]
                gone.append((msg.id, msg.size))
        for msg in messages:
            self.next_id += 1
            msg.id = self.next_id
            self.rows[msg.id] = msg
        return gone

    def after(self, cursor: int, limit: int) -> List[Message]:
        out = []
        for msg_id, msg in self.rows.items():  # small (memory_max_messages); ids ascend
            if msg_id > cursor:
                out.append(msg)
                if len(out) >= limit:
                    break
        return out

    def delete(self, ids: List[int]) -> None:
        for msg_id in ids:
            self.rows.pop(msg_id, None)

    def oldest(self, above: int, limit: int) -> List[Tuple[int, int, float]]:
        return [(m.id, m.size, m.created) for m in self.after(above, limit)]

    def close(self) -> None:
        pass


def _row_message(row: Tuple[Any, ...]) -> Message:
    return Message(id=int(row[0]), topic=str(row[1]), payload=bytes(row[2]), qos=int(row[3]),
                   retain=bool(row[4]), key=row[5], props=json.loads(row[6]) if row[6] else None,
                   created=float(row[7]))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        text += " (is another detection-agent using this spool?)"
    return text


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
        self._recent_drops: Deque[str] = collections.deque(maxlen=8)
        if path is None:
            self._store = _Memory(0)
            self._bound = min(max_messages, memory_max_messages)
            return
        self.path = Path(path)
        try:
            self._store = _Disk(self.path)
            self.count, self.bytes, _ = self._store.totals()
            self._bound = max_messages
            if self.count:
                log.info("spool %s: %d message(s) (%d bytes) left by an earlier run will be sent first",
                         path, self.count, self.bytes)
        except SpoolUnavailable as exc:
            self._store = _Memory(0)
            self._degrade(f"cannot open {path}: {exc}")

    @property
    def mode(self) -> str:
        """``disk`` or ``memory``."""
        return "disk" if isinstance(self._store, _Disk) else "memory"

    def __len__(self) -> int:
        return self.count

    # -- operations ------------------------------------------------------------------------

    def add(self, messages: List[Message], inflight_above: int = 0) -> None:
        """Append ``messages`` (their ids are set), then apply the bounds.

        Rows with ids <= ``inflight_above`` are on the wire; the bounds spare them.
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
        self.trim(inflight_above)

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
        items = [(m.id, m.size) for m in messages if m.id]
        if not items:
            return
        self._delete(items)

    def trim(self, inflight_above: int = 0, check_age: bool = False) -> int:
        """Apply max_messages and max_bytes (and max_age with ``check_age``, a periodic job).

        Returns how many messages were dropped.
        """
        if not check_age and self.count <= self._bound and self.bytes <= self.max_bytes:
            return 0
        dropped = 0
        horizon = self.clock() - self.max_age
        while self.count:
            excess_n = self.count - self._bound
            excess_b = self.bytes - self.max_bytes
            rows = self._call("oldest", inflight_above, 256)
            if rows is None:
                rows = self._store.oldest(inflight_above, 256)
            if not rows:
                break
            victims: List[Tuple[int, int]] = []
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
                victims.append((msg_id, size))
                self.dropped[reason] += 1
                self._recent_drops.append(reason)
                excess_n -= 1
                excess_b -= size
            if not victims:
                break
            self._delete(victims)
            dropped += len(victims)
            if len(victims) < len(rows):
                break
        if dropped:
            log.warning("spool: dropped the %d oldest message(s) (%s); now %d message(s), %d bytes",
                        dropped, ", ".join(sorted(set(self._recent_drops))), self.count, self.bytes)
        return dropped

    def close(self) -> None:
        self._store.close()

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    # -- failure handling -----------------------------------------------------------------

    def _delete(self, items: List[Tuple[int, int]]) -> None:
        ids = [i for i, _ in items]
        if self._call("delete", ids) is None and self.mode == "memory":
            self._store.delete(ids)
        self.count -= len(items)
        self.bytes -= sum(size for _, size in items)

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
        memory = _Memory(last_id)
        for msg in rows:
            memory.rows[msg.id] = msg
        memory.next_id = max([last_id] + [m.id for m in rows])
        lost = self.count - len(rows)
        self._store = memory
        self.count = len(rows)
        self.bytes = sum(m.size for m in rows)
        if lost > 0:
            self.dropped["memory"] += lost
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
