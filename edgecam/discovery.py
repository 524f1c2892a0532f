"""Home Assistant MQTT discovery: the retained configs that make this agent one device with its entities.

Facts from Home Assistant's MQTT integration docs (home-assistant.io/integrations/mqtt, "MQTT Discovery"):
per-component configs on ``<prefix>/<component>/<node_id>/<object_id>/config`` (every release since 2023.8 knows
all five components used here: ``image`` came in 2023.7, ``event`` in 2023.8); the device-based form on
``<prefix>/device/<node_id>/config`` with the entities under ``cmps``, each naming its ``p`` (platform), 2024.11
and later; an empty retained payload on a config topic removes that entity, and the device goes with its last
entity; Home Assistant publishes its birth message ``online`` on ``<prefix>/status`` when it (re)starts.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgecam import __version__
from edgecam.broker_settings import HomeAssistantSettings
from edgecam.config import CameraSettings
from edgecam.disk import write_atomically
from edgecam.models import Topics

logger = logging.getLogger(__name__)

Component = Literal["binary_sensor", "sensor", "switch", "image", "event"]

ORIGIN = {"name": "edgecam", "sw_version": __version__}
"""Who made the configs (the ``origin`` block: Home Assistant logs it beside any problem with them)."""

EVENT_TEMPLATE = (
    "{% if value_json.type in ('start', 'end') %}"
    "{{ {'event_type': value_json.type, 'event_id': value_json.event_id, 'seq': value_json.seq,"
    " 'time': value_json.time, 'door': value_json.get('door'), 'stills': value_json.get('stills')} | tojson }}"
    "{% endif %}"
)
"""Door events ``start`` and ``end`` become Home Assistant events; a still's message renders empty (ignored)."""

DISCOVERY_FILE = "homeassistant-announced.json"
"""In the state directory: the config topics announced last (``Discovery``)."""
MAX_STALE_CLEARS = 64
"""Config topics a connection removes on sight at most (retained configs under this node it did not announce)."""


@dataclass(frozen=True)
class Entity:
    """One entity: its component, its object id (in the topic and the unique id) and its own config keys."""

    component: Component
    object_id: str
    config: dict[str, Any]


