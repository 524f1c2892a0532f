"""Nothing captured is lost: the agent against a broker that is down, killed or silent, a crash mid-write, a full
disk, an outage longer than the budget and a replay of 10,000 events, on loopback with a real Mosquitto."""

import array
import hashlib
import json
import signal
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgecam.config import StorageSettings
from edgecam.models import Topics
from edgecam.mqtt.publisher import Publisher
from edgecam.outbox import Outbox
from tests.conftest import Broker, make_door_event
from tests.faults import SilentLink, mount_tmpfs, unmount, used_bytes
from tests.integration.test_agent import BASE, DEVICE, Inbox, check_events

pytestmark = pytest.mark.integration

TOPICS = Topics(BASE)
KEEPALIVE = 5
QUICK_RECONNECT = {"EDGECAM_MQTT__RECONNECT_MIN": "0.2", "EDGECAM_MQTT__RECONNECT_MAX": "1"}
SAVE_EVERY_CHANGE = "autosave_interval 1\nautosave_on_changes true"
"""Mosquitto saves its sessions at every change, so a SIGKILL does not make it forget the test's subscriber."""


def door_scene(openings: int, realtime: bool = False) -> dict[str, str]:
    """The simulated door opening ``openings`` times, every 3 s of scene time; each event ends before the scene.

    Not in real time, the scene renders as fast as it can: 20 openings take about a second.
    """
    first, period = 2.2, 3.0
    return {
        "EDGECAM_CAMERA__REALTIME": str(realtime).lower(),
        "EDGECAM_CAMERA__SIMULATED__DURATION": f"{first + period * (openings - 1) + 2.0 if openings else 1.0:g}",
        "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": f"{first:g}",
        "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": f"{period:g}",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.4",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.2",
        "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.4",
        "EDGECAM_MOTION__EVENT_GAP": "0.5",
        **QUICK_RECONNECT,
    }


def busy_door() -> dict[str, str]:
    """The door opening every 2 s in real time, for ever, about 6 stills (200 kB) an opening."""
    return {
        "EDGECAM_CAMERA__REALTIME": "true",
        "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "1",
        "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "2",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.5",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.2",
        "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.5",
        "EDGECAM_MOTION__EVENT_GAP": "0.3",
        "EDGECAM_MOTION__CALIBRATION": "0.5",
        "EDGECAM_CAPTURE__STILLS_PER_EVENT": "6",
        "EDGECAM_CAPTURE__INTERVAL": "0.1",
        **QUICK_RECONNECT,
    }


class Child:
    """An ``edgecam`` child process whose log the test follows line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def lines(self, text: str) -> list[str]:
        """The log lines so far that contain ``text``."""
        with self._cond:
            return [line for line in self._lines if text in line]

    def wait_log(self, text: str, timeout: float, times: int = 1) -> None:
        """Wait until ``text`` has been logged ``times`` times."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.lines(text)) >= times, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {times} x {text!r}:\n{self.log}")

    def event_ids(self) -> list[str]:
        """The door events the agent has started so far, in order."""
        return [line.split("agent: start ", 1)[1].split()[0] for line in self.lines("agent: start ")]

    def stills(self) -> list[tuple[str, int]]:
        """The stills the agent has taken so far, as (event id, index), in order."""
        taken: list[tuple[str, int]] = []
        for line in self.lines("agent: still "):
            event_id = line.split("agent: still ", 1)[1].split()[0]
            taken.append((event_id, 1 + sum(e == event_id for e, _ in taken)))
        return taken

    def exit_code(self, timeout: float = 60) -> int:
        """Wait for the process to end and close its pipes."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the agent did not exit within {timeout} s:\n{self.log}") from None
        self._reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def finish(self, timeout: float = 60) -> str:
        """Wait for a clean exit; return the whole log."""
        assert self.exit_code(timeout) == 0, self.log
        assert "Traceback" not in self.log
        return self.log

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM, then wait for a clean exit; return the whole log."""
        self.process.terminate()
        return self.finish(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.exit_code(10)


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Broker]) -> Broker:
    """A broker that keeps sessions across a restart, so the test's subscriber misses nothing while it is down."""
    return mosquitto_factory(persistence=True)


def first_copies(box: Inbox) -> dict[int, dict[str, Any]]:
    """Each seq's first arrival, in order of arrival (later copies are the at-least-once duplicates)."""
    with box.cond:
        events = list(box.events)
    first: dict[int, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["seq"], event)
    return first


def ended(box: Inbox) -> set[str]:
    """The door events whose end has arrived."""
    return {e["event_id"] for e in box.events if e["type"] == "end"}


