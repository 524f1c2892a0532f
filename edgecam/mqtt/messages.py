"""What is published for one event: its still, the retained snapshot, and its event JSON, in that order.

``Messages`` composes the PUBLISHes of an outbox row or of an event held in memory, and of the snapshot set
again on connect, from plain values (the row, the still's JPEG, the limit a CONNACK stated, whether the broker
keeps retained messages); the publisher sends them and keeps the message ids.
"""

import json
from typing import Literal, NamedTuple

from edgecam.config import StorageSettings
from edgecam.models import Topics
from edgecam.mqtt.limits import PacketLimit
from edgecam.mqtt.unstored import InMemory
from edgecam.outbox import Pending


class Message(NamedTuple):
    """One PUBLISH of an event: where, what, retained or not, and seconds until the broker deletes it (None: never).

    ``kind`` names the JPEG it carries (a still or the snapshot), None for an event JSON or an empty snapshot.
    """

    topic: str
    payload: bytes
    retain: bool
    expiry: int | None = None
    kind: Literal["still", "snapshot"] | None = None


class Messages:
    """The messages of one event, fitted to the broker's packet limit, with their retain flags and expiries."""

    def __init__(self, topics: Topics, storage: StorageSettings, limit: PacketLimit) -> None:
        """Compose for ``topics``, with the expiries of ``storage`` and the still fitting of ``limit``."""
        self._topics = topics
        self._storage = storage
        self._limit = limit

    def of_row(self, row: Pending, jpeg: bytes | None, stated: int | None, retain: bool) -> list[Message]:
        """The messages of outbox row ``row``, in sending order: its still and snapshot (if any), its event JSON.

        ``jpeg`` is the still read from ``row.still_path``, None if it could not be read (the event JSON then says
        ``dropped``); ``stated`` the packet limit of the broker's CONNACK; ``retain`` whether the broker keeps
        retained messages. A ``forget`` row also deletes the retained snapshot and its event JSON never expires.
        """
        messages: list[Message] = []
        event = row.payload
        if row.still_path is not None and row.still_topic is not None:
            if jpeg is None:
                # Deleted for the budget after the row was read: say so, as the outbox now does.
                event = json.dumps({**json.loads(event), "dropped": True}, separators=(",", ":")).encode()
            else:
                messages, event = self._stills(stated, row.seq, row.still_topic, jpeg, event, row.age_s, retain)
        event = self._limit.with_dropped_stills(event)
        if row.type == "forget":
            if retain:  # an empty retained message deletes the retained snapshot (MQTT 5 section 3.3.1.3)
                messages.append(Message(self._topics.snapshot, b"", True))
            # Never expires: a subscriber away for longer than storage.event_expiry may keep copies to erase.
            messages.append(Message(self._topics.events, event, False))
        else:
            messages.append(self._event(event))
        return messages

    def of_in_memory(self, row: InMemory, stated: int | None, retain: bool) -> list[Message]:
        """The messages of an event held in memory: its still and snapshot (if any), then its event JSON."""
        still: list[Message] = []
        event = row.payload
        if row.still_topic is not None and row.jpeg:
            still, event = self._stills(stated, row.seq, row.still_topic, row.jpeg, event, 0.0, retain)
        return [*still, self._event(event)]

    def snapshot(self, stated: int | None, jpeg: bytes, age_s: float) -> Message | None:
        """The retained snapshot of a still taken ``age_s`` ago, set again on connect; None if it cannot fit."""
        fitted = self._limit.fit_snapshot(stated, jpeg)
        if fitted is None:
            return None
        return Message(self._topics.snapshot, fitted, True, self._snapshot_expiry(age_s), "snapshot")

    def _event(self, event: bytes) -> Message:
        return Message(self._topics.events, event, False, self._storage.event_expiry_s)

    def _snapshot_expiry(self, age_s: float) -> int:
        """Seconds the snapshot of a still taken ``age_s`` ago has left on the broker, at least 1."""
        return max(1, self._storage.snapshot_expiry_s - int(age_s))

    def _stills(
        self, stated: int | None, seq: int, still_topic: str, jpeg: bytes, event: bytes, age_s: float, retain: bool
    ) -> tuple[list[Message], bytes]:
        """A row's still and snapshot, none if dropped; and the still JSON saying which.

        The still expires ``storage.broker_expiry`` after the broker has it; the snapshot ``storage.snapshot_expiry``
        after the still was taken, ``age_s`` ago.
        """
        fitted, event = self._limit.fit_still(stated, seq, still_topic, jpeg, event)
        if fitted is None:
            return [], event
        still = Message(still_topic, fitted, False, self._storage.broker_expiry_s, "still")
        snapshot = Message(self._topics.snapshot, fitted, retain, self._snapshot_expiry(age_s), "snapshot")
        return [still, snapshot], event