def entities(topics: Topics, door: bool) -> list[Entity]:
    """The entities of one agent; the door's open/closed state only where ``door`` (a reference or a contact)."""
    diagnostic = {"entity_category": "diagnostic", "state_topic": topics.stats}
    table = [
        Entity(
            "binary_sensor",
            "door",
            {
                "name": "Door",
                "device_class": "door",
                "state_topic": topics.door,
                "payload_on": "open",
                "payload_off": "closed",
            },
        ),
        Entity(
            "binary_sensor",
            "motion",
            {"name": "Door movement", "device_class": "motion", "state_topic": topics.motion},
        ),
        Entity(
            "image", "still", {"name": "Latest still", "image_topic": topics.snapshot, "content_type": "image/jpeg"}
        ),
        Entity(
            "event",
            "activity",
            {
                "name": "Door activity",
                "icon": "mdi:door",
                "state_topic": topics.events,
                "event_types": ["start", "end"],
                "value_template": EVENT_TEMPLATE,
            },
        ),
        Entity(
            "switch",
            "detect",
            {
                "name": "Detection",
                "icon": "mdi:cctv",
                "command_topic": topics.detect_command,
                "state_topic": topics.detect,
                "json_attributes_topic": topics.privacy,
                "json_attributes_template": "{{ {'held_off_by': value_json.held_off_by} | tojson }}",
            },
        ),
        Entity(
            "sensor",
            "outbox_depth",
            {
                **diagnostic,
                "name": "Outbox depth",
                "icon": "mdi:tray-full",
                "unit_of_measurement": "messages",
                "state_class": "measurement",
                "value_template": "{{ value_json.depth }}",
            },
        ),
        Entity(
            "sensor",
            "oldest_waiting",
            {
                **diagnostic,
                "name": "Oldest waiting",
                "device_class": "duration",
                "unit_of_measurement": "s",
                "value_template": "{{ value_json.oldest_waiting_s }}",
            },
        ),
        Entity(
            "sensor",
            "disk_used",
            {
                **diagnostic,
                "name": "Outbox disk used",
                "icon": "mdi:sd",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "value_template": "{{ (value_json.used * 100) | round(1) }}",
            },
        ),
        Entity(
            "sensor",
            "stills_dropped",
            {
                **diagnostic,
                "name": "Stills dropped",
                "icon": "mdi:image-off",
                "state_class": "measurement",
                "value_template": "{{ value_json.stills_dropped }}",
            },
        ),
        Entity(
            "binary_sensor",
            "clock_synced",
            {
                **diagnostic,
                "name": "Clock synchronised",
                "icon": "mdi:clock-check",
                "value_template": "{{ 'ON' if value_json.time_synced else 'OFF' }}",
            },
        ),
        Entity(
            "sensor",
            "last_event",
            {
                "entity_category": "diagnostic",
                "name": "Last door event",
                "device_class": "timestamp",
                "state_topic": topics.last_event,
            },
        ),
        Entity(
            "sensor",
            "fps",
            {
                **diagnostic,
                "name": "Frames per second",
                "icon": "mdi:speedometer",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "value_template": "{{ value_json.fps }}",
            },
        ),
        Entity(
            "sensor",
            "detect_time",
            {
                **diagnostic,
                "name": "Detector time per frame",
                "device_class": "duration",
                "unit_of_measurement": "ms",
                "suggested_display_precision": 2,
                "state_class": "measurement",
                "value_template": "{{ value_json.detect_ms }}",
            },
        ),
        Entity(
            "sensor",
            "uptime",
            {
                **diagnostic,
                "name": "Uptime",
                "device_class": "duration",
                "unit_of_measurement": "s",
                "value_template": "{{ value_json.uptime_s }}",
            },
        ),
    ]
    return [e for e in table if door or e.object_id != "door"]


class Discovery:
    """What this agent announces to Home Assistant, and the retained configs it must remove.

    ``remembered`` (a file in the state directory) lists the config topics announced last time, so that a changed
    ``device_id``, ``homeassistant.discovery_prefix`` or ``homeassistant.discovery`` form, or discovery switched
    off, removes the old ones rather than leaving stale entities behind.
    """

    def __init__(
        self,
        settings: HomeAssistantSettings,
        device_id: str,
        topics: Topics,
        door: bool,
        model: str,
        remembered: Path,
    ) -> None:
        self._prefix = settings.discovery_prefix
        self._node = device_id
        self._remembered = remembered
        self.enabled = settings.enabled
        self.status_topic = settings.status_topic
        """Where Home Assistant publishes its birth message ``online``."""
        table = entities(topics, door) if settings.enabled else []
        self._entities = len(table)
        self.configs = announcement(settings, device_id, topics, table, model) if table else {}
        """Config topic -> its retained JSON payload; empty when discovery is off."""
        self._removed: set[str] = set()
        """Config topics whose removal this connection has published."""

    def owns(self, topic: str) -> bool:
        """``topic`` is one of Home Assistant's (a config or a removal this agent publishes)."""
        return topic.startswith(f"{self._prefix}/")

    def filters(self) -> list[str]:
        """What to subscribe to: Home Assistant's status and every config under this node (to find stale ones)."""
        if not self.enabled:
            return []
        return [self.status_topic, *node_filters(self._prefix, self._node)]

    def announce(self) -> list[tuple[str, bytes]]:
        """(topic, retained payload) to publish on connect: removals of what is no longer announced, then configs.

        Remembers the topics announced (a state directory that refuses the file is logged; the agent goes on).
        """
        before = read_remembered(self._remembered)
        if set(before) != set(self.configs):
            remember(self._remembered, self.configs)
        stale = [topic for topic in before if topic not in self.configs]
        # paho sends a subscription at once but holds publications beyond its in-flight window, so the broker may
        # still hand back a retained config removed here; removing it twice would reach Home Assistant after the
        # new configs, which it reports as a conflicting discovery message.
        self._removed = set(stale)
        if self.configs:
            logger.info(
                "homeassistant: announcing device %s with %d entities under %s/",
                self._node,
                self._entities,
                self._prefix,
            )
        return [(topic, b"") for topic in stale] + list(self.configs.items())

    def heard(self, topic: str, payload: bytes, retained: bool) -> list[tuple[str, bytes]]:
        """What to publish for a message on ``filters()``: all configs after a birth, or the removal of a stale one.

        A retained ``online`` on the status topic is an old birth, not Home Assistant starting: ignored.
        """
        if topic == self.status_topic:
            if payload.strip() == b"online" and not retained:
                logger.info("homeassistant: Home Assistant came online; announcing %d entities again", self._entities)
                return list(self.configs.items())
            return []
        if not payload or topic in self.configs or topic in self._removed or len(self._removed) >= MAX_STALE_CLEARS:
            return []
        self._removed.add(topic)
        logger.info("homeassistant: removing the stale discovery config %s (not among those announced now)", topic)
        return [(topic, b"")]