def starts(box: Inbox) -> set[str]:
    """The door events whose start has arrived."""
    return {e["event_id"] for e in box.events if e["type"] == "start"}


def check_every_row(box: Inbox) -> dict[str, list[dict[str, Any]]]:
    """Every seq arrived, first in seq order; each event is start, stills, end; a still is whole or says dropped.

    Returns each event's messages (first copies) by event id.
    """
    first = first_copies(box)
    assert list(first) == list(range(1, len(first) + 1)), "every seq, first seen in order"
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event in first.values():
        by_event.setdefault(event["event_id"], []).append(event)
    for messages in by_event.values():
        kinds = [m["type"] for m in messages]
        assert kinds == ["start"] + ["still"] * (len(kinds) - 2) + ["end"], kinds
        stills, end = messages[1:-1], messages[-1]
        assert [s["index"] for s in stills] == list(range(1, len(stills) + 1))
        assert end["stills"] == len(stills)
        assert {s["index"] for s in stills if s.get("dropped")} <= set(end.get("stills_dropped", []))
        for still in stills:
            jpeg = box.stills.get(still["topic"])
            if still.get("dropped"):
                assert jpeg is None, "a dropped still is never sent"
            else:
                assert jpeg is not None, f"the still {still['topic']} neither arrived nor says dropped"
                assert hashlib.sha256(jpeg).hexdigest() == still["sha256"]
    return by_event


def test_events_captured_before_the_broker_ever_starts_all_arrive_with_their_stills(
    mosquitto: Broker, listen: Callable[[Broker], Inbox], run_agent: Callable[..., Child]
) -> None:
    inbox = listen(mosquitto)
    mosquitto.stop()
    agent = run_agent(mosquitto, **door_scene(20))
    agent.wait_log("agent: end ", 30, times=20)
    agent.wait_log(f"cannot reach broker 127.0.0.1:{mosquitto.port}: Connection refused", 10)
    assert not inbox.events

    mosquitto.start()
    inbox.wait(lambda b: len(ended(b)) == 20, 30, "20 door events")
    assert "stopped after 20 door events" in agent.finish()
    check_events(inbox, 20)


def test_a_broker_killed_mid_burst_and_restarted_gets_every_event(
    mosquitto_factory: Callable[..., Broker], listen: Callable[[Broker], Inbox], run_agent: Callable[..., Child]
) -> None:
    broker = mosquitto_factory(persistence=True, config=SAVE_EVERY_CHANGE)
    inbox = listen(broker)
    agent = run_agent(broker, **door_scene(40))
    inbox.wait(lambda b: len(ended(b)) >= 10, 30, "10 door events")
    broker.kill()
    before = len(ended(inbox))
    broker.start()

    inbox.wait(lambda b: len(ended(b)) == 40, 30, "40 door events")
    log = agent.finish()
    assert before < 40, "the broker was killed after the burst"
    assert f"lost the connection to broker 127.0.0.1:{broker.port}" in log
    assert "stay in the outbox" not in log
    assert {e["event_id"] for e in inbox.events} == set(agent.event_ids())


def test_a_silent_link_is_noticed_within_two_keepalives_and_everything_arrives_once_it_is_back(
    mosquitto: Broker, listen: Callable[[Broker], Inbox], run_agent: Callable[..., Child]
) -> None:
    inbox = listen(mosquitto)
    with SilentLink(mosquitto.host, mosquitto.port) as link:
        agent = run_agent(link, EDGECAM_MQTT__KEEPALIVE=str(KEEPALIVE), **door_scene(5, realtime=True))
        inbox.wait(lambda b: len(ended(b)) == 1, 30, "the first door event")
        link.pause()
        silent_from = time.monotonic()
        before = len(inbox.events)
        agent.wait_log(f"lost the connection to broker 127.0.0.1:{link.port}", 2 * KEEPALIVE + 4)
        noticed_after = time.monotonic() - silent_from
        assert len(inbox.events) == before, "nothing got through the silent link"
        link.resume()
        inbox.wait(lambda b: len(ended(b)) == 5, 30, "5 door events")
        agent.finish()
    assert noticed_after > 1, "noticed by the keepalive, not by a closed socket"
    check_events(inbox, 5)


