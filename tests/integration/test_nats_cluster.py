"""The 3-node NATS JetStream cluster of docs/nats (tests/nats_cluster.py) as MQTT 3.1.1 clients see it.

Real nats-server 2.9 processes and paho clients; no agent. What is stored (retained messages, sessions, queued
QoS 1 messages) must outlive the node it was sent to, and docs/nats/devices.conf must keep each door to its topics.
"""

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import Received, wait_until
from tests.nats_cluster import NatsCluster


@pytest.fixture
def nats_cluster_factory(tmp_path: Path) -> Iterator[Callable[..., NatsCluster]]:
    """Start clusters: ``make(devices=False) -> NatsCluster`` (3 nodes, ready); all are stopped after the test."""
    clusters: list[NatsCluster] = []

    def make(devices: bool = False) -> NatsCluster:
        cluster = NatsCluster(tmp_path / f"nats-{len(clusters)}", devices=devices)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


class Client:
    """One paho MQTT 3.1.1 client connected to one node, recording what it receives and its SUBACKs."""

    def __init__(
        self,
        cluster: NatsCluster,
        node: int,
        user: str = "",
        client_id: str = "",
        clean_session: bool = True,
        will: str = "",
    ) -> None:
        """Connect (without waiting for the CONNACK); ``will``: a topic for a retained QoS 1 ``offline`` will."""
        self.cluster = cluster
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:8]}"
        self.received: list[Received] = []
        self.session_present: bool | None = None
        self._granted: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            self.client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if user:
            self._client.username_pw_set(user, cluster.password(user))
        if will:
            self._client.will_set(will, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect("127.0.0.1", cluster.mqtt_ports[node], 30)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Whether the node accepted the connection (a CONNACK) within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self.session_present is not None, timeout)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def suback(self, topic: str, timeout: float = 10.0) -> ReasonCode | None:
        """Subscribe with QoS 1; the SUBACK's code, None without one within ``timeout`` seconds."""
        _, mid = self._client.subscribe(topic, 1)
        assert mid is not None
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._granted, timeout):
                return None
            return self._granted[mid][0]

    def subscribe(self, topic: str) -> bool:
        """Subscribe with QoS 1; whether the SUBACK granted it (the test fails without a SUBACK in 10 s)."""
        code = self.suback(topic)
        assert code is not None, f"no SUBACK for {topic}:\n{self._logs()}"
        return not code.is_failure

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the PUBACK."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}:\n{self._logs()}"

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: condition(self.received), timeout):
                pytest.fail(f"{self.client_id} timed out; received {self.received}")

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.received if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _logs(self) -> str:
        return "\n".join(f"--- node {i} ---\n{self.cluster.log_text(i)[-3000:]}" for i in range(self.cluster.nodes))

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        assert not reason.is_failure, reason
        with self._cond:
            self.session_present = flags.session_present
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        with self._cond:
            self._granted[mid] = reasons
            self._cond.notify_all()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """Connect clients: ``connect(cluster, node, user="", client_id="", clean_session=True, will="")``."""
    made: list[Client] = []

    def connect(
        cluster: NatsCluster, node: int, user: str = "", client_id: str = "", clean_session: bool = True, will: str = ""
    ) -> Client:
        client = Client(cluster, node, user, client_id, clean_session, will)
        made.append(client)
        assert client.wait_connected(10), client._logs()
        return client

    yield connect
    for client in made:
        client.close()


def test_a_retained_message_is_on_every_node_and_outlives_the_node_it_was_sent_to(
    nats_cluster_factory: Callable[..., NatsCluster], clients: Callable[..., Client]
) -> None:
    cluster = nats_cluster_factory()
    topic = "edgecam/door-1/snapshot"
    availability = "edgecam/door-1/availability"
    still = bytes(range(256)) * 1200  # ~300 kB, the size of a large still
    door = clients(cluster, 0, will=availability)
    door.publish(topic, still, retain=True)
    door.publish(availability, b"online", retain=True)
    retained = {Received(topic, still, True), Received(availability, b"online", True)}

    for node in (1, 2):
        reader = clients(cluster, node)
        assert reader.subscribe("edgecam/door-1/#")
        reader.wait_for(lambda r: len(r) >= 2)
        assert set(reader.received) == retained

    cluster.kill(0)
    assert len(cluster.pids()) == 2
    # The door's last will dies with node 0, which held its connection: no node publishes "offline". The
    # retained "online" stays until the door's agent reconnects to another node (below: still "online").

    # Until the streams that had their leader on node 0 elect another, a CONNECT on node 1 may get no CONNACK
    # for seconds (nats-server logs "unable to connect: lookup sessions stream ... timeout"): try again.
    def retained_on_node_1() -> bool:
        reader = Client(cluster, 1)
        try:
            return (
                reader.wait_connected(5)
                and (code := reader.suback("edgecam/door-1/#", 5)) is not None
                and not code.is_failure
                and wait_until(lambda: set(reader.received) == retained, 2)
            )
        finally:
            reader.close()

    assert wait_until(retained_on_node_1, 30, interval=0.5), cluster.log_text(1)[-3000:]


