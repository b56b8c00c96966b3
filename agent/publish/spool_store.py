"""The spool's two stores: SQLite on disk, and the in-memory fallback, with the same operations.

``spool.Spool`` owns one and applies the bounds and the degrading policy; these classes only
store rows. ``DiskStore`` raises ``SpoolUnavailable`` on any database error. Every delete reports
what it really deleted, so the spool's totals follow the store exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

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
_ID_CHUNK = 500  # ids per statement (old SQLite builds allow 999 bound values)


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


class DiskStore:
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
                msg.id = int(cur.lastrowid or 0)  # an INSERT always sets it; 0 only to satisfy the type
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

    def delete(self, ids: List[int]) -> Tuple[int, int]:
        """Delete the rows of ``ids`` that exist; returns (rows, payload bytes) really deleted."""
        def work() -> Tuple[int, int]:
            self.db.execute("BEGIN IMMEDIATE")
            rows = size = 0
            for start in range(0, len(ids), _ID_CHUNK):  # SQLite caps the number of bound values
                chunk = ids[start:start + _ID_CHUNK]
                marks = ",".join("?" * len(chunk))
                found = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages "
                                        f"WHERE id IN ({marks})", chunk).fetchone()
                self.db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                rows += int(found[0])
                size += int(found[1])
            self.db.execute("COMMIT")
            return rows, size
        return self._run(work)

    def has_after(self, cursor: int) -> bool:
        return self._run(lambda: self.db.execute("SELECT 1 FROM messages WHERE id > ? LIMIT 1",
                                                 (cursor,)).fetchone()) is not None

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


class MemoryStore:
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

    def delete(self, ids: List[int]) -> Tuple[int, int]:
        rows = size = 0
        for msg_id in ids:
            msg = self.rows.pop(msg_id, None)
            if msg is not None:
                rows += 1
                size += msg.size
        return rows, size

    def has_after(self, cursor: int) -> bool:
        return bool(self.rows) and next(reversed(self.rows)) > cursor  # ids ascend

    def totals(self) -> Tuple[int, int, int]:
        return len(self.rows), sum(m.size for m in self.rows.values()), self.next_id

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


__all__ = ["DiskStore", "MemoryStore", "Message", "SpoolUnavailable"]
