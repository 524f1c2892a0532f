"""The broker client: a subscriber that subscribes again after every reconnect."""

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt import publish
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.models import Topics
from edgecam.mqtt.client import (
    Subscriber,
    broker_order,
    describe_closed_before_connack,
    describe_refusal,
    first_connect_delay,
)
from tests.conftest import Broker, free_port, wait_until

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


@contextlib.contextmanager
def not_a_broker(answer: Callable[[socket.socket], None]) -> Iterator[tuple[int, list[int]]]:
    """A TCP server on loopback that ``answer``s each connection: (its port, connections accepted so far)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def run() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return  # the test shut the server down
            accepted.append(1)
            with sock:
                answer(sock)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        server.close()
        thread.join(5)


def web_server(sock: socket.socket) -> None:
    sock.recv(1024)
    sock.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def silent_server(sock: socket.socket) -> None:
    """Read and never answer, as a web server does until a request line ends (python3 -m http.server)."""
    while sock.recv(1024):
        pass


def subscriber_lines(settings: MqttSettings, caplog: pytest.LogCaptureFixture, until: Callable[[], bool]) -> list[str]:
    """The warnings a subscriber to ``settings`` logs until ``until()`` holds (at least one line)."""
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    subscriber = Subscriber(settings, [TOPICS.events], lambda t, p, r: None)
    subscriber.start()
    try:
        assert wait_until(lambda: bool(caplog.records) and until(), 10), caplog.text
    finally:
        subscriber.stop()
    return [r.getMessage() for r in caplog.records]


def test_a_subscriber_pointed_at_a_server_that_is_not_a_broker_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with not_a_broker(web_server) as (port, accepted):
        settings = MqttSettings(host="127.0.0.1", port=port, reconnect_min=0.1, reconnect_max=1.0)
        lines = subscriber_lines(settings, caplog, lambda: len(accepted) >= 2)  # it tries again
    assert lines == [describe_closed_before_connack(settings) + "; retrying"]


def test_a_subscriber_pointed_at_a_server_that_never_answers_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with not_a_broker(silent_server) as (port, _):
        settings = MqttSettings(host="127.0.0.1", port=port, keepalive=5)
        (line,) = subscriber_lines(settings, caplog, lambda: True)
    assert line == (
        f"mqtt: the server at 127.0.0.1:{port} accepted the connection but gave no answer to CONNECT within 5 s "
        "(mqtt.keepalive), not as an MQTT broker would; check mqtt.host and mqtt.port (1883, or 8883 with mqtt.tls); "
        "retrying"
    )


@pytest.mark.parametrize(
    ("host", "port", "line"),
    [
        ("127.0.0.1", 0, "mqtt: cannot reach broker 127.0.0.1:{port}: Connection refused; retrying"),
        ("no-such-host.invalid", 1883, "mqtt: cannot resolve broker host no-such-host.invalid: "),
    ],
)
def test_a_subscriber_that_cannot_reach_the_broker_says_why_once(
    host: str, port: int, line: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = port or free_port()  # nothing listens there
    attempts: list[str] = []
    connect = socket.create_connection

    def counted(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address[0])
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted)  # what paho connects with
    settings = MqttSettings(host=host, port=port, reconnect_min=0.1, reconnect_max=1.0)
    lines = subscriber_lines(settings, caplog, lambda: attempts.count(host) >= 2)  # it tries again
    assert len(lines) == 1, lines
    assert lines[0].startswith(line.format(port=port)), lines
    assert lines[0].endswith("; retrying")


def test_a_subscriber_moves_on_to_the_next_of_mqtt_hosts(mosquitto: Broker) -> None:
    nobody = free_port()
    settings = MqttSettings(
        hosts=[f"127.0.0.1:{nobody}", f"127.0.0.1:{mosquitto.port}"], hosts_order="listed", connect_spread=0
    )
    received: list[bytes] = []
    subscriber = Subscriber(settings, [TOPICS.events], lambda t, p, r: received.append(p))
    subscriber.start()
    try:
        assert subscriber.wait_subscribed(10)
        publish.single(TOPICS.events, b"hello", qos=1, hostname=mosquitto.host, port=mosquitto.port)
        assert wait_until(lambda: received == [b"hello"], 5)
    finally:
        subscriber.stop()


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