def test_a_door_publishes_and_reads_only_its_own_topics_and_a_consumer_reads_all(
    nats_cluster_factory: Callable[..., NatsCluster], clients: Callable[..., Client]
) -> None:
    cluster = nats_cluster_factory(devices=True)
    consumer = clients(cluster, 1, "homeassistant")
    assert consumer.subscribe("edgecam/#")
    door_1 = clients(cluster, 0, "door-1")
    door_2 = clients(cluster, 2, "door-2")

    # Refused publishes still get their PUBACK (MQTT 3.1.1 has no way to say no) and the connection stays up:
    # nats-server drops the message and logs a "Publish Violation".
    door_1.publish("edgecam/door-2/events", b'{"forged": true}')
    door_1.publish("edgecam/door-2/availability", b"offline", retain=True)
    door_1.publish("edgecam/door-1/set/detect", b"OFF")  # not even its own commands
    assert door_1.connected
    door_1.publish("edgecam/door-1/events", b'{"seq": 1}')
    door_2.publish("edgecam/door-2/events", b'{"seq": 1}')
    consumer.wait_for(lambda r: len(r) >= 2)
    assert sorted((m.topic, m.payload) for m in consumer.received) == [
        ("edgecam/door-1/events", b'{"seq": 1}'),
        ("edgecam/door-2/events", b'{"seq": 1}'),
    ]
    log = cluster.log_text(0)
    for subject in ("edgecam.door-2.events", "edgecam.door-2.availability", "edgecam.door-1.set.detect"):
        assert f'Publish Violation - User "door-1", Subject "{subject}"' in log

    # A refused subscription is a failed SUBACK (0x80); the connection stays up.
    assert not door_1.subscribe("edgecam/door-2/set/#")
    assert not door_1.subscribe("edgecam/#")
    assert door_1.subscribe("edgecam/door-1/set/#")
    assert door_1.subscribe("edgecam/door-1/ack")
    assert door_1.connected

    consumer.publish("edgecam/door-2/set/detect", b"OFF")
    consumer.publish("edgecam/door-1/set/detect", b"ON")
    consumer.publish("edgecam/door-1/ack", b'["e1"]')
    door_1.wait_for(lambda r: len(r) >= 2)
    assert [(m.topic, m.payload) for m in door_1.received] == [
        ("edgecam/door-1/set/detect", b"ON"),
        ("edgecam/door-1/ack", b'["e1"]'),
    ]
    consumer.wait_for(lambda r: len(r) >= 5)
    assert [m.topic for m in consumer.received[2:]] == [
        "edgecam/door-2/set/detect",
        "edgecam/door-1/set/detect",
        "edgecam/door-1/ack",
    ]
    # A consumer cannot speak for a door.
    consumer.publish("edgecam/door-1/events", b'{"forged": true}')
    assert 'Publish Violation - User "homeassistant", Subject "edgecam.door-1.events"' in cluster.log_text(1)


def test_a_persistent_session_gets_what_was_queued_while_away_on_another_node(
    nats_cluster_factory: Callable[..., NatsCluster], clients: Callable[..., Client]
) -> None:
    cluster = nats_cluster_factory()
    topic = "edgecam/door-1/events"
    listener = clients(cluster, 2, client_id="listen-1", clean_session=False)
    assert listener.session_present is False
    assert listener.subscribe(topic)
    listener.close()

    publisher = clients(cluster, 0)
    sent = [f'{{"seq": {seq}}}'.encode() for seq in range(1, 6)]
    for payload in sent:
        publisher.publish(topic, payload)

    back = clients(cluster, 1, client_id="listen-1", clean_session=False)
    assert back.session_present is True
    back.wait_for(lambda r: len(r) >= len(sent))
    assert [m.payload for m in back.received] == sent
