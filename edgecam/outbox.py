"""The durable queue on disk between capture and network: events wait in SQLite until the broker has them."""

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edgecam.errors import StorageError
from edgecam.models import Event, Still

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL,
    still_path TEXT,
    still_topic TEXT
)
"""


@dataclass(frozen=True)
class Pending:
    """One event waiting for the broker's acknowledgement."""

    seq: int
    payload: bytes
    """The compact JSON of ``Event.payload(seq)``, published on ``<base>/events``."""
    still_path: Path | None = None
    """The still's JPEG on disk, published on ``still_topic`` before the event JSON."""
    still_topic: str | None = None


class Outbox:
    """A SQLite file of events not yet acknowledged by the broker; one instance per thread."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the outbox at ``path``; raise StorageError when it cannot be opened."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"outbox: cannot create {path.parent}: {err.strerror or err}") from err
        try:
            # Autocommit mode: every transaction below is explicit.
            self._db: sqlite3.Connection | None = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot open {path}: {err}") from err
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                self._db.execute(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as err:
            self.close()
            raise StorageError(f"outbox: cannot use {path}: {err}") from err
        if version > SCHEMA_VERSION:
            self.close()
            raise StorageError(f"outbox: {path} has schema {version}, newer than this edgecam's ({SCHEMA_VERSION})")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"outbox: {self.path} is closed")
        return self._db

    def append(self, event: Event, still: Still | None = None) -> int:
        """Store an event (and where its still is) durably; return its ``seq``.

        A still event needs ``still.path`` (the JPEG already on disk) and ``event.extra["topic"]``.
        """
        still_path: str | None = None
        still_topic: str | None = None
        if still is not None:
            topic = event.extra.get("topic")
            if still.path is None or not isinstance(topic, str):
                raise ValueError("a still needs its path on disk and the event needs extra['topic']")
            still_path, still_topic = str(still.path), topic
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(
                    "INSERT INTO outbox (payload, still_path, still_topic) VALUES (x'', ?, ?)",
                    (still_path, still_topic),
                )
                seq = cursor.lastrowid
                assert seq is not None
                payload = json.dumps(event.payload(seq), separators=(",", ":"), allow_nan=False).encode()
                db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (payload, seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot write to {self.path}: {err}") from err
        logger.debug("outbox: appended %s seq=%d", event.type, seq)
        return seq

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[Pending]:
        """Up to ``limit`` events with a seq above ``after_seq``, oldest first."""
        try:
            rows = self._conn().execute(
                "SELECT seq, payload, still_path, still_topic FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            return [
                Pending(seq, bytes(payload), Path(path) if path is not None else None, topic)
                for seq, payload, path, topic in rows
            ]
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot read {self.path}: {err}") from err

    def ack(self, seq: int) -> None:
        """The broker has the event: forget it (its still stays on disk)."""
        try:
            self._conn().execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot write to {self.path}: {err}") from err

    def depth(self) -> int:
        """How many events wait for the broker."""
        try:
            (count,) = self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot read {self.path}: {err}") from err
        return int(count)

    def close(self) -> None:
        """Close the database connection; safe to call twice."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
