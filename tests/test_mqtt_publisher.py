"""The publisher against a real Mosquitto: delivery, order, retained state, last will, outages."""

import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from paho.mqtt import publish

import edgecam.mqtt.publisher as publisher_module
from edgecam.broker_settings import MqttSettings
from edgecam.config import OutboxSettings, StorageSettings
from edgecam.errors import ConfigError, StorageError
from edgecam.models import Topics
from edgecam.mqtt.client import read_password
from edgecam.mqtt.limits import FitStill
from edgecam.mqtt.publisher import Publisher
from edgecam.outbox import Outbox
from tests.conftest import Broker, Collector, DoorEvent, first_arrivals, free_port, make_door_event, wait_until

pytestmark = pytest.mark.integration

DEVICE = "front-door"
TOPICS = Topics(f"edgecam/{DEVICE}")
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


class Rig:
    """An outbox the test appends to (as the agent does) and publishers that drain it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.storage = StorageSettings(dir=tmp_path / "state")
        self.outbox = Outbox(self.storage)
        self.publishers: list[Publisher] = []

    def publisher(
        self, settings: MqttSettings, delivery: OutboxSettings | None = None, fit_still: FitStill | None = None
    ) -> Publisher:
        publisher = Publisher(settings, TOPICS, self.storage, DEVICE, delivery, fit_still)
        self.publishers.append(publisher)
        publisher.start()
        return publisher

    def door_event(self, n_stills: int = 2, jpeg_size: int = 4000) -> DoorEvent:
        return make_door_event(TOPICS, DEVICE, n_stills, jpeg_size)

    def append(self, event: DoorEvent, publisher: Publisher | None = None) -> list[int]:
        seqs = [self.outbox.append(e, s) for e, s in event.rows]
        if publisher is not None:
            publisher.wake()
        return seqs

    def close(self) -> None:
        for publisher in self.publishers:
            publisher.stop()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def test_delivers_a_door_event_with_its_stills(mosquitto: Broker, collector_factory: Any, rig: Rig) -> None:
    collector: Collector = collector_factory(mosquitto)
    publisher = rig.publisher(mosquitto.settings())
    door = rig.door_event(n_stills=2)
    seqs = rig.append(door, publisher)

    assert publisher.wait_idle(10)
    collector.wait_for(lambda c: len(c.events(TOPICS)) == 4)
    events = collector.events(TOPICS)
    assert [e["type"] for e in events] == ["start", "still", "still", "end"]
    assert [e["seq"] for e in events] == seqs
    for event in events:
        VALIDATOR.validate(event)
        assert event["event_id"] == door.event_id
        assert event["device_id"] == DEVICE
    for still in door.stills:
        topic = TOPICS.still(door.event_id, still.index)
        (message,) = collector.on(topic)
        assert message.payload == still.jpeg
        assert not message.retain
        # The JPEG comes before the JSON that describes it.
        order = [m.topic for m in collector.received]
        json_at = next(
            i
            for i, m in enumerate(collector.received)
            if m.topic == TOPICS.events and json.loads(m.payload).get("index") == still.index
        )
        assert order.index(topic) < json_at
    assert rig.outbox.depth() == 0
    # Stills stay on disk after delivery, for storage.retention_days.
    assert all((rig.storage.stills_dir / door.event_id / f"{s.index}.jpg").exists() for s in door.stills)

    # A subscriber arriving later gets the retained state: online, motion, the latest still.
    late: Collector = collector_factory(mosquitto)
    late.wait_for(lambda c: all(c.on(topic) for topic in (TOPICS.snapshot, TOPICS.availability, TOPICS.motion)))
    assert late.on(TOPICS.snapshot)[-1].payload == door.stills[-1].jpeg
    assert late.on(TOPICS.availability)[-1].payload == b"online"
    assert late.on(TOPICS.motion)[-1].payload == b"OFF"
    assert not late.on(TOPICS.events)


def test_motion_is_retained_and_published_again_after_a_reconnect(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    publisher = rig.publisher(mosquitto.settings())
    collector: Collector = collector_factory(mosquitto)
    publisher.set_motion(True)
    collector.wait_for(lambda c: [m.payload for m in c.on(TOPICS.motion)][-1:] == [b"ON"])

    # A broker without persistence forgets retained messages; the publisher sets them again.
    mosquitto.stop()
    assert wait_until(lambda: not publisher.connected, 5)
    mosquitto.start()
    assert wait_until(lambda: publisher.connected, 10)
    watcher: Collector = collector_factory(mosquitto)
    watcher.wait_for(lambda c: bool(c.on(TOPICS.motion)) and bool(c.on(TOPICS.availability)))
    late: Collector = collector_factory(mosquitto)  # subscribes after the broker has them: retained copies
    late.wait_for(lambda c: bool(c.on(TOPICS.motion)) and bool(c.on(TOPICS.availability)))
    assert [(m.payload, m.retain) for m in late.on(TOPICS.motion)] == [(b"ON", True)]
    assert [(m.payload, m.retain) for m in late.on(TOPICS.availability)] == [(b"online", True)]

    publisher.set_motion(False)
    late.wait_for(lambda c: c.on(TOPICS.motion)[-1].payload == b"OFF")


def test_the_door_state_is_retained_and_follows_its_changes(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    publisher = rig.publisher(mosquitto.settings())
    collector: Collector = collector_factory(mosquitto)
    collector.wait_for(lambda c: bool(c.on(TOPICS.motion)))
    assert not collector.on(TOPICS.door)  # no door state until there is one (a calibrated reference)
    publisher.set_door("open")
    publisher.set_door("closed")
    publisher.set_door("open")
    collector.wait_for(lambda c: [m.payload for m in c.on(TOPICS.door)][-1:] == [b"open"])
    late: Collector = collector_factory(mosquitto)
    late.wait_for(lambda c: bool(c.on(TOPICS.door)))
    assert [(m.payload, m.retain) for m in late.on(TOPICS.door)] == [(b"open", True)]
    assert late.on(TOPICS.motion)[-1].payload == b"OFF"


def test_clean_stop_publishes_offline(mosquitto: Broker, collector_factory: Any, rig: Rig) -> None:
    collector: Collector = collector_factory(mosquitto, (TOPICS.availability,))
    publisher = rig.publisher(mosquitto.settings())
    collector.wait_for(lambda c: [m.payload for m in c.received] == [b"online"])
    publisher.stop()
    publisher.stop()  # idempotent
    collector.wait_for(lambda c: [m.payload for m in c.received] == [b"online", b"offline"])
    late: Collector = collector_factory(mosquitto, (TOPICS.availability,))
    late.wait_for(lambda c: [(m.payload, m.retain) for m in c.received] == [(b"offline", True)])


CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from edgecam.config import StorageSettings
    from edgecam.broker_settings import MqttSettings
    from edgecam.models import Topics
    from edgecam.mqtt.publisher import Publisher

    settings = MqttSettings(host=sys.argv[1], port=int(sys.argv[2]), keepalive=5)
    Publisher(settings, Topics(sys.argv[3]), StorageSettings(dir=Path(sys.argv[4])), "front-door").start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize(
    "how",
    [signal.SIGKILL, signal.SIGSTOP],
    ids=["killed", "frozen"],  # frozen: the socket stays open and silent, as after a power or network loss
)
def test_last_will_says_offline_when_the_process_dies(
    mosquitto: Broker, collector_factory: Any, tmp_path: Path, how: signal.Signals
) -> None:
    collector: Collector = collector_factory(mosquitto, (TOPICS.availability,))
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mosquitto.host, str(mosquitto.port), TOPICS.base, str(tmp_path / "state")],
        cwd=repo,
    )
    try:
        collector.wait_for(lambda c: [m.payload for m in c.received] == [b"online"], timeout=15)
        child.send_signal(how)
        # A killed process's socket closes at once. A frozen one goes silent: with keepalive 5 s the broker gives
        # up after 1.5 keepalives, but Mosquitto 2.0 checks keepalives only every few seconds (measured: 11 s).
        collector.wait_for(lambda c: [m.payload for m in c.received] == [b"online", b"offline"], timeout=5 * 1.5 + 8)
    finally:
        child.kill()
        child.wait()
    late: Collector = collector_factory(mosquitto, (TOPICS.availability,))
    late.wait_for(lambda c: [(m.payload, m.retain) for m in c.received] == [(b"offline", True)])


def test_broker_down_at_start_gets_everything_once_it_is_up(
    mosquitto_factory: Callable[..., Broker],
    collector_factory: Any,
    rig: Rig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    broker = mosquitto_factory(persistence=True)
    collector: Collector = collector_factory(broker, (f"{TOPICS.base}/#",), persistent=True)
    broker.stop()

    publisher = rig.publisher(broker.settings())
    seqs = rig.append(rig.door_event(), publisher) + rig.append(rig.door_event(n_stills=1), publisher)
    assert wait_until(lambda: "Connection refused" in caplog.text, 5)
    assert not publisher.wait_idle(0.2)
    assert rig.outbox.depth() == len(seqs)
    broker.start()

    assert publisher.wait_idle(15)
    collector.wait_for(lambda c: len(c.events(TOPICS)) >= len(seqs))
    assert first_arrivals(collector.seqs(TOPICS)) == seqs
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert refused[0].getMessage().startswith(f"mqtt: cannot reach broker 127.0.0.1:{broker.port}: Connection refused")
    assert "; retrying in " in refused[0].getMessage()
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in refused)


def test_broker_stopped_mid_stream_loses_nothing(
    mosquitto_factory: Callable[..., Broker], collector_factory: Any, rig: Rig
) -> None:
    broker = mosquitto_factory(persistence=True)
    collector: Collector = collector_factory(broker, (f"{TOPICS.base}/#",), persistent=True)
    publisher = rig.publisher(broker.settings(max_inflight=2))
    assert wait_until(lambda: publisher.connected, 5)
    seqs: list[int] = []
    for _ in range(10):
        seqs += rig.append(rig.door_event(n_stills=3, jpeg_size=200_000))
    publisher.wake()

    collector.wait_for(lambda c: len(c.events(TOPICS)) >= 4)
    broker.stop()
    waiting = rig.outbox.depth()
    assert waiting > 0, "the broker stopped too late to test anything"
    broker.start()

    assert publisher.wait_idle(20)
    collector.wait_for(lambda c: set(c.seqs(TOPICS)) >= set(seqs), timeout=10)
    assert first_arrivals(collector.seqs(TOPICS)) == seqs
    for still_topic in {m.topic for m in collector.received if "/stills/" in m.topic}:
        assert collector.on(still_topic)[0].payload.startswith(b"\xff\xd8")


def test_mqtt_3_1_1(mosquitto: Broker, collector_factory: Any, rig: Rig) -> None:
    collector: Collector = collector_factory(mosquitto)
    publisher = rig.publisher(mosquitto.settings(protocol="3.1.1"))
    door = rig.door_event(n_stills=1)
    seqs = rig.append(door, publisher)
    assert publisher.wait_idle(10)
    collector.wait_for(lambda c: c.seqs(TOPICS) == seqs)
    assert collector.on(TOPICS.still(door.event_id, 1))[0].payload == door.stills[0].jpeg
    publisher.stop()
    collector.wait_for(lambda c: [m.payload for m in c.on(TOPICS.availability)] == [b"online", b"offline"])


def test_user_name_and_password_file(
    mosquitto_factory: Callable[..., Broker],
    collector_factory: Any,
    rig: Rig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgecam")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edgecam", "s3cret-door"], check=True)
    broker = mosquitto_factory(config=f"allow_anonymous false\npassword_file {passwords}")
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-door\n")
    secret.chmod(0o600)

    wrong = tmp_path / "wrong-password"
    wrong.write_text("guess\n")
    wrong.chmod(0o600)
    refused = rig.publisher(broker.settings(username="edgecam", password_file=wrong))
    assert wait_until(lambda: "refused the connection" in caplog.text, 5)
    refused.stop()
    line = next(r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage())
    assert line.startswith(f"mqtt: broker 127.0.0.1:{broker.port} refused the connection: ")
    assert "Not authorized" in line or "Bad user name or password" in line

    publisher = rig.publisher(broker.settings(username="edgecam", password_file=secret))
    assert wait_until(lambda: publisher.connected, 5)
    publisher.stop()
    assert "s3cret-door" not in caplog.text
    assert "guess" not in caplog.text


def test_a_password_file_others_can_read_is_refused_naming_the_file_and_the_fix(rig: Rig, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-door\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        Publisher(MqttSettings(username="edgecam", password_file=secret), TOPICS, rig.storage, DEVICE)
    assert str(refused.value) == (
        f"mqtt.password_file: {secret} is readable by group or others (mode 0644); "
        f"fix: chmod 600 {secret} (owned by the user edgecam runs as)"
    )


def test_the_password_comes_from_the_systemd_credential_when_no_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("from-systemd\n")
    (credentials / "mqtt-password").chmod(0o440)  # how systemd's ACL for the service's user shows in stat
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert read_password(MqttSettings(username="edgecam")) == "from-systemd"
    with pytest.raises(ConfigError, match="mqtt.password_file: cannot read"):
        read_password(MqttSettings(username="edgecam", password_file=tmp_path / "none"))  # a named file wins


# paho leaves the socket of a failed TLS handshake to the garbage collector, which warns about it.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"host": "nonexistent.invalid"}, "mqtt: cannot resolve broker host nonexistent.invalid: "),
        ({"tls": True}, "mqtt: TLS handshake with broker 127.0.0.1:"),
    ],
    ids=["dns", "tls"],
)
def test_connection_failures_are_one_clear_line(
    mosquitto: Broker, rig: Rig, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any], expected: str
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    publisher = rig.publisher(mosquitto.settings(**overrides))
    assert wait_until(lambda: expected in caplog.text, 5)
    publisher.stop()
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failures
    assert all(r.getMessage().startswith(expected) and r.exc_info is None for r in failures)
    assert all("; retrying in " in r.getMessage() for r in failures)


def test_reconnect_delays_double_with_jitter_up_to_the_maximum(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    nobody = MqttSettings(host="127.0.0.1", port=free_port(), reconnect_min=0.1, reconnect_max=1.0)
    publisher = rig.publisher(nobody)
    assert wait_until(lambda: len(caplog.records) >= 5, 10)
    publisher.stop()
    delays = [float(r.getMessage().rsplit(" ", 2)[1]) for r in caplog.records[:5]]
    # 0.1 s doubling each time, +-20 %, never above 1.0 s (logged to 0.1 s)
    for delay, low, high in zip(delays, [0.08, 0.16, 0.32, 0.64, 0.8], [0.12, 0.24, 0.48, 0.96, 1.0], strict=True):
        assert round(low, 1) <= delay <= round(high, 1), delays
    assert not publisher.connected


def test_a_silent_server_is_given_up_on(rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: Any) -> None:
    monkeypatch.setattr(publisher_module, "CONNACK_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts TCP, never answers MQTT
        port = server.getsockname()[1]
        publisher = rig.publisher(MqttSettings(host="127.0.0.1", port=port))
        assert wait_until(lambda: "no answer from broker" in caplog.text, 10)
        publisher.stop()
    line = caplog.records[0].getMessage()
    assert line.startswith(f"mqtt: no answer from broker 127.0.0.1:{port} within 0.5 s (")
    assert "check mqtt.host and mqtt.port" in line


def test_a_missing_still_file_does_not_hold_up_the_event(
    mosquitto: Broker, collector_factory: Any, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    collector: Collector = collector_factory(mosquitto)
    door = rig.door_event(n_stills=1)
    seqs = rig.append(door)
    still = rig.storage.stills_dir / door.event_id / "1.jpg"
    still.unlink()
    publisher = rig.publisher(mosquitto.settings())
    assert publisher.wait_idle(10)
    collector.wait_for(lambda c: c.seqs(TOPICS) == seqs)
    assert not collector.on(TOPICS.still(door.event_id, 1))
    assert collector.events(TOPICS)[1]["dropped"] is True, "the subscriber knows no JPEG is coming"
    assert "cannot read the still of event seq=2" in caplog.text


def test_an_unusable_outbox_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    publisher = Publisher(MqttSettings(), TOPICS, StorageSettings(dir=tmp_path / "file"), DEVICE)
    with pytest.raises(StorageError, match="storage.dir: cannot create"):
        publisher.start()
    publisher.stop()


def test_the_examples_in_the_docs_follow_the_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "mqtt.md").read_text()
    examples = [json.loads(line) for line in doc.splitlines() if line.startswith('{"v":')]
    assert [e["type"] for e in examples] == ["start", "still", "end", "forget"]
    for example in examples:
        VALIDATOR.validate(example)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({**examples[1], "sha256": "not hex"})


def test_stats_report_the_outbox_retained(mosquitto: Broker, collector_factory: Any, rig: Rig) -> None:
    rig.append(rig.door_event(n_stills=1))
    publisher = rig.publisher(mosquitto.settings(stats_interval=1.0))
    collector: Collector = collector_factory(mosquitto, (TOPICS.stats,))
    assert publisher.wait_idle(10)
    collector.wait_for(lambda c: bool(c.received) and json.loads(c.received[-1].payload)["depth"] == 0)
    stats = json.loads(collector.received[-1].payload)
    assert stats["bytes"] == rig.outbox.used_bytes()
    assert stats["max_bytes"] == rig.storage.max_bytes
    assert stats["oldest_waiting_s"] is None
    assert stats["stills_dropped"] == 0
    assert 0 < stats["used"] < 0.01


CONSUMER = OutboxSettings(confirm="consumer", resend_after=1.0)


def test_with_consumer_confirmation_events_stay_until_confirmed_and_go_again_meanwhile(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    collector: Collector = collector_factory(mosquitto, (TOPICS.events,))
    door = rig.door_event(n_stills=1)
    seqs = rig.append(door)
    rig.publisher(mosquitto.settings(), CONSUMER)
    collector.wait_for(lambda c: c.seqs(TOPICS)[:3] == seqs)
    assert rig.outbox.depth() == len(seqs), "the broker's PUBACK is not enough"
    collector.wait_for(lambda c: c.seqs(TOPICS)[:6] == seqs + seqs, timeout=5)  # sent again after resend_after

    publish.single(TOPICS.ack, json.dumps([door.event_id]), qos=1, hostname=mosquitto.host, port=mosquitto.port)
    assert wait_until(lambda: rig.outbox.depth() == 0, 5)
    sent = len(collector.seqs(TOPICS))
    later = rig.append(rig.door_event(n_stills=0))
    collector.wait_for(lambda c: later[-1] in c.seqs(TOPICS))
    assert set(collector.seqs(TOPICS)[sent:]).isdisjoint(seqs), "a confirmed event is not sent again"


def test_a_confirmation_sent_while_the_agent_is_away_waits_in_its_session(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    door = rig.door_event(n_stills=0)
    rig.append(door)
    collector: Collector = collector_factory(mosquitto, (TOPICS.events,))
    first = rig.publisher(mosquitto.settings(), CONSUMER)
    collector.wait_for(lambda c: len(c.seqs(TOPICS)) >= 2)  # sent, and subscribed to <base>/ack first
    assert not first.wait_idle(0.5), "not idle until confirmed"
    first.stop()
    publish.single(TOPICS.ack, json.dumps([door.event_id]), qos=1, hostname=mosquitto.host, port=mosquitto.port)
    assert rig.outbox.depth() == 2
    rig.publisher(mosquitto.settings(), CONSUMER)  # the same client id resumes the session the broker kept
    assert wait_until(lambda: rig.outbox.depth() == 0, 10)


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"event_id": "x"}', b'["../../etc"]', b"[1, 2]", b"[" + b'"a",' * 20000 + b'"a"]'],
    ids=["garbage", "object", "bad-id", "numbers", "huge"],
)
def test_a_malformed_confirmation_is_ignored_with_a_warning(
    mosquitto: Broker, collector_factory: Any, rig: Rig, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    rig.append(rig.door_event(n_stills=0))
    collector: Collector = collector_factory(mosquitto, (TOPICS.events,))
    publisher = rig.publisher(mosquitto.settings(), CONSUMER)
    collector.wait_for(lambda c: len(c.seqs(TOPICS)) >= 2)
    publish.single(TOPICS.ack, payload, qos=1, hostname=mosquitto.host, port=mosquitto.port)
    assert wait_until(lambda: "not a JSON list of event ids" in caplog.text, 5)
    assert publisher.connected
    assert rig.outbox.depth() == 2


def test_stills_and_the_snapshot_expire_on_the_broker(mosquitto: Broker, collector_factory: Any, rig: Rig) -> None:
    two_seconds = 2 / 86400
    rig.storage = StorageSettings(dir=rig.storage.dir, broker_expiry=two_seconds, snapshot_expiry=two_seconds)
    # Away: a subscriber with a session on the broker, which holds what is published for it meanwhile.
    away: Collector = collector_factory(mosquitto, (TOPICS.events, f"{TOPICS.base}/events/+/stills/+"), True)
    away.stop()
    present: Collector = collector_factory(mosquitto, (TOPICS.events, f"{TOPICS.base}/events/+/stills/+"))
    publisher = rig.publisher(mosquitto.settings())
    door = rig.door_event(n_stills=2)
    rig.append(door, publisher)
    published = time.monotonic()
    assert publisher.wait_idle(10)
    present.wait_for(lambda c: len(c.events(TOPICS)) == 4 and len(c.received) == 6)  # a subscriber there gets all
    late: Collector = collector_factory(mosquitto, (TOPICS.snapshot,))
    late.wait_for(lambda c: bool(c.on(TOPICS.snapshot)))
    late.stop()

    def snapshot_gone() -> bool:
        newcomer = Collector(mosquitto, (TOPICS.snapshot, TOPICS.availability)).start()
        try:
            return wait_until(lambda: bool(newcomer.on(TOPICS.availability)), 5) and not newcomer.on(TOPICS.snapshot)
        finally:
            newcomer.stop()

    assert wait_until(snapshot_gone, 6, interval=0.5), "the retained snapshot expires after storage.snapshot_expiry"
    # Mosquitto counts whole seconds (db.now_real_s): a message may live up to a second past its interval.
    time.sleep(max(0.0, published + 2 + 1.5 - time.monotonic()))
    back: Collector = collector_factory(mosquitto, away.filters, True, away.client_id)
    back.wait_for(lambda c: len(c.events(TOPICS)) == 4)  # the events do not expire (storage.event_expiry unset)
    assert not [m.topic for m in back.received if "/stills/" in m.topic], "the stills held for it expired"


def test_a_lost_broker_is_left_for_the_next_of_mqtt_hosts(
    mosquitto_factory: Callable[..., Broker], collector_factory: Any, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()
    on_first: Collector = collector_factory(first, (f"{TOPICS.base}/#",))
    on_second: Collector = collector_factory(second, (f"{TOPICS.base}/#",))
    hosts = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    settings = MqttSettings(hosts=hosts, hosts_order="listed", reconnect_min=0.1, reconnect_max=1.0, connect_spread=0)
    publisher = rig.publisher(settings)
    before = rig.append(rig.door_event(n_stills=1), publisher)
    assert publisher.wait_idle(10)
    on_first.wait_for(lambda c: c.seqs(TOPICS) == before)
    first.kill()  # the independent second broker has no session: what the first one took is its own

    after: list[int] = []
    for _ in range(4):
        after += rig.append(rig.door_event(n_stills=2, jpeg_size=50_000), publisher)
    assert publisher.wait_idle(20), caplog.text
    on_second.wait_for(lambda c: set(c.seqs(TOPICS)) >= set(after))
    assert first_arrivals(on_second.seqs(TOPICS)) == after
    assert [m.payload for m in on_second.on(TOPICS.availability)][-1] == b"online"
    assert f"reconnecting in 0.1 s with broker 127.0.0.1:{second.port}" in caplog.text


def test_the_first_connect_waits_a_random_part_of_the_connect_spread(
    mosquitto: Broker, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    spreads: list[float] = []

    def delay(settings: MqttSettings) -> float:
        spreads.append(settings.connect_spread)
        return 1.5

    monkeypatch.setattr(publisher_module, "first_connect_delay", delay)
    started = time.monotonic()
    publisher = rig.publisher(mosquitto.settings(connect_spread=4.0))
    assert wait_until(lambda: publisher.connected, 5)
    assert time.monotonic() - started >= 1.5
    assert spreads == [4.0]


def test_a_broker_that_took_the_agent_and_now_closes_at_once_is_not_called_a_wrong_server(
    mosquitto: Broker, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    publisher = rig.publisher(mosquitto.settings())
    assert wait_until(lambda: publisher.connected, 5)
    mosquitto.stop()
    # What a NATS node does while it cannot reach its JetStream: accept TCP, close before CONNACK.
    server = socket.create_server((mosquitto.host, mosquitto.port))
    try:
        server.settimeout(10)
        server.accept()[0].close()
        assert wait_until(lambda: "closed the connection before answering CONNECT" in caplog.text, 10), caplog.text
    finally:
        server.close()
    line = next(r.getMessage() for r in caplog.records if "before answering CONNECT" in r.getMessage())
    assert "though it took this agent before: it cannot take clients now" in line, line
    assert "not as an MQTT broker" not in caplog.text
