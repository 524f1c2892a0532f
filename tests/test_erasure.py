"""``edgecam forget``: erasure on the device, the retained snapshot cleared and subscribers told, by a real broker."""

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import publish

from edgecam.broker_settings import MqttSettings
from edgecam.cli import main
from edgecam.config import Settings, StorageSettings
from edgecam.erasure import Scope, forget_events
from edgecam.errors import ConfigError, StorageError
from edgecam.models import Topics
from edgecam.outbox import Outbox
from tests.conftest import Broker, Collector, DoorEvent, free_port, make_door_event
from tests.test_mqtt_publisher import VALIDATOR, Rig

DEVICE = "front-door"
TOPICS = Topics(f"edgecam/{DEVICE}")


def settings_for(storage: StorageSettings, mqtt: MqttSettings) -> Settings:
    return Settings(device_id=DEVICE, storage=storage, mqtt=mqtt)


def stored(storage: StorageSettings, *doors: DoorEvent, delivered: bool = True) -> None:
    with Outbox(storage) as outbox:
        seqs = [outbox.append(event, still) for door in doors for event, still in door.rows]
        if delivered:
            outbox.delivered(seqs)


def still_files(storage: StorageSettings) -> list[Path]:
    return sorted(storage.stills_dir.rglob("*.jpg"))


