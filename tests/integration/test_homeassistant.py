"""The agent against a real Home Assistant: what a household sees, checked through Home Assistant's own APIs.

A real Mosquitto, a real Home Assistant (tests/homeassistant.py, installed by scripts/install-homeassistant) and
the real agent as a process on the simulated camera, after ``edgecam calibrate`` so it reports the door.
"""

import functools
import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from edgecam.config import Settings, StorageSettings
from edgecam.erasure import Scope, forget_events
from edgecam.models import Topics
from edgecam.outbox import Outbox
from tests.conftest import Broker, Collector, make_door_event
from tests.homeassistant import HomeAssistant
from tests.integration.test_agent import BASE, DEVICE, ROOT
from tests.integration.test_reliability import Child

pytestmark = pytest.mark.integration

# What the agent announces (edgecam/discovery.py), as a user sees it: object id -> (component, name). Home Assistant
# makes the entity id from the device's name and the entity's name, slugified: binary_sensor.itest_door_door.
ENTITIES = {
    "door": ("binary_sensor", "Door"),
    "motion": ("binary_sensor", "Door movement"),
    "still": ("image", "Latest still"),
    "activity": ("event", "Door activity"),
    "detect": ("switch", "Detection"),
    "outbox_depth": ("sensor", "Outbox depth"),
    "oldest_waiting": ("sensor", "Oldest waiting"),
    "disk_used": ("sensor", "Outbox disk used"),
    "stills_dropped": ("sensor", "Stills dropped"),
    "clock_synced": ("binary_sensor", "Clock synchronised"),
    "last_event": ("sensor", "Last door event"),
    "fps": ("sensor", "Frames per second"),
    "detect_time": ("sensor", "Detector time per frame"),
    "uptime": ("sensor", "Uptime"),
}
DIAGNOSTIC = set(ENTITIES) - {"door", "motion", "still", "activity", "detect"}

# The door opens 5 s after the agent starts and every 12 s after that; one opening lasts 4 s.
SCENE = {"EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "5", "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "12"}


def entity_id(object_id: str) -> str:
    component, name = ENTITIES[object_id]
    return f"{component}.{re.sub(r'[^a-z0-9]+', '_', f'{DEVICE} {name}'.lower()).strip('_')}"


def our_device(hass: HomeAssistant) -> list[dict[str, Any]]:
    """The devices in Home Assistant's registry that are this agent."""
    return [d for d in hass.devices() if ["mqtt", f"edgecam_{DEVICE}"] in d["identifiers"]]


def states(hass: HomeAssistant) -> dict[str, dict[str, Any]]:
    """This device's entities' state objects, by object id (absent while Home Assistant does not know one)."""
    by_id = {s["entity_id"]: s for s in hass.states()}
    return {o: by_id[entity_id(o)] for o in ENTITIES if entity_id(o) in by_id}


class History:
    """Every distinct state of some entities, polled from Home Assistant's REST API (an update lasts seconds)."""

    def __init__(self, hass: HomeAssistant, object_ids: list[str]) -> None:
        self.hass = hass
        self.seen: dict[str, list[dict[str, Any]]] = {o: [] for o in object_ids}

    def poll(self) -> None:
        now = states(self.hass)
        for object_id, seen in self.seen.items():
            state = now.get(object_id)
            if state is not None and (not seen or seen[-1]["last_updated"] != state["last_updated"]):
                seen.append(state)

    def values(self, object_id: str) -> list[str]:
        return [s["state"] for s in self.seen[object_id]]

    def until(self, check: Callable[["History"], bool], timeout: float, what: str) -> None:
        def step() -> bool:
            self.poll()
            return check(self)

        self.hass.wait_for(step, timeout, f"{what}; seen {dict((o, self.values(o)) for o in self.seen)}")


def all_showing(hass: HomeAssistant, available: bool) -> bool:
    """Home Assistant shows every entity of the table, each available (or each unavailable)."""
    shown = states(hass)
    return len(shown) == len(ENTITIES) and all((s["state"] != "unavailable") == available for s in shown.values())


def on_then_off(values: list[str]) -> bool:
    return "on" in values and "off" in values[values.index("on") :]


