"""The broker client: a subscriber that subscribes again after every reconnect."""

import pytest
from paho.mqtt import publish

from edgecam.models import Topics
from edgecam.mqtt.client import Subscriber
from tests.conftest import Broker, wait_until

pytestmark = pytest.mark.integration

TOPICS = Topics("edgecam/front-door")


def test_subscriber_hands_on_messages_and_subscribes_again_after_a_broker_restart(mosquitto: Broker) -> None:
    received: list[tuple[str, bytes, bool]] = []
    subscriber = Subscriber(
        mosquitto.settings(), [TOPICS.motion, TOPICS.events], lambda t, p, r: received.append((t, p, r))
    )
    subscriber.start()
    try:
        assert subscriber.wait_subscribed(5)
        publish.single(TOPICS.motion, "ON", retain=True, hostname=mosquitto.host, port=mosquitto.port)
        assert wait_until(lambda: received == [(TOPICS.motion, b"ON", False)], 5)

        mosquitto.stop()
        assert wait_until(lambda: not subscriber.wait_subscribed(0), 5)
        mosquitto.start()
        assert subscriber.wait_subscribed(10)
        publish.single(TOPICS.events, b'{"v":1}', qos=1, hostname=mosquitto.host, port=mosquitto.port)
        assert wait_until(lambda: received[-1:] == [(TOPICS.events, b'{"v":1}', False)], 5)
    finally:
        subscriber.stop()
        subscriber.stop()
