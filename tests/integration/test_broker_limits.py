"""A message the broker will never take does not block the rest (issue 12, item 1), against a real Mosquitto.

The agent runs as a process on the simulated door at the Pi's default still size (2028x1520, about 300 kB a
JPEG) against a broker with ``max_packet_size 131072``: stated in the MQTT 5 CONNACK, set by the user for MQTT
3.1.1, or found out by the agent; and against a broker whose ACL refuses the stills topic. The publisher alone
restores a big snapshot from an earlier run to a broker with a smaller unstated limit, and meets an ACL that
refuses the snapshot.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgecam.capture import fit_jpeg
from edgecam.outbox import jpeg_size
from tests.conftest import Broker, Collector, DoorEvent, make_door_event
from tests.integration.test_agent import DEVICE, Inbox, start_agent
from tests.integration.test_reliability import Child, door_scene
from tests.test_mqtt_publisher import TOPICS, VALIDATOR, Rig

pytestmark = pytest.mark.integration

LIMIT = 131072
SMALL_LIMIT = 65536
BIG_STILLS = {"EDGECAM_CAMERA__SIMULATED__WIDTH": "2028", "EDGECAM_CAMERA__SIMULATED__HEIGHT": "1520"}


def limited_broker(make: Callable[..., Broker], tmp_path: Path, extra: str = "") -> tuple[Broker, Path]:
    """A broker that refuses packets over LIMIT bytes, logging to a file it flushes line by line."""
    log = tmp_path / "broker-file.log"
    return make(config=f"max_packet_size {LIMIT}\nlog_dest file {log}\n{extra}"), log


def connections(log: Path) -> int:
    """How many times the agent's client has connected, by the broker's log."""
    return len(re.findall(rf"New client connected from \S+ as edgecam-{DEVICE} ", log.read_text()))


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


def two_events_whole(box: Inbox) -> bool:
    """Both door events have ended and every still JSON has its JPEG."""
    return ends(box) == 2 and len(box.stills) == sum(e["type"] == "still" for e in box.events)


def stats_with(box: Inbox, key: str, count: int) -> Callable[[Inbox], bool]:
    def check(b: Inbox) -> bool:
        stats = b.retained.get("stats")
        return stats is not None and json.loads(stats).get(key) == count

    return check


def test_stills_over_the_maximum_packet_size_in_the_connack_arrive_reencoded_without_a_reconnect(
    mosquitto_factory: Callable[..., Broker],
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)
    box = listen(broker)
    agent = run_agent(broker)
    box.wait(two_events_whole, 20, "2 ends")
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
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)
    box = listen(broker)
    agent = run_agent(broker, EDGECAM_MQTT__PROTOCOL="3.1.1", EDGECAM_MQTT__MAX_PACKET_SIZE=str(LIMIT))
    box.wait(two_events_whole, 20, "2 ends")
    check_reencoded(box)
    agent.finish()
    assert connections(log) == 1, "no reconnect loop"


def test_a_limit_the_broker_does_not_state_is_found_out_said_once_and_then_respected(
    mosquitto_factory: Callable[..., Broker],
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    broker, log = limited_broker(mosquitto_factory, tmp_path)  # MQTT 3.1.1 has no way to say it
    box = listen(broker)
    agent = run_agent(broker, EDGECAM_MQTT__PROTOCOL="3.1.1")
    box.wait(two_events_whole, 30, "2 ends")
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
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    tmp_path: Path,
) -> None:
    log = tmp_path / "broker-file.log"
    broker = mosquitto_factory(config=f"acl_file {acl_without_stills(tmp_path)}\nlog_dest file {log}")
    box = listen(broker)
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
    told = [line for line in agent.lines("Not authorized") if "discovery config" not in line]  # the ACL has no HA lines
    assert len(told) == 1, output
    assert f"edgecam/{DEVICE}/events/+/stills/+" in told[0]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def big_jpeg() -> tuple[bytes, int, int]:
    """A real JPEG at the Pi's default still size, about 300 kB: smooth colour blobs, as re-encoding sees a scene."""
    width, height = 2028, 1520
    blobs = np.random.default_rng(12).integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    image = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes(), width, height


