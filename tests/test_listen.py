"""``edgecam listen``: lines per event, stills saved and checked against their sha256."""

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edgecam import __version__
from edgecam.config import OutboxSettings, Settings, StorageSettings
from edgecam.errors import ConfigError
from edgecam.eventlog import EventLog, local_day
from edgecam.listen import Listener, keep_days_of, run_listen
from edgecam.models import Event, Topics
from edgecam.mqtt.claim import Claim
from edgecam.mqtt.publisher import Publisher
from edgecam.mqtt.subscriber import Subscriber
from edgecam.outbox import Outbox
from tests.conftest import Broker, DoorEvent, make_door_event, wait_until

DEVICE = "front-door"
TOPICS = Topics(f"edgecam/{DEVICE}")


def messages(door: DoorEvent, first_seq: int = 1) -> list[tuple[str, bytes]]:
    """The messages the publisher sends for a door event: each still's JPEG, then its JSON."""
    out: list[tuple[str, bytes]] = []
    for seq, (event, still) in enumerate(door.rows, start=first_seq):
        if still is not None:
            out.append((TOPICS.still(door.event_id, still.index), still.jpeg))
        out.append((TOPICS.events, json.dumps(event.payload(seq)).encode()))
    return out


@pytest.fixture
def door(tmp_path: Path) -> DoorEvent:
    return make_door_event(TOPICS, DEVICE, n_stills=2)


def saved_still(out_dir: Path, door: DoorEvent, index: int) -> Path:
    """Where the event log keeps a still: ``<out>/<device>/<local day of the start>/<event_id>-<index>.jpg``."""
    day = local_day(door.rows[0][0].payload(1)["time"])
    return out_dir / DEVICE / day / f"{door.event_id}-{index}.jpg"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    with EventLog(tmp_path / "received", keep_days=3650) as log:
        yield Listener("edgecam", log, now=lambda: datetime(2026, 11, 22, 14, 0).astimezone())


def test_prints_one_line_per_event_and_saves_the_stills(listener: Listener, door: DoorEvent, tmp_path: Path) -> None:
    lines = [line for topic, payload in messages(door, 12) for line in listener.handle(topic, payload, False)]

    assert len(lines) == 4
    start, still_1, still_2, end = lines
    assert f" {DEVICE} start  event={door.event_id[:8]} seq=12 score=0.31" in start
    assert start.split(" ")[0].count(":") == 2  # a local clock time, HH:MM:SS.mmm
    assert " still  " in still_1
    assert " seq=13 " in still_1
    assert " #1 640x480 " in still_1
    assert "sha256 ok" in still_1
    assert "sha256 ok" in still_2
    assert " end    " in end
    assert "duration=4.2s stills=2" in end
    for still in door.stills:
        saved = saved_still(tmp_path / "received", door, still.index)
        assert saved.read_bytes() == still.jpeg
        assert str(saved) in (still_1 if still.index == 1 else still_2)
    assert listener.events == 4
    assert listener.mismatches == 0


def test_shows_the_door_state_an_event_carries(listener: Listener, door: DoorEvent) -> None:
    start = {**door.rows[0][0].payload(1), "door": "open"}
    (line,) = listener.handle(TOPICS.events, json.dumps(start).encode(), False)
    assert line.endswith(" door=open")


def test_the_jpeg_may_arrive_after_its_event(listener: Listener, door: DoorEvent) -> None:
    jpeg, event_json = messages(door)[1:3]
    assert listener.handle(*event_json, False) == []
    (line,) = listener.handle(*jpeg, False)
    assert "sha256 ok" in line