@pytest.mark.parametrize(
    ("event_id", "before", "all_events", "error"),
    [
        (None, None, False, "say which events: --event ID, --before DATE or --all"),
        ("e1", None, True, "forget: --event, --before and --all go one at a time"),
        ("../etc", None, False, "forget --event: '../etc' is not an event id"),
        (None, "last tuesday", False, "forget --before: 'last tuesday' is not a date: YYYY-MM-DD"),
    ],
)
def test_a_scope_must_be_one_clear_choice(
    event_id: str | None, before: str | None, all_events: bool, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        Scope.parse(event_id, before, all_events)


def test_scopes_become_the_forget_field() -> None:
    assert Scope.parse("e1", None, False).payload() == {"event_id": "e1"}
    assert Scope.parse(None, None, True).payload() == {"all": True}
    before = Scope.parse(None, "2026-11-01", False)
    assert before.before == datetime(2026, 11, 1).astimezone(), "a date is local midnight"
    assert before.payload()["before"].endswith("Z")


def test_an_event_is_named_by_its_id_or_the_8_characters_listen_prints(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    door = make_door_event(TOPICS, DEVICE, 1)
    stored(storage, door)
    settings = settings_for(storage, MqttSettings(host="127.0.0.1", port=free_port()))
    for unknown in ("no-such-event", door.event_id[:7]):
        with pytest.raises(ConfigError, match=f"forget --event: no event {unknown} on this device"):
            forget_events(settings, Scope(event_id=unknown), timeout=0.5)
    assert len(still_files(storage)) == 1, "nothing erased, nothing sent"
    forgotten = forget_events(settings, Scope(event_id=door.event_id[:8]), timeout=0.5)
    assert forgotten.erased.events == 1
    with Outbox(storage) as outbox:
        (row,) = outbox.pending()
    assert json.loads(row.payload)["forget"] == {"event_id": door.event_id}, "subscribers get the whole id"


def test_with_the_broker_away_the_forget_message_waits_in_the_outbox(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    door = make_door_event(TOPICS, DEVICE, 2)
    stored(storage, door)
    settings = settings_for(storage, MqttSettings(host="127.0.0.1", port=free_port(), reconnect_min=0.1))

    forgotten = forget_events(settings, Scope(event_id=door.event_id), timeout=1.0)

    assert not forgotten.sent
    assert forgotten.erased.events == 1
    assert still_files(storage) == []
    with Outbox(storage) as outbox:
        (row,) = outbox.pending()
    message = json.loads(row.payload)
    assert (row.type, message["type"], message["forget"]) == ("forget", "forget", {"event_id": door.event_id})
    VALIDATOR.validate(message)


def test_an_undelivered_event_is_kept_unless_forced_and_then_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    stored(storage, make_door_event(TOPICS, DEVICE, 1), delivered=False)
    toml = tmp_path / "edgecam.toml"
    toml.write_text(
        f'device_id = "{DEVICE}"\n[storage]\ndir = "{storage.dir}"\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )

    assert main(["--config", str(toml), "forget", "--all"]) == 1
    assert "forget: 3 messages of these events are not delivered yet" in capsys.readouterr().err
    assert len(still_files(storage)) == 1, "nothing erased"

    with pytest.raises(StorageError):  # the same, without the command line
        forget_events(Settings(device_id=DEVICE, storage=storage), Scope(), timeout=0.5)
    caplog.set_level("INFO", logger="edgecam")
    forgotten = forget_events(
        settings_for(storage, MqttSettings(host="127.0.0.1", port=free_port())), Scope(), force=True, timeout=0.5
    )
    assert forgotten.erased.undelivered == 3
    assert still_files(storage) == []
    assert "(3 messages never delivered, dropped: --force)" in caplog.text


@pytest.mark.integration
def test_forget_all_clears_the_device_and_the_retained_snapshot_and_tells_subscribers(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    publisher = rig.publisher(mosquitto.settings())
    rig.append(rig.door_event(n_stills=2), publisher)
    rig.append(rig.door_event(n_stills=1), publisher)
    assert publisher.wait_idle(10)
    publisher.stop()
    before: Collector = collector_factory(mosquitto, (TOPICS.snapshot,))
    before.wait_for(lambda c: bool(c.on(TOPICS.snapshot)))
    listening: Collector = collector_factory(mosquitto, (TOPICS.events,))

    forgotten = forget_events(settings_for(rig.storage, mosquitto.settings()), Scope())

    assert forgotten.sent
    assert (forgotten.erased.events, forgotten.erased.stills) == (2, 3)
    assert still_files(rig.storage) == []
    with Outbox(rig.storage) as outbox:
        assert outbox.depth() == 0, "the forget message is delivered"
        assert outbox.event_ids() == []
    listening.wait_for(lambda c: bool(c.events(TOPICS)))
    (message,) = listening.events(TOPICS)
    assert message["forget"] == {"all": True}
    VALIDATOR.validate(message)
    after: Collector = collector_factory(mosquitto, (TOPICS.snapshot, TOPICS.availability))
    after.wait_for(lambda c: bool(c.on(TOPICS.availability)))  # retained, sent with the snapshot if there were one
    assert not after.on(TOPICS.snapshot), "no retained snapshot on the broker"


@pytest.mark.integration
def test_a_forget_message_left_in_the_outbox_is_sent_by_the_agent_and_clears_the_snapshot(
    mosquitto: Broker, collector_factory: Any, rig: Rig
) -> None:
    door = rig.door_event(n_stills=1)
    stored(rig.storage, door)
    publish.single(
        TOPICS.snapshot, door.stills[0].jpeg, qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port
    )
    away = MqttSettings(host="127.0.0.1", port=free_port())
    assert not forget_events(settings_for(rig.storage, away), Scope(event_id=door.event_id), timeout=0.5).sent
    listening: Collector = collector_factory(mosquitto, (TOPICS.events,))

    publisher = rig.publisher(mosquitto.settings())

    assert publisher.wait_idle(10)
    listening.wait_for(lambda c: bool(c.events(TOPICS)))
    assert listening.events(TOPICS)[0]["forget"] == {"event_id": door.event_id}
    after: Collector = collector_factory(mosquitto, (TOPICS.snapshot, TOPICS.availability))
    after.wait_for(lambda c: bool(c.on(TOPICS.availability)))
    assert not after.on(TOPICS.snapshot)


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    rig = Rig(tmp_path)
    yield rig
    rig.close()
