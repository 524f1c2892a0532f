"""``edgecam listen --out`` over two simulated doors, read in real headless Chromium; then ``edgecam forget``."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Chromium
from tests.conftest import Broker, Collector, wait_until
from tests.integration.test_agent import start_agent
from tests.integration.test_privacy import SWINGING_DOOR
from tests.integration.test_reliability import Child

pytestmark = pytest.mark.integration

DOORS = ("front-door", "back-door")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def run(children: list[Child], broker: Broker, state: Path, *command: str, **env: str) -> Child:
    child = Child(start_agent(broker, state, None, *command, **env))
    children.append(child)
    return child


def forget(children: list[Child], broker: Broker, tmp_path: Path, door: str, *how: str) -> str:
    """``edgecam forget`` with the settings of ``door``'s agent; its log."""
    return run(children, broker, tmp_path / door, "forget", *how, EDGECAM_DEVICE_ID=door).finish(30)


def pages(out: Path) -> str:
    return "".join(page.read_text() for page in sorted(out.glob("*.html")))


def listed(out: Path) -> set[str]:
    """The event ids the day pages show."""
    return set(re.findall(r'class="event" id="event-([A-Za-z0-9_-]+)"', pages(out)))


def pictures(out: Path) -> list[str]:
    return sorted(path.relative_to(out).as_posix() for path in out.rglob("*.jpg"))


def look(chromium: Chromium, page: Path, shot: Path) -> dict[str, Any]:
    """What a person sees on ``page``: door tiles, events and thumbnails; nothing broken, no console error."""
    with chromium.open(page) as report:
        seen = report.evaluate(
            "({doors: [...document.querySelectorAll('.door')].map(d => d.id),"
            " events: [...document.querySelectorAll('.event')].map(e => e.id),"
            " thumbs: [...document.querySelectorAll('img.thumb')].map(i => i.naturalWidth),"
            " links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))})"
        )
        assert report.broken_images == []
        assert report.failed_requests == []
        assert report.console_errors == []
        report.screenshot(shot)
    assert all(width > 0 for width in seen["thumbs"]), "every thumbnail loads"
    assert all((page.parent / link.split("#")[0]).is_file() for link in seen["links"]), "every link leads to a file"
    return dict(seen)


def test_two_doors_are_on_the_page_until_forgotten(
    mosquitto: Broker, chromium: Chromium, collector_factory: Any, children: list[Child], tmp_path: Path
) -> None:
    out = tmp_path / "events"
    listen = run(children, mosquitto, tmp_path / "listener", "listen", "--out", str(out))
    listen.wait_log("listening to edgecam/+/...", 10)
    agents = {
        door: run(children, mosquitto, tmp_path / door, EDGECAM_DEVICE_ID=door, **SWINGING_DOOR) for door in DOORS
    }
    for agent in agents.values():
        agent.finish(60)  # the scene ends after 4 s, in which the door swings twice
    events = {door: agent.event_ids() for door, agent in agents.items()}
    stills = {door: agent.stills() for door, agent in agents.items()}
    assert all(events.values()), "each door had its events"
    every = {event_id for ids in events.values() for event_id in ids}
    taken = sum(len(of_door) for of_door in stills.values())
    assert wait_until(lambda: listed(out) == every and len(pictures(out)) == 2 * taken, 30), (
        f"the event log has every event and still (and its thumbnail): {listed(out)} {pictures(out)}"
    )

    index = look(chromium, out / "index.html", tmp_path / "index.png")
    assert sorted(index["doors"]) == sorted(f"door-{door}" for door in DOORS)
    assert len(index["thumbs"]) >= len(DOORS), "each door's tile shows its last event's thumbnail"
    shown: list[str] = []
    for day_page in sorted(out.glob("????-??-??.html")):
        day = look(chromium, day_page, tmp_path / f"{day_page.stem}.png")
        shown += day["events"]
        assert len(day["thumbs"]) == sum(1 for _ in out.glob(f"*/{day_page.stem}/*.thumb.jpg"))
    assert sorted(shown) == sorted(f"event-{event_id}" for event_id in every), "every event of the run, once"

    gone = events["front-door"][0]
    log = forget(children, mosquitto, tmp_path, "front-door", "--event", gone)
    assert "forget: erased event" in log
    assert "cleared the retained snapshot and told the subscribers" in log
    assert wait_until(lambda: gone not in listed(out) and not list(out.rglob(f"{gone}-*")), 15), pages(out)
    assert listed(out) == every - {gone}
    for day_page in sorted(out.glob("????-??-??.html")):
        assert f"event-{gone}" not in look(chromium, day_page, tmp_path / f"{day_page.stem}-after.png")["events"]
    assert not list((tmp_path / "front-door" / "state" / "stills").glob(f"{gone}/*"))

    for door in DOORS:
        forget(children, mosquitto, tmp_path, door, "--all")
    assert wait_until(lambda: not pictures(out) and not listed(out), 15), pictures(out)
    for door in DOORS:
        assert not list((tmp_path / door / "state" / "stills").rglob("*.jpg")), f"no still left on {door}"
    snapshots = tuple(f"edgecam/{door}/snapshot" for door in DOORS)
    later: Collector = collector_factory(mosquitto, (*snapshots, "edgecam/+/availability"))
    later.wait_for(lambda c: all(c.on(f"edgecam/{door}/availability") for door in DOORS))
    assert not any(later.on(topic) for topic in snapshots), "no retained snapshot on the broker"
    index = look(chromium, out / "index.html", tmp_path / "index-after.png")
    assert sorted(index["doors"]) == sorted(f"door-{door}" for door in DOORS), "the doors stay, without events"
    listen.stop(15)