@pytest.mark.parametrize(
    ("point", "nth"),
    [("before-rename", 3), ("after-rename", 3), ("after-commit", 6), ("before-puback", 2)],
    ids=["before-rename", "after-rename", "after-commit", "before-puback"],
)
def test_an_agent_killed_on_the_write_path_loses_nothing_it_captured(
    mosquitto: Broker,
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
    point: str,
    nth: int,
) -> None:
    inbox = listen(mosquitto)
    crashed = run_agent(mosquitto, point, str(nth), "run", module="tests.crashpoint", **door_scene(6))
    assert crashed.exit_code(30) == -signal.SIGKILL, crashed.log
    assert f"crashpoint: killed at {point}" in crashed.log
    state = tmp_path / "state"
    on_disk = {TOPICS.still(p.parent.name, int(p.stem)): p.read_bytes() for p in state.glob("stills/*/*.jpg")}
    half_written = list(state.rglob("*.tmp"))
    with Outbox(StorageSettings(dir=state)) as outbox:
        waiting = [p.seq for p in outbox.pending(limit=1000)]
    captured = max([*waiting, *first_copies(inbox)])

    run_agent(mosquitto, **door_scene(0)).finish()  # a quiet scene: the restarted agent recovers and delivers
    inbox.wait(lambda b: max(first_copies(b), default=0) >= captured and ended(b) >= starts(b), 10, f"seq {captured}")
    by_event = check_every_row(inbox)
    assert not list(state.rglob("*.tmp")), "no temporary file remains"
    assert {topic: inbox.stills.get(topic) for topic in on_disk} == on_disk, "every saved still is sent"
    started = set(crashed.event_ids())
    interrupted = [m[-1] for m in by_event.values() if m[-1].get("interrupted")]
    recovered = [m for messages in by_event.values() for m in messages if m.get("recovered")]
    seqs = [e["seq"] for e in inbox.events]
    if point == "before-rename":
        assert half_written, "the crash left a half-written still"
    if point == "after-rename":
        assert [m["type"] for m in recovered] == ["still"], "the still saved without its row is sent"
    if point == "before-puback":
        assert set(by_event) <= started, "an event begun as the publisher died may not have reached the disk"
        assert len(seqs) > len(set(seqs)), "what the broker had acknowledged is sent again"
    else:
        assert set(by_event) == started
        assert len(interrupted) == 1, "the event the crash cut short is closed"


DISK = 3 * 1024 * 1024
ROOM = 800 * 1024
"""What the filler leaves free on the small disk: room for the database and a dozen stills."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted on the agent's state directory (it takes root)."""
    state = tmp_path / "state"
    state.mkdir()
    try:
        mount_tmpfs(state, DISK)
    except (OSError, subprocess.CalledProcessError) as err:
        said = err.stderr.strip().splitlines() if isinstance(err, subprocess.CalledProcessError) else []
        reason = said[0] if said else str(err)
        pytest.skip(f"cannot mount a small tmpfs on {state} to fill up (it takes root): {reason}")
    yield state
    unmount(state)


def whole(box: Inbox, event_id: str) -> bool:
    """The event's end has arrived, and each of its stills as a JPEG."""
    messages = [e for e in box.events if e["event_id"] == event_id]
    stills = {m["index"]: m for m in messages if m["type"] == "still"}
    end = next((m for m in messages if m["type"] == "end"), None)
    return (
        end is not None
        and len(stills) == end["stills"] > 0
        and all(not s.get("dropped") and s["topic"] in box.stills for s in stills.values())
    )


def still_of(line: str) -> tuple[str, int]:
    """(event id, index) of the still a log line names as ``stills/<event_id>/<index>.jpg``."""
    path = Path(next(word for word in line.split() if word.startswith("stills/")))
    return path.parent.name, int(path.stem)


def test_a_full_disk_drops_the_oldest_stills_keeps_every_event_and_recovers_once_space_is_freed(
    mosquitto: Broker, listen: Callable[[Broker], Inbox], run_agent: Callable[..., Child], small_disk: Path
) -> None:
    inbox = listen(mosquitto)
    mosquitto.stop()
    filler = small_disk / "filler"
    filler.write_bytes(bytes(DISK - ROOM))
    agent = run_agent(mosquitto, EDGECAM_STORAGE__MAX_BYTES=str(100 * DISK), **busy_door())

    # The broker is down and the disk fills up: the oldest stills go, their events stay.
    agent.wait_log("dropped the undelivered still", 60)
    agent.wait_log("agent: end ", 30, times=len(agent.lines("agent: end ")) + 2)
    gone = {
        still_of(line) for line in agent.lines("dropped the undelivered still") + agent.lines("outbox: still stills/")
    }
    taken = agent.stills()
    assert [still in gone for still in taken] == sorted((still in gone for still in taken), reverse=True), (
        "the oldest stills go first"
    )
    offline = {line.split("agent: end ")[1].split()[0] for line in agent.lines("agent: end ")}
    assert agent.process.poll() is None

    # The broker is back: every event arrives, the dropped stills say so and the stats count them.
    mosquitto.start()
    inbox.wait(lambda b: offline <= ended(b), 30, "the events of the outage")
    inbox.wait(
        lambda b: any(json.loads(s)["stills_dropped"] >= len(gone) for s in b.history.get("stats", [])),
        10,
        "stats counting the dropped stills",
    )

    # Space is freed: the stills taken from now on are kept and delivered.
    filler.unlink()
    later = len(agent.event_ids())
    inbox.wait(lambda b: any(whole(b, e) for e in agent.event_ids()[later:]), 30, "an event with all its stills")
    assert agent.process.poll() is None
    agent.process.send_signal(signal.SIGTERM)
    agent.finish(30)
    by_event = check_every_row(inbox)
    assert all(by_event[event_id][index].get("dropped") for event_id, index in gone)


