"""A message the broker will never take does not block the rest (issue 12, item 1), against a real Mosquitto.

The agent runs as a process on the simulated door at the Pi's default still size (2028x1520, about 300 kB a
JPEG) against a broker with ``max_packet_size 131072``: stated in the MQTT 5 CONNACK, set by the user for MQTT
3.1.1, or found out by the agent; and against a broker whose ACL refuses the stills topic.
"""

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgecam.outbox import jpeg_size
from tests.conftest import Broker
from tests.integration.test_agent import BASE, DEVICE, Inbox, start_agent
from tests.integration.test_reliability import Child, door_scene
from tests.test_mqtt_publisher import VALIDATOR

pytestmark = pytest.mark.integration

LIMIT = 131072
BIG_STILLS = {"EDGECAM_CAMERA__SIMULATED__WIDTH": "2028", "EDGECAM_CAMERA__SIMULATED__HEIGHT": "1520"}


def limited_broker(make: Callable[..., Broker], tmp_path: Path, extra: str = "") -> tuple[Broker, Path]:
    """A broker that refuses packets over LIMIT bytes, logging to a file it flushes line by line."""
    log = tmp_path / "broker-file.log"
    return make(config=f"max_packet_size {LIMIT}\nlog_dest file {log}\n{extra}"), log


def connections(log: Path) -> int:
    """How many times the agent's client has connected, by the broker's log."""
    return len(re.findall(rf"New client connected from \S+ as edgecam-{DEVICE} ", log.read_text()))


