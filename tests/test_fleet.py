"""``edgecam fleet``: the state per device from retained topics, the table, and the command against a real broker."""

import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgecam import __version__
from edgecam.cli import main
from edgecam.config import OutboxSettings, Settings, StorageSettings
from edgecam.errors import ConfigError
from edgecam.fleet import COLUMNS, Fleet, FleetRow, human_age, human_seconds, render_table, run_fleet
from edgecam.models import Topics, iso_ms
from edgecam.mqtt.claim import Claim
from edgecam.mqtt.publisher import Publisher
from edgecam.outbox import Outbox
from tests.conftest import Broker, Collector, make_door_event, wait_until

PREFIX = "edgecam"
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
CLAIM = Claim("a" * 32, "active", "2026-11-30T10:00:00.000Z", "1.2.3").encode()


def local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def stats(**fields: Any) -> bytes:
    body = {"depth": 0, "bytes": 4096, "max_bytes": 1 << 30, "used": 0.0, "oldest_waiting_s": None, **fields}
    return json.dumps(body).encode()


def fed(messages: list[tuple[str, str, bytes]]) -> Fleet:
    fleet = Fleet()
    for device, what, payload in messages:
        fleet.take(device, what, payload)
    return fleet


# --- the state and the table ---


def test_a_door_whose_agent_published_everything_has_every_column() -> None:
    fleet = fed(
        [
            ("front-door", "availability", b"online"),
            ("front-door", "door", b"closed"),
            ("front-door", "last_event", iso_ms(NOW - timedelta(minutes=3, seconds=20)).encode()),
            ("front-door", "stats", stats(depth=2, oldest_waiting_s=125.4, time_synced=True)),
            ("front-door", "agent", CLAIM),
        ]
    )
    assert fleet.rows(NOW) == [
        FleetRow(
            "front-door",
            "online",
            "closed",
            local(NOW - timedelta(minutes=3, seconds=20)),
            "3 min",
            "2",
            "2 min",
            "yes",
            "1.2.3",
        )
    ]


def test_what_was_not_heard_is_a_dash() -> None:
    fleet = fed([("garage", "availability", b"offline")])
    assert fleet.rows(NOW)[0].cells() == ("garage", "offline", "-", "-", "-", "-", "-", "-", "-")
    fleet.take("garage", "stats", stats(depth=0))  # an agent before 'time_synced' was in its stats
    assert fleet.rows(NOW)[0].cells() == ("garage", "offline", "-", "-", "-", "0", "-", "-", "-")


@pytest.mark.parametrize(
    ("what", "payload", "columns"),
    [
        ("stats", b"{not json", {"outbox": "?", "oldest waiting": "?", "clock synced": "?"}),
        ("stats", b"\xff\xfe", {"outbox": "?", "oldest waiting": "?", "clock synced": "?"}),
        ("stats", b"[1, 2]", {"outbox": "?", "oldest waiting": "?", "clock synced": "?"}),
        (
            "stats",
            stats(depth="many", oldest_waiting_s=-5, time_synced="yes"),
            {"outbox": "?", "oldest waiting": "?", "clock synced": "?"},
        ),
        ("stats", stats(depth=True, oldest_waiting_s=[1], time_synced=[]), {"outbox": "?", "oldest waiting": "?"}),
        ("agent", b"not a claim", {"version": "?"}),
        ("agent", Claim("b" * 32, "active", "", "1.0\x1b[2J").encode(), {"version": "?"}),
        ("last_event", b"yesterday", {"last event": "?", "age": "?"}),
        ("availability", b"\x1b[31monline", {"availability": "?"}),
        ("door", b"<b>open</b>", {"door": "?"}),
        ("door", b"x" * 500, {"door": "?"}),
    ],
)
def test_an_unreadable_payload_is_a_question_mark_not_a_crash(
    what: str, payload: bytes, columns: dict[str, str]
) -> None:
    fleet = fed([("porch", "availability", b"online"), ("porch", what, payload)])
    row = dict(zip(COLUMNS, fleet.rows(NOW)[0].cells(), strict=True))
    assert {name: row[name] for name in columns} == columns
    assert row["device"] == "porch"
    if what != "availability":
        assert row["availability"] == "online", "the other columns are unharmed"


def test_an_empty_payload_clears_a_value_and_only_an_active_claim_gives_the_version() -> None:
    fleet = fed([("porch", "agent", CLAIM), ("porch", "door", b"open")])
    assert fleet.take("porch", "agent", Claim("c" * 32, "checking", "", "9.9.9").encode()) is False
    assert fleet.rows(NOW)[0].version == "1.2.3", "another agent checking is not the one publishing"
    assert fleet.take("porch", "door", b"") is True
    assert fleet.rows(NOW)[0].door == "-"
    assert fleet.take("porch", "door", b"") is False
    assert fleet.take("unknown", "door", b"") is False
    assert fleet.devices() == ["porch"], "a deleted retained message of a device never heard adds no device"