def announcement(
    settings: HomeAssistantSettings, device_id: str, topics: Topics, table: Iterable[Entity], model: str
) -> dict[str, bytes]:
    """Config topic -> retained JSON payload, in the form ``settings.discovery`` names."""
    prefix = settings.discovery_prefix
    device = {
        "identifiers": [f"edgecam_{device_id}"],
        "name": settings.device_name or device_id,
        "manufacturer": "edgecam",
        "model": model,
        "sw_version": __version__,
    }
    shared = {"availability_topic": topics.availability, "qos": 1}
    configs: dict[str, dict[str, Any]] = {}
    if settings.discovery == "device":
        components = {e.object_id: {"p": e.component, "unique_id": unique_id(device_id, e), **e.config} for e in table}
        configs[f"{prefix}/device/{device_id}/config"] = {"dev": device, "o": ORIGIN, "cmps": components, **shared}
    else:
        for e in table:
            topic = f"{prefix}/{e.component}/{device_id}/{e.object_id}/config"
            configs[topic] = {
                "unique_id": unique_id(device_id, e),
                **e.config,
                **shared,
                "device": device,
                "origin": ORIGIN,
            }
    return {topic: json.dumps(config, separators=(",", ":")).encode() for topic, config in configs.items()}


def camera_model(camera: CameraSettings) -> str:
    """What kind of camera this is, as Home Assistant's device page shows it."""
    source = camera.source
    if source in ("simulated", "picamera2"):
        return "simulated door camera" if source == "simulated" else "Raspberry Pi camera (picamera2)"
    if source.startswith("/dev/video") or source.isdigit():
        return "USB camera"
    return "network camera" if "://" in source else "recorded video"


def unique_id(device_id: str, entity: Entity) -> str:
    """The entity's unique id: the same on every restart while ``device_id`` stays."""
    return f"edgecam_{device_id}_{entity.object_id}"


def node_filters(prefix: str, node: str) -> list[str]:
    """Topic filters matching every config of ``node`` under ``prefix``, in either discovery form."""
    return [f"{prefix}/+/{node}/+/config", f"{prefix}/device/{node}/config"]


def read_remembered(path: Path) -> list[str]:
    """The config topics announced last time (none if the file is absent or unreadable)."""
    try:
        topics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        logger.warning("homeassistant: cannot read %s (%s); old discovery configs may stay", path, err)
        return []
    return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []


def remember(path: Path, topics: Iterable[str]) -> None:
    """Keep the config topics now announced in ``path``, so the next start can remove them if they change."""
    try:
        write_atomically(path, json.dumps(sorted(topics), indent=1).encode())
    except OSError as err:
        logger.warning("homeassistant: cannot write %s (%s); a later change may leave stale entities", path, err)
