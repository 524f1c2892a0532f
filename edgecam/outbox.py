"""The durable queue on disk between capture and network: events and stills wait in the state directory.

Write path: the still is written atomically (temporary file, fsync, rename, directory fsync), then its row is
committed (WAL, ``synchronous=FULL``); only then can the publisher see it. A row stays after delivery for
``storage.retention_days``; ``storage.max_bytes`` bounds the stills and the database together.
"""

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from edgecam.clock import boot_id, since_boot
from edgecam.config import StorageSettings
from edgecam.disk import TMP_SUFFIX, is_full, write_atomically
from edgecam.errors import StorageError
from edgecam.models import Event, Still
from edgecam.state_dir import not_writable

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    delivered REAL,
    still_path TEXT,
    still_topic TEXT,
    still_bytes INTEGER NOT NULL DEFAULT 0,
    still_state TEXT,
    boot_id TEXT,
    created_since_boot REAL
);
CREATE INDEX outbox_waiting ON outbox (seq) WHERE delivered IS NULL;
CREATE INDEX outbox_event ON outbox (event_id);
CREATE INDEX outbox_kept ON outbox (seq, still_bytes) WHERE still_state = 'kept';
"""
# still_state: NULL (no still), 'kept' (on disk), 'dropped' (deleted before delivery), 'deleted' (after delivery).
# boot_id, created_since_boot: the boot and its CLOCK_BOOTTIME at creation (NULL in rows from before schema 3).
_V1_TO_V2 = """
ALTER TABLE outbox RENAME TO outbox_v1;
{schema}
INSERT INTO outbox (seq, event_id, type, payload, created, still_path, still_topic, still_state)
    SELECT seq, json_extract(payload, '$.event_id'), json_extract(payload, '$.type'), payload,
           CAST(strftime('%s', 'now') AS REAL), still_path, still_topic,
           CASE WHEN still_path IS NULL THEN NULL ELSE 'kept' END
    FROM outbox_v1;
DROP TABLE outbox_v1;
"""
_V2_TO_V3 = """
ALTER TABLE outbox ADD COLUMN boot_id TEXT;
ALTER TABLE outbox ADD COLUMN created_since_boot REAL;
"""
HEADROOM = 65536
"""Bytes kept free under ``storage.max_bytes`` for what a write adds to the database before the budget is enforced."""
WARN_AT = 0.8
"""Fraction of ``storage.max_bytes`` at which a warning is logged."""
CACHE_KIB = 512
"""KiB of database pages each connection keeps (SQLite's default is 2000): the agent holds three connections and
a week of events is megabytes, which ``recover`` and ``sweep`` read through; the queries walk indexes and the
system caches the file. Measured on a 10 MB outbox: 1.1 MB held per connection instead of 2.6 MB, as fast."""
_BATCH = 64
_DAY = 86400.0
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (they carry the picture's size)."""


@dataclass(frozen=True)
class Pending:
    """One event waiting for delivery."""

    seq: int
    payload: bytes
    """The compact JSON of ``Event.payload(seq)``, published on ``<base>/events``."""
    still_path: Path | None = None
    """The still's JPEG on disk, published on ``still_topic`` before the event JSON; None once dropped."""
    still_topic: str | None = None
    type: str = "start"
    """The event's type: ``start``, ``still``, ``end`` or ``forget`` (which also clears the retained snapshot)."""
    age_s: float = field(default=0.0, compare=False)
    """Seconds since the row was written (``Outbox._age``): what of a still's time on the broker has gone by."""


class SeqTaken(StorageError):
    """The seq given to an event is another event's: another process (``edgecam forget``) wrote a row meanwhile."""


class Snapshot(NamedTuple):
    """The still the retained snapshot shows, and how long ago it was taken."""

    path: Path
    age_s: float


@dataclass(frozen=True)
class Erased:
    """What ``Outbox.erase`` deleted."""

    events: int
    """Door events (event ids) erased."""
    rows: int
    stills: int
    """Still files deleted."""
    undelivered: int
    """Rows deleted that had not been delivered yet (only with ``force``)."""


@dataclass(frozen=True)
class Stats:
    """What ``<base>/stats`` reports."""

    depth: int
    """Events not yet delivered."""
    bytes: int
    """Bytes of the database and the stills."""
    max_bytes: int
    oldest_waiting_s: float | None
    """Age of the oldest undelivered event, or None when nothing waits: from the boot clock if it was created in
    this boot, else from the wall clock."""
    stills_dropped: int
    """Undelivered stills deleted to stay within the budget or because the disk was full."""

    def payload(self) -> dict[str, Any]:
        """The JSON object published on ``<base>/stats``."""
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "used": round(self.bytes / self.max_bytes, 4),
            "oldest_waiting_s": None if self.oldest_waiting_s is None else round(self.oldest_waiting_s, 1),
            "stills_dropped": self.stills_dropped,
        }


