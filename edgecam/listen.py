"""``edgecam listen``: a reference subscriber that prints events, saves stills and checks their sha256.

With ``--ack`` it also confirms each door event it has whole (its end and every still, verified) on
``<prefix>/<device>/ack``, for agents with ``outbox.confirm = "consumer"``.
"""

import hashlib
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgecam.config import DEVICE_ID_PATTERN, Settings
from edgecam.errors import ConfigError
from edgecam.mqtt.client import Subscriber

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a device id or event id looks like; anything else is never used as a file name."""


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _event_clock(value: Any) -> str:
    try:
        return _clock(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


@dataclass
class _Whole:
    """How much of one door event has arrived, to confirm it once it is all here."""

    stills: set[int]
    """Still indices received and verified, or announced as dropped."""
    expected: int | None = None
    """The ``stills`` count of the end, once the end has arrived."""
    confirmed: bool = False


@dataclass
class _StillParts:
    """What has arrived of one still: its event JSON and its JPEG, in either order."""

    event: dict[str, Any] | None = None
    jpeg: bytes | None = None
    saved: str = ""
    """Where the JPEG went (``-> <path>``) or why it did not."""


class Listener:
    """Turns received messages into output lines and saved stills; no network, no printing."""

    def __init__(self, topic_prefix: str, out_dir: Path, now: Callable[[], datetime] = datetime.now) -> None:
        """Listen below ``topic_prefix``; save stills to ``out_dir/<device>/<event_id>/<index>.jpg``."""
        self._prefix = topic_prefix + "/"
        self._out_dir = out_dir
        self._now = now
        self._state: dict[tuple[str, str], str] = {}
        self._seen: set[tuple[str, str, int]] = set()
        self._stills: dict[tuple[str, str, int], _StillParts] = {}
        self._done: set[tuple[str, str, int]] = set()
        self._whole: dict[tuple[str, str], _Whole] = {}
        self._to_confirm: dict[str, list[str]] = {}
        self.events = 0
        """Event lines produced so far (start, still, end)."""
        self.mismatches = 0
        """Stills whose JPEG did not match the sha256 of their event."""

    def take_confirmations(self) -> dict[str, list[str]]:
        """Per device, the event ids that have arrived whole since the last call (or came again after it)."""
        confirmations, self._to_confirm = self._to_confirm, {}
        return confirmations

    def _progress(self, device: str, event_id: str, still: int | None = None, end: int | None = None) -> None:
        whole = self._whole.setdefault((device, event_id), _Whole(set()))
        if still is not None:
            whole.stills.add(still)
        if end is not None:
            whole.expected = end
        if whole.expected is not None and len(whole.stills) >= whole.expected and not whole.confirmed:
            whole.confirmed = True
            self._to_confirm.setdefault(device, []).append(event_id)

    def handle(self, topic: str, payload: bytes, retain: bool) -> list[str]:
        """The lines one message produces (often none)."""
        if not topic.startswith(self._prefix):
            return []
        parts = topic[len(self._prefix) :].split("/")
        device = parts[0]
        if not _NAME.match(device):
            return []
        if parts[1:] in (["availability"], ["motion"], ["door"], ["detect"]):
            return self._state_change(device, parts[1], payload)
        if parts[1:] == ["events"]:
            return self._event(device, payload)
        if len(parts) == 5 and parts[1] == "events" and parts[3] == "stills":
            return self._jpeg(device, parts[2], parts[4], payload)
        return []

    def _state_change(self, device: str, what: str, payload: bytes) -> list[str]:
        value = payload.decode(errors="replace")
        if self._state.get((device, what)) == value:
            return []
        self._state[device, what] = value
        return [f"{_clock(self._now())} {device} {what} {value}"]

    def _event(self, device: str, payload: bytes) -> list[str]:
        try:
            event = json.loads(payload)
            key = (device, str(event["event_id"]), int(event["seq"]))
            kind = str(event["type"])
        except (ValueError, TypeError, KeyError) as err:
            return [f"{_clock(self._now())} {device} unreadable event ({err}): {payload[:80]!r}"]
        if key in self._seen:
            whole = self._whole.get(key[:2])
            if whole is not None and whole.confirmed:
                self._to_confirm.setdefault(device, []).append(key[1])  # sent again: our confirmation was lost
            return []  # a duplicate: delivery is at least once
        self._seen.add(key)
        if kind == "still":
            try:
                index = int(event["index"])
            except (KeyError, TypeError, ValueError) as err:
                return [f"{_event_clock(event.get('time'))} {device} still without an index ({err})"]
            if event.get("dropped"):
                self.events += 1
                self._progress(device, key[1], still=index)
                why = event.get("dropped_reason") or "disk full or over budget"
                return [f"{self._describe(device, event)} #{index} dropped by the agent ({why})"]
            return self._still_part(device, key[1], index, event=event)
        self.events += 1
        line = self._describe(device, event)
        if "door" in event:
            line += f" door={event['door']}"
        if kind == "end":
            line += f" duration={event.get('duration_s')}s stills={event.get('stills')}"
            if event.get("stills_dropped"):
                line += f" dropped={event['stills_dropped']}"
            if event.get("interrupted"):
                line += " (cut off by an agent restart)"
            stills = event.get("stills")
            self._progress(device, key[1], end=stills if isinstance(stills, int) else 0)
        return [line]

    def _describe(self, device: str, event: dict[str, Any]) -> str:
        score = event.get("score")
        score_text = f"{score:.2f}" if isinstance(score, int | float) else str(score)
        return (
            f"{_event_clock(event.get('time'))} {device} {event.get('type', '?'):<5}  "
            f"event={str(event.get('event_id'))[:8]} seq={event.get('seq')} score={score_text}"
        )

    def _jpeg(self, device: str, event_id: str, index_text: str, jpeg: bytes) -> list[str]:
        if not _NAME.match(event_id) or not index_text.isdigit():
            return [f"{_clock(self._now())} {device} still on an unexpected topic: {event_id}/{index_text}"]
        index = int(index_text)
        if (device, event_id, index) in self._done:
            return []
        path = self._out_dir / device / event_id / f"{index}.jpg"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            partial.write_bytes(jpeg)
            os.replace(partial, path)
        except OSError as err:
            logger.error("listen: cannot save %s: %s", path, err.strerror or err)
            return self._still_part(device, event_id, index, jpeg=jpeg, saved="not saved")
        return self._still_part(device, event_id, index, jpeg=jpeg, saved=f"-> {path}")

    def _still_part(
        self,
        device: str,
        event_id: str,
        index: int,
        event: dict[str, Any] | None = None,
        jpeg: bytes | None = None,
        saved: str = "",
    ) -> list[str]:
        key = (device, event_id, index)
        if key in self._done:
            return []
        parts = self._stills.setdefault(key, _StillParts())
        if event is not None:
            parts.event = event
        if jpeg is not None:
            parts.jpeg, parts.saved = jpeg, saved
        if parts.event is None or parts.jpeg is None:
            return []
        del self._stills[key]
        self._done.add(key)
        self.events += 1
        digest = hashlib.sha256(parts.jpeg).hexdigest()
        expected = parts.event.get("sha256")
        if digest == expected:
            check = "sha256 ok"
            self._progress(device, event_id, still=index)
        else:
            self.mismatches += 1
            check = f"sha256 MISMATCH (event says {str(expected)[:12]}, JPEG is {digest[:12]})"
        size = f"{parts.event.get('width')}x{parts.event.get('height')} {len(parts.jpeg) / 1000:.1f} kB"
        return [f"{self._describe(device, parts.event)} #{index} {size} {check} {parts.saved}"]


def run_listen(
    settings: Settings,
    out_dir: Path,
    stop: threading.Event | None = None,
    count: int | None = None,
    device: str = "+",
    ack: bool = False,
) -> int:
    """Print events of one device (or all: ``+``) until ``stop`` or ``count`` events; 1 if a sha256 failed.

    With ``ack``, confirm every whole event on ``<prefix>/<device>/ack``.
    """
    if device != "+" and not re.match(DEVICE_ID_PATTERN, device):
        raise ConfigError(f"listen: {device!r} is not a device id (letters, digits, '_' and '-', or '+' for all)")
    base = f"{settings.mqtt.topic_prefix}/{device}"
    filters = [
        f"{base}/{topic}" for topic in ("events", "events/+/stills/+", "availability", "motion", "door", "detect")
    ]
    inbox: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
    listener = Listener(settings.mqtt.topic_prefix, out_dir)
    subscriber = Subscriber(settings.mqtt, filters, lambda topic, payload, retain: inbox.put((topic, payload, retain)))
    logger.info("listening to %s/... on %s:%d; stills go to %s", base, settings.mqtt.host, settings.mqtt.port, out_dir)
    subscriber.start()
    try:
        while not (stop is not None and stop.is_set()) and not (count is not None and listener.events >= count):
            try:
                topic, payload, retain = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            for line in listener.handle(topic, payload, retain):
                print(line, flush=True)
            if ack:
                for name, event_ids in listener.take_confirmations().items():
                    subscriber.publish(f"{settings.mqtt.topic_prefix}/{name}/ack", json.dumps(event_ids).encode())
    finally:
        subscriber.stop()
    return 1 if listener.mismatches else 0
