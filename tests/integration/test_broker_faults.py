"""Brokers that are not what the agent expects: restarted without persistence, not MQTT at all, MQTT 3.1.1 only,
without retained messages. Each against a real server on loopback; each ends in delivery or in one clear line."""

import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecam.broker_settings import MqttSettings
from tests.conftest import Broker, Collector, free_port, wait_until
from tests.test_mqtt_publisher import TOPICS, Rig

pytestmark = pytest.mark.integration

NATS_SERVER = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def test_the_last_still_is_the_snapshot_again_after_a_broker_restart_without_persistence(
    mosquitto: Broker, collector_factory: Callable[..., Collector], rig: Rig
) -> None:
    publisher = rig.publisher(mosquitto.settings())
    door = rig.door_event(n_stills=2)
    rig.append(door, publisher)
    assert publisher.wait_idle(10)
    assert rig.outbox.depth() == 0

    mosquitto.stop()  # no persistence: the broker forgets every retained message
    assert wait_until(lambda: not publisher.connected, 5)
    mosquitto.start()
    assert wait_until(lambda: publisher.connected, 10)

    watcher = collector_factory(mosquitto)  # once it has the snapshot (live or retained), the broker retains it
    watcher.wait_for(lambda c: bool(c.on(TOPICS.snapshot)))
    late = collector_factory(mosquitto)  # subscribes after that: it gets only what is retained
    late.wait_for(lambda c: bool(c.on(TOPICS.snapshot)))
    assert [(m.payload, m.retain) for m in late.on(TOPICS.snapshot)] == [(door.stills[-1].jpeg, True)]
    assert not late.on(TOPICS.events), "the event itself is not sent again"


def _not_a_broker(behaviour: str) -> tuple[socket.socket, threading.Thread]:
    """A TCP server on loopback that answers each connection as something other than an MQTT broker."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return  # the test closed the server
            with sock:
                if behaviour == "ssh":
                    sock.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
                    sock.recv(1024)
                    sock.sendall(b"Invalid SSH identification string.\r\n")
                elif behaviour == "http":
                    sock.recv(1024)
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize("behaviour", ["ssh", "http", "close"])
def test_a_server_that_is_not_an_mqtt_broker_is_named_with_the_settings_to_check(
    behaviour: str, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    server, thread = _not_a_broker(behaviour)
    port = server.getsockname()[1]
    try:
        publisher = rig.publisher(MqttSettings(host="127.0.0.1", port=port, reconnect_min=0.1, reconnect_max=1.0))
        assert wait_until(lambda: len(caplog.records) >= 2, 10)
        publisher.stop()
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        server.close()
        thread.join(5)
    for record in caplog.records[:2]:
        line = record.getMessage()
        assert line.startswith(f"mqtt: the server at 127.0.0.1:{port} answered, but not as an MQTT broker"), line
        assert "check mqtt.host and mqtt.port (1883, or 8883 with mqtt.tls)" in line
        assert "; retrying in " in line
        assert "lost the connection" not in line


@pytest.fixture
def nats_mqtt(tmp_path: Path) -> Iterator[MqttSettings]:
    """nats-server 2.9 (Debian's package) on a free loopback port: an MQTT 3.1.1 broker that refuses MQTT 5."""
    if NATS_SERVER is None:
        pytest.fail("nats-server is not installed: run scripts/test, which installs it (apt-get install nats-server)")
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        "listen: 127.0.0.1:-1\n"  # the NATS port itself: any free one
        'server_name: "edgecam-test"\n'  # MQTT needs a server name and JetStream
        f'jetstream {{ store_dir: "{tmp_path}/jetstream" }}\n'
        f'mqtt {{ host: "127.0.0.1", port: {port} }}\n'
    )
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        process = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:

        def listening() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
            return True

        assert wait_until(listening, 10), log.read_text()
        yield MqttSettings(host="127.0.0.1", port=port, reconnect_min=0.1, reconnect_max=1.0)
    finally:
        process.kill()
        process.wait()


def test_a_broker_that_speaks_only_mqtt_3_1_1_is_named_with_the_setting(
    nats_mqtt: MqttSettings, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    publisher = rig.publisher(nats_mqtt)
    assert wait_until(lambda: bool(caplog.records), 10)
    publisher.stop()
    line = caplog.records[0].getMessage()
    assert line.startswith(f"mqtt: broker {nats_mqtt.host}:{nats_mqtt.port} refused the connection: "), line
    assert "Unsupported protocol version" in line
    assert 'set mqtt.protocol = "3.1.1"' in line

    # What the line says works: the same broker takes the events over MQTT 3.1.1.
    caplog.clear()
    publisher = rig.publisher(nats_mqtt.model_copy(update={"protocol": "3.1.1"}))
    rig.append(rig.door_event(n_stills=1), publisher)
    assert publisher.wait_idle(20), caplog.text
    assert rig.outbox.depth() == 0


def test_a_broker_without_retained_messages_gets_the_events_and_one_warning(
    mosquitto_factory: Callable[..., Broker],
    collector_factory: Callable[..., Collector],
    rig: Rig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    broker = mosquitto_factory(config="retain_available false")
    collector = collector_factory(broker)
    publisher = rig.publisher(broker.settings())
    publisher.set_motion(True)
    door = rig.door_event(n_stills=1)
    seqs = rig.append(door, publisher)

    assert publisher.wait_idle(10), caplog.text
    collector.wait_for(lambda c: c.seqs(TOPICS) == seqs)
    assert collector.on(TOPICS.still(door.event_id, 1))[0].payload == door.stills[0].jpeg
    collector.wait_for(lambda c: bool(c.on(TOPICS.availability)) and bool(c.on(TOPICS.motion)))
    assert [m.payload for m in collector.on(TOPICS.availability)] == [b"online"]

    # Its connection stays up: no refusal, no reconnect loop, just one warning.
    publisher.set_motion(False)
    collector.wait_for(lambda c: [m.payload for m in c.on(TOPICS.motion)][-1:] == [b"OFF"])
    assert publisher.connected
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert warning.startswith(f"mqtt: broker {broker.host}:{broker.port} does not keep retained messages"), warning
    assert "Home Assistant shows nothing until the next change" in warning
    assert "retain_available true" in warning
