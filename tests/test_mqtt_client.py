"""Connecting to the broker: the brokers to try, the first connect's delay, and the one-line errors."""

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.models import Topics
from edgecam.mqtt.client import (
    broker_order,
    describe_closed_before_connack,
    describe_refusal,
    first_connect_delay,
)

pytestmark = pytest.mark.integration

TOPICS = Topics("edgecam/front-door")


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


def test_the_brokers_are_tried_shuffled_or_as_listed() -> None:
    hosts = [f"node-{i}" for i in range(8)]
    listed = MqttSettings(hosts=hosts, hosts_order="listed")
    assert [(b.host, b.port) for b in broker_order(listed)] == [(h, 1883) for h in hosts]
    orders = {tuple(b.host for b in broker_order(MqttSettings(hosts=hosts))) for _ in range(20)}
    assert len(orders) > 1
    assert all(sorted(order) == hosts for order in orders)
    assert [(b.host, b.port) for b in broker_order(MqttSettings(host="broker.lan", port=1884))] == [
        ("broker.lan", 1884)
    ]


def test_the_first_connect_delay_spreads_over_the_setting() -> None:
    delays = [first_connect_delay(MqttSettings(connect_spread=2.0)) for _ in range(200)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert min(delays) < 0.5
    assert max(delays) > 1.5
    assert first_connect_delay(MqttSettings(connect_spread=0)) == 0.0
