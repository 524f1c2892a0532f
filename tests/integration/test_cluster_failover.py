"""Two doors on a 3-node NATS JetStream cluster (docs/nats/, docs/fleet.md): their node is SIGKILLed mid-burst.

The agents are real ``edgecam run`` processes on the simulated camera, with ``mqtt.hosts`` naming the three nodes
and the per-device permissions of docs/nats/devices.conf; the consumer keeps a persistent session, is away while the
node dies and comes back on another node.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from edgecam.broker_settings import MqttSettings
from edgecam.config import StorageSettings
from edgecam.mqtt.subscriber import Subscriber
from edgecam.outbox import Outbox
from edgecam.sources.simulated import DOOR_ZONE
from tests.conftest import wait_until
from tests.integration.test_agent import ROOT
from tests.integration.test_reliability import Child
from tests.nats_cluster import NatsCluster

pytestmark = pytest.mark.integration

DOORS = ("door-1", "door-2")
CONSUMER = "homeassistant"
BURST = {
    "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "1.0",
    "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "2",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DURATION": "20",
    "EDGECAM_MOTION__CALIBRATION": "0.5",
    "EDGECAM_MOTION__EVENT_GAP": "0.3",
}
"""Twenty seconds of scene in real time, the door swinging every 2 s from 1 s: about ten events per door."""


class Consumer:
    """A persistent-session subscriber (``edgecam.mqtt.subscriber.Subscriber``) whose session outlives each instance."""

    FILTERS = ("edgecam/+/events", "edgecam/+/events/+/stills/+", "edgecam/+/availability", "edgecam/+/snapshot")

    def __init__(self, password_file: Path) -> None:
        self.password_file = password_file
        self.received: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscriber: Subscriber | None = None

    def start(self, host: str, persistent: bool = True) -> None:
        settings = MqttSettings(
            hosts=[host],
            protocol="3.1.1",
            username=CONSUMER,
            password_file=self.password_file,
            reconnect_min=0.2,
            reconnect_max=1.0,
            connect_spread=0,
        )
        client_id = "edgecam-test-consumer" if persistent else ""
        # A reader of retained messages alone subscribes at QoS 0 (Subscriber's docstring says why).
        self._subscriber = Subscriber(settings, self.FILTERS, self._take, client_id, persistent, 1 if persistent else 0)
        self._subscriber.start()
        assert self._subscriber.wait_subscribed(15), f"no SUBACK from {host}"

    def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None

    def _take(self, topic: str, payload: bytes, retained: bool) -> None:
        with self._lock:
            self.received.append((topic, payload, retained))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.received if t == topic]

    def events(self, door: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.on(f"edgecam/{door}/events")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats", devices=True)
    cluster.start()
    yield cluster
    cluster.stop()


def start_door(cluster: NatsCluster, tmp_path: Path, door: str, **scene: str) -> Child:
    """``edgecam run`` for ``door`` on the simulated camera, trying the nodes as listed (node 0 first)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    environ.update(
        EDGECAM_DEVICE_ID=door,
        EDGECAM_MQTT__HOSTS=json.dumps(cluster.hosts),
        EDGECAM_MQTT__HOSTS_ORDER="listed",
        EDGECAM_MQTT__PROTOCOL="3.1.1",
        EDGECAM_MQTT__USERNAME=door,
        EDGECAM_MQTT__PASSWORD_FILE=str(cluster.password_file(door)),
        EDGECAM_MQTT__CONNECT_SPREAD="0",
        EDGECAM_MQTT__RECONNECT_MIN="0.2",
        EDGECAM_MQTT__RECONNECT_MAX="2",
        EDGECAM_MQTT__STATS_INTERVAL="1",
        EDGECAM_STORAGE__DIR=str(tmp_path / door),
        EDGECAM_CAMERA__SOURCE="simulated",
        EDGECAM_MOTION__ZONE=json.dumps(DOOR_ZONE),
        **scene,
    )
    argv = [sys.executable, "-m", "edgecam", "run"]
    return Child(
        subprocess.Popen(argv, env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )


def arrived(consumer: Consumer, door: str, agent: Child) -> bool:
    """The consumer has the end of every event the agent started and a message for every still it took."""
    events = consumer.events(door)
    ended = {m["event_id"] for m in events if m["type"] == "end"}
    stills = {m["seq"] for m in events if m["type"] == "still"}
    return ended >= set(agent.event_ids()) and len(stills) >= len(agent.stills())


def check_door(consumer: Consumer, door: str, agent: Child) -> int:
    """Every event message and still of ``door`` arrived, first arrivals in seq order; the number of repeats."""
    first: dict[int, dict[str, Any]] = {}
    events = consumer.events(door)
    for message in events:
        first.setdefault(message["seq"], message)
    missing = sorted(set(range(1, max(first) + 1)) - set(first))
    assert not missing, f"{door}: seqs {missing} never arrived (first arrivals {list(first)})"
    assert list(first) == sorted(first), f"{door}: first arrivals out of order: {list(first)}"
    started = [m["event_id"] for m in first.values() if m["type"] == "start"]
    assert started == agent.event_ids(), f"{door}: every event the agent started, in order"
    ended = {m["event_id"] for m in first.values() if m["type"] == "end"}
    assert ended == set(started), f"{door}: every event ended"
    stills = [m for m in first.values() if m["type"] == "still"]
    assert len(stills) == len(agent.stills()), f"{door}: every still the agent took"
    for still in stills:
        jpegs = consumer.on(still["topic"])
        assert jpegs, f"{door}: the JPEG of {still['topic']}"
        assert all(hashlib.sha256(jpeg).hexdigest() == still["sha256"] for jpeg in jpegs)
    return len(events) - len(first)


def current_broker(agent: Child) -> str:
    """The broker the agent last connected to (``host:port``), from its log."""
    return agent.lines("mqtt: connected to broker ")[-1].split("mqtt: connected to broker ", 1)[1].split()[0]


def test_two_doors_lose_nothing_when_their_node_is_killed_mid_burst(cluster: NatsCluster, tmp_path: Path) -> None:
    node = cluster.hosts
    consumer = Consumer(cluster.password_file(CONSUMER))
    consumer.start(node[2])
    agents = {door: start_door(cluster, tmp_path, door, **BURST) for door in DOORS}
    for agent in agents.values():
        agent.wait_log("mqtt: connected to broker ", 30)
    assert wait_until(lambda: all(len(consumer.events(door)) >= 4 for door in DOORS), 20), consumer.received
    # Both try node 0 first; a node slow to answer on a loaded machine sends one on to node 1.
    victim = current_broker(agents[DOORS[0]])
    moving = [agent for agent in agents.values() if current_broker(agent) == victim]
    survivors = [host for host in node if host != victim]

    connects = [len(agent.lines("mqtt: connected to broker ")) for agent in moving]
    consumer.stop()  # away while the node dies; its session waits on the surviving nodes
    cluster.kill(node.index(victim))
    for agent, before in zip(moving, connects, strict=True):
        agent.wait_log("mqtt: connected to broker ", 30, times=before + 1)
        assert current_broker(agent) in survivors
    consumer.start(next(host for host in survivors if host != node[2]))  # back, on another node than before

    for agent in agents.values():
        agent.finish(60)  # the scene ends: every event has been taken and the agent has stopped
    for door, agent in agents.items():
        with Outbox(StorageSettings(dir=tmp_path / door)) as outbox:
            assert outbox.depth() == 0, f"{door}: everything delivered before the agent stopped"
        assert wait_until(partial(arrived, consumer, door, agent), 30), f"{door}: {consumer.events(door)}"
    assert wait_until(lambda: all(consumer.on(f"edgecam/{d}/availability")[-1:] == [b"offline"] for d in DOORS), 20)
    repeats = {door: check_door(consumer, door, agent) for door, agent in agents.items()}
    print(f"events per door {[len(a.event_ids()) for a in agents.values()]}, repeats {repeats}")
    consumer.stop()

    # The retained states and the last snapshot are on every surviving node.
    for host in survivors:
        fresh = Consumer(consumer.password_file)
        fresh.start(host, persistent=False)
        assert wait_until(lambda: all(fresh.on(f"edgecam/{d}/snapshot") for d in DOORS), 10), host  # noqa: B023
        for door in DOORS:
            assert fresh.on(f"edgecam/{door}/availability") == [b"offline"]
            last_still = [m for m in consumer.events(door) if m["type"] == "still"][-1]
            assert hashlib.sha256(fresh.on(f"edgecam/{door}/snapshot")[-1]).hexdigest() == last_still["sha256"]
        fresh.stop()

    # The last will fires on the node the agent moved to.
    consumer.start(survivors[-1])
    again = start_door(cluster, tmp_path, DOORS[0], EDGECAM_CAMERA__SIMULATED__DURATION="60")
    again.wait_log("mqtt: connected to broker ", 30)
    assert current_broker(again) in survivors
    assert wait_until(lambda: consumer.on(f"edgecam/{DOORS[0]}/availability")[-1:] == [b"online"], 10)
    again.kill()
    assert wait_until(lambda: consumer.on(f"edgecam/{DOORS[0]}/availability")[-1:] == [b"offline"], 30)
    consumer.stop()
