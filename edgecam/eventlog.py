"""The event log of ``edgecam listen --out DIR``: events in SQLite, stills and thumbnails in folders per device and day.

Layout of ``DIR``::

    events.sqlite3                                     the store (WAL); schema version in PRAGMA user_version
    <device>/<YYYY-MM-DD>/<event_id>-<index>.jpg       a still as it arrived
    <device>/<YYYY-MM-DD>/<event_id>-<index>.thumb.jpg the same, 240 px wide
    index.html, <YYYY-MM-DD>.html                      the pages (edgecam.eventlog_pages)

The day of an event is the local date of its ``start`` time, or of its first message while no ``start`` has come.
Messages are deduplicated by (device, event_id, seq), so a message seen twice changes nothing. A still whose JPEG
does not match the ``sha256`` of its ``still`` JSON is kept, flagged ``mismatch`` (it is what arrived, not what the
camera took); a later copy that matches replaces it. Device and event ids are used in a path only if they match
``NAME``. This module writes the log; ``edgecam.eventlog_views`` reads it for the pages.
"""

import contextlib
import hashlib
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgecam import eventlog_views
from edgecam.config import DEVICE_ID_PATTERN
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.eventlog_views import DayView, DeviceView, EventView, Verdict, json_indices
from edgecam.fleet import Fleet, FleetRow
from edgecam.models import iso_ms

logger = logging.getLogger(__name__)

