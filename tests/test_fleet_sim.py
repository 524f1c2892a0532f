"""scripts/fleet_sim.py: its light agents deliver everything, and send exactly what a real Publisher sends."""

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgecam.config import StorageSettings
from edgecam.models import Topics
from edgecam.mqtt.claim import instance_id
from edgecam.mqtt.publisher import Publisher
from edgecam.outbox import Outbox
from tests.conftest import MOSQUITTO, Broker, make_door_event, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fleet_sim  # noqa: E402

pytestmark = pytest.mark.integration

DEVICE = "parity-door"
Sent = tuple[str, bytes, int, bool, bool]
"""(topic, payload, QoS, retain, has a Message Expiry Interval) of one PUBLISH as the broker passed it on."""


class Wire:
    """Every message on a broker as it was published: QoS 2 subscription (delivered at the publisher's QoS),
    Retain As Published (MQTT 5 section 3.8.3.1), so the retain flag is the publisher's."""

    def __init__(self, broker: Broker) -> None:
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(5), broker.log_text()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        client.subscribe("#", options=SubscribeOptions(qos=2, retainAsPublished=True))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        expiry = getattr(message.properties, "MessageExpiryInterval", None) is not None
        with self._lock:
            self.sent.append((message.topic, bytes(message.payload), message.qos, bool(message.retain), expiry))

    def wait_for(self, condition: Callable[[list[Sent]], bool], timeout: float = 10.0) -> list[Sent]:
        def met() -> bool:
            with self._lock:
                return condition(list(self.sent))

        assert wait_until(met, timeout), self.sent
        self._client.disconnect()
        self._client.loop_stop()
        return self.sent


def went_offline(sent: list[Sent]) -> bool:
    return any(topic.endswith("/availability") and payload == b"offline" for topic, payload, *_ in sent)


def comparable(sent: list[Sent]) -> list[Sent]:
    """The messages with what differs by the moment made equal: the stats' values, the claim's ``since``."""
    out: list[Sent] = []
    for topic, payload, qos, retain, expiry in sent:
        if topic.endswith("/stats"):
            payload = json.dumps(sorted(json.loads(payload))).encode()
        elif topic.endswith("/agent"):
            claim = json.loads(payload)
            assert claim["state"] == "checking" or claim.pop("since")
            payload = json.dumps(claim, sort_keys=True).encode()
        out.append((topic, payload, qos, retain, expiry))
    return out


@pytest.fixture
def brokers(tmp_path: Path) -> Any:
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run scripts/test, which installs it (apt-get install mosquitto)")
    started = [Broker(tmp_path / f"mosquitto-{i}") for i in range(2)]
    for broker in started:
        broker.start()
    yield started
    for broker in started:
        broker.kill()


def test_the_light_agent_sends_what_a_publisher_sends_for_the_same_rows(brokers: list[Broker], tmp_path: Path) -> None:
    real_broker, light_broker = brokers
    topics = Topics(f"edgecam/{DEVICE}")
    door = make_door_event(topics, DEVICE, n_stills=2, jpeg_size=5000)

    wire = Wire(real_broker)
    storage = StorageSettings(dir=tmp_path / "real")
    with Outbox(storage) as outbox:
        for event, still in door.rows:
            outbox.append(event, still)
    publisher = Publisher(real_broker.settings(), topics, storage, DEVICE)
    publisher.start()
    assert publisher.wait_idle(10)
    publisher.stop()
    by_publisher = wire.wait_for(went_offline)

    wire = Wire(light_broker)
    wake = threading.Event()
    agent = fleet_sim.LightAgent(
        DEVICE, light_broker.settings(), StorageSettings(dir=tmp_path / "light"), instance_id(storage.dir), wake
    )
    now = time.monotonic()
    agent.add_rows(now, fleet_sim.rows_of(door, 1), burst=True)  # waiting in the outbox, as the publisher's were
    agent.start(now, 0.0)
    deadline = now + 10
    while not agent.done and time.monotonic() < deadline:
        agent.pump(time.monotonic())
        wake.wait(0.01)
        wake.clear()
    agent.stop(time.monotonic() + 5)
    by_light_agent = wire.wait_for(went_offline)

    kinds = {topic.rsplit("/", 1)[-1] for topic, *_ in by_publisher}
    assert {"agent", "availability", "motion", "stats", "events", "snapshot"} <= kinds, by_publisher
    assert comparable(by_light_agent) == comparable(by_publisher)


def test_three_light_agents_in_a_storm_deliver_every_event_and_still(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run scripts/test, which installs it (apt-get install mosquitto)")
    spec = fleet_sim.Spec(
        broker="mosquitto",
        agents=3,
        rate=60.0,
        duration=2.0,
        stills=2,
        still_kb=20,
        storm=True,
        spread=0.0,
        burst=1,
        real=False,
        drain=15.0,
        workers=2,
        nodes=3,
        seed=1,
    )
    row = fleet_sim.run_one(spec, tmp_path / "run")
    assert row["door_events_sent"] == 3 * 3, row  # the burst and two during the 2 s, per agent
    assert row["events_sent"] == row["door_events_sent"] * 4, "start, two stills, end"
    assert (row["events_complete"], row["stills_complete"], row["burst_complete"]) == (1.0, 1.0, True), row
    assert row["connected"] == 3
    assert row["unacknowledged_rows"] == 0
    assert row["reordered"] == 0