@pytest.fixture
def subscribe() -> Iterator[Callable[[Broker], Inbox]]:
    """Subscribe to everything under the device's base topic: ``subscribe(broker) -> Inbox``."""
    clients: list[mqtt.Client] = []

    def make(broker: Broker) -> Inbox:
        box = Inbox()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="itest-subscriber")
        client.on_message = box.on_message
        client.on_connect = lambda c, *_: c.subscribe(f"{BASE}/#", qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append(client)
        assert subscribed.wait(5), broker.log_text()
        return box

    yield make
    for client in clients:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """``run_agent(broker, **env)``: ``edgecam run`` on the simulated door with big stills."""
    children: list[Child] = []

    def run(broker: Broker, **env: str) -> Child:
        child = Child(start_agent(broker, tmp_path, None, **{**door_scene(2), **BIG_STILLS, **env}))
        children.append(child)
        return child

    yield run
    for child in children:
        child.kill()


def ends(box: Inbox) -> int:
    return len({e["event_id"] for e in box.events if e["type"] == "end"})


def first_copies(box: Inbox) -> list[dict[str, Any]]:
    """Each seq's first arrival; every seq from 1 arrived, first seen in order."""
    first: dict[int, dict[str, Any]] = {}
    for event in box.events:
        first.setdefault(event["seq"], event)
    assert list(first) == list(range(1, len(first) + 1)), "every seq, first seen in order"
    for event in box.events:
        VALIDATOR.validate(event)  # docs/event.schema.json
    return list(first.values())


def check_reencoded(box: Inbox) -> list[dict[str, Any]]:
    """Every event JSON arrived; every still arrived, re-encoded under LIMIT, exactly as its JSON describes it."""
    events = first_copies(box)
    assert ends(box) == 2
    stills = [e for e in events if e["type"] == "still"]
    assert stills
    for still in stills:
        jpeg = box.stills[still["topic"]]
        assert still["reencoded"] is True
        assert "dropped" not in still
        assert hashlib.sha256(jpeg).hexdigest() == still["sha256"]
        assert len(jpeg) == still["bytes"] < LIMIT
        assert jpeg_size(jpeg) == (still["width"], still["height"])
    assert box.retained["snapshot"] == box.stills[stills[-1]["topic"]]
    return stills


def stats_with(box: Inbox, key: str, count: int) -> Callable[[Inbox], bool]:
    def check(b: Inbox) -> bool:
        stats = b.retained.get("stats")
        return stats is not None and json.loads(stats).get(key) == count

    return check


def test_stills_over_the_maximum_packet_size_in_the_connack_arrive_reencoded_without_a_reconnect(
    mosquitto_factory: Callable[..., Broker],
    subscribe: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)
    box = subscribe(broker)
    agent = run_agent(broker)
    box.wait(lambda b: ends(b) == 2 and len(b.stills) == sum(e["type"] == "still" for e in b.events), 20, "2 ends")
    stills = check_reencoded(box)
    box.wait(stats_with(box, "stills_reencoded", len(stills)), 10, "stats counting the re-encoded stills")
    output = agent.finish()
    assert connections(log) == 1, "no reconnect loop"
    assert "lost the connection" not in output
    told = agent.lines(f"{LIMIT} bytes")
    assert len(told) == 1, output
    for setting in ("capture.jpeg_quality", "camera.still_width", "max_packet_size"):
        assert setting in told[0]


def test_mqtt_3_1_1_with_mqtt_max_packet_size_set_reencodes_without_a_reconnect(
    mosquitto_factory: Callable[..., Broker],
    subscribe: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)
    box = subscribe(broker)
    agent = run_agent(broker, EDGECAM_MQTT__PROTOCOL="3.1.1", EDGECAM_MQTT__MAX_PACKET_SIZE=str(LIMIT))
    box.wait(lambda b: ends(b) == 2 and len(b.stills) == sum(e["type"] == "still" for e in b.events), 20, "2 ends")
    check_reencoded(box)
    agent.finish()
    assert connections(log) == 1, "no reconnect loop"


def test_a_limit_the_broker_does_not_state_is_found_out_said_once_and_then_respected(
    mosquitto_factory: Callable[..., Broker],
    subscribe: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)  # MQTT 3.1.1 has no way to say it
    box = subscribe(broker)
    agent = run_agent(broker, EDGECAM_MQTT__PROTOCOL="3.1.1")
    box.wait(lambda b: ends(b) == 2 and len(b.stills) == sum(e["type"] == "still" for e in b.events), 30, "2 ends")
    check_reencoded(box)
    output = agent.finish()
    found = agent.lines("mqtt.max_packet_size")
    assert 1 <= len(found) <= 2, output  # at most one more after a first guess that was still too big
    assert "lost the connection" in output
    assert connections(log) <= 1 + 2 * 3, "a few losses, then no more"
    assert agent.lines("sending stills under") or agent.lines("too large for the broker"), output
    delays = [float(line.rsplit(" in ", 1)[1].split()[0]) for line in agent.lines("; reconnecting in ")]
    assert len(delays) >= 2
    assert delays[1] > 1.2 * delays[0], "a connection lost at once does not reset the backoff"


def acl_without_stills(tmp_path: Path) -> Path:
    """A Mosquitto ACL that lets every client use everything under edgecam/ but publish a still."""
    path = tmp_path / "no-stills.acl"
    path.write_text("topic readwrite edgecam/#\ntopic deny edgecam/+/events/+/stills/+\n")
    return path


def test_an_acl_that_forgets_the_stills_topic_drops_the_stills_and_lets_every_event_through(
    mosquitto_factory: Callable[..., Broker],
    subscribe: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    log = tmp_path / "broker-file.log"
    broker = mosquitto_factory(config=f"acl_file {acl_without_stills(tmp_path)}\nlog_dest file {log}")
    box = subscribe(broker)
    agent = run_agent(broker, **{k: "640" if "WIDTH" in k else "480" for k in BIG_STILLS})
    box.wait(lambda b: ends(b) == 2, 20, "2 ends")
    events = first_copies(box)
    stills = [e for e in events if e["type"] == "still"]
    assert stills
    box.wait(stats_with(box, "stills_refused", len(stills)), 10, "stats counting the refused stills")
    output = agent.finish()
    assert not box.stills, "the broker never takes a still"
    assert all(not e.get("dropped") for e in events), "the broker had each still JSON before it refused its JPEG"
    assert connections(log) == 1, "the events behind a refused still are not held back"
    told = agent.lines("Not authorized")
    assert len(told) == 1, output
    assert f"edgecam/{DEVICE}/events/+/stills/+" in told[0]
