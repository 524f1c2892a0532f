"""The event log as its pages read it: stills, events, doors and days, queried from ``events.sqlite3``.

The store and its schema are ``edgecam.eventlog``; the pages are ``edgecam.eventlog_pages``. These queries only
read, on the log's own connection (one thread).
"""

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """Where a still stands."""

    PENDING = "pending"
    """Its JSON has arrived, its JPEG not (or could not be saved)."""
    OK = "ok"
    """Saved, and its sha256 matches its JSON."""
    MISMATCH = "mismatch"
    """Saved as it arrived, but its sha256 does not match its JSON."""
    DROPPED = "dropped"
    """The agent announced it will never come (``"dropped": true``)."""


@dataclass(frozen=True)
class StillView:
    """One still of an event as the pages show it; ``file`` and ``thumb`` are relative to the log's folder."""

    index: int
    verdict: Verdict
    width: int | None
    height: int | None
    bytes: int | None
    file: str | None
    thumb: str | None
    dropped_reason: str | None


@dataclass(frozen=True)
class EventView:
    """One door event as the pages show it."""

    device_id: str
    event_id: str
    day: str
    begins: datetime
    """Its start time, or its first message's while no start has arrived (``started`` False)."""
    started: bool
    ends: datetime | None
    duration_s: float | None
    door_start: str | None
    door_end: str | None
    score: float | None
    """The highest score of its messages."""
    stills_expected: int | None
    """The ``stills`` of its end; None until the end arrives."""
    stills_dropped: list[int]
    interrupted: bool
    time_synced: bool
    """``time_synced`` of its latest message (highest seq)."""
    stills: list[StillView]


@dataclass(frozen=True)
class DeviceView:
    """One door (device) as the index shows it: its retained states and its last event."""

    device_id: str
    availability: str | None
    motion: str | None
    door: str | None
    detect: str | None
    last_heard: datetime | None
    """When a message from it last arrived live; None if only retained states (replayed by the broker) came."""
    last_event: EventView | None


@dataclass(frozen=True)
class DayView:
    """One day with events: how many per device."""

    day: str
    counts: dict[str, int]


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def json_indices(value: Any) -> list[int]:
    """The integers of a JSON list (``stills_dropped``), booleans left out; [] if ``value`` is not a list."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, int) and not isinstance(item, bool)]


def devices(db: sqlite3.Connection) -> list[DeviceView]:
    """Every device heard, by id, with its last event."""
    rows = db.execute(
        "SELECT device_id, availability, motion, door, detect, last_heard FROM devices ORDER BY device_id"
    ).fetchall()
    views = []
    for device, availability, motion, door, detect, heard in rows:
        last = _events(db, "WHERE device_id = ? ORDER BY begins DESC, event_id LIMIT 1", (device,))
        views.append(DeviceView(device, availability, motion, door, detect, _moment(heard), next(iter(last), None)))
    return views


def days(db: sqlite3.Connection) -> list[DayView]:
    """The days that have events, newest first."""
    counts: dict[str, dict[str, int]] = {}
    for day, device, count in db.execute(
        "SELECT day, device_id, count(*) FROM events GROUP BY day, device_id ORDER BY day DESC, device_id"
    ):
        counts.setdefault(day, {})[device] = count
    return [DayView(day, per_device) for day, per_device in counts.items()]


def events_of_day(db: sqlite3.Connection, day: str) -> list[EventView]:
    """That day's events across devices, newest first."""
    return _events(db, "WHERE day = ? ORDER BY begins DESC, device_id, event_id", (day,))


def _events(db: sqlite3.Connection, clause: str, args: tuple[Any, ...]) -> list[EventView]:
    rows = db.execute(
        "SELECT device_id, event_id, day, begins, started, ends, duration_s, door_start, door_end, score, "
        f"stills, stills_dropped, interrupted, time_synced FROM events {clause}",
        args,
    ).fetchall()
    views = []
    for row in rows:
        stills = [
            StillView(index, Verdict(verdict), width, height, size, file, thumb, reason)
            for index, verdict, width, height, size, file, thumb, reason in db.execute(
                "SELECT idx, verdict, width, height, bytes, file, thumb, dropped_reason FROM stills "
                "WHERE device_id = ? AND event_id = ? ORDER BY idx",
                row[:2],
            )
        ]
        begins = datetime.fromisoformat(row[3])
        views.append(
            EventView(
                device_id=row[0],
                event_id=row[1],
                day=row[2],
                begins=begins,
                started=bool(row[4]),
                ends=_moment(row[5]),
                duration_s=row[6],
                door_start=row[7],
                door_end=row[8],
                score=row[9],
                stills_expected=row[10],
                stills_dropped=json_indices(json.loads(row[11])),
                interrupted=bool(row[12]),
                time_synced=bool(row[13]),
                stills=stills,
            )
        )
    return views