class DiskWatch:
    """Adds up the sizes of a folder's files every few milliseconds in a thread, and keeps the largest total."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "DiskWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(0.003):
            self.largest = max(self.largest, used_bytes(self.folder))


def test_an_outage_longer_than_the_budget_stays_within_max_bytes(
    mosquitto: Broker, listen: Callable[[Broker], Inbox], run_agent: Callable[..., Child], tmp_path: Path
) -> None:
    budget = 1_500_000
    state = tmp_path / "state"
    inbox = listen(mosquitto)
    mosquitto.stop()
    with DiskWatch(state) as watch:
        agent = run_agent(mosquitto, EDGECAM_STORAGE__MAX_BYTES=str(budget), **door_scene(60))
        agent.wait_log("agent: end ", 60, times=60)
        during_outage = watch.largest
        mosquitto.start()
        inbox.wait(lambda b: len(ended(b)) == 60, 30, "60 door events")
        agent.finish()
    assert during_outage <= budget, f"{during_outage} bytes in {state} during the outage"
    assert watch.largest <= budget, f"{watch.largest} bytes in {state}"
    assert used_bytes(state) <= budget
    by_event = check_every_row(inbox)
    stills = [m for messages in by_event.values() for m in messages if m["type"] == "still"]
    assert sum(s["bytes"] for s in stills) > 2 * budget, "the outage took more stills than the budget holds"
    assert any(s.get("dropped") for s in stills)
    back = json.loads(inbox.history["stats"][0])  # published as the broker came back
    assert back["depth"] == len(first_copies(inbox))
    assert back["stills_dropped"] > 0
    assert back["bytes"] <= back["max_bytes"] == budget


class SeqTally:
    """A subscriber to the events that keeps only their seqs, so that it weighs next to nothing in memory."""

    def __init__(self, broker: Broker) -> None:
        self.seqs = array.array("q")
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_connect = lambda c, *_: c.subscribe(TOPICS.events, qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        seq = json.loads(message.payload)["seq"]
        with self._cond:
            self.seqs.append(seq)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(set(self.seqs)) >= count, timeout), f"{len(self.seqs)} arrived"

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


REPLAY = 10_000
REPLAY_MEMORY = 3_000_000
"""Python memory the publisher may use at its peak while it sends the queue (about 1 MB measured). Reading the
10,000 rows at once takes about 4 MB, their stills 20 MB more."""


def test_ten_thousand_queued_events_are_replayed_in_seq_order_in_bounded_memory(
    mosquitto_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = mosquitto_factory(config="max_queued_messages 0")  # the subscriber must not lose any to a queue limit
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage) as outbox:
        # 500 door events with a 40 kB still (3 rows each) among 4,250 without one (2 rows each).
        for n in range(4750):
            with_still = n % 9 == 0 and n < 4500
            for event, still in make_door_event(TOPICS, DEVICE, int(with_still), 40_000).rows:
                outbox.append(event, still)
        assert outbox.depth() == REPLAY
        queued = outbox.stats().bytes
    tally = SeqTally(broker)
    publisher = Publisher(broker.settings(), TOPICS, storage, DEVICE)
    tracemalloc.start()
    try:
        publisher.start()
        assert publisher.wait_idle(120)
        tally.wait(REPLAY, 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        publisher.stop()
        tally.stop()
    assert list(dict.fromkeys(tally.seqs)) == list(range(1, REPLAY + 1)), "first arrivals in seq order"
    assert peak < REPLAY_MEMORY < queued / 4, f"peak {peak} bytes for a queue of {queued} bytes"
