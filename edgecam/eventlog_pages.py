"""The static pages of the event log: ``DIR/index.html`` (the doors and the days) and ``DIR/<YYYY-MM-DD>.html``.

The index opens with the table ``edgecam fleet`` prints (``edgecam.fleet``), from the retained topics this run of
``edgecam listen`` has received.

Each page is self-contained: UTF-8, inline CSS, no script, no external URL, only links relative to ``DIR`` (so the
folder can be moved or copied). Times are local, with the date. Text from payloads is escaped by Jinja2's
autoescape (templates in ``edgecam/templates``).
"""

import functools
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader

from edgecam.disk import write_atomically
from edgecam.eventlog import EventLog
from edgecam.eventlog_views import DayView, DeviceView, EventView, Verdict
from edgecam.fleet import COLUMNS, FleetRow

logger = logging.getLogger(__name__)

INDEX = "index.html"
_DAY_PAGE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\.html$")


def _local(moment: datetime | None) -> str:
    """``2026-11-22 14:02:03`` in the local time zone."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _clock_only(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%H:%M:%S")


def _switch(value: str | None, on: str, off: str) -> str:
    """An ``ON``/``OFF`` state in words; anything else as it came (escaped by the template)."""
    if value is None:
        return "unknown"
    return {"ON": on, "OFF": off}.get(value.strip(), value)


def _flags(event: EventView) -> list[str]:
    """What is unusual about an event, in words."""
    flags = []
    dropped = sorted(set(event.stills_dropped) | {s.index for s in event.stills if s.verdict is Verdict.DROPPED})
    if dropped:
        flags.append("dropped: still " + ", ".join(str(index) for index in dropped))
    if event.interrupted:
        flags.append("interrupted: cut off by an agent restart")
    mismatched = [str(s.index) for s in event.stills if s.verdict is Verdict.MISMATCH]
    if mismatched:
        flags.append("sha256 mismatch: still " + ", ".join(mismatched) + " is not what the camera took")
    if not event.started:
        flags.append("start not received")
    if event.stills_expected is None:
        flags.append("no end yet")
    if not event.time_synced:
        flags.append("clock not synchronised: times may be off")
    return flags


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("edgecam", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["local"] = _local
    env.filters["clock"] = _clock_only
    env.globals.update(switch=_switch, flags=_flags, Verdict=Verdict, zip=zip)
    return env


def _zone() -> str:
    return datetime.now().astimezone().tzname() or "local time"


def render_index(
    devices: list[DeviceView],
    days: list[DayView],
    fleet: list[FleetRow] | None = None,
    fleet_at: datetime | None = None,
) -> str:
    """The index page: the fleet table, a tile per door (``class="door" id="door-<device>"``), the days, newest first.

    ``fleet``: the rows of ``edgecam fleet`` (``edgecam.fleet``) with their ages at ``fleet_at``, one
    ``tr class="fleet-row"`` each under a header of ``COLUMNS`` (``table class="fleet"``); no table without rows.
    """
    return (
        _environment()
        .get_template("events_index.html")
        .render(
            devices=devices,
            days=days,
            fleet=fleet or [],
            fleet_columns=COLUMNS,
            fleet_at=fleet_at or datetime.now().astimezone(),
            zone=_zone(),
        )
    )


def render_day(day: str, events: list[EventView]) -> str:
    """A day page: that day's events (``class="event" id="event-<event_id>"``), newest first, with thumbnails."""
    return _environment().get_template("events_day.html").render(day=day, events=events, zone=_zone())


def _write(path: Path, html: str) -> None:
    data = html.encode()
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    write_atomically(path, data)


def write_pages(log: EventLog, days: Iterable[str] | None = None) -> None:
    """Write the index and the pages of ``days`` (None: every day, and delete pages of days without events).

    A day in ``days`` without events left loses its page. Raises OSError when a page cannot be written.
    """
    out = log.out_dir
    listed = log.days()
    fleet_at, fleet = log.fleet_table()
    _write(out / INDEX, render_index(log.devices(), listed, fleet, fleet_at))
    known = {view.day for view in listed}
    if days is None:
        days = known | {path.stem for path in out.glob("*.html") if _DAY_PAGE.match(path.name)}
    for day in sorted(days):
        page = out / f"{day}.html"
        if not _DAY_PAGE.match(page.name):
            continue
        if day in known:
            _write(page, render_day(day, log.events_of_day(day)))
        else:
            page.unlink(missing_ok=True)
