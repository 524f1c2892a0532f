"""Small frozen types passed between the stages, and the topic layout they are published under."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

EVENT_SCHEMA_VERSION = 1
EventType = Literal["start", "still", "end", "forget"]
DoorState = Literal["open", "closed"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One detection frame: the grey (lores Y) image and when it was seen."""

    index: int
    """0-based frame number since the source opened."""
    t: float
    """Seconds since the source opened: clip time for files, monotonic time for live cameras."""
    gray: NDArray[np.uint8]
    """Detection image, ``detect_height`` x ``detect_width``, uint8."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Per-frame camera metadata (ExposureTime, AnalogueGain, Lux, ...) where the source has it."""


class MotionResult(NamedTuple):
    """What the detector made of one frame (a named tuple: made every frame, at half a frozen dataclass's cost)."""

    score: float
    """Changed fraction of the door zone (0..1) against the background."""
    moving: bool
    """This frame counts as moving (score at or above ``motion.min_area``, not a global change)."""
    calibrating: bool = False
    """The background is still being learnt; no event can start."""
    global_change: bool = False
    """Most of the frame changed at once (light, exposure): absorbed as a new baseline."""
    settling: bool = False
    """After a global change, or while the camera's metadata says its exposure is adjusting: learning fast."""
    event: Literal["start", "end"] | None = None
    """An event starts or ends at this frame."""
    in_event: bool = False
    """An event is under way after this frame."""
    door: DoorState | None = None
    """The door's state, from the door contact or a reference of the closed door, where there is one."""
    why: str | None = None
    """With ``event``: why it starts or ends, in words (``3 moving frames in a row``)."""
    pending: bool = False
    """Camera motion awaits the door's confirmation (``EventTracker``): a still taken now is held in memory."""
    stirring: bool = True
    """A moving frame that also changed from the frame before it: movement now, not only a difference from the
    background (which a door shut after the background restarted from it open still is, for a while)."""


@dataclass(frozen=True, eq=False)
class Still:
    """One JPEG still of an event, masks already burned in."""

    event_id: str
    index: int
    """1-based index within the event."""
    jpeg: bytes
    sha256: str
    width: int
    height: int
    path: Path | None = None
    """Where it is stored under the state directory, once written."""


def utc_now() -> datetime:
    """The wall clock in UTC (the default clock of the capture stage)."""
    return datetime.now(UTC)


def iso_ms(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-22T10:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One moment of a door event, before the outbox gives it its ``seq``."""

    type: EventType
    event_id: str
    device_id: str
    time: datetime
    score: float
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Type-specific fields: ``duration_s`` and ``stills`` on end; ``index``, ``sha256``, ... on still; ``forget``."""
    time_synced: bool = False
    """The system clock was synchronised (NTP) when ``time`` was read; until then ``time`` may be far off."""
    boot_id: str = ""
    """The kernel's id of the boot ``time`` was read in."""

    def payload(self, seq: int) -> dict[str, Any]:
        """The JSON object published on ``<base>/events`` (docs/mqtt.md, docs/event.schema.json)."""
        return {
            "v": EVENT_SCHEMA_VERSION,
            "type": self.type,
            "event_id": self.event_id,
            "device_id": self.device_id,
            "seq": seq,
            "time": iso_ms(self.time),
            "score": round(self.score, 4),
            "time_synced": self.time_synced,
            "boot_id": self.boot_id,
            **self.extra,
        }


@dataclass(frozen=True)
class Topics:
    """The topic layout under ``<mqtt.topic_prefix>/<device_id>``."""

    base: str

    @property
    def availability(self) -> str:
        """``online`` / ``offline``, retained; ``offline`` is the last will."""
        return f"{self.base}/availability"

    @property
    def motion(self) -> str:
        """``ON`` / ``OFF``, retained."""
        return f"{self.base}/motion"

    @property
    def door(self) -> str:
        """``open`` / ``closed``, retained; only with a door contact or a reference from ``edgecam calibrate``."""
        return f"{self.base}/door"

    @property
    def events(self) -> str:
        """Event JSON, QoS 1, not retained."""
        return f"{self.base}/events"

    @property
    def snapshot(self) -> str:
        """The latest still's JPEG, retained."""
        return f"{self.base}/snapshot"

    @property
    def stats(self) -> str:
        """The outbox report (JSON), every ``mqtt.stats_interval`` seconds, retained."""
        return f"{self.base}/stats"

    @property
    def detect(self) -> str:
        """``ON`` / ``OFF``, retained: whether door events are being detected (``<base>/set/detect`` switches it)."""
        return f"{self.base}/detect"

    @property
    def detect_command(self) -> str:
        """``ON`` / ``OFF`` here switches detection (``edgecam.commands``)."""
        return f"{self.base}/set/detect"

    @property
    def privacy(self) -> str:
        """Why detection is off (JSON, retained): ``{"detect": "ON"|"OFF", "held_off_by": [...]}``.

        ``held_off_by`` lists what holds detection off, any of ``switch`` (``<base>/set/detect``), ``schedule``
        (``privacy.schedule``) and ``gpio`` (``privacy.gpio_pin``); empty while detection is on.
        """
        return f"{self.base}/privacy"

    @property
    def last_event(self) -> str:
        """The start time of the latest door event (ISO 8601 UTC), retained; absent until there has been one."""
        return f"{self.base}/last_event"

    @property
    def commands(self) -> str:
        """The filter of the commands the agent accepts: ``<base>/set/<name>``."""
        return f"{self.base}/set/#"

    @property
    def agent(self) -> str:
        """The claim of the agent publishing as this device (JSON, retained; ``edgecam.mqtt.claim``)."""
        return f"{self.base}/agent"

    @property
    def ack(self) -> str:
        """Where a consumer confirms events (a JSON list of event ids) with ``outbox.confirm = 'consumer'``."""
        return f"{self.base}/ack"

    def still(self, event_id: str, index: int) -> str:
        """Where the JPEG of one still is published, QoS 1."""
        return f"{self.base}/events/{event_id}/stills/{index}"
