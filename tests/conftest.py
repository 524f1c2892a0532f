"""Shared fixtures: a real Mosquitto broker on a free loopback port, a message collector, door events."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.models import Event, Still, Topics
from tests.browser import Chromium, require_chromium

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class Broker:
    """A Mosquitto process on 127.0.0.1 that a test can stop, kill and start again on the same port."""

    def __init__(self, workdir: Path, persistence: bool = False, config: str = "") -> None:
        assert MOSQUITTO is not None
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true" if "allow_anonymous" not in config else "",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "log_dest stdout",
            "log_type all",
            config,
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # do not drop to the 'mosquitto' user, who cannot write workdir
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def settings(self, **overrides: Any) -> MqttSettings:
        """MqttSettings pointing at this broker, with quick reconnects."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "reconnect_min": 0.1,
            "reconnect_max": 1.0,
            "connect_spread": 0.0,
        }
        values.update(overrides)
        return MqttSettings(**values)

    def start(self, timeout: float = 5.0) -> None:
        """Start Mosquitto and wait until its port accepts connections."""
        assert MOSQUITTO is not None
        assert not self.running, "already running"
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.log_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its persistence file) and wait for the process to end."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without saving or closing anything."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def log_text(self) -> str:
        """Mosquitto's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make brokers: ``make(persistence=False, config="", start=True)``; all are killed after the test."""
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run scripts/test, which installs it (apt-get install mosquitto)")
    brokers: list[Broker] = []

    def make(persistence: bool = False, config: str = "", start: bool = True) -> Broker:
        broker = Broker(tmp_path / f"mosquitto-{len(brokers)}", persistence, config)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Broker]) -> Broker:
    """A running Mosquitto without persistence on a free 127.0.0.1 port."""
    return mosquitto_factory()


@dataclass(frozen=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A real paho subscriber that records every message of some topic filters.

    With ``persistent=True`` it keeps a session on the broker (MQTT 3.1.1, a fixed client id, clean session
    off), so messages published while it is away (the broker restarting) are queued for it.
    """

    def __init__(
        self, broker: Broker, filters: tuple[str, ...] = ("#",), persistent: bool = False, client_id: str = ""
    ) -> None:
        self.broker = broker
        self.filters = filters
        self.persistent = persistent
        self.client_id = client_id or f"collector-{uuid.uuid4().hex[:8]}"
        """With ``persistent``, another Collector with this id resumes the session."""
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        if persistent:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                self.client_id,
                clean_session=False,
                protocol=MQTTProtocolVersion.MQTTv311,
            )
        else:
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout: float = 5.0) -> "Collector":
        self._client.connect_async(self.broker.host, self.broker.port, 30)
        self._client.loop_start()
        assert self._subscribed.wait(timeout), f"collector did not subscribe:\n{self.broker.log_text()}"
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason.is_failure and not flags.session_present:
            client.subscribe([(f, 1) for f in self.filters])
        elif flags.session_present:
            self._subscribed.set()  # the session kept the subscriptions

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def wait_for(self, condition: Callable[["Collector"], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition(self)`` holds; fail the test with what arrived otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: condition(self), timeout):
                topics = [f"{m.topic} retain={m.retain} {m.payload[:80]!r}" for m in self.received]
                pytest.fail(f"timed out after {timeout} s; received {len(topics)}:\n" + "\n".join(topics))

    def on(self, topic: str) -> list[Received]:
        """The messages received on one topic, in arrival order."""
        with self._cond:
            return [m for m in self.received if m.topic == topic]

    def events(self, topics: Topics) -> list[dict[str, Any]]:
        """The event JSON objects received on ``<base>/events``, in arrival order."""
        return [json.loads(m.payload) for m in self.on(topics.events)]

    def seqs(self, topics: Topics) -> list[int]:
        """The seq of every event received, duplicates included, in arrival order."""
        return [int(e["seq"]) for e in self.events(topics)]


@pytest.fixture
def collector_factory() -> Iterator[Callable[..., Collector]]:
    """Start collectors: ``make(broker, filters=("#",), persistent=False, client_id="")``; all stop after the test."""
    collectors: list[Collector] = []

    def make(
        broker: Broker, filters: tuple[str, ...] = ("#",), persistent: bool = False, client_id: str = ""
    ) -> Collector:
        collector = Collector(broker, filters, persistent, client_id)
        collectors.append(collector)
        return collector.start()

    yield make
    for collector in collectors:
        collector.stop()


def first_arrivals(seqs: list[int]) -> list[int]:
    """The seqs in the order of their first arrival (duplicates dropped)."""
    order: list[int] = []
    for seq in seqs:
        if seq not in order:
            order.append(seq)
    return order


def fake_jpeg(seed: bytes, size: int, width: int = 640, height: int = 480) -> bytes:
    """Bytes that look like a JPEG of ``width`` x ``height`` (a start-of-frame segment) to a parser."""
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + bytes(9)
    body = hashlib.sha256(seed).digest() * (size // 32 + 1)
    return b"\xff\xd8" + sof + body[:size] + b"\xff\xd9"


@dataclass(frozen=True)
class DoorEvent:
    """One door event as the capture stage hands it to the outbox: start, its stills, end."""

    event_id: str
    rows: list[tuple[Event, Still | None]]

    @property
    def stills(self) -> list[Still]:
        return [still for _, still in self.rows if still is not None]


def make_door_event(
    topics: Topics,
    device_id: str,
    n_stills: int = 2,
    jpeg_size: int = 4000,
    start: datetime | None = None,
) -> DoorEvent:
    """Fake JPEG stills and the events that describe them (the capture stage's output)."""
    event_id = uuid.uuid4().hex
    t0 = start or datetime(2026, 11, 22, 13, 2, 3, 123000, tzinfo=UTC)
    rows: list[tuple[Event, Still | None]] = [(Event("start", event_id, device_id, t0, 0.31), None)]
    for index in range(1, n_stills + 1):
        jpeg = fake_jpeg(f"{event_id}-{index}".encode(), jpeg_size)
        digest = hashlib.sha256(jpeg).hexdigest()
        still = Still(event_id, index, jpeg, digest, 640, 480)
        extra = {
            "index": index,
            "sha256": digest,
            "bytes": len(jpeg),
            "width": 640,
            "height": 480,
            "topic": topics.still(event_id, index),
        }
        rows.append((Event("still", event_id, device_id, t0 + timedelta(seconds=0.5 * index), 0.4, extra), still))
    end_extra = {"duration_s": 4.2, "stills": n_stills}
    rows.append((Event("end", event_id, device_id, t0 + timedelta(seconds=4.2), 0.05, end_extra), None))
    return DoorEvent(event_id, rows)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the session (tests/browser.py); skips without it unless REQUIRE_CHROMIUM=1."""
    require_chromium()
    with Chromium() as browser:
        yield browser
