"""The subscriber against a real Mosquitto, servers that are not brokers, and a list of brokers."""

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt import publish

from edgecam.broker_settings import MqttSettings
from edgecam.models import Topics
from edgecam.mqtt.client import (
    describe_closed_before_connack,
)
from edgecam.mqtt.subscriber import Subscriber
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
