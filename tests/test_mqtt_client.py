"""The broker client: a subscriber that subscribes again after every reconnect."""

import pytest
from paho.mqtt import publish
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.config import MqttSettings
from edgecam.models import Topics
from edgecam.mqtt.client import Subscriber, describe_closed_before_connack, describe_refusal
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


def test_a_broker_that_refuses_mqtt_5_gets_a_line_naming_the_protocol_setting() -> None:
    unsupported = ReasonCode(PacketTypes.CONNACK, identifier=0x84)  # MQTT 5 section 3.2.2.2
    line = describe_refusal(MqttSettings(host="broker.lan"), unsupported)
    assert line == (
        "mqtt: broker broker.lan:1883 refused the connection: Unsupported protocol version; "
        'it speaks only MQTT 3.1.1: set mqtt.protocol = "3.1.1"'
    )
    already = describe_refusal(MqttSettings(host="broker.lan", protocol="3.1.1"), unsupported)
    assert "mqtt.protocol" not in already
    refused = describe_refusal(MqttSettings(host="broker.lan"), ReasonCode(PacketTypes.CONNACK, identifier=0x87))
    assert refused == "mqtt: broker broker.lan:1883 refused the connection: Not authorized"


def test_a_connection_closed_before_connack_names_the_host_and_port_settings() -> None:
    line = describe_closed_before_connack(MqttSettings(host="nas.lan", port=22))
    assert line == (
        "mqtt: the server at nas.lan:22 answered, but not as an MQTT broker (it closed the connection before "
        "answering CONNECT); check mqtt.host and mqtt.port (1883, or 8883 with mqtt.tls)"
    )
    # MQTT 3.1.1 has no reason codes: a broker refusing a client just closes the connection the same way.
    old = describe_closed_before_connack(MqttSettings(host="nas.lan", protocol="3.1.1"))
    assert old.startswith(line.replace("nas.lan:22", "nas.lan:1883"))
    assert 'mqtt.protocol = "5"' in old


def test_a_tls_connection_ended_before_connack_names_the_certificate_settings() -> None:
    alert = "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"
    line = describe_closed_before_connack(MqttSettings(host="broker.lan", port=8883, tls=True), alert)
    assert line == (
        "mqtt: broker broker.lan:8883 ended the TLS connection before answering CONNECT: [SSL: "
        "TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required; check mqtt.cert_file and "
        "mqtt.key_file (a certificate from the CA the broker trusts)"
    )
    silent = describe_closed_before_connack(MqttSettings(host="broker.lan", port=8883, tls=True))
    assert "refusing this client's certificate" in silent
    assert "mqtt.cert_file" in silent
