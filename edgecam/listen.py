"""``edgecam listen``: a reference subscriber that prints events, keeps them in an event log and checks stills.

The log (``edgecam.eventlog``) keeps events in ``<out>/events.sqlite3``, stills and thumbnails in
``<out>/<device>/<YYYY-MM-DD>/``, and static pages (``<out>/index.html``, ``<out>/<YYYY-MM-DD>.html``) an owner
opens in a browser; the index opens with the table of ``edgecam fleet``, from the retained topics it reads too.
With ``--ack`` it also confirms each door event it has whole (its end and every still, verified), and each forget
message once carried out, on ``<prefix>/<device>/ack``, for agents with ``outbox.confirm = "consumer"``.
"""

import contextlib
import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from edgecam.config import DEVICE_ID_PATTERN, Settings
from edgecam.errors import ConfigError
from edgecam.eventlog import NAME, Admission, EventLog, Message, StillSaved
from edgecam.eventlog_pages import write_pages
from edgecam.eventlog_views import Verdict
from edgecam.fleet import TOPICS as FLEET_TOPICS
from edgecam.mqtt.subscriber import Subscriber

logger = logging.getLogger(__name__)

_HELD = 32
"""JPEGs kept in memory while their still JSON has not arrived (it normally comes right after)."""
PAGES_EVERY = 1.0
"""Seconds between two writes of the pages while messages flow."""


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _event_clock(value: Any) -> str:
    try:
        return _clock(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


class Listener:
    """Turns received messages into output lines, kept in an ``EventLog``; no network, no printing."""

    def __init__(self, topic_prefix: str, log: EventLog, now: Callable[[], datetime] = datetime.now) -> None:
        """Listen below ``topic_prefix``; keep events, stills and states in ``log``."""
        self._prefix = topic_prefix + "/"
        self.log = log
        self._now = now
        self._state: dict[tuple[str, str], str] = {}
        self._held: dict[tuple[str, str, int], bytes] = {}
        """JPEGs that came before their still JSON (at most ``_HELD`` of them)."""
        self._confirmed: set[tuple[str, str]] = set()
        self._to_confirm: dict[str, list[str]] = {}
        self.events = 0
        """Event lines produced so far (start, still, end, forget)."""
        self.mismatches = 0
        """Stills whose JPEG did not match the sha256 of their event."""

    def take_confirmations(self) -> dict[str, list[str]]:
        """Per device, the event ids that have arrived whole since the last call (or came again after it).

        Forget messages are confirmed as soon as they are carried out (or not understood).
        """
        confirmations, self._to_confirm = self._to_confirm, {}
        return confirmations

    def _confirm(self, device: str, event_id: str) -> None:
        self._to_confirm.setdefault(device, []).append(event_id)

    def _progress(self, device: str, event_id: str) -> None:
        if (device, event_id) not in self._confirmed and self.log.is_whole(device, event_id):
            self._confirmed.add((device, event_id))
            self._confirm(device, event_id)

    def handle(self, topic: str, payload: bytes, retain: bool) -> list[str]:
        """The lines one message produces (often none)."""
        if not topic.startswith(self._prefix):
            return []
        parts = topic[len(self._prefix) :].split("/")
        device = parts[0]
        if not NAME.match(device):
            return []
        if len(parts) == 2 and parts[1] in FLEET_TOPICS:
            self.log.take_fleet(device, parts[1], payload)
        if parts[1:] in (["availability"], ["motion"], ["door"], ["detect"]):
            return self._state_change(device, parts[1], payload, retain)
        if parts[1:] == ["events"]:
            self.log.heard(device)
            return self._event(device, payload)
        if len(parts) == 5 and parts[1] == "events" and parts[3] == "stills":
            self.log.heard(device)
            return self._jpeg(device, parts[2], parts[4], payload)
        return []

    def _state_change(self, device: str, what: str, payload: bytes, retain: bool) -> list[str]:
        value = payload.decode(errors="replace")
        self.log.set_state(device, what, value, retained=retain)
        if self._state.get((device, what)) == value:
            return []
        self._state[device, what] = value
        return [f"{_clock(self._now())} {device} {what} {value}"]

    def _event(self, device: str, payload: bytes) -> list[str]:
        try:
            event = json.loads(payload)
            message = Message.parse(event)
        except (ValueError, TypeError, KeyError) as err:
            return [f"{_clock(self._now())} {device} unreadable event ({err}): {payload[:80]!r}"]
        if not NAME.match(message.event_id):
            return [f"{_clock(self._now())} {device} event with an unusable id, ignored: {message.event_id[:80]!r}"]
        admission = self.log.admit(device, message)
        if admission is Admission.DUPLICATE:
            if message.type == "forget" or self.log.is_whole(device, message.event_id):
                self._confirm(device, message.event_id)  # sent again: our confirmation was lost
            return []  # a duplicate: delivery is at least once
        if admission is not Admission.NEW:
            logger.debug("listen: %s event %s seq %d ignored: %s", device, message.event_id, message.seq, admission)
            return []
        if message.type == "forget":
            return self._forget(device, message)
        if message.type == "still":
            try:
                index = int(event["index"])
            except (KeyError, TypeError, ValueError) as err:
                self.log.record(device, message)
                return [f"{_event_clock(event.get('time'))} {device} still without an index ({err})"]
            if event.get("dropped"):
                self.log.record_still(device, message, index)
                self.events += 1
                self._progress(device, message.event_id)
                why = event.get("dropped_reason") or "disk full or over budget"
                return [f"{self._describe(device, event)} #{index} dropped by the agent ({why})"]
            saved = self.log.record_still(
                device, message, index, self._held.pop((device, message.event_id, index), None)
            )
            return [] if saved is None else self._still_line(device, message.event_id, index, saved)
        self.log.record(device, message)
        self.events += 1
        line = self._describe(device, event)
        if "door" in event:
            line += f" door={event['door']}"
        if message.type == "end":
            line += f" duration={event.get('duration_s')}s stills={event.get('stills')}"
            if event.get("stills_dropped"):
                line += f" dropped={event['stills_dropped']}"
            if event.get("interrupted"):
                line += " (cut off by an agent restart)"
            self._progress(device, message.event_id)
        return [line]

    def _forget(self, device: str, message: Message) -> list[str]:
        forgotten = self.log.forget(device, message)
        self.events += 1
        self._confirm(device, message.event_id)
        head = f"{_event_clock(message.fields.get('time'))} {device} forget event={message.event_id[:8]}"
        if forgotten is None:
            what = json.dumps(message.fields.get("forget"))[:80]
            return [f"{head} unknown forget {what}: nothing removed"]
        for key in [key for key in self._held if key[0] == device and self.log.is_forgotten(device, key[1])]:
            del self._held[key]
        return [f"{head} removed {forgotten.events} events, {forgotten.stills} stills"]

    def _describe(self, device: str, event: dict[str, Any]) -> str:
        score = event.get("score")
        score_text = f"{score:.2f}" if isinstance(score, int | float) else str(score)
        return (
            f"{_event_clock(event.get('time'))} {device} {event.get('type', '?'):<5}  "
            f"event={str(event.get('event_id'))[:8]} seq={event.get('seq')} score={score_text}"
        )

    def _jpeg(self, device: str, event_id: str, index_text: str, jpeg: bytes) -> list[str]:
        if not NAME.match(event_id) or not index_text.isdigit():
            return [f"{_clock(self._now())} {device} still on an unexpected topic: {event_id}/{index_text}"]
        index = int(index_text)
        verdict = self.log.still_verdict(device, event_id, index)
        if verdict is None:
            if not self.log.is_forgotten(device, event_id):
                self._held[device, event_id, index] = jpeg  # its JSON comes next
                while len(self._held) > _HELD:
                    del self._held[next(iter(self._held))]
            return []
        saved = self.log.attach_jpeg(device, event_id, index, jpeg)
        return [] if saved is None else self._still_line(device, event_id, index, saved)

    def _still_line(self, device: str, event_id: str, index: int, saved: StillSaved) -> list[str]:
        self.events += 1
        if saved.verdict is Verdict.MISMATCH:
            self.mismatches += 1
            check = f"sha256 MISMATCH (event says {str(saved.sha256)[:12]}, JPEG is {saved.digest[:12]})"
        else:
            check = "sha256 ok"
            self._progress(device, event_id)
        where = f"-> {saved.path}" if saved.path is not None else "not saved"
        described = {"time": saved.time, "type": "still", "event_id": event_id, "seq": saved.seq, "score": saved.score}
        size = f"{saved.width}x{saved.height} {saved.size / 1000:.1f} kB"
        return [f"{self._describe(device, described)} #{index} {size} {check} {where}"]


def keep_days_of(settings: Settings) -> float:
    """The agent's retention for the broker: ``storage.broker_expiry`` if set, else ``storage.retention_days``."""
    storage = settings.storage
    return storage.broker_expiry if storage.broker_expiry is not None else storage.retention_days


def _write_pages(log: EventLog, every_day: bool = False) -> None:
    """Write the pages that changed (or all of them), logging a failure: the log goes on without its pages."""
    days = log.take_changed_days()
    try:
        write_pages(log, None if every_day else days)
    except OSError as err:
        logger.error("listen: cannot write the pages in %s: %s", log.out_dir, err.strerror or err)


def run_listen(
    settings: Settings,
    out_dir: Path,
    stop: threading.Event | None = None,
    count: int | None = None,
    device: str = "+",
    ack: bool = False,
    keep_days: float | None = None,
) -> int:
    """Print events of one device (or all: ``+``) until ``stop`` or ``count`` events; 1 if a sha256 failed.

    Events, stills and pages go to the event log in ``out_dir``, which keeps them ``keep_days`` (default
    ``keep_days_of(settings)``). With ``ack``, confirm every whole event and every forget on
    ``<prefix>/<device>/ack``. Raises ConfigError for a bad ``device`` or ``keep_days``, StorageError when the
    log cannot be opened.
    """
    if device != "+" and not re.match(DEVICE_ID_PATTERN, device):
        raise ConfigError(f"listen: {device!r} is not a device id (letters, digits, '_' and '-', or '+' for all)")
    if keep_days is not None and not keep_days > 0:
        raise ConfigError(f"listen --keep-days: {keep_days} is not allowed: a number of days more than 0")
    base = f"{settings.mqtt.topic_prefix}/{device}"
    states = ("availability", "motion", "door", "detect")
    filters = [
        f"{base}/{topic}"
        for topic in ("events", "events/+/stills/+", *states, *(t for t in FLEET_TOPICS if t not in states))
    ]
    inbox: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
    log = EventLog(out_dir, keep_days if keep_days is not None else keep_days_of(settings))
    try:
        _write_pages(log, every_day=True)
        listener = Listener(settings.mqtt.topic_prefix, log)
        # A session of its own per event log and device filter: the broker keeps what comes while listen is away.
        session = hashlib.sha256(f"{out_dir.resolve()}\0{device}".encode()).hexdigest()[:12]
        subscriber = Subscriber(
            settings.mqtt,
            filters,
            lambda topic, payload, retain: inbox.put((topic, payload, retain)),
            f"edgecam-listen-{session}",
            persistent=True,
        )
        logger.info("listening to %s/... on %s; the event log is %s", base, settings.mqtt.where, out_dir)
        subscriber.start()
        written = time.monotonic()

        def take(topic: str, payload: bytes, retain: bool) -> None:
            for line in listener.handle(topic, payload, retain):
                print(line, flush=True)
            if ack:
                for name, event_ids in listener.take_confirmations().items():
                    subscriber.publish(f"{settings.mqtt.topic_prefix}/{name}/ack", json.dumps(event_ids).encode())

        try:
            while not (stop is not None and stop.is_set()) and not (count is not None and listener.events >= count):
                with contextlib.suppress(queue.Empty):
                    take(*inbox.get(timeout=0.2))
                log.maintain()
                if log.dirty and time.monotonic() - written >= PAGES_EVERY:
                    _write_pages(log)
                    written = time.monotonic()
        finally:
            subscriber.stop()
            while not inbox.empty():  # received, so acknowledged to the broker: the log must have them
                take(*inbox.get())  # confirmations now wait in paho, unsent: the agent sends the event again
            _write_pages(log)
    finally:
        log.close()
    return 1 if listener.mismatches else 0