NAME = re.compile(DEVICE_ID_PATTERN)
"""What a device id or event id looks like; anything else is never used as a file name."""
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
DB_NAME = "events.sqlite3"
THUMB_WIDTH = 240
"""Width of a thumbnail in pixels; the height keeps the still's aspect ratio."""
THUMB_QUALITY = 80
EXPIRE_EVERY = timedelta(minutes=10)
"""How often, at most, events older than ``keep_days`` are deleted while the log is open."""
STATES = ("availability", "motion", "door", "detect")
"""The retained states kept per device, as their topics end."""
_STATE_LIMIT = 200
"""Characters of a state payload kept: the states are short words, anything longer is cut."""

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    availability TEXT, motion TEXT, door TEXT, detect TEXT,
    last_heard TEXT
);
CREATE TABLE events (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    day TEXT NOT NULL,
    begins TEXT NOT NULL,
    started INTEGER NOT NULL,
    received TEXT NOT NULL,
    ends TEXT,
    duration_s REAL,
    door_start TEXT,
    door_end TEXT,
    score REAL,
    stills INTEGER,
    stills_dropped TEXT NOT NULL DEFAULT '[]',
    interrupted INTEGER NOT NULL DEFAULT 0,
    time_synced INTEGER NOT NULL,
    synced_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX events_by_day ON events (day, begins);
CREATE TABLE stills (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    time TEXT NOT NULL,
    score REAL,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    sha256 TEXT,
    verdict TEXT NOT NULL,
    dropped_reason TEXT,
    file TEXT,
    thumb TEXT,
    PRIMARY KEY (device_id, event_id, idx)
);
CREATE TABLE messages (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (device_id, event_id, seq)
) WITHOUT ROWID;
CREATE TABLE forgotten (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (device_id, event_id)
) WITHOUT ROWID;
CREATE TABLE cuts (
    device_id TEXT PRIMARY KEY,
    before TEXT NOT NULL
);
"""


class Admission(Enum):
    """What to do with an event message."""

    NEW = "new"
    DUPLICATE = "duplicate"
    """Seen before (same device, event_id and seq): delivery is at least once."""
    FORGOTTEN = "forgotten"
    """Of an event a forget erased, or begun before a forget's cut: it must not come back."""
    EXPIRED = "expired"
    """Of an unknown event older than ``keep_days`` (with a synchronised clock): retention would delete it."""


@dataclass(frozen=True)
class Message:
    """The fields of one event JSON the log uses (docs/mqtt.md, docs/event.schema.json)."""

    type: str
    event_id: str
    seq: int
    time: str | None
    """UTC, ISO 8601 with milliseconds; None if the message's ``time`` is unreadable."""
    time_synced: bool
    score: float | None
    fields: dict[str, Any]
    """The whole JSON object."""

    @classmethod
    def parse(cls, event: Any) -> "Message":
        """Read a decoded event JSON; raises KeyError, TypeError or ValueError when it lacks its key fields."""
        if not isinstance(event, dict):
            raise TypeError(f"not an object but {type(event).__name__}")
        score = event.get("score")
        return cls(
            type=str(event["type"]),
            event_id=str(event["event_id"]),
            seq=int(event["seq"]),
            time=utc_text(event.get("time")),
            time_synced=event.get("time_synced") is True,
            score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
            fields=event,
        )


@dataclass(frozen=True)
class StillSaved:
    """What became of a still's JPEG: the verdict, where it went (None: not saved) and what its JSON said."""

    verdict: Verdict
    path: Path | None
    seq: int
    time: str
    score: float | None
    width: int | None
    height: int | None
    sha256: str | None
    digest: str
    size: int


@dataclass(frozen=True)
class Forgotten:
    """What one forget removed."""

    events: int
    stills: int


def utc_text(value: Any) -> str | None:
    """``value`` as ISO 8601 UTC with milliseconds (naive times count as UTC), or None if it is not a time."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_ms(moment)


def local_day(utc: str) -> str:
    """The local date (``YYYY-MM-DD``) of a UTC time from ``utc_text``."""
    return datetime.fromisoformat(utc).astimezone().date().isoformat()


def make_thumbnail(jpeg: bytes) -> bytes | None:
    """A JPEG ``THUMB_WIDTH`` px wide (INTER_AREA, quality ``THUMB_QUALITY``), or None if OpenCV cannot decode it."""
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    height, width = image.shape[:2]
    size = (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    done, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    return bytes(encoded.tobytes()) if done else None


class EventLog:
    """The store behind ``edgecam listen --out DIR``; one thread only (it holds one SQLite connection).

    Raises StorageError when the folder or its database cannot be opened.
    """

    def __init__(
        self, out_dir: Path, keep_days: float, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        """Open (or make) ``out_dir/events.sqlite3`` and delete events older than ``keep_days`` (> 0)."""
        if keep_days <= 0:
            raise ValueError(f"keep_days must be more than 0, not {keep_days}")
        self.out_dir = out_dir
        self.keep = timedelta(days=keep_days)
        self._now = now
        self._changed_days: set[str] = set()
        self._dirty = True
        self._fleet = Fleet()
        """What the broker holds for each door (its retained topics), for the table atop the index: in memory, since
        the broker replays it to every subscription."""
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(out_dir / DB_NAME, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros, not left in free pages: Debian's SQLite does so by default
            # (compile option SECURE_DELETE), other builds need the pragma.
            self._db.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as err:
            raise StorageError(f"listen --out: cannot open the event log in {out_dir}: {err}") from err
        self._expired_at = self._now()
        self.expire()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == _SCHEMA_VERSION:
            return
        if version != 0:
            raise sqlite3.DatabaseError(
                f"schema version {version}, this edgecam knows {_SCHEMA_VERSION}: use a new --out folder"
            )
        self._db.execute("BEGIN")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database; the log can be opened again with the same contents."""
        self._db.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- changes, for the pages ---

    @property
    def dirty(self) -> bool:
        """Something the pages show has changed since the last ``take_changed_days``."""
        return self._dirty

    def take_changed_days(self) -> set[str]:
        """The days whose events changed since the last call (their pages need rewriting); clears ``dirty``."""
        days, self._changed_days, self._dirty = self._changed_days, set(), False
        return days

    def _changed(self, *days: str) -> None:
        self._dirty = True
        self._changed_days.update(days)

    # --- devices ---

    def heard(self, device: str) -> None:
        """Note that a message from ``device`` arrived now."""
        self._db.execute(
            "INSERT INTO devices (device_id, last_heard) VALUES (?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET last_heard = excluded.last_heard",
            (device, iso_ms(self._now())),
        )
        self._dirty = True

    def set_state(self, device: str, what: str, value: str, retained: bool = False) -> None:
        """Keep ``device``'s state ``what`` (one of ``STATES``); ``retained``: replayed by the broker, not heard now."""
        if what not in STATES:
            raise ValueError(f"{what!r} is not one of {STATES}")
        if retained:
            self._db.execute("INSERT OR IGNORE INTO devices (device_id) VALUES (?)", (device,))
            self._dirty = True
        else:
            self.heard(device)
        self._db.execute(f"UPDATE devices SET {what} = ? WHERE device_id = ?", (value[:_STATE_LIMIT], device))

    def take_fleet(self, device: str, what: str, payload: bytes) -> None:
        """Keep a message of ``<prefix>/<device>/<what>`` for the fleet table (``what`` in ``edgecam.fleet.TOPICS``)."""
        if self._fleet.take(device, what, payload):
            self._dirty = True

    def fleet_table(self) -> tuple[datetime, list[FleetRow]]:
        """The time now and the fleet table's rows at that time, as ``edgecam fleet`` prints them."""
        now = self._now()
        return now, self._fleet.rows(now)

    # --- events ---

    def admit(self, device: str, message: Message) -> Admission:
        """Whether ``message`` is new, a repeat, or of an event forgotten or past retention (changes nothing)."""
        key = (device, message.event_id)
        if self._db.execute(
            "SELECT 1 FROM messages WHERE device_id = ? AND event_id = ? AND seq = ?", (*key, message.seq)
        ).fetchone():
            return Admission.DUPLICATE
        if message.type == "forget":
            return Admission.NEW
        if self._db.execute("SELECT 1 FROM forgotten WHERE device_id = ? AND event_id = ?", key).fetchone():
            return Admission.FORGOTTEN
        if self._db.execute("SELECT 1 FROM events WHERE device_id = ? AND event_id = ?", key).fetchone():
            return Admission.NEW
        if message.time is not None:
            cut = self._db.execute("SELECT before FROM cuts WHERE device_id = ?", (device,)).fetchone()
            if cut is not None and message.time < cut[0]:
                return Admission.FORGOTTEN
            if message.time_synced and message.time < iso_ms(self._now() - self.keep):
                return Admission.EXPIRED
        return Admission.NEW

    def is_forgotten(self, device: str, event_id: str) -> bool:
        """A forget erased this event."""
        return bool(
            self._db.execute(
                "SELECT 1 FROM forgotten WHERE device_id = ? AND event_id = ?", (device, event_id)
            ).fetchone()
        )

    def record(self, device: str, message: Message) -> None:
        """Keep a new ``start``, ``end`` (or other) message: the event's times, door, score, stills count."""
        self._db.execute("BEGIN")
        try:
            if message.type in ("start", "end", "still"):
                self._update_event(device, message)
            self._seen(device, message)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _seen(self, device: str, message: Message) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO messages (device_id, event_id, seq, time) VALUES (?, ?, ?, ?)",
            (device, message.event_id, message.seq, message.time or iso_ms(self._now())),
        )

    def _update_event(self, device: str, message: Message) -> str:
        """Make or update the event row of ``message``; returns the event's day."""
        if not NAME.match(device) or not NAME.match(message.event_id):
            raise ValueError(f"{device}/{message.event_id} cannot be a file name")
        now = iso_ms(self._now())
        when = message.time or now
        key = (device, message.event_id)
        row = self._db.execute(
            "SELECT day, started, synced_seq FROM events WHERE device_id = ? AND event_id = ?", key
        ).fetchone()
        started = message.type == "start"
        if row is None:
            day = local_day(when)
            self._db.execute(
                "INSERT INTO events (device_id, event_id, day, begins, started, received, time_synced, synced_seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, day, when, int(started), now, int(message.time_synced), message.seq),
            )
        else:
            day = str(row[0])
            if started and not row[1]:
                new_day = local_day(when)
                self._db.execute(
                    "UPDATE events SET begins = ?, started = 1, day = ? WHERE device_id = ? AND event_id = ?",
                    (when, new_day, *key),
                )
                if new_day != day:
                    self._move_stills(device, message.event_id, new_day)
                    self._changed(day)
                    day = new_day
            if message.seq >= row[2]:
                self._db.execute(
                    "UPDATE events SET time_synced = ?, synced_seq = ? WHERE device_id = ? AND event_id = ?",
                    (int(message.time_synced), message.seq, *key),
                )
        if message.score is not None:
            self._db.execute(
                "UPDATE events SET score = max(coalesce(score, ?), ?) WHERE device_id = ? AND event_id = ?",
                (message.score, message.score, *key),
            )
        door = message.fields.get("door")
        door = str(door)[:_STATE_LIMIT] if door is not None else None
        if started and door is not None:
            self._db.execute("UPDATE events SET door_start = ? WHERE device_id = ? AND event_id = ?", (door, *key))
        if message.type == "end":
            duration = message.fields.get("duration_s")
            stills = message.fields.get("stills")
            self._db.execute(
                "UPDATE events SET ends = ?, duration_s = ?, door_end = ?, stills = ?, stills_dropped = ?, "
                "interrupted = ? WHERE device_id = ? AND event_id = ?",
                (
                    message.time,
                    float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
                    door,
                    stills if isinstance(stills, int) and not isinstance(stills, bool) and stills >= 0 else 0,
                    json.dumps(json_indices(message.fields.get("stills_dropped"))),
                    int(message.fields.get("interrupted") is True),
                    *key,
                ),
            )
        self._changed(day)
        return day

    def _move_stills(self, device: str, event_id: str, day: str) -> None:
        """Move an event's files into ``day``'s folder (its start arrived after its stills, on another date)."""
        rows = self._db.execute(
            "SELECT idx, file, thumb FROM stills WHERE device_id = ? AND event_id = ?", (device, event_id)
        ).fetchall()
        folder = self.out_dir / device / day
        for index, *names in rows:
            moved: list[str | None] = []
            for name in names:
                if name is None:
                    moved.append(None)
                    continue
                old = self.out_dir / name
                new = folder / Path(name).name
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    old.replace(new)
                    moved.append(new.relative_to(self.out_dir).as_posix())
                except OSError as err:
                    logger.error("listen: cannot move %s to %s: %s", old, folder, err.strerror or err)
                    moved.append(name)
            self._db.execute(
                "UPDATE stills SET file = ?, thumb = ? WHERE device_id = ? AND event_id = ? AND idx = ?",
                (*moved, device, event_id, index),
            )
            for name in names:
                if name is not None:
                    self._remove_empty_day((self.out_dir / name).parent)

    # --- stills ---

    def still_verdict(self, device: str, event_id: str, index: int) -> Verdict | None:
        """Where the still stands, or None if its JSON has not arrived."""
        row = self._db.execute(
            "SELECT verdict FROM stills WHERE device_id = ? AND event_id = ? AND idx = ?", (device, event_id, index)
        ).fetchone()
        return None if row is None else Verdict(row[0])

    def record_still(self, device: str, message: Message, index: int, jpeg: bytes | None = None) -> StillSaved | None:
        """Keep a new ``still`` message, with its JPEG if that came first; returns what became of the JPEG, if any.

        A ``"dropped": true`` still is kept as dropped (no JPEG follows).
        """
        fields = message.fields
        dropped = fields.get("dropped") is True

        def number(name: str) -> int | None:
            value = fields.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        sha = fields.get("sha256")
        reason = fields.get("dropped_reason")
        self._db.execute("BEGIN")
        try:
            self._update_event(device, message)
            self._db.execute(
                "INSERT INTO stills (device_id, event_id, idx, seq, time, score, width, height, bytes, sha256, "
                "verdict, dropped_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id, event_id, idx) DO NOTHING",
                (
                    device,
                    message.event_id,
                    index,
                    message.seq,
                    message.time or iso_ms(self._now()),
                    message.score,
                    number("width"),
                    number("height"),
                    number("bytes"),
                    str(sha) if sha is not None else None,
                    Verdict.DROPPED.value if dropped else Verdict.PENDING.value,
                    str(reason)[:_STATE_LIMIT] if dropped and reason else None,
                ),
            )
            self._seen(device, message)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if dropped or jpeg is None:
            return None
        return self.attach_jpeg(device, message.event_id, index, jpeg)

    def attach_jpeg(self, device: str, event_id: str, index: int, jpeg: bytes) -> StillSaved | None:
        """Check a still's JPEG against its JSON's sha256, save it and its thumbnail; None unless it was awaited.

        Awaited: the JSON has arrived and the JPEG has not (or did not match, or could not be saved).
        """
        row = self._db.execute(
            "SELECT s.verdict, s.seq, s.time, s.score, s.width, s.height, s.sha256, e.day "
            "FROM stills s JOIN events e USING (device_id, event_id) "
            "WHERE s.device_id = ? AND s.event_id = ? AND s.idx = ?",
            (device, event_id, index),
        ).fetchone()
        if row is None or row[0] not in (Verdict.PENDING, Verdict.MISMATCH):
            return None
        verdict_before, seq, time, score, width, height, expected, day = row
        digest = hashlib.sha256(jpeg).hexdigest()
        verdict = Verdict.OK if digest == expected else Verdict.MISMATCH
        path = self._still_path(device, day, event_id, index)
        thumb_path: Path | None = None
        if path is None:
            logger.error("listen: %s/%s/%s-%d cannot be a file name, not saved", device, day, event_id, index)
        else:
            try:
                write_atomically(path, jpeg)
                thumb_path = path.with_name(f"{event_id}-{index}.thumb.jpg")
                thumbnail = make_thumbnail(jpeg)
                if thumbnail is not None:
                    write_atomically(thumb_path, thumbnail)
                else:
                    logger.warning("listen: cannot decode %s, so it has no thumbnail", path)
                    thumb_path.unlink(missing_ok=True)
                    thumb_path = None
            except OSError as err:
                logger.error("listen: cannot save %s: %s", path, err.strerror or err)
                path = None
        if path is not None:
            self._db.execute(
                "UPDATE stills SET verdict = ?, file = ?, thumb = ? WHERE device_id = ? AND event_id = ? AND idx = ?",
                (
                    verdict.value,
                    path.relative_to(self.out_dir).as_posix(),
                    thumb_path.relative_to(self.out_dir).as_posix() if thumb_path else None,
                    device,
                    event_id,
                    index,
                ),
            )
            self._changed(day)
        elif verdict_before == Verdict.MISMATCH:
            verdict = Verdict.MISMATCH
        return StillSaved(verdict, path, seq, time, score, width, height, expected, digest, len(jpeg))

    def _still_path(self, device: str, day: str, event_id: str, index: int) -> Path | None:
        if not (NAME.match(device) and NAME.match(event_id) and _DAY.match(day)) or index < 0:
            return None
        return self.out_dir / device / day / f"{event_id}-{index}.jpg"

    def is_whole(self, device: str, event_id: str) -> bool:
        """The event's end has arrived and every still of it: saved with a matching sha256, or dropped."""
        row = self._db.execute(
            "SELECT e.stills, (SELECT count(*) FROM stills s WHERE s.device_id = e.device_id "
            "AND s.event_id = e.event_id AND s.verdict IN ('ok', 'dropped')) "
            "FROM events e WHERE e.device_id = ? AND e.event_id = ?",
            (device, event_id),
        ).fetchone()
        return row is not None and row[0] is not None and row[1] >= row[0]

    # --- deleting: forget and retention ---

    def forget(self, device: str, message: Message) -> Forgotten | None:
        """Carry out a ``forget`` message of ``device``; None (nothing deleted) if its ``forget`` is not understood.

        ``{"event_id": id}`` erases one event, ``{"before": time}`` those begun before ``time``, ``{"all": true}``
        every one. Erased event ids are remembered, and for ``before``/``all`` the cut (``all``: the message's own
        time), so that a copy of their messages arriving later is ignored (``admit`` says FORGOTTEN).
        """
        what = message.fields.get("forget")
        cut: str | None = None
        one: str | None = None
        if isinstance(what, dict) and len(what) == 1:
            if isinstance(what.get("event_id"), str) and NAME.match(what["event_id"]):
                one = what["event_id"]
            elif "before" in what and isinstance(what["before"], str):
                cut = utc_text(what["before"])
            elif what.get("all") is True:
                cut = message.time or iso_ms(self._now())
        if one is None and cut is None:
            self._db.execute("BEGIN")
            self._seen(device, message)
            self._db.execute("COMMIT")
            return None
        if one is not None:
            where, args = "device_id = ? AND event_id = ?", (device, one)
        else:
            where, args = "device_id = ? AND begins < ?", (device, str(cut))
        at = iso_ms(self._now())
        self._db.execute("BEGIN")
        try:
            doomed = self._db.execute(f"SELECT device_id, event_id FROM events WHERE {where}", args).fetchall()
            ids = {event_id for _, event_id in doomed} | ({one} if one is not None else set())
            self._db.executemany(
                "INSERT OR REPLACE INTO forgotten (device_id, event_id, at) VALUES (?, ?, ?)",
                [(device, event_id, at) for event_id in ids],
            )
            if cut is not None:
                self._db.execute(
                    "INSERT INTO cuts (device_id, before) VALUES (?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET before = max(before, excluded.before)",
                    (device, cut),
                )
            files, stills = self._delete_rows(doomed)
            self._seen(device, message)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._remove_files(files)
        self._shrink_wal()
        return Forgotten(len(doomed), stills)

    def maintain(self) -> int:
        """Delete the events past retention if the last sweep is ``EXPIRE_EVERY`` ago; how many went."""
        if self._now() - self._expired_at < EXPIRE_EVERY:
            return 0
        return self.expire()

    def expire(self) -> int:
        """Delete the events begun more than ``keep_days`` ago, rows and files; how many went.

        An event whose clock was not synchronised (``time_synced`` false) counts from when it was received, since
        its own time may be years off.
        """
        self._expired_at = self._now()
        cut = iso_ms(self._expired_at - self.keep)
        self._db.execute("BEGIN")
        try:
            doomed = self._db.execute(
                "SELECT device_id, event_id FROM events "
                "WHERE (CASE WHEN time_synced THEN begins ELSE received END) < ?",
                (cut,),
            ).fetchall()
            files, _ = self._delete_rows(doomed)
            self._db.execute(
                "DELETE FROM messages WHERE time < ? AND NOT EXISTS (SELECT 1 FROM events e "
                "WHERE e.device_id = messages.device_id AND e.event_id = messages.event_id)",
                (cut,),
            )
            self._db.execute("DELETE FROM forgotten WHERE at < ?", (cut,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._remove_files(files)
        if doomed:
            self._shrink_wal()
            logger.info("listen: deleted %d events begun before %s (keep_days)", len(doomed), cut)
        return len(doomed)

    def _shrink_wal(self) -> None:
        """Empty the WAL into the database: its frames still hold the deleted rows as they were."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            logger.warning("listen: cannot checkpoint %s: %s", self.out_dir / DB_NAME, err)

    def _delete_rows(self, doomed: Iterable[tuple[str, str]]) -> tuple[list[Path], int]:
        """Delete these events' rows (inside a transaction); returns their files and how many stills had one."""
        files: list[Path] = []
        stills = 0
        for key in doomed:
            for file, thumb in self._db.execute(
                "SELECT file, thumb FROM stills WHERE device_id = ? AND event_id = ?", key
            ).fetchall():
                stills += file is not None
                files.extend(self.out_dir / name for name in (file, thumb) if name is not None)
            (day,) = self._db.execute("SELECT day FROM events WHERE device_id = ? AND event_id = ?", key).fetchone()
            self._changed(day)
            for table in ("stills", "events", "messages"):
                self._db.execute(f"DELETE FROM {table} WHERE device_id = ? AND event_id = ?", key)
        return files, stills

    def _remove_files(self, files: list[Path]) -> None:
        folders = set()
        for path in files:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                logger.error("listen: cannot delete %s: %s", path, err.strerror or err)
            folders.add(path.parent)
        for folder in folders:
            self._remove_empty_day(folder)

    def _remove_empty_day(self, folder: Path) -> None:
        if not _DAY.match(folder.name) or folder.parent.parent != self.out_dir:
            return
        with contextlib.suppress(OSError):  # not empty (or gone): only empty day folders go
            folder.rmdir()

    # --- reading, for the pages (edgecam.eventlog_views) ---

    def devices(self) -> list[DeviceView]:
        """Every device heard, by id, with its last event."""
        return eventlog_views.devices(self._db)

    def days(self) -> list[DayView]:
        """The days that have events, newest first."""
        return eventlog_views.days(self._db)

    def events_of_day(self, day: str) -> list[EventView]:
        """That day's events across devices, newest first."""
        return eventlog_views.events_of_day(self._db, day)