def door_event_with(jpeg: bytes, width: int, height: int) -> DoorEvent:
    """A door event of one still, ``jpeg``."""
    door = make_door_event(TOPICS, "front-door", n_stills=1)
    (start, (event, still), end) = door.rows
    assert still is not None
    digest = hashlib.sha256(jpeg).hexdigest()
    described = {"sha256": digest, "bytes": len(jpeg), "width": width, "height": height}
    event = dataclasses.replace(event, extra={**event.extra, **described})
    still = dataclasses.replace(still, jpeg=jpeg, sha256=digest, width=width, height=height)
    return DoorEvent(door.event_id, [start, (event, still), end])


def test_a_snapshot_from_an_earlier_run_over_an_unstated_limit_is_found_out_said_once_and_sent_under_it(
    mosquitto_factory: Callable[..., Broker],
    collector_factory: Callable[..., Collector],
    rig: Rig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    fit = functools.partial(fit_jpeg, quality=85)
    jpeg, width, height = big_jpeg()
    assert len(jpeg) > 4 * SMALL_LIMIT

    # An earlier run against a broker without a limit delivered the big still: it is the snapshot to restore.
    unlimited = mosquitto_factory()
    first = rig.publisher(unlimited.settings(protocol="3.1.1"), fit_still=fit)
    rig.append(door_event_with(jpeg, width, height), first)
    assert first.wait_idle(10), caplog.text
    first.stop()
    assert rig.outbox.depth() == 0

    # Restarted against a broker that drops larger packets without saying so (MQTT 3.1.1), with no new event.
    log = tmp_path / "limited-broker.log"
    broker = mosquitto_factory(config=f"max_packet_size {SMALL_LIMIT}\nlog_dest file {log}")
    caplog.clear()
    rig.publisher(broker.settings(protocol="3.1.1"), fit_still=fit)
    watcher = collector_factory(broker)
    watcher.wait_for(lambda c: bool(c.on(TOPICS.snapshot)), 20)
    late = collector_factory(broker)  # subscribes after that: it gets what the broker retained
    late.wait_for(lambda c: bool(c.on(TOPICS.snapshot)))
    (snapshot,) = late.on(TOPICS.snapshot)
    assert snapshot.retain
    assert len(snapshot.payload) < SMALL_LIMIT
    assert jpeg_size(snapshot.payload) is not None

    # 3 losses to find a limit out (324 kB halved: 162 kB), then one for each halving (81 kB, 40 kB), no more.
    assert len(re.findall(r"New client connected from \S+ as edgecam-front-door ", log.read_text())) <= 1 + 3 + 2
    (found,) = [r.getMessage() for r in caplog.records if "mqtt.max_packet_size" in r.getMessage()]
    assert "dropped the connection 3 times running with the snapshot (a " in found
    assert "seq=0" not in caplog.text


def acl_without_snapshot(tmp_path: Path) -> Path:
    """A Mosquitto ACL that lets every client use everything under edgecam/ but publish the snapshot."""
    path = tmp_path / "no-snapshot.acl"
    path.write_text("topic readwrite edgecam/#\ntopic deny edgecam/+/snapshot\n")
    return path


def test_an_acl_that_refuses_the_snapshot_is_said_sparingly_and_holds_nothing_back(
    mosquitto_factory: Callable[..., Broker],
    collector_factory: Callable[..., Collector],
    rig: Rig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    broker = mosquitto_factory(config=f"acl_file {acl_without_snapshot(tmp_path)}")
    collector = collector_factory(broker)
    publisher = rig.publisher(broker.settings())
    door = rig.door_event(n_stills=9)
    seqs = rig.append(door, publisher)
    assert publisher.wait_idle(10), caplog.text
    collector.wait_for(lambda c: c.seqs(TOPICS) == seqs)
    assert len(collector.on(TOPICS.still(door.event_id, 9))) == 1
    assert rig.outbox.depth() == 0

    told = [r.getMessage() for r in caplog.records if "snapshot" in r.getMessage()]
    assert len(told) == 1, told  # the 1st of 9, then the 10th, 100th, ...
    assert "Not authorized" in told[0]
    assert f"{TOPICS.base}/snapshot" in told[0]