def door_events(history: History) -> list[dict[str, Any]]:
    """The event entity's attributes at each event it showed."""
    return [s["attributes"] for s in history.seen["activity"] if s["state"] not in ("unknown", "unavailable")]


def whole_event(history: History) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The attributes of the first door event whose start and then end the event entity showed."""
    shown = door_events(history)
    for index, start in enumerate(shown):
        for end in shown[index + 1 :]:
            if (start["event_type"], end["event_type"]) == ("start", "end") and start["event_id"] == end["event_id"]:
                return start, end
    return None


def last_payload(collector: Collector, topic: str) -> bytes | None:
    messages = collector.on(topic)
    return messages[-1].payload if messages else None


def showing(hass: HomeAssistant, entity: str, state: str) -> dict[str, Any] | None:
    """The entity's state object once it shows ``state``."""
    current = hass.state(entity)
    return current if current is not None and current["state"] == state else None


def agent_events(collector: Collector) -> dict[tuple[str, str], dict[str, Any]]:
    """The agent's start and end messages as the broker delivered them, by (event id, type)."""
    events = (json.loads(m.payload) for m in collector.on(f"{BASE}/events"))
    return {(e["event_id"], e["type"]): e for e in events if e["type"] in ("start", "end")}


@pytest.mark.parametrize("homeassistant", ["2024.3.3", "2025.4.4"], indirect=True)
def test_home_assistant_starts_and_its_mqtt_integration_takes_discovery_from_the_broker(
    homeassistant: HomeAssistant, mosquitto: Broker
) -> None:
    entries = homeassistant.get("/api/config/config_entries/entry?domain=mqtt")
    assert [e["state"] for e in entries] == ["loaded"]
    device = {"identifiers": ["smoke"], "name": "Smoke"}
    config = {"name": "Probe", "unique_id": "smoke_probe", "state_topic": "smoke/probe", "device": device}
    topic = "homeassistant/binary_sensor/smoke/probe/config"
    publish.single(topic, json.dumps(config), retain=True, hostname=mosquitto.host, port=mosquitto.port, qos=1)
    homeassistant.wait_for(lambda: homeassistant.state("binary_sensor.smoke_probe"), 10, "the probe entity")
    publish.single("smoke/probe", b"ON", retain=True, hostname=mosquitto.host, port=mosquitto.port, qos=1)
    homeassistant.wait_for(lambda: showing(homeassistant, "binary_sensor.smoke_probe", "on"), 10, "the probe on")
    assert not [r.text for r in homeassistant.log_records() if r.level in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(
    ("homeassistant", "discovery"),
    [("2024.3.3", "component"), ("2025.4.4", "component"), ("2025.4.4", "device")],
    indirect=["homeassistant"],
)
def test_home_assistant_sees_one_device_that_follows_the_door_and_obeys_the_switch(
    homeassistant: HomeAssistant,
    discovery: str,
    mosquitto: Broker,
    run_agent: Callable[..., Child],
    collector_factory: Callable[..., Collector],
    record_property: Callable[[str, object], None],
) -> None:
    hass = homeassistant
    started = time.monotonic()
    seen = collector_factory(mosquitto, ("homeassistant/#", f"{BASE}/#"))
    env = {"EDGECAM_HOMEASSISTANT__DISCOVERY": discovery, "EDGECAM_MQTT__STATS_INTERVAL": "1", **SCENE}
    # The closed door learnt from a quiet stretch of the scene, so the agent reports the door's state.
    quiet = {**env, "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "60", "EDGECAM_DOOR__CALIBRATE_SECONDS": "1"}
    run_agent(mosquitto, "calibrate", **quiet).finish()
    agent = run_agent(mosquitto, **env)

    # One device, with every entity of the table, in the registries Home Assistant's own pages read.
    devices = hass.wait_for(lambda: our_device(hass), 20, "the device in the device registry")
    assert len(devices) == 1, devices
    device = devices[0]
    assert (device["name"], device["manufacturer"]) == (DEVICE, "edgecam")
    assert device["model"], device
    assert device["sw_version"], device

    def device_entities() -> list[dict[str, Any]]:
        found = [e for e in hass.entities() if e["device_id"] == device["id"]]
        return found if len(found) >= len(ENTITIES) else []

    registered = hass.wait_for(device_entities, 10, "every entity in the entity registry")
    assert {e["unique_id"]: e["entity_id"] for e in registered} == {
        f"edgecam_{DEVICE}_{o}": entity_id(o) for o in ENTITIES
    }
    assert {e["entity_id"] for e in registered if e["entity_category"] == "diagnostic"} == {
        entity_id(o) for o in DIAGNOSTIC
    }
    assert {e["platform"] for e in registered} == {"mqtt"}
    hass.wait_for(lambda: all_showing(hass, available=True), 10, "every entity available")

    # Door and movement follow the scene; each door event shows on the event entity; the image is the latest still.
    history = History(hass, ["door", "motion", "activity"])
    history.until(
        lambda h: on_then_off(h.values("door")) and on_then_off(h.values("motion")) and whole_event(h) is not None,
        30,
        "the door open and closed, movement on and off, a door event's start and end",
    )
    event = whole_event(history)
    assert event is not None
    sent = agent_events(seen)
    for attributes in event:
        message = sent[(attributes["event_id"], attributes["event_type"])]
        assert attributes["seq"] == message["seq"], (attributes, message)
        assert attributes.get("door") == message.get("door"), (attributes, message)
        assert attributes.get("stills") == message.get("stills"), (attributes, message)
    assert event[1]["stills"] >= 1
    assert {e["event_type"] for e in door_events(history)} <= {"start", "end"}, "a still is not an event"

    def image_is_latest_still() -> bool:
        retained = seen.on(f"{BASE}/snapshot")
        image = hass.image(entity_id("still"))
        return bool(retained) and image.status == 200 and image.body == retained[-1].payload

    hass.wait_for(image_is_latest_still, 10, "the image entity serving the latest still byte for byte")
    assert hass.image(entity_id("still")).content_type == "image/jpeg"

    # The switch is the privacy switch: Home Assistant turns detection off and on, the agent confirms.
    def switch(service: str, confirmed: bytes, state: str) -> dict[str, Any]:
        hass.call_service("switch", service, entity_id=entity_id("detect"))
        seen.wait_for(lambda c: last_payload(c, f"{BASE}/detect") == confirmed)
        return hass.wait_for(lambda: showing(hass, entity_id("detect"), state), 10, f"the switch {state}")

    assert switch("turn_off", b"OFF", "off")["attributes"].get("held_off_by") == ["switch"]
    assert switch("turn_on", b"ON", "on")["attributes"].get("held_off_by") == []
    shown_states = {entity_id(o): s["state"] for o, s in states(hass).items()}
    print(f"Home Assistant {hass.version}, {discovery} discovery, states shown:", json.dumps(shown_states, indent=1))

    # SIGKILL: the broker's last will makes every entity unavailable; a new agent brings them back.
    configs = {m.topic for m in seen.received if m.topic.endswith("/config") and m.payload}
    assert len(configs) == (1 if discovery == "device" else len(ENTITIES)), sorted(configs)
    announced = {topic: len(seen.on(topic)) for topic in configs}
    agent.process.send_signal(signal.SIGKILL)
    agent.exit_code(10)
    hass.wait_for(lambda: all_showing(hass, available=False), 15, "every entity unavailable")
    agent = run_agent(mosquitto, **env)
    hass.wait_for(lambda: all_showing(hass, available=True), 20, "every entity available again")
    again = {e["unique_id"]: e["entity_id"] for e in hass.entities() if e["device_id"] == device["id"]}
    assert again == {e["unique_id"]: e["entity_id"] for e in registered}, "the same entities, no duplicates"
    assert [d["id"] for d in our_device(hass)] == [device["id"]]

    # Home Assistant's birth message makes the agent announce every config again (after those of its connect).
    seen.wait_for(lambda c: all(len(c.on(topic)) > count for topic, count in announced.items()))
    announced = {topic: len(seen.on(topic)) for topic in configs}
    publish.single("homeassistant/status", b"online", hostname=mosquitto.host, port=mosquitto.port, qos=1)
    seen.wait_for(lambda c: all(len(c.on(topic)) > count for topic, count in announced.items()))

    # forget-ha, with the agent stopped, deletes the device from Home Assistant.
    agent.stop(20)
    forget = run_agent(mosquitto, "forget-ha", **env)
    forget.finish(20)
    hass.wait_for(lambda: not our_device(hass), 15, "the device gone from the device registry")
    hass.wait_for(lambda: not states(hass), 10, "every entity gone")

    # Nothing in Home Assistant's log complains about this device's topics, configs or entities.
    assert complaints(hass) == []

    duration = time.monotonic() - started
    record_property("duration_s", round(duration, 1))
    print(f"Home Assistant {hass.version}, {discovery} discovery: {duration:.1f} s after Home Assistant was ready")


@pytest.mark.parametrize("homeassistant", ["2025.4.4"], indirect=True)
def test_switching_the_discovery_form_keeps_the_device_and_its_entities_without_a_complaint(
    homeassistant: HomeAssistant,
    mosquitto: Broker,
    run_agent: Callable[..., Child],
    collector_factory: Callable[..., Collector],
) -> None:
    hass = homeassistant
    seen = collector_factory(mosquitto, (f"{BASE}/stats",))
    quiet = {"EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "60", "EDGECAM_DOOR__CALIBRATE_SECONDS": "1"}
    run_agent(mosquitto, "calibrate", **quiet).finish()
    registered: dict[str, str] = {}
    for n, form in enumerate(["component", "device", "component"]):
        agent = run_agent(mosquitto, EDGECAM_HOMEASSISTANT__DISCOVERY=form, EDGECAM_MQTT__STATS_INTERVAL="1")
        agent.wait_log("homeassistant: announcing device", 10)
        # Two stats later the agent has had the broker's retained replies to its subscriptions and acted on them.
        seen.wait_for(functools.partial(has_stats, at_least=len(seen.on(f"{BASE}/stats")) + 2))
        probe(hass, mosquitto, f"probe{n}")  # Home Assistant has handled everything published before it
        hass.wait_for(lambda: all_showing(hass, available=True), 10, f"every entity available ({form})")
        (device,) = our_device(hass)
        now = {e["unique_id"]: e["entity_id"] for e in hass.entities() if e["device_id"] == device["id"]}
        assert now == (registered or now), f"{form}: other entities than before"
        registered = now
        agent.stop(20)
    assert len(registered) == len(ENTITIES)
    assert complaints(hass) == []


def complaints(hass: HomeAssistant) -> list[str]:
    """Home Assistant's warnings and errors that name edgecam, this device or its entities."""
    ours = re.compile(rf"edgecam|{re.escape(DEVICE)}|{DEVICE.replace('-', '_')}")
    return [r.text for r in hass.log_records() if r.level not in ("DEBUG", "INFO") and ours.search(r.text)]


def has_stats(collector: Collector, at_least: int) -> bool:
    return len(collector.on(f"{BASE}/stats")) >= at_least


def probe(hass: HomeAssistant, broker: Broker, name: str) -> None:
    """Publish a discovery config of another device and wait until Home Assistant shows its entity."""
    config = {"name": "Probe", "unique_id": name, "state_topic": f"probe/{name}", "device": {"identifiers": [name]}}
    topic = f"homeassistant/binary_sensor/{name}/probe/config"
    publish.single(topic, json.dumps(config), hostname=broker.host, port=broker.port, qos=1)
    hass.wait_for(lambda: any(e["unique_id"] == name for e in hass.entities()), 10, f"the {name} entity")


@pytest.mark.parametrize("homeassistant", ["2025.4.4"], indirect=True)
def test_the_documented_alert_keeps_each_door_events_first_still(
    homeassistant: HomeAssistant,
    mosquitto: Broker,
    run_agent: Callable[..., Child],
    collector_factory: Callable[..., Collector],
) -> None:
    hass = homeassistant
    (hass.config_dir / "automations.yaml").write_text(documented_alert(hass))
    hass.call_service("automation", "reload")
    hass.wait_for(lambda: showing(hass, "automation.front_door_notify_with_the_picture", "on"), 10, "the automation")
    seen = collector_factory(mosquitto, (f"{BASE}/#",))
    run_agent(mosquitto, **SCENE)

    def kept() -> dict[str, bytes] | None:
        files = {p.stem: p.read_bytes() for p in (hass.config_dir / "www" / "edgecam").glob("*.jpg")}
        return files if len(files) >= 2 else None

    files = hass.wait_for(kept, 40, "two door events' stills kept by the automation")
    for event_id, jpeg in files.items():
        (first,) = seen.on(f"{BASE}/events/{event_id}/stills/1")
        assert jpeg == first.payload, f"{event_id}: the kept picture is not the event's first still"


def documented_alert(hass: HomeAssistant) -> str:
    """The alert automation of docs/home-assistant.md for this device, without its last step (there is no phone)."""
    steps, notify = documented_yaml("notify with the picture").split("  - service: notify.")
    assert 'image: "/local/edgecam/{{ event_id }}.jpg"' in notify
    steps = steps.replace("front_door_", f"{DEVICE.replace('-', '_')}_").replace(
        "/config/www", str(hass.config_dir / "www")
    )
    return "- " + steps.replace("\n", "\n  ")


def documented_yaml(containing: str) -> str:
    """The one YAML block of docs/home-assistant.md that contains ``containing``."""
    doc = (ROOT / "docs" / "home-assistant.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL) if containing in b]
    return str(block)


@pytest.fixture
def homeassistant_shell_commands() -> str:
    """The shell commands of docs/home-assistant.md#erasure (the body under ``shell_command:``)."""
    block = documented_yaml("edgecam_forget_event:")
    head, body = block.split("shell_command:\n", 1)
    assert not head.strip()
    return textwrap.dedent(body)


def test_the_documented_erasure_deletes_the_pictures_the_camera_forgets(
    homeassistant: HomeAssistant, mosquitto: Broker, tmp_path: Path
) -> None:
    hass = homeassistant
    automation = documented_yaml("forget what the camera forgets").replace("edgecam/front-door/", f"{BASE}/")
    (hass.config_dir / "automations.yaml").write_text("- " + automation.replace("\n", "\n  "))
    hass.call_service("automation", "reload")
    entity = "automation.front_door_forget_what_the_camera_forgets"
    hass.wait_for(lambda: showing(hass, entity, "on"), 10, "the automation")

    def listening() -> bool:
        """Home Assistant subscribes a moment after the reload: a message it hears leaves a trace, condition or not."""
        publish.single(f"{BASE}/events", '{"type":"start"}', hostname=mosquitto.host, port=mosquitto.port, qos=1)
        time.sleep(0.5)
        return bool(hass.command("trace/list", domain="automation"))

    hass.wait_for(listening, 20, "the automation to hear the events topic", interval=0.5)
    settings = Settings(device_id=DEVICE, mqtt=mosquitto.settings(), storage=StorageSettings(dir=tmp_path / "state"))
    doors = {name: make_door_event(Topics(BASE), DEVICE, 0) for name in ("one", "old", "new")}
    with Outbox(settings.storage) as outbox:
        outbox.delivered([outbox.append(event) for door in doors.values() for event, _ in door.rows])
    kept = hass.config_dir / "www" / "edgecam"
    kept.mkdir(parents=True, exist_ok=True)
    pictures = {name: kept / f"{door.event_id}.jpg" for name, door in doors.items()}  # as the alert saves them
    for path in pictures.values():
        path.write_bytes(b"\xff\xd8 a picture")
    week_ago = time.time() - 7 * 86400
    os.utime(pictures["old"], (week_ago, week_ago))

    def forget(scope: Scope, gone: set[str]) -> None:
        assert forget_events(settings, scope).sent
        left = {pictures[name].name for name in set(pictures) - gone}
        hass.wait_for(lambda: {p.name for p in kept.glob("*.jpg")} == left or None, 20, f"only {left} left")

    forget(Scope(event_id=doors["one"].event_id), {"one"})
    forget(Scope(before=datetime.now(UTC) - timedelta(days=1)), {"one", "old"})
    forget(Scope(), set(pictures))
