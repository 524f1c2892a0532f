"""Two agents with one device_id (the default is the host name, and Raspberry Pi OS names every Pi `raspberrypi`),
two `edgecam run` processes with their own state directories against a real Mosquitto: one keeps the device, the
other says so in one line and publishes nothing while the first is online, the broker sees no more session
takeovers, and the second delivers its own events once the first has stopped."""

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.test_agent import DEVICE, Inbox, start_agent
from tests.integration.test_reliability import QUICK_RECONNECT, Child

pytestmark = pytest.mark.integration

CLIENT_ID = f"edgecam-{DEVICE}"
TAKEOVER = f"Client {CLIENT_ID} already connected, closing old connection"
"""What Mosquitto 2.0 logs when a CONNECT takes the session of a connected client."""
ONE_LINE = "so this agent publishes nothing"
"""The line of the agent that yields (it also names the device id and what to change)."""


def door_every_2_s() -> dict[str, str]:
    """The simulated door opening every 2 s in real time, for ever, a few small stills each time."""
    return {
        "EDGECAM_CAMERA__REALTIME": "true",
        "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "1",
        "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "2",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.4",
        "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.2",
        "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.4",
        "EDGECAM_MOTION__EVENT_GAP": "0.5",
        "EDGECAM_MOTION__CALIBRATION": "0.5",
        **QUICK_RECONNECT,
    }


@pytest.fixture
def broker_log(tmp_path: Path) -> Path:
    """Mosquitto's log as a file it writes line by line (its stdout to a file is block-buffered)."""
    return tmp_path / "broker.log"


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Broker], broker_log: Path) -> Broker:
    return mosquitto_factory(config=f"log_dest file {broker_log}")


def takeovers(broker_log: Path) -> int:
    """How many times a CONNECT has taken the agents' session so far."""
    return broker_log.read_text(errors="replace").count(TAKEOVER) if broker_log.exists() else 0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def arrivals(box: Inbox, owner: Callable[[str], str]) -> list[tuple[str, int]]:
    """(agent, seq) of each event message's first copy, in arrival order; repeats (at least once) left out."""
    with box.cond:
        events = list(box.events)
    seen: set[tuple[str, int]] = set()
    order: list[tuple[str, int]] = []
    for event in events:
        key = (event["event_id"], event["seq"])
        if key not in seen:
            seen.add(key)
            order.append((owner(event["event_id"]), event["seq"]))
    return order


def runs(order: list[tuple[str, int]]) -> list[str]:
    """Which agent published each unbroken run of messages."""
    result: list[str] = []
    for agent, _ in order:
        if not result or result[-1] != agent:
            result.append(agent)
    return result


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_agents_with_one_device_id_take_turns_without_flapping_or_mixing_seq(
    protocol: str, mosquitto: Broker, broker_log: Path, inbox: Inbox, agents: list[Child], tmp_path: Path
) -> None:
    env = {**door_every_2_s(), "EDGECAM_MQTT__PROTOCOL": protocol}
    first = Child(start_agent(mosquitto, tmp_path / "first", None, **env))
    agents.append(first)
    inbox.wait(lambda b: b.retained.get("availability") == b"online", 20, "the first agent online")
    first.wait_log("agent: end ", 20)
    second = Child(start_agent(mosquitto, tmp_path / "second", None, **env))
    agents.append(second)
    named = {"first": first, "second": second}

    deadline = time.monotonic() + 30
    while not any(child.lines(ONE_LINE) for child in agents):
        assert time.monotonic() < deadline, (
            f"no duplicate line within 30 s; takeovers: {takeovers(broker_log)}\n"
            f"first:\n{first.log}\nsecond:\n{second.log}"
        )
        time.sleep(0.1)
    yielder_name = "first" if first.lines(ONE_LINE) else "second"
    holder_name = "second" if yielder_name == "first" else "first"
    yielder, holder = named[yielder_name], named[holder_name]
    [line] = yielder.lines(ONE_LINE)
    assert f"'{DEVICE}'" in line, line
    assert "EDGECAM_DEVICE_ID" in line, line

    # No more session takeovers, while the holder goes on publishing.
    taken = takeovers(broker_log)
    lost = [len(child.lines("lost the connection")) for child in agents]
    events_before = len(holder.lines("agent: end "))
    holder.wait_log("agent: end ", 15, times=events_before + 2)
    time.sleep(1.0)  # a window after two more events: the flapping was every fraction of a second
    assert takeovers(broker_log) == taken, "the two agents still take each other's session"
    assert [len(child.lines("lost the connection")) for child in agents] == lost
    assert len(yielder.lines(ONE_LINE)) == 1, yielder.log

    def owner(event_id: str) -> str:
        return yielder_name if event_id in yielder.event_ids() else holder_name

    last_holder_event = holder.event_ids()[-1]
    inbox.wait(lambda b: any(e["event_id"] == last_holder_event for e in b.events), 10, "the holder's latest event")
    while_holder_online = arrivals(inbox, owner)
    assert runs(while_holder_online)[-1] == holder_name
    assert runs(while_holder_online).count(holder_name) == 1, runs(while_holder_online)

    # The holder stops: the other resumes and delivers what it captured meanwhile, without mixing.
    holder.process.send_signal(signal.SIGTERM)
    holder.finish(20)
    waiting = yielder.event_ids()
    assert waiting, "the yielding agent captured door events meanwhile"
    inbox.wait(
        lambda b: set(waiting) <= {e["event_id"] for e in b.events if e["type"] == "end"},
        30,
        "the yielding agent's events after the holder stopped",
    )
    order = arrivals(inbox, owner)
    assert runs(order).count(holder_name) == 1, runs(order)
    for name in named:
        seqs = [seq for agent, seq in order if agent == name]
        assert seqs == sorted(seqs), f"{name}: seq first seen in order"
    yielder.process.send_signal(signal.SIGTERM)
    yielder.finish(20)