def test_the_last_event_comes_from_the_stats_when_its_own_topic_is_absent() -> None:
    fleet = fed([("porch", "stats", stats(last_event=iso_ms(NOW - timedelta(hours=5))))])
    row = fleet.rows(NOW)[0]
    assert (row.last_event, row.age) == (local(NOW - timedelta(hours=5)), "5 h")
    fleet.take("porch", "last_event", iso_ms(NOW - timedelta(seconds=42)).encode())
    assert fleet.rows(NOW)[0].age == "42 s", "the retained topic wins"


def test_ages_read_at_a_glance() -> None:
    assert [human_seconds(s) for s in (0, 59.9, 60, 3599, 3600, 47 * 3600, 2 * 86400, 10 * 86400 + 5)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h",
        "47 h",
        "2 d",
        "10 d",
    ]
    assert human_age(timedelta(minutes=-3)) == "in 3 min", "a device whose clock runs ahead"


def test_topics_outside_the_prefix_or_not_of_a_device_are_ignored() -> None:
    fleet = Fleet()
    assert fleet.take_topic(PREFIX, f"{PREFIX}/porch/availability", b"online") is True
    for topic in (
        "other/porch/availability",
        f"{PREFIX}/porch/events",
        f"{PREFIX}/porch/set/detect",
        f"{PREFIX}/a/b/availability",
        f"{PREFIX}/bad id/availability",
        f"{PREFIX}/porch\n/availability",
        f"{PREFIX}x/porch/availability",
    ):
        assert fleet.take_topic(PREFIX, topic, b"online") is False, topic
    assert fleet.devices() == ["porch"]
    assert Fleet().take_topic("site/a", "site/a/porch/door", b"open") is True, "a prefix with a slash"


def test_the_table_is_aligned_and_sorted_by_device() -> None:
    fleet = fed(
        [
            ("zeta", "availability", b"offline"),
            ("a-very-long-device-name", "availability", b"online"),
            ("alpha", "stats", stats(depth=12345)),
        ]
    )
    lines = render_table(fleet.rows(NOW)).splitlines()
    assert lines[0].split("  ")[0] == "device"
    assert [line.split()[0] for line in lines[1:]] == ["a-very-long-device-name", "alpha", "zeta"]
    starts = {line.index(word) for line, word in zip(lines, ("availability", "online", "-", "offline"), strict=True)}
    assert starts == {len("a-very-long-device-name") + 2}, "the second column starts at one place"
    assert all(line == line.rstrip() for line in lines)
    assert fleet.rows(NOW, "zeta")[0].device == "zeta"


# --- against a real broker ---


