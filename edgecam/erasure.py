"""``edgecam forget``: erase door events on the device, clear the retained snapshot, and tell every subscriber.

The order keeps the promise whatever fails: the events are deleted from the outbox, then a ``forget`` message is
stored in it like any event (so the agent sends it if the broker cannot be reached now), then it is published with
an empty retained message on ``<base>/snapshot`` (MQTT 5 section 3.3.1.3: that deletes the retained still).
"""

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgecam.clock import boot_id, time_synced
from edgecam.config import DEVICE_ID_PATTERN, Settings
from edgecam.errors import BrokerError, ConfigError
from edgecam.models import Event, Topics, iso_ms, utc_now
from edgecam.mqtt.subscriber import Subscriber
from edgecam.outbox import Erased, Outbox, payload_bytes

logger = logging.getLogger(__name__)

SHORT_ID = 8
"""Characters of an event id ``edgecam listen`` prints, and the least ``forget --event`` takes as a beginning."""


@dataclass(frozen=True)
class Scope:
    """Which door events to forget: one (``event_id``), those begun before ``before``, or (neither) all."""

    event_id: str | None = None
    before: datetime | None = None
    """Aware: events whose first message was written before this moment."""

    @classmethod
    def parse(cls, event_id: str | None, before: str | None, all_events: bool) -> "Scope":
        """The scope of ``--event``, ``--before`` or ``--all`` (exactly one); raise ConfigError naming the option."""
        given = sum((event_id is not None, before is not None, all_events))
        if given != 1:
            raise ConfigError(
                "forget: say which events: --event ID, --before DATE or --all"
                if given == 0
                else "forget: --event, --before and --all go one at a time"
            )
        if event_id is not None:
            if not re.match(DEVICE_ID_PATTERN, event_id):
                raise ConfigError(f"forget --event: {event_id!r} is not an event id (letters, digits, '_' and '-')")
            return cls(event_id=event_id)
        if before is not None:
            try:
                moment = datetime.fromisoformat(before)
            except ValueError:
                raise ConfigError(
                    f"forget --before: {before!r} is not a date: YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time)"
                ) from None
            return cls(before=moment.astimezone())  # a naive time is local
        return cls()

    def payload(self) -> dict[str, Any]:
        """The ``forget`` field of the message (docs/event.schema.json)."""
        if self.event_id is not None:
            return {"event_id": self.event_id}
        if self.before is not None:
            return {"before": iso_ms(self.before)}
        return {"all": True}

    def describe(self) -> str:
        """In words, for the log: ``event 3f2a...``, ``events begun before 2026-11-01T...``, ``every event``."""
        if self.event_id is not None:
            return f"event {self.event_id}"
        if self.before is not None:
            return f"events begun before {iso_ms(self.before)}"
        return "every event"


@dataclass(frozen=True)
class Forgotten:
    """What ``forget_events`` did."""

    erased: Erased
    """What was deleted on the device."""
    seq: int
    """The outbox seq of the ``forget`` message."""
    sent: bool
    """The broker has the ``forget`` message and the retained snapshot is cleared; else the agent sends them."""


def forget_events(settings: Settings, scope: Scope, force: bool = False, timeout: float = 10.0) -> Forgotten:
    """Erase the events of ``scope`` on the device and tell the broker's subscribers to erase their copies.

    Raises StorageError, erasing nothing, when an event in scope is not delivered yet and ``force`` is false, or
    when the outbox cannot be used; ConfigError for an event id the device does not have. An unreachable broker is
    not an error: the agent sends the message later.
    """
    with Outbox(settings.storage) as outbox:
        if scope.event_id is not None:
            event_ids = [_whole_id(outbox, scope.event_id)]
            scope = Scope(event_id=event_ids[0])
        else:
            event_ids = outbox.event_ids(None if scope.before is None else scope.before.timestamp())
        erased = outbox.erase(event_ids, force)
        message = Event(
            "forget",
            str(uuid.uuid4()),
            settings.device_id,
            utc_now(),
            0.0,
            {"forget": scope.payload()},
            time_synced(),
            boot_id(),
        )
        seq = outbox.append(message)
        logger.info(
            "forget: erased %s on the device: %d events, %d messages, %d stills%s",
            scope.describe(),
            erased.events,
            erased.rows,
            erased.stills,
            f" ({erased.undelivered} messages never delivered, dropped: --force)" if erased.undelivered else "",
        )
        try:
            _publish(settings, payload_bytes(message.payload(seq)), timeout)  # as stored: the agent may send it too
        except BrokerError as err:
            logger.warning("%s; the agent sends the forget message and clears the snapshot when it connects", err)
            return Forgotten(erased, seq, sent=False)
        if settings.outbox.confirm == "broker":
            outbox.delivered([seq])  # else it waits for a consumer's confirmation, as every event does
    logger.info("forget: cleared the retained snapshot and told the subscribers (forget message seq=%d)", seq)
    return Forgotten(erased, seq, sent=True)


def _whole_id(outbox: Outbox, given: str) -> str:
    """The event id of the device's event whose id is ``given``, or the one that begins with it (``SHORT_ID`` or more).

    Raises ConfigError when no event or more than one has it: nothing is erased and no one is told.
    """
    known = outbox.event_ids()
    if given in known:
        return given
    matches = [event_id for event_id in known if event_id.startswith(given)] if len(given) >= SHORT_ID else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(
            f"forget --event: no event {given} on this device (gone after storage.retention_days, or another "
            "camera's?); --before DATE reaches subscribers' older copies too"
        )
    raise ConfigError(f"forget --event: {len(matches)} events begin with {given}: give more of the event id")


def _publish(settings: Settings, payload: bytes, timeout: float) -> None:
    """Clear the retained snapshot and publish the ``forget`` message, each confirmed (QoS 1); raise BrokerError."""
    topics = Topics(settings.topic_base)
    subscriber = Subscriber(
        settings.mqtt, [topics.availability], lambda *_: None, f"edgecam-forget-{settings.device_id}"
    )
    subscriber.start()
    try:
        if not subscriber.wait_subscribed(timeout):
            raise BrokerError(f"forget: no answer from broker {settings.mqtt.where}")
        try:
            subscriber.publish_confirmed([(topics.snapshot, b"", True), (topics.events, payload, False)], timeout)
        except BrokerError as err:
            raise BrokerError(f"forget: {err}") from err
    finally:
        subscriber.stop()