def test_reports_a_still_that_does_not_match_its_sha256(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    topic, jpeg = sent[1]
    listener.handle(*sent[0], False)
    listener.handle(topic, jpeg[:-10] + b"corrupted!", False)
    (line,) = listener.handle(*sent[2], False)
    assert "sha256 MISMATCH" in line
    assert listener.mismatches == 1


def test_duplicates_are_printed_once(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    first = [line for topic, payload in sent for line in listener.handle(topic, payload, False)]
    again = [line for topic, payload in sent for line in listener.handle(topic, payload, False)]
    assert len(first) == 4
    assert again == []


def test_prints_availability_motion_and_door_changes(listener: Listener) -> None:
    assert listener.handle(TOPICS.availability, b"online", True) == [f"14:00:00.000 {DEVICE} availability online"]
    assert listener.handle(TOPICS.availability, b"online", False) == []
    assert listener.handle(TOPICS.motion, b"ON", False) == [f"14:00:00.000 {DEVICE} motion ON"]
    assert listener.handle(TOPICS.motion, b"OFF", False) == [f"14:00:00.000 {DEVICE} motion OFF"]
    assert listener.handle(TOPICS.door, b"open", True) == [f"14:00:00.000 {DEVICE} door open"]
    assert listener.handle(TOPICS.availability, b"offline", False) == [f"14:00:00.000 {DEVICE} availability offline"]


def test_the_fleet_topics_print_nothing_and_fill_the_fleet_table(listener: Listener) -> None:
    claim = Claim("a" * 32, "active", "2026-11-30T10:00:00.000Z", "1.2.3").encode()
    stats = json.dumps({"depth": 4, "oldest_waiting_s": 7200, "time_synced": False}).encode()
    for topic, payload in ((TOPICS.stats, stats), (TOPICS.agent, claim), (TOPICS.last_event, b"not a time")):
        assert listener.handle(topic, payload, True) == []
    _, rows = listener.log.fleet_table()
    assert [row.cells() for row in rows] == [(DEVICE, "-", "-", "?", "?", "4", "2 h", "no", "1.2.3")]
    listener.handle(TOPICS.availability, b"online", True)
    assert listener.log.fleet_table()[1][0].availability == "online"


def test_never_writes_outside_its_folder(listener: Listener, tmp_path: Path) -> None:
    (line,) = listener.handle(f"{TOPICS.base}/events/../stills/1", b"\xff\xd8", False)
    assert "unexpected topic" in line
    assert listener.handle(TOPICS.still("x", 1).replace("/x/", "/x/y/"), b"\xff\xd8", False) == []
    assert sorted(p.name for p in tmp_path.rglob("*.jpg")) == []


class Session:
    """run_listen in a thread, with its output collected."""

    def __init__(
        self,
        settings: Settings,
        out_dir: Path,
        capsys: pytest.CaptureFixture[str],
        count: int | None,
        ack: bool = False,
    ) -> None:
        self.stop = threading.Event()
        self.capsys = capsys
        self.output = ""
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(run_listen(settings, out_dir, self.stop, count, DEVICE, ack))
        )
        self.thread.start()

    def read(self) -> str:
        self.output += self.capsys.readouterr().out
        return self.output

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        assert wait_until(lambda: text in self.read(), timeout, 0.05), f"no {text!r} in:\n{self.output}"

    def join(self, timeout: float = 10.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"listen did not return:\n{self.read()}"
        self.read()
        return self.result[0]


@pytest.fixture
def publish(mosquitto: Broker, tmp_path: Path) -> Iterator[Callable[[list[tuple[Event, Any]]], None]]:
    storage = StorageSettings(dir=tmp_path / "state")
    outbox = Outbox(storage)
    publisher = Publisher(mosquitto.settings(), TOPICS, storage, DEVICE)
    publisher.start()
    assert wait_until(lambda: publisher.connected, 5)

    def send(rows: list[tuple[Event, Any]]) -> None:
        for event, still in rows:
            outbox.append(event, still)
        publisher.wake()
        assert publisher.wait_idle(10)

    yield send
    publisher.stop()
    outbox.close()


@pytest.mark.integration
def test_listen_end_to_end(
    mosquitto: Broker,
    publish: Callable[[list[tuple[Event, Any]]], None],
    door: DoorEvent,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings())
    session = Session(settings, tmp_path / "received", capsys, count=4)
    session.wait_for(f"{DEVICE} availability online")  # subscribed: the retained state has arrived
    publish(door.rows)
    assert session.join() == 0
    assert session.output.count("sha256 ok") == 2
    assert f"{DEVICE} start  event={door.event_id[:8]} seq=1 " in session.output
    assert f"{DEVICE} end    event={door.event_id[:8]} seq=4 " in session.output
    for still in door.stills:
        assert saved_still(tmp_path / "received", door, still.index).read_bytes() == still.jpeg
    index = (tmp_path / "received" / "index.html").read_text(encoding="utf-8")
    assert f'id="door-{DEVICE}"' in index, "the pages are written when it stops"
    fleet_row = re.search(rf'<tr class="fleet-row" id="fleet-{DEVICE}">(.*?)</tr>', index)
    assert fleet_row is not None, "listen subscribes to the topics of the fleet table too"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", fleet_row[1])
    assert [cells[0], cells[1], cells[-1]] == [DEVICE, "online", __version__], "the agent's claim carries its version"
    assert cells[5].isdigit(), "the outbox depth from <base>/stats"
    day = local_day(door.rows[0][0].payload(1)["time"])
    assert f'id="event-{door.event_id}"' in (tmp_path / "received" / f"{day}.html").read_text(encoding="utf-8")


@pytest.mark.integration
def test_what_comes_while_listen_is_away_is_in_the_log_when_it_is_back(
    mosquitto: Broker,
    publish: Callable[[list[tuple[Event, Any]]], None],
    door: DoorEvent,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings())
    first = Session(settings, tmp_path / "received", capsys, count=None)
    first.wait_for(f"{DEVICE} availability online")
    first.stop.set()
    assert first.join() == 0

    publish(door.rows)  # while nobody listens

    back = Session(settings, tmp_path / "received", capsys, count=4)
    assert back.join() == 0, "the broker kept the event for the event log's session"
    assert back.output.count("sha256 ok") == 2
    for still in door.stills:
        assert saved_still(tmp_path / "received", door, still.index).read_bytes() == still.jpeg


@pytest.mark.integration
def test_listen_reports_a_mismatch(
    mosquitto: Broker,
    publish: Callable[[list[tuple[Event, Any]]], None],
    door: DoorEvent,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings())
    session = Session(settings, tmp_path / "received", capsys, count=2)
    session.wait_for(f"{DEVICE} availability online")
    start, (still_event, still) = door.rows[0], door.rows[1]
    wrong = replace(still_event, extra={**still_event.extra, "sha256": "0" * 64})
    publish([start, (wrong, still)])
    assert session.join() == 1
    assert "sha256 MISMATCH" in session.output


def test_confirms_an_event_once_it_is_whole_and_again_when_it_comes_again(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    for topic, payload in sent[:-1]:
        listener.handle(topic, payload, False)
    assert listener.take_confirmations() == {}, "no end yet"
    listener.handle(*sent[-1], False)
    assert listener.take_confirmations() == {DEVICE: [door.event_id]}
    assert listener.take_confirmations() == {}
    listener.handle(*sent[-1], False)  # the agent sent it again: our confirmation was lost
    assert listener.take_confirmations() == {DEVICE: [door.event_id]}


def test_a_still_with_a_wrong_sha256_is_not_confirmed(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    topic, jpeg = sent[1]
    sent[1] = (topic, jpeg[:-10] + b"corrupted!")
    for topic, payload in sent:
        listener.handle(topic, payload, False)
    assert listener.take_confirmations() == {}


def test_a_dropped_still_is_shown_and_counts_as_arrived(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    dropped = {**json.loads(sent[4][1]), "dropped": True}
    end = {**json.loads(sent[5][1]), "stills_dropped": [2]}
    lines = [line for topic, payload in sent[:3] for line in listener.handle(topic, payload, False)]
    lines += listener.handle(TOPICS.events, json.dumps(dropped).encode(), False)
    lines += listener.handle(TOPICS.events, json.dumps(end).encode(), False)
    assert "#2 dropped by the agent" in lines[2]
    assert lines[3].endswith("stills=2 dropped=[2]")
    assert listener.take_confirmations() == {DEVICE: [door.event_id]}


@pytest.mark.integration
def test_listen_ack_confirms_to_an_agent_that_waits_for_its_consumer(
    mosquitto: Broker, door: DoorEvent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings())
    session = Session(settings, tmp_path / "received", capsys, count=None, ack=True)
    with Outbox(storage) as outbox:
        for event, still in door.rows:
            outbox.append(event, still)
        publisher = Publisher(
            mosquitto.settings(), TOPICS, storage, DEVICE, OutboxSettings(confirm="consumer", resend_after=1)
        )
        publisher.start()
        try:
            assert wait_until(lambda: outbox.depth() == 0, 10), session.read()
        finally:
            publisher.stop()
            session.stop.set()
            session.join()


def test_a_still_the_broker_would_not_take_is_shown_with_the_agents_reason(listener: Listener, door: DoorEvent) -> None:
    sent = messages(door)
    dropped = {**json.loads(sent[4][1]), "dropped": True, "dropped_reason": "too large for the broker"}
    lines = [line for topic, payload in sent[:3] for line in listener.handle(topic, payload, False)]
    lines += listener.handle(TOPICS.events, json.dumps(dropped).encode(), False)
    assert lines[2].endswith("#2 dropped by the agent (too large for the broker)")


def test_the_log_keeps_events_as_long_as_the_agent_asks_the_broker_to(tmp_path: Path) -> None:
    assert keep_days_of(Settings(device_id=DEVICE, storage=StorageSettings(retention_days=3.0))) == 3.0
    storage = StorageSettings(retention_days=3.0, broker_expiry=1.5)
    assert keep_days_of(Settings(device_id=DEVICE, storage=storage)) == 1.5
    with pytest.raises(ConfigError, match="--keep-days"):
        run_listen(Settings(device_id=DEVICE), tmp_path / "log", keep_days=0)


@pytest.mark.integration
def test_listen_ack_confirms_a_forget_and_erases_the_event(
    mosquitto: Broker,
    publish: Callable[[list[tuple[Event, Any]]], None],
    door: DoorEvent,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings())
    acks: list[list[str]] = []
    agent = Subscriber(
        mosquitto.settings(), [TOPICS.ack], lambda topic, payload, retain: acks.append(json.loads(payload)), "agent"
    )
    agent.start()
    assert agent.wait_subscribed(5)
    session = Session(settings, tmp_path / "received", capsys, count=None, ack=True)
    try:
        session.wait_for(f"{DEVICE} availability online")
        publish(door.rows)
        session.wait_for(f"end    event={door.event_id[:8]}")
        assert wait_until(lambda: [door.event_id] in acks, 10), acks
        forget = {**door.rows[0][0].payload(99), "type": "forget", "event_id": "forget0001"}
        forget["forget"] = {"event_id": door.event_id}
        agent.publish(TOPICS.events, json.dumps(forget).encode()).wait_for_publish(5)
        session.wait_for(f"{DEVICE} forget event=forget00 removed 1 events, 2 stills")
        assert wait_until(lambda: ["forget0001"] in acks, 10), acks
    finally:
        session.stop.set()
        session.join()
        agent.stop()
    assert not saved_still(tmp_path / "received", door, 1).exists()
    assert f'id="event-{door.event_id}"' not in (tmp_path / "received" / "index.html").read_text(encoding="utf-8")