class Agents:
    """Real publishers for several devices, each with its own state directory, as agents publish."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.publishers: dict[str, Publisher] = {}
        self.outboxes: list[Outbox] = []

    def start(self, device: str, synced: bool, delivery: OutboxSettings | None = None) -> Publisher:
        storage = StorageSettings(dir=self.tmp_path / device)
        self.outboxes.append(Outbox(storage))
        publisher = Publisher(
            self.broker.settings(stats_interval=1.0),
            Topics(f"{PREFIX}/{device}"),
            storage,
            device,
            delivery,
            vitals=lambda: {"time_synced": synced, "last_event": None},
        )
        publisher.start()
        self.publishers[device] = publisher
        return publisher

    def close(self) -> None:
        for publisher in self.publishers.values():
            publisher.stop()
        for outbox in self.outboxes:
            outbox.close()


@pytest.fixture
def agents(mosquitto: Broker, tmp_path: Path) -> Iterator[Agents]:
    made = Agents(mosquitto, tmp_path)
    yield made
    made.close()


def two_doors(agents: Agents, collector_factory: Callable[..., Collector]) -> datetime:
    """front-door with an event its consumer has not confirmed (so it waits), back-door closed and idle."""
    front = agents.start("front-door", synced=True, delivery=OutboxSettings(confirm="consumer", resend_after=600))
    back = agents.start("back-door", synced=False)
    started = datetime.now(UTC) - timedelta(minutes=3)
    front.set_last_event(iso_ms(started))
    back.set_door("closed")
    topics = Topics(f"{PREFIX}/front-door")
    event = make_door_event(topics, "front-door", n_stills=1)
    outbox = agents.outboxes[0]
    for row_event, still in event.rows:
        outbox.append(row_event, still)
    front.wake()
    collector = collector_factory(agents.broker, (f"{PREFIX}/+/stats", f"{PREFIX}/+/agent"))

    def ready(c: Collector) -> bool:
        front_stats = c.on(f"{PREFIX}/front-door/stats")
        return (
            bool(front_stats)
            and json.loads(front_stats[-1].payload)["depth"] == 3
            and bool(c.on(f"{PREFIX}/back-door/stats"))
            and len({m.topic for m in c.received if m.topic.endswith("/agent")}) == 2
        )

    collector.wait_for(ready)
    return started


@pytest.mark.integration
def test_fleet_prints_a_row_per_door_from_the_retained_topics(
    agents: Agents, collector_factory: Callable[..., Collector]
) -> None:
    started = two_doors(agents, collector_factory)
    out = io.StringIO()
    settings = Settings(mqtt=agents.broker.settings())
    assert run_fleet(settings, out) == 0
    lines = out.getvalue().splitlines()
    print(out.getvalue())  # the table in the test's report (pytest -s)
    assert lines[0].split() == [
        "device",
        "availability",
        "door",
        "last",
        "event",
        "age",
        "outbox",
        "oldest",
        "waiting",
        "clock",
        "synced",
        "version",
    ]
    back, front = (line.split() for line in lines[1:])
    assert len(lines) == 3
    assert back == ["back-door", "online", "closed", "-", "-", "0", "-", "no", __version__]
    assert front[:2] == ["front-door", "online"]
    assert front[2] == "-", "no door contact nor reference: no door state"
    assert " ".join(front[3:5]) == local(started)
    assert front[5:8] == ["3", "min", "3"], "3 min ago; the start, the still and the end wait for the consumer"
    assert front[8].isdigit(), "seconds since the event was appended"
    assert front[9:] == ["s", "yes", __version__]

    one = io.StringIO()
    assert run_fleet(settings, one, device="back-door") == 0
    assert [line.split()[0] for line in one.getvalue().splitlines()] == ["device", "back-door"]


@pytest.mark.integration
def test_fleet_watch_prints_the_table_again_when_a_door_changes(
    agents: Agents, collector_factory: Callable[..., Collector]
) -> None:
    two_doors(agents, collector_factory)
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    settings = Settings(mqtt=agents.broker.settings())
    watcher = threading.Thread(target=lambda: result.append(run_fleet(settings, out, watch=30.0, stop=stop)))
    watcher.start()
    try:
        assert wait_until(lambda: "back-door" in out.getvalue(), 10), out.getvalue()
        first = out.getvalue()
        assert first.startswith("at ")
        agents.publishers["back-door"].set_door("open")
        assert wait_until(lambda: out.getvalue().count("\nat ") >= 1, 10), out.getvalue()
        assert wait_until(lambda: "open" in out.getvalue().split("\nat ")[-1], 10), out.getvalue()
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()
    assert result == [0]
    last = out.getvalue().split("\nat ")[-1].splitlines()
    assert [line.split()[:3] for line in last[1:] if line.startswith("back-door")] == [["back-door", "online", "open"]]


@pytest.mark.integration
def test_fleet_with_no_door_heard_says_so_and_exits_1(mosquitto: Broker) -> None:
    out = io.StringIO()
    assert run_fleet(Settings(mqtt=mosquitto.settings()), out) == 1
    assert out.getvalue() == f"fleet: no device heard under {PREFIX}/ on {mosquitto.host}:{mosquitto.port}\n"
    out = io.StringIO()
    assert run_fleet(Settings(mqtt=mosquitto.settings()), out, device="porch") == 1
    assert out.getvalue().startswith("fleet: device porch not heard under edgecam/")


def test_fleet_refuses_a_bad_device_id_and_watch_interval() -> None:
    with pytest.raises(ConfigError, match="fleet --device"):
        run_fleet(Settings(), io.StringIO(), device="a/b")
    with pytest.raises(ConfigError, match="fleet --watch"):
        run_fleet(Settings(), io.StringIO(), watch=0)


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)


@pytest.mark.integration
@pytest.mark.usefixtures("_clean_env")
def test_the_fleet_command_reads_the_broker_from_the_settings_file(
    agents: Agents, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start("porch", synced=True).set_door("open")
    assert wait_until(lambda: agents.publishers["porch"].connected, 10)
    config = tmp_path / "edgecam.toml"
    config.write_text(f'[mqtt]\nhost = "{agents.broker.host}"\nport = {agents.broker.port}\n')

    def porch_row() -> list[str]:
        status = main(["fleet", "--config", str(config), "--device", "porch"])
        lines = capsys.readouterr().out.splitlines()
        return lines[1].split() if status == 0 else []

    assert wait_until(lambda: porch_row()[:3] == ["porch", "online", "open"], 10)
