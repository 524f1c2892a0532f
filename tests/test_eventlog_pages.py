"""The event log's pages: a tile per door, a page per day, self-contained, escaped, links that resolve."""

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgecam.eventlog import EventLog
from edgecam.eventlog_pages import write_pages
from edgecam.fleet import COLUMNS
from edgecam.listen import Listener
from edgecam.models import iso_ms
from edgecam.mqtt.claim import Claim
from tests.test_eventlog import NOW, PREFIX, Clock, Door, feed, forget_message

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}


class Page(HTMLParser):
    """What a browser test looks for: elements by class and id, every link and image, and whether tags balance."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.open: list[str] = []
        self.unbalanced: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text = ""
        self.feed(path.read_text(encoding="utf-8"))
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        self.text += data

    def by_class(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.elements if name in attrs.get("class", "").split()]

    def links(self) -> list[str]:
        return [attrs[key] for _, attrs in self.elements for key in ("href", "src") if key in attrs]

    def check(self, out: Path) -> None:
        """Well-formed, no script, no external URL, every link a file under ``out``."""
        assert self.open == [], self.open
        assert self.unbalanced == [], self.unbalanced
        raw = self.path.read_text(encoding="utf-8")
        assert "<script" not in raw.lower()
        assert "http" not in raw.lower()
        assert '<meta charset="utf-8">' in raw
        for link in self.links():
            target = link.split("#")[0]
            assert not target.startswith("/"), link
            assert ".." not in target, link
            assert (out / target).is_file(), f"{self.path.name}: {link} does not exist"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(out: Path, clock: Clock) -> Iterator[EventLog]:
    with EventLog(out, keep_days=7, now=clock) as opened:
        yield opened


@pytest.fixture
def listener(log: EventLog) -> Listener:
    return Listener(PREFIX, log)


def states(device: str, availability: bytes = b"online") -> list[tuple[str, bytes]]:
    base = f"{PREFIX}/{device}"
    return [(f"{base}/availability", availability), (f"{base}/door", b"closed"), (f"{base}/detect", b"ON")]


def test_an_empty_log_has_an_index_saying_nothing_was_heard(log: EventLog, out: Path) -> None:
    write_pages(log)
    page = Page(out / "index.html")
    page.check(out)
    assert "Nothing heard yet" in page.text
    assert sorted(path.name for path in out.glob("*.html")) == ["index.html"]


def test_the_index_has_a_tile_per_door_and_every_day_page_every_event_with_its_thumbnails(
    listener: Listener, log: EventLog, out: Path
) -> None:
    doors = [
        Door("front-door", "front001", NOW - timedelta(days=1, hours=2)),
        Door("front-door", "front002", NOW - timedelta(hours=1), n_stills=3, first_seq=10),
        Door("back-door", "back0001", NOW - timedelta(hours=2), n_stills=1),
    ]
    feed(listener, states("front-door") + states("back-door", b"offline") + states("garage"))
    for door in doors:
        feed(listener, door.messages())
    write_pages(log)

    index = Page(out / "index.html")
    index.check(out)
    tiles = {attrs["id"] for attrs in index.by_class("door")}
    assert tiles == {"door-front-door", "door-back-door", "door-garage"}
    assert "offline" in index.text
    days = {doors[0].day, doors[1].day, doors[2].day}
    assert {link for link in index.links() if link.endswith(".html")} >= {f"{day}.html" for day in days}
    thumbs = index.by_class("thumb")
    assert len(thumbs) == 2, "the last event's thumbnail of each door with events"
    assert all(attrs["alt"] for attrs in thumbs)

    for day in days:
        page = Page(out / f"{day}.html")
        page.check(out)
        expected = [door for door in doors if door.day == day]
        events = page.by_class("event")
        assert [attrs["id"] for attrs in events] == [
            f"event-{door.event_id}" for door in sorted(expected, key=lambda door: door.start, reverse=True)
        ], "newest first"
        sources = [attrs["src"] for attrs in page.by_class("thumb")]
        for door in expected:
            wanted = [f"{door.device}/{day}/{door.event_id}-{index}.thumb.jpg" for index in door.jpegs]
            assert [src for src in sources if door.event_id in src] == wanted
        full = [link for link in page.links() if link.endswith(".jpg") and not link.endswith(".thumb.jpg")]
        assert len(full) == sum(door.n_stills for door in expected), "each thumbnail links to its full still"


def fleet_cells(raw: str) -> dict[str, list[str]]:
    """The cells of each row of the fleet table, by the row's id."""
    rows = re.findall(r'<tr class="fleet-row" id="([^"]+)">(.*?)</tr>', raw)
    return {
        row_id: [html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", cells)] for row_id, cells in rows
    }


def test_the_index_opens_with_the_table_edgecam_fleet_prints_and_keeps_the_tiles(
    listener: Listener, log: EventLog, out: Path
) -> None:
    front, back = f"{PREFIX}/front-door", f"{PREFIX}/back-door"
    started = NOW - timedelta(minutes=3)
    claim = Claim("a" * 32, "active", iso_ms(NOW), "1.2.3").encode()
    stats = json.dumps({"depth": 2, "oldest_waiting_s": 30.0, "time_synced": True}).encode()
    feed(listener, states("front-door") + states("back-door", b"offline"))
    feed(
        listener,
        [(f"{front}/stats", stats), (f"{front}/agent", claim), (f"{front}/last_event", iso_ms(started).encode())],
    )
    feed(listener, [(f"{back}/stats", b"<script>{"), (f"{back}/agent", b"\x1b[2J")])
    feed(listener, Door("front-door", "front001", NOW - timedelta(hours=1)).messages())
    write_pages(log)

    page = Page(out / "index.html")
    page.check(out)
    raw = (out / "index.html").read_text(encoding="utf-8")
    assert raw.index('class="fleet"') < raw.index('class="door"'), "the table at the top, the tiles below"
    assert {attrs["id"] for attrs in page.by_class("door")} == {"door-front-door", "door-back-door"}
    headers = re.findall(r'<th scope="col">(.*?)</th>', raw)
    assert headers == list(COLUMNS)
    local = started.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert fleet_cells(raw) == {
        "fleet-back-door": ["back-door", "offline", "closed", "-", "-", "?", "?", "?", "?"],
        "fleet-front-door": ["front-door", "online", "closed", local, "3 min", "2", "30 s", "yes", "1.2.3"],
    }
    assert list(fleet_cells(raw).values()) == [list(row.cells()) for row in log.fleet_table()[1]], (
        "edgecam fleet's rows"
    )


def test_payload_text_is_escaped(listener: Listener, log: EventLog, out: Path) -> None:
    feed(listener, [(f"{PREFIX}/front-door/door", b"<b>x</b>"), (f"{PREFIX}/front-door/availability", b"<i>on")])
    write_pages(log)
    raw = (out / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in raw
    assert "<b>" not in raw
    assert "<i>" not in raw
    page = Page(out / "index.html")
    page.check(out)
    assert "<b>x</b>" in page.text


def test_a_door_with_an_unsynchronised_clock_says_times_may_be_off(
    listener: Listener, log: EventLog, out: Path
) -> None:
    feed(listener, Door("front-door", "unsync01", NOW - timedelta(hours=1), synced=False).messages())
    feed(listener, Door("back-door", "synced01", NOW - timedelta(hours=1)).messages())
    write_pages(log)
    raw = (out / "index.html").read_text(encoding="utf-8")
    assert raw.count("clock not synchronised: times may be off") == 1
    front = raw.index('id="door-front-door"')
    assert front < raw.index("clock not synchronised") < raw.index("</section>", front)


def test_times_are_local_with_the_date(listener: Listener, log: EventLog, out: Path) -> None:
    door = Door("front-door", "when0001", datetime(2026, 11, 30, 9, 15, 42, tzinfo=UTC))
    feed(listener, door.messages())
    write_pages(log)
    shown = door.start.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert shown in Page(out / f"{door.day}.html").text
    assert shown in Page(out / "index.html").text


def test_a_day_without_events_left_loses_its_page(listener: Listener, log: EventLog, out: Path) -> None:
    old = Door("front-door", "old00001", NOW - timedelta(days=3))
    new = Door("front-door", "new00001", NOW - timedelta(hours=1), first_seq=10)
    feed(listener, old.messages() + new.messages())
    write_pages(log, log.take_changed_days())
    assert (out / f"{old.day}.html").exists()
    feed(listener, [forget_message("front-door", {"event_id": "old00001"})])
    write_pages(log, log.take_changed_days())
    assert not (out / f"{old.day}.html").exists()
    assert f"{old.day}.html" not in Page(out / "index.html").links()
    Page(out / "index.html").check(out)
    assert (out / f"{new.day}.html").exists()


def test_a_still_that_cannot_be_decoded_is_linked_without_a_thumbnail(
    listener: Listener, log: EventLog, out: Path
) -> None:
    door = Door("front-door", "odd00001", NOW - timedelta(hours=1), n_stills=1)
    door.jpegs[1] = b"\xff\xd8 not really a JPEG \xff\xd9"
    feed(listener, door.messages())
    write_pages(log)
    page = Page(out / f"{door.day}.html")
    page.check(out)
    assert page.by_class("thumb") == []
    assert f"front-door/{door.day}/odd00001-1.jpg" in page.links()