def jpeg_size(jpeg: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame segment, or None if it is not a readable JPEG."""
    if not jpeg.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        if marker in _SOF:
            return int.from_bytes(jpeg[i + 7 : i + 9], "big"), int.from_bytes(jpeg[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    return None


class Outbox:
    """The state directory's SQLite queue and stills; one instance per thread."""

    def __init__(
        self,
        storage: StorageSettings,
        for_sending: bool = False,
        clock: Callable[[], float] = time.time,
        boot_clock: Callable[[], float] = since_boot,
        boot: str | None = None,
    ) -> None:
        """Open (or create) the outbox; raise StorageError when it cannot be opened.

        ``for_sending`` is the publisher's connection: it only marks rows delivered, which a power cut may
        undo (the event is sent again), so it commits without waiting for the disk. ``clock`` is the wall clock
        (seconds since the epoch), ``boot_clock`` the seconds since boot and ``boot`` this boot's id (default:
        the kernel's), which together time a wait within one boot whatever NTP does to the wall clock.
        """
        self.storage = storage
        self.path = storage.outbox_path
        self._clock = clock
        self._boot_clock = boot_clock
        self._boot = boot_id() if boot is None else boot
        self._warned = False
        self._db: sqlite3.Connection | None = None
        try:
            storage.stills_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"storage.dir: cannot create {storage.stills_dir}: {err.strerror or err}") from err
        try:
            # Autocommit mode: every transaction below is explicit.
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new database
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'NORMAL' if for_sending else 'FULL'}")
            self._db.execute("PRAGMA wal_autocheckpoint=64")  # keep the WAL small: it counts against max_bytes
            self._db.execute("PRAGMA journal_size_limit=262144")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # negative: KiB, not pages
            self._db.execute("PRAGMA secure_delete=ON")  # erased events are overwritten (as in edgecam.eventlog)
            self._migrate()
        except sqlite3.Error as err:
            self.close()
            not_ours = not_writable(storage)  # sqlite says only "readonly database" or "unable to open"
            raise StorageError(f"outbox: cannot use {self.path}: {err}{f': {not_ours}' if not_ours else ''}") from err

    def _migrate(self) -> None:
        db = self._conn()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema {version} is newer than this edgecam's ({SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            script = _SCHEMA
        elif version == 1:
            script = _V1_TO_V2.format(schema=_SCHEMA)  # straight to the current layout
        else:
            script = _V2_TO_V3
        db.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        if version == 1:
            prefix = f"{self.storage.dir}/"  # schema 1 kept absolute still paths; 2 keeps them relative to dir
            db.execute(
                "UPDATE outbox SET still_path = substr(still_path, ?) WHERE substr(still_path, 1, ?) = ?",
                (len(prefix) + 1, len(prefix), prefix),
            )
        if version:
            logger.info("outbox: upgraded %s from schema %d to %d", self.path, version, SCHEMA_VERSION)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"outbox: {self.path} is closed")
        return self._db

    def _write(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(db, *args)`` in one transaction; on a full disk free room and try again; raise StorageError."""
        db = self._conn()
        for attempt in range(3):
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(db, *args)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                else:
                    return result
            except sqlite3.Error as err:
                full = getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                if not full or attempt == 2 or not self._make_room(1 << 20, disk_full=True):
                    raise StorageError(f"outbox: cannot {what} in {self.path}: {err}") from err
        raise AssertionError("unreachable")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise StorageError(f"outbox: cannot read {self.path}: {err}") from err

    # The write path (the agent's thread).

    def append(self, event: Event, still: Still | None = None, seq: int | None = None) -> int:
        """Store an event (and its still: on disk first, then the row) durably; return its ``seq``.

        A still event needs ``event.extra["topic"]``. A still that cannot be written (full disk, I/O error), or
        has no bytes, is recorded as dropped; the event row is kept whatever happens to the still. ``seq`` is
        the one given out while the disk refused the row (``last_seq``), else the next. Raises SeqTaken when another
        process has stored a row with that seq meanwhile.
        """
        rel: str | None = None
        state: str | None = None
        size = 0
        topic: str | None = None
        if still is not None:
            topic = event.extra.get("topic")
            if not isinstance(topic, str):
                raise ValueError("a still event needs extra['topic']")
            rel = f"stills/{event.event_id}/{still.index}.jpg"
            saved = bool(still.jpeg) and self._save_still(rel, still.jpeg)  # no bytes: dropped while waiting
            state, size = ("kept", len(still.jpeg)) if saved else ("dropped", 0)
        seq = self._write(f"store a {event.type} event", self._insert, event, rel, topic, size, state, seq)
        assert seq is not None
        logger.debug("outbox: appended %s seq=%d", event.type, seq)
        self._keep_budget()
        return seq

    def _insert(
        self,
        db: sqlite3.Connection,
        event: Event,
        rel: str | None,
        topic: str | None,
        size: int,
        state: str | None,
        seq_given: int | None = None,
    ) -> int:
        if seq_given is not None:
            # A commit reported as failed may have reached the disk after all (an fsync error): it is stored.
            row = db.execute("SELECT event_id FROM outbox WHERE seq = ?", (seq_given,)).fetchone()
            if row is not None and row[0] == event.event_id:
                return seq_given
            if row is not None:
                raise SeqTaken(f"outbox: seq={seq_given} is taken by another event in {self.path}")
        cursor = db.execute(
            "INSERT INTO outbox"
            " (seq, event_id, type, payload, created, still_path, still_topic, still_bytes, still_state, boot_id,"
            " created_since_boot) VALUES (?, ?, ?, x'', ?, ?, ?, ?, ?, ?, ?)",
            (
                seq_given,
                event.event_id,
                event.type,
                self._clock(),
                rel,
                topic,
                size,
                state,
                self._boot,
                self._boot_clock(),
            ),
        )
        seq = cursor.lastrowid
        assert seq is not None
        payload = event.payload(seq)
        if state == "dropped":
            payload["dropped"] = True
        if event.type == "end":
            dropped = self._dropped_indices(db, event.event_id)
            if dropped:
                payload["stills_dropped"] = dropped
        db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps(payload), seq))
        return seq

    def _save_still(self, rel: str, jpeg: bytes) -> bool:
        """Write a still within the budget; on a full disk free room (in the documented order) and retry."""
        path = self.storage.dir / rel
        self._make_room(len(jpeg) - self._room())
        for _ in range(3):
            try:
                write_atomically(path, jpeg)
            except OSError as err:
                if is_full(err) and self._make_room(2 * len(jpeg) + (1 << 20), disk_full=True):
                    continue
                logger.error("outbox: still %s not saved, its event goes without it: %s", rel, err.strerror or err)
                return False
            return True
        logger.error("outbox: still %s not saved: the disk stays full", rel)
        return False

    # The send path (the publisher's thread).

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[Pending]:
        """Up to ``limit`` undelivered events with a seq above ``after_seq``, oldest first."""
        rows = self._read(
            "SELECT seq, payload, still_path, still_topic, still_state, type, created, boot_id, created_since_boot"
            " FROM outbox WHERE delivered IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [
            Pending(
                seq,
                bytes(payload),
                self.storage.dir / rel if state == "kept" else None,
                topic,
                kind,
                self._age(created, boot, since_boot),
            )
            for seq, payload, rel, topic, state, kind, created, boot, since_boot in rows
        ]

    def delivered(self, seqs: Iterable[int]) -> None:
        """The broker has these events: they stay for ``retention_days``, and are not sent again."""
        batch = list(seqs)
        if batch:
            marks = [(self._clock(), seq) for seq in batch]
            self._write(
                "mark events delivered",
                lambda db: db.executemany("UPDATE outbox SET delivered = ? WHERE seq = ? AND delivered IS NULL", marks),
            )

    def confirm(self, event_ids: Iterable[str]) -> int:
        """A consumer has these whole events: mark every row of them delivered; return how many rows changed."""
        marks = [(self._clock(), event_id) for event_id in event_ids]

        def mark(db: sqlite3.Connection) -> int:
            return db.executemany(
                "UPDATE outbox SET delivered = ? WHERE event_id = ? AND delivered IS NULL", marks
            ).rowcount

        changed: int = self._write("mark events confirmed", mark)
        return changed

    def last_seq(self) -> int:
        """The highest seq ever given to a row (0 for none); readable on a read-only disk."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        return int(rows[0][0]) if rows else 0

    def last_start(self) -> str | None:
        """When the newest door event in the outbox started (its ``time``, ISO 8601), or None if there is none."""
        rows = self._read("SELECT payload FROM outbox WHERE type = 'start' ORDER BY seq DESC LIMIT 1")
        if not rows:
            return None
        try:
            time = json.loads(rows[0][0]).get("time")
        except (ValueError, UnicodeDecodeError, AttributeError):
            return None
        return time if isinstance(time, str) else None

    def depth(self) -> int:
        """How many events wait for delivery."""
        return int(self._read("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL")[0][0])

    def stats(self) -> Stats:
        """The outbox's depth, bytes used and oldest undelivered age."""
        (depth,) = self._read("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL")[0]
        oldest = self._read(
            "SELECT created, boot_id, created_since_boot FROM outbox WHERE delivered IS NULL ORDER BY seq LIMIT 1"
        )
        (dropped,) = self._read("SELECT COUNT(*) FROM outbox WHERE still_state = 'dropped'")[0]
        age = self._age(*oldest[0]) if oldest else None
        return Stats(int(depth), self.used_bytes(), self.storage.max_bytes, age, int(dropped))

    def _age(self, created: float, boot: str | None, created_since_boot: float | None) -> float:
        """Seconds since a row was created: the wall clock jumps when NTP first sets it, the boot clock does not."""
        if boot and boot == self._boot and created_since_boot is not None:
            return max(0.0, self._boot_clock() - created_since_boot)
        return max(0.0, self._clock() - created)  # another boot: only the wall clock spans both

    def snapshot_still(self) -> Snapshot | None:
        """The newest still on disk if it was delivered and taken under ``snapshot_expiry`` ago: the door's picture.

        None when there is no such still, or when the newest still on disk waits to be sent (it becomes the
        snapshot then).
        """
        rows = self._read(
            "SELECT still_path, delivered, created, boot_id, created_since_boot FROM outbox"
            " WHERE still_state = 'kept' ORDER BY seq DESC LIMIT 1"
        )
        if not rows:
            return None
        rel, delivered, *created = rows[0]
        age = self._age(*created)
        if delivered is None or age >= self.storage.snapshot_expiry_s:
            return None
        return Snapshot(self.storage.dir / str(rel), age)

    # Erasure (``edgecam forget``).

    def event_ids(self, before: float | None = None) -> list[str]:
        """The door events in the outbox, oldest first; with ``before`` (seconds since the epoch) those begun before.

        ``forget`` messages are not door events and are never listed.
        """
        rows = self._read(
            "SELECT event_id FROM outbox WHERE type != 'forget' GROUP BY event_id HAVING MIN(created) < ?"
            " ORDER BY MIN(seq)",
            (float("inf") if before is None else before,),
        )
        return [str(event_id) for (event_id,) in rows]

    def erase(self, event_ids: Sequence[str], force: bool = False) -> Erased:
        """Delete these events: their rows and their stills on disk; the budget's bytes come back.

        Raises StorageError, deleting nothing, when any of their rows is not delivered yet, unless ``force``.
        """
        ids = list(dict.fromkeys(event_ids))
        rows: list[tuple[int, str, str | None, str | None, float | None]] = []
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows += self._read(
                f"SELECT seq, event_id, still_path, still_state, delivered FROM outbox WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            )
        undelivered = sum(delivered is None for *_, delivered in rows)
        if undelivered and not force:
            raise StorageError(
                f"forget: {undelivered} messages of these events are not delivered yet; run it again once the agent "
                "has sent them, or add --force to drop them"
            )
        stills = 0
        for _, _, rel, state, _ in rows:
            if rel is not None and state == "kept":
                self._unlink(rel)
                stills += 1
        seqs = [(seq,) for seq, *_ in rows]
        self._write("erase events", lambda db: db.executemany("DELETE FROM outbox WHERE seq = ?", seqs))
        self._shrink()
        erased = Erased(len({event_id for _, event_id, *_ in rows}), len(rows), stills, undelivered)
        logger.debug("outbox: %s", erased)
        return erased

    # The budget.

    def used_bytes(self) -> int:
        """Bytes of the stills kept and of the database files (its WAL and shared-memory index included)."""
        (stills,) = self._read("SELECT COALESCE(SUM(still_bytes), 0) FROM outbox WHERE still_state = 'kept'")[0]
        files = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                files += self.path.with_name(self.path.name + suffix).stat().st_size
        return int(stills) + files

    def _room(self) -> int:
        return self.storage.max_bytes - HEADROOM - self.used_bytes()

    def sweep(self) -> None:
        """Delete delivered stills and rows past ``retention_days``, then enforce ``max_bytes``."""
        cutoff = self._clock() - self.storage.retention_days * _DAY
        freed = self._delete_stills("delivered IS NOT NULL AND delivered < ?", (cutoff,), "deleted", None)
        freed += self._delete_rows(cutoff)
        if freed:
            logger.info(
                "outbox: freed %d bytes of events delivered over %g days ago", freed, self.storage.retention_days
            )
        self._keep_budget()

    def _make_room(self, need: int, disk_full: bool = False) -> bool:
        """Free ``need`` bytes in the documented order; True if anything was freed.

        Within the budget this is routine once it is full (old delivered stills make way for new ones); a full
        disk is not, and is logged as a warning. Each undelivered still dropped is a warning of its own.
        """
        if need <= 0:
            return False
        cutoff = self._clock() - self.storage.retention_days * _DAY
        freed = 0
        steps: list[Callable[[int], int]] = [
            lambda left: self._delete_stills("delivered IS NOT NULL AND delivered < ?", (cutoff,), "deleted", left),
            lambda left: self._delete_rows(cutoff),
            lambda left: self._delete_stills("delivered IS NOT NULL", (), "deleted", left),
            lambda left: self._delete_stills("delivered IS NULL", (), "dropped", left),
        ]
        for step in steps:
            if freed >= need:
                break
            freed += step(need - freed)
        if disk_full:
            logger.warning("outbox: the disk is full: freed %d bytes of stills (docs/reliability.md)", freed)
        elif freed:
            logger.debug("outbox: storage.max_bytes reached: freed %d bytes", freed)
        return freed > 0

    def _delete_stills(
        self, where: str, args: tuple[Any, ...], state: Literal["deleted", "dropped"], need: int | None
    ) -> int:
        """Delete kept stills matching ``where``, oldest first, until ``need`` bytes are freed (None: all)."""
        freed = 0
        while need is None or freed < need:
            rows = self._read(
                f"SELECT seq, event_id, still_path, still_bytes, payload FROM outbox"  # noqa: S608
                f" WHERE still_state = 'kept' AND {where} ORDER BY seq LIMIT {_BATCH}",
                args,
            )
            if not rows:
                break
            for seq, event_id, rel, size, payload in rows:
                self._unlink(rel)
                freed += size
                if state == "dropped":
                    logger.warning("outbox: dropped the undelivered still %s (its event is kept)", rel)
                self._write("record a deleted still", self._mark, state, seq, event_id, payload)
                if need is not None and freed >= need:
                    break
        return freed

    def _mark(self, db: sqlite3.Connection, state: str, seq: int, event_id: str, payload: bytes) -> None:
        db.execute("UPDATE outbox SET still_state = ?, still_bytes = 0 WHERE seq = ?", (state, seq))
        if state != "dropped":
            return
        db.execute(
            "UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps({**json.loads(payload), "dropped": True}), seq)
        )
        for end_seq, end_payload in db.execute(
            "SELECT seq, payload FROM outbox WHERE event_id = ? AND type = 'end' AND delivered IS NULL", (event_id,)
        ).fetchall():
            end = {**json.loads(end_payload), "stills_dropped": self._dropped_indices(db, event_id)}
            db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps(end), end_seq))

    @staticmethod
    def _dropped_indices(db: sqlite3.Connection, event_id: str) -> list[int]:
        rows = db.execute(
            "SELECT payload FROM outbox WHERE event_id = ? AND type = 'still' AND still_state = 'dropped' ORDER BY seq",
            (event_id,),
        )
        return [int(json.loads(payload)["index"]) for (payload,) in rows]

    def _delete_rows(self, cutoff: float) -> int:
        """Forget delivered rows past retention (their stills are gone by now); return the bytes freed."""
        before = self.used_bytes()
        deleted: int = self._write(
            "delete old events",
            lambda db: (
                db.execute(
                    "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ? AND still_state IS NOT 'kept'",
                    (cutoff,),
                ).rowcount
            ),
        )
        if not deleted:
            return 0
        self._shrink()
        return max(0, before - self.used_bytes())

    def _shrink(self) -> None:
        """Give deleted rows' pages back to the file system, and empty the WAL, which holds them as they were."""
        try:
            self._conn().execute("PRAGMA incremental_vacuum")
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            logger.warning("outbox: cannot shrink %s: %s", self.path, err)

    def _unlink(self, rel: str) -> None:
        path = self.storage.dir / rel
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            logger.error("outbox: cannot delete %s: %s", path, err.strerror or err)
            return
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the event's folder, once its last still is gone

    def _keep_budget(self) -> None:
        """Delete stills (in the documented order) while over ``max_bytes``; warn once at 80 %."""
        used = self.used_bytes()
        limit = self.storage.max_bytes
        if used > limit - HEADROOM and self._make_room(used - limit + HEADROOM):
            used = self.used_bytes()
        if used >= WARN_AT * limit and not self._warned:
            self._warned = True
            logger.warning(
                "outbox: %d of storage.max_bytes %d bytes used (%.0f %%); stills will be deleted past it",
                used,
                limit,
                100.0 * used / limit,
            )
        elif used < 0.75 * limit:
            self._warned = False

    # Recovery after a crash or a power cut (the agent, before the publisher starts).

    def recover(self, still_topic: Callable[[str, int], str]) -> None:
        """Check the database, delete half-written files, and make rows and stills on disk agree.

        A still on disk without its row (a crash between rename and commit) gets its row back, marked
        ``recovered``; a row whose still is missing says ``dropped``; an event with a start and no end (the
        agent died during it) gets an end marked ``interrupted``.
        """
        (check,) = self._read("PRAGMA quick_check(1)")[0]
        if check != "ok":
            raise StorageError(
                f"outbox: {self.path} is damaged ({check}); move it aside and start again (its stills stay)"
            )
        for tmp in [*self.storage.dir.glob(f".*{TMP_SUFFIX}"), *self.storage.stills_dir.glob(f"*/.*{TMP_SUFFIX}")]:
            logger.info("outbox: removing %s, left by an interrupted write", tmp)
            tmp.unlink(missing_ok=True)
        known = set()
        for seq, event_id, rel, state, payload in self._read(
            "SELECT seq, event_id, still_path, still_state, payload FROM outbox WHERE still_path IS NOT NULL"
        ):
            known.add(rel)
            on_disk = (self.storage.dir / rel).is_file()
            if state == "kept" and not on_disk:
                logger.warning("outbox: the still %s of seq=%d is missing; its event says dropped", rel, seq)
                self._write("record a missing still", self._mark, "dropped", seq, event_id, payload)
            elif state != "kept" and on_disk:
                self._unlink(rel)  # deleted before, but the unlink did not reach the disk
        for path in sorted(self.storage.stills_dir.glob("*/*.jpg"), key=lambda p: p.stat().st_mtime):
            rel = path.relative_to(self.storage.dir).as_posix()
            if rel not in known:
                self._recover_still(path, rel, still_topic)
        for (event_id,) in self._read(
            "SELECT event_id FROM outbox GROUP BY event_id HAVING SUM(type = 'start') > 0 AND SUM(type = 'end') = 0"
        ):
            self._close_interrupted(event_id)

    def _recover_still(self, path: Path, rel: str, still_topic: Callable[[str, int], str]) -> None:
        event_id, name = path.parent.name, path.stem
        start = self._read("SELECT payload FROM outbox WHERE event_id = ? AND type = 'start'", (event_id,))
        jpeg = path.read_bytes()
        size = jpeg_size(jpeg)
        if not start or size is None or not name.isdigit():
            logger.warning("outbox: removing %s: no event of this outbox owns it", path)
            self._unlink(rel)
            return
        first = json.loads(start[0][0])
        index = int(name)
        extra = {
            "index": index,
            "sha256": hashlib.sha256(jpeg).hexdigest(),
            "bytes": len(jpeg),
            "width": size[0],
            "height": size[1],
            "topic": still_topic(event_id, index),
            "recovered": True,
        }
        event = _event_like(first, "still", path.stat().st_mtime, extra)
        topic = str(extra["topic"])
        seq = self._write("recover a still", self._insert, event, rel, topic, len(jpeg), "kept")
        logger.warning("outbox: %s had no row (a crash after it was saved); queued as seq=%d", rel, seq)

    def _close_interrupted(self, event_id: str) -> None:
        rows = self._read("SELECT type, created, payload FROM outbox WHERE event_id = ? ORDER BY seq", (event_id,))
        first = json.loads(next(payload for kind, _, payload in rows if kind == "start"))
        duration = max(0.0, rows[-1][1] - rows[0][1])
        stills = sum(kind == "still" for kind, _, _ in rows)
        extra = {"duration_s": round(duration, 3), "stills": stills, "interrupted": True}
        event = _event_like(first, "end", self._clock(), extra)
        seq = self._write("close an interrupted event", self._insert, event, None, None, 0, None)
        logger.warning("outbox: event %s was cut off by a restart; closed it with seq=%d", event_id, seq)

    def close(self) -> None:
        """Close the database connection; safe to call twice."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def payload_bytes(payload: dict[str, Any]) -> bytes:
    """The bytes an event's JSON is stored and published as (compact, no NaN)."""
    return _dumps(payload)


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _event_like(first: dict[str, Any], kind: Literal["still", "end"], when: float, extra: dict[str, Any]) -> Event:
    """An event of the same door event as the start payload ``first``, for what recovery adds."""
    return Event(
        kind,
        str(first["event_id"]),
        str(first["device_id"]),
        datetime.fromtimestamp(when, UTC),
        0.0,
        extra,
        bool(first.get("time_synced", False)),
        str(first.get("boot_id", "")),
    )
