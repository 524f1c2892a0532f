"""``privacy.schedule``: windows of local time in which detection is held off. Pure: no I/O but the zone files.

A window is ``[DAYS ]HH:MM-HH:MM``, e.g. ``"mon-fri 17:30-08:00"``, ``"sat,sun 00:00-24:00"``, ``"22:00-07:00"``.
Without days it applies every day. An end at or before the start crosses midnight: the window then belongs to the
day it starts (``"fri 22:00-07:00"`` covers Friday night into Saturday morning). Times are local, in a zone of the
IANA database (``zoneinfo``).

On the days the clocks change, a window starts (and ends) at the first moment the local clock reads its start (end)
time or later:

- clocks go forward: a time in the skipped hour happens when the clock jumps (``02:30`` in Berlin on the last
  Sunday of March is 03:00 CEST); a window wholly in the skipped hour does not happen that day;
- clocks go back: a time in the repeated hour happens the first time the clock reads it; a window does not come back
  when the clock reads the hour again (``22:00-02:30`` ends at 02:30 CEST, and 02:30 CET is outside it).
"""

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names, in the order of ``datetime.weekday()`` (Monday 0)."""
SYNTAX = (
    'write "[days ]HH:MM-HH:MM", days from mon tue wed thu fri sat sun as a range or a list, '
    'e.g. "mon-fri 17:30-08:00", "sat,sun 00:00-24:00" or "22:00-07:00" (every day)'
)
_WINDOW = re.compile(r"(?:(?P<days>\S+)\s+)?(?P<start>\S+?)\s*-\s*(?P<end>\S+)")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
DAY_MINUTES = 24 * 60
ZONE_DIRS = ("/usr/share/zoneinfo/", "/usr/lib/zoneinfo/", "/usr/share/lib/zoneinfo/", "/etc/zoneinfo/")
"""Where a symlinked ``/etc/localtime`` points into the zone database (``zoneinfo.TZPATH``'s default)."""


@dataclass(frozen=True)
class Window:
    """One window: on ``days`` (``weekday()`` numbers) from ``start`` to ``end``, minutes after local midnight.

    ``start`` is 0..1439 and ``end`` 1..1440; ``end <= start`` crosses midnight into the next day.
    """

    days: frozenset[int]
    start: int
    end: int


def parse_window(text: str) -> Window:
    """The window ``text`` says; ValueError with one line saying what is wrong and the syntax allowed."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a window; {SYNTAX}")
    days = _days(match["days"]) if match["days"] else frozenset(range(7))
    start, end = _minutes(match["start"]), _minutes(match["end"])
    if start == DAY_MINUTES:
        raise ValueError(f"a window cannot start at 24:00 (write 00:00 and the next day); {SYNTAX}")
    if start == end:
        raise ValueError(f"it starts and ends at {match['start']}: for the whole day write 00:00-24:00; {SYNTAX}")
    return Window(days, start, end)


def check_window(text: str) -> str:
    """``text`` unchanged if it is a window (the settings' validator); else ValueError as ``parse_window``."""
    parse_window(text)
    return text


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        for name in (first, last) if last else (first,):
            if name not in DAYS:
                raise ValueError(f"{name!r} is not a day; {SYNTAX}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(d % 7 for d in range(a, b + 1 if b >= a else b + 8))  # fri-mon wraps past Sunday
    return frozenset(days)


def _minutes(text: str) -> int:
    match = _TIME.fullmatch(text)
    if match is None or int(match[2]) > 59 or int(match[1]) * 60 + int(match[2]) > DAY_MINUTES:
        raise ValueError(f"{text!r} is not a time (00:00 to 24:00); {SYNTAX}")
    return int(match[1]) * 60 + int(match[2])


def time_zone(name: str | None) -> tzinfo:
    """The IANA zone ``name``, or with None the system's, as the C library finds it: ``$TZ``, else /etc/localtime.

    Raises ValueError (one line) for a name the zone database does not have, or a ``$TZ`` that is no IANA name (a
    POSIX rule such as ``CET-1CEST,M3.5.0,M10.5.0/3``). No /etc/localtime means UTC, as for the C library.
    """
    if name is not None:
        return _zone(name, repr(name))
    tz = os.environ.get("TZ")
    if tz:
        return _zone(tz.removeprefix(":"), f"TZ={tz!r}")
    localtime = Path("/etc/localtime")
    target = str(localtime.resolve())
    key = next((target.removeprefix(d) for d in ZONE_DIRS if target.startswith(d)), None)
    try:
        if key is not None:
            return ZoneInfo(key)
        with localtime.open("rb") as zone_file:
            return ZoneInfo.from_file(zone_file, key=str(localtime))
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")


def _zone(name: str, shown: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:  # ValueError: an absolute or relative path
        raise ValueError(f"{shown} is not an IANA time zone name") from err


def check_zone(name: str | None) -> str | None:
    """``name`` unchanged if the zone database has it (the settings' validator); else ValueError."""
    if name is not None:
        time_zone(name)
    return name


class Schedule:
    """Whether any of ``windows`` covers a moment, in the time zone ``zone``."""

    def __init__(self, windows: Sequence[Window], zone: tzinfo) -> None:
        self.windows = tuple(windows)
        self.zone = zone

    @classmethod
    def parse(cls, texts: Sequence[str], zone: tzinfo) -> "Schedule":
        """The schedule of the windows ``texts`` (``privacy.schedule``); ValueError as ``parse_window``."""
        return cls([parse_window(text) for text in texts], zone)

    def covers(self, now: float) -> bool:
        """Whether a window covers the instant ``now`` (POSIX seconds, e.g. ``time.time()``)."""
        today = datetime.fromtimestamp(now, self.zone).date()
        for day in (today - timedelta(days=1), today):  # a window lasts at most a day from the day it starts
            for window in self.windows:
                if day.weekday() not in window.days:
                    continue
                end_day = day + timedelta(days=1) if window.end <= window.start else day
                if self._instant(day, window.start) <= now < self._instant(end_day, window.end):
                    return True
        return False

    def _instant(self, day: date, minute: int) -> float:
        """The first moment the local clock reads ``minute`` after midnight of ``day``, or later (POSIX seconds)."""
        wall = datetime.combine(day, datetime.min.time()) + timedelta(minutes=minute)
        at = wall.replace(tzinfo=self.zone).timestamp()  # fold=0: the first of a repeated time (PEP 495)
        if datetime.fromtimestamp(at, self.zone).replace(tzinfo=None) == wall:
            return at
        # Skipped (the clock went forward past it): the moment of the jump, the first reading after it. PEP 495
        # maps a skipped time with fold=0 to the offset before the jump: ``at`` lies after the jump, by less than
        # the gap; the local clock rises with time on either side of the jump, so a bisection finds it.
        gap = (datetime.fromtimestamp(at, self.zone).replace(tzinfo=None) - wall).total_seconds()
        low, high = at - gap, at  # before the jump the clock reads less than wall, after it more
        while high - low > 1.0:
            middle = (low + high) / 2
            if datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None) < wall:
                low = middle
            else:
                high = middle
        return float(int(high))  # zone transitions fall on whole seconds
