"""Broker limits (docs/mqtt.md#broker-limits): a still the broker will not take must not hold back the rest.

The largest PUBLISH packet to send is the least of what the broker states in its MQTT 5 CONNACK, what the user
sets (``mqtt.max_packet_size``) and what ``PacketLimit`` found out from connections lost with a large still in
flight (a broker that states no limit, e.g. any MQTT 3.1.1 one, just drops the connection). A still over the limit
is re-encoded smaller (``FitStill``) or dropped, and its still JSON says which; a still the broker refuses in its
PUBACK is dropped when its row is sent again; an event's ``end`` lists the stills dropped here. ``PacketLimit``
remembers all this across connections and counts it for ``<base>/stats``. It works on plain values (seq, topic,
JPEG, JSON, the limit a CONNACK stated); the publisher makes the MQTT calls.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgecam.broker_settings import MqttSettings
from edgecam.commands import sparingly
from edgecam.models import Topics

logger = logging.getLogger(__name__)

LOSSES_TO_SUSPECT = 3
"""Connections lost in a row, each soon after it was accepted, with the same JPEG in flight: the broker drops
packets that large without saying so (MQTT 3.1.1 cannot say it). Once a limit is found out, one such loss lowers it."""
SOON = 10.0
"""Seconds after the broker accepted a connection within which a loss counts towards ``LOSSES_TO_SUSPECT``."""
PACKET_TOO_LARGE = 0x95
"""MQTT 5 reason code Packet too large (a DISCONNECT from the broker, or a PUBACK from some brokers)."""
REFUSED_FOR_GOOD = frozenset({0x90, PACKET_TOO_LARGE, 0x99})
"""PUBACK reason codes that sending the same still again cannot change: topic name invalid, packet too large,
payload format invalid (MQTT 5 section 3.4.2.1)."""
MAY_CLEAR = frozenset({0x89, 0x91, 0x97})
"""PUBACK reason codes that clear by themselves: server busy, packet identifier in use, quota exceeded."""
TOO_LARGE = "too large for the broker"
"""``dropped_reason`` of a still no re-encode brings under the broker's packet limit."""
FitStill = Callable[[bytes, int], tuple[bytes, int, int] | None]
"""Re-encodes a JPEG to at most so many bytes: (JPEG, width, height), or None if it cannot (``capture.fit_jpeg``)."""


EXPIRY_BYTES = 5
"""Bytes of a Message Expiry Interval property: its identifier and a four-byte integer (MQTT 5 section 3.3.2.3.3)."""


def publish_packet_size(protocol: str, topic: str, payload_bytes: int, expiry: bool = False) -> int:
    """Bytes of a QoS 1 PUBLISH packet, with a Message Expiry Interval or no property (MQTT 5 and 3.1.1 section 3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + payload_bytes  # topic length, topic, packet identifier, payload
    if protocol == "5":
        remaining += 1 + (EXPIRY_BYTES if expiry else 0)  # the property length, and the properties
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + length_bytes + remaining


@dataclass(frozen=True)
class _Refit:
    """A still as the broker will take it: re-encoded, or dropped (``jpeg`` None); with the JSON describing it."""

    jpeg: bytes | None
    event: bytes
    """The still JSON; empty for a still refused in a PUBACK until its row is read again."""
    refused: str = ""
    """Why the broker refused it (PUBACK reason), if it did."""


class PacketLimit:
    """The packet limit to keep to, and the stills fitted to it, across connections (one worker thread).

    ``stated`` in the methods is the Maximum Packet Size of the current connection's CONNACK (None: unstated).
    ``counted`` is called when the counts may have changed, so that ``<base>/stats`` goes out at once.
    """

    def __init__(
        self,
        mqtt: MqttSettings,
        topics: Topics,
        fit_still: FitStill | None,
        counted: Callable[[], None],
        event_expiry: bool = False,
    ) -> None:
        """Start with nothing found out; without ``fit_still`` a still too large is dropped.

        ``event_expiry``: event JSONs carry a Message Expiry Interval (``storage.event_expiry``), as JPEGs always do.
        """
        self._mqtt = mqtt
        self._event_expiry = event_expiry
        self._topics = topics
        self._reencode = fit_still
        self._counted = counted
        self._learned: int | None = None
        """A packet limit found out from connections lost with a large still in flight (the broker said none)."""
        self._suspect: tuple[int, int] = (0, 0)
        """(seq of the still in flight at the last losses, how many losses in a row)."""
        self._refits: dict[int, _Refit] = {}
        """Outbox seq -> its still as sent, for the rows not yet delivered; bounded."""
        self._dropped_stills: dict[str, list[int]] = {}
        """Event id -> indices of its stills dropped here, for its ``end``; bounded."""
        self._stills_reencoded = 0
        self._stills_refused = 0
        self._snapshots_refused = 0
        self._told_unfit: tuple[int, int] | None = None
        """(seq, limit) of the event JSON last said not to fit: the publisher looks again every second."""

    def counts(self) -> dict[str, int]:
        """The counts for ``<base>/stats``."""
        return {"stills_reencoded": self._stills_reencoded, "stills_refused": self._stills_refused}

    def packet_size(self, topic: str, payload_bytes: int) -> int:
        """Bytes of the QoS 1 PUBLISH packet of such a message: a JPEG always expires, an event JSON may."""
        expiry = topic != self._topics.events or self._event_expiry
        return publish_packet_size(self._mqtt.protocol, topic, payload_bytes, expiry)

    def limit(self, stated: int | None) -> int | None:
        """The largest PUBLISH packet to send: the least of what the broker stated, the user set and was found."""
        limits = [stated, self._mqtt.max_packet_size or None, self._learned]
        known = [limit for limit in limits if limit]
        return min(known) if known else None

    def event_fits(self, stated: int | None, seq: int, event: bytes) -> bool:
        """Whether the event JSON of row ``seq`` fits the limit; if not, say so: it and the rows after it wait."""
        limit = self.limit(stated)
        if limit is None or self.packet_size(self._topics.events, len(event)) <= limit:
            return True
        if self._told_unfit == (seq, limit):
            return False
        self._told_unfit = (seq, limit)
        logger.error(
            "mqtt: event seq=%d (%d bytes of JSON) does not fit the broker's limit of %d bytes; it and the events "
            "after it wait in the outbox: raise the broker's max_packet_size (or mqtt.max_packet_size)",
            seq,
            len(event),
            limit,
        )
        return False

    def fit_snapshot(self, stated: int | None, jpeg: bytes) -> bytes | None:
        """The snapshot as the broker will take it, or None: too large even re-encoded (so its still went too)."""
        limit = self.limit(stated)
        room = None if limit is None else limit - self.packet_size(self._topics.snapshot, 0)
        if room is None or len(jpeg) <= room:
            return jpeg
        fitted = self._fit(jpeg, room)
        return None if fitted is None else fitted[0]

    def fit_still(
        self, stated: int | None, seq: int, still_topic: str, jpeg: bytes, event: bytes
    ) -> tuple[bytes | None, bytes]:
        """The still of row ``seq`` as the broker will take it (None: dropped) and the still JSON that describes it."""
        limit = self.limit(stated)
        overhead = max(self.packet_size(topic, 0) for topic in (still_topic, self._topics.snapshot))
        refit = self._refits.get(seq)
        if refit is not None and refit.refused and not refit.event:
            reason = f"refused by the broker: {refit.refused}"
            refit = self._refits[seq] = self._dropped(json.loads(event), reason, refit.refused)
        if refit is not None and (refit.jpeg is None or limit is None or overhead + len(refit.jpeg) <= limit):
            return refit.jpeg, refit.event
        if limit is None or overhead + len(jpeg) <= limit:
            return jpeg, event
        fitted = self._fit(jpeg, limit - overhead)
        still = json.loads(event)
        if fitted is None:
            refit = self._dropped(still, TOO_LARGE)
        else:
            data, width, height = fitted
            digest = hashlib.sha256(data).hexdigest()
            described = {"sha256": digest, "bytes": len(data), "width": width, "height": height, "reencoded": True}
            refit = _Refit(data, _dumps({**still, **described}))
        if seq not in self._refits:
            if fitted is None:
                self._stills_refused += 1
            else:
                self._stills_reencoded += 1
            told = self._stills_reencoded + self._stills_refused
            if sparingly(told):
                logger.warning(
                    "mqtt: the still of event seq=%d makes a %d-byte packet, over the broker's limit of %d bytes (%s): "
                    "%s (%d such stills so far); to send stills whole, lower capture.jpeg_quality or "
                    "camera.still_width/still_height, or raise the broker's max_packet_size (and mqtt.max_packet_size "
                    "if set)",
                    seq,
                    overhead + len(jpeg),
                    limit,
                    "stated by the broker"
                    if limit == stated
                    else "mqtt.max_packet_size"
                    if limit == self._mqtt.max_packet_size
                    else "found out",
                    "sent re-encoded smaller" if fitted else f"dropped, {TOO_LARGE} even re-encoded",
                    told,
                )
        self._refits[seq] = refit
        while len(self._refits) > 4 * self._mqtt.max_inflight:
            del self._refits[next(iter(self._refits))]
        self._counted()  # a dashboard sees it at once
        return refit.jpeg, refit.event

    def still_refused(self, seq: int, reason: str) -> None:
        """The broker refused the still of row ``seq`` for good: count it, say so, send the row again without it."""
        self._stills_refused += 1
        self._counted()
        if sparingly(self._stills_refused):
            logger.warning(
                "mqtt: the broker refused the still of event seq=%d: %s; its event JSON goes on without it "
                "(%d stills refused so far; does the broker's ACL let this device write %s?)",
                seq,
                reason,
                self._stills_refused,
                f"{self._topics.base}/events/+/stills/+",
            )
        self._refits[seq] = _Refit(None, b"", reason)  # the JSON is filled in if the row is sent again

    def snapshot_refused(self, reason: str) -> None:
        """The broker refused a snapshot (only a copy of a still for new subscribers): say so sparingly."""
        self._snapshots_refused += 1
        if sparingly(self._snapshots_refused):
            logger.warning(
                "mqtt: the broker refused the snapshot: %s; events and stills go on without it (%d snapshots refused "
                "so far; does the broker's ACL let this device write %s?)",
                reason,
                self._snapshots_refused,
                self._topics.snapshot,
            )

    def row_acked(self, seq: int, still_refused: str | None) -> None:
        """The broker has every message of row ``seq``; ``still_refused`` says why it refused its still, if it did."""
        if still_refused is not None:
            self.still_refused(seq, still_refused)
        elif seq in self._refits and self._refits[seq].jpeg is not None:
            del self._refits[seq]  # delivered; a dropped one is kept for a resend (consumer confirmation)

    def with_dropped_stills(self, event: bytes) -> bytes:
        """An ``end`` with the stills dropped here added to its ``stills_dropped``."""
        if not self._dropped_stills or b'"type":"end"' not in event:
            return event
        end = json.loads(event)
        dropped = self._dropped_stills.get(str(end["event_id"]))
        if not dropped:
            return event
        return _dumps({**end, "stills_dropped": sorted({*end.get("stills_dropped", []), *dropped})})

    def connection_lost(self, in_flight: list[tuple[int, int]], lasted: float, code: int) -> None:
        """A connection is lost: was it the largest JPEG in flight, as the last few times (the limit unstated)?

        ``in_flight``: (seq, PUBLISH packet bytes) of the JPEGs not acknowledged (stills and snapshots; seq 0 for
        the snapshot set again on connect); ``lasted``: seconds since the broker accepted the connection; ``code``:
        the reason code it ended with (MQTT 5 DISCONNECT from the broker), 0 if none.
        """
        said = code == PACKET_TOO_LARGE
        if not in_flight or (lasted > SOON and not said):
            self._suspect = (0, 0)
            return
        seq = min(seq for seq, _ in in_flight)
        size = max(size for s, size in in_flight if s == seq)
        losses = self._suspect[1] + 1 if self._suspect[0] == seq else 1
        self._suspect = (seq, losses)
        found_before = self._learned is not None  # the broker has shown that it drops packets too large
        if not said and not found_before and losses < LOSSES_TO_SUSPECT:
            return
        self._suspect = (0, 0)
        self._learned = min(size // 2, self._learned or size)
        self._refits.pop(seq, None)
        what = f"the still of event seq={seq}" if seq else "the snapshot"
        if found_before:
            logger.info(
                "mqtt: broker %s %s again with %s (a %d-byte packet) in flight; sending stills under %d bytes "
                "from now on",
                self._mqtt.where,
                "said Packet too large" if said else "dropped the connection",
                what,
                size,
                self._learned,
            )
            return
        logger.warning(
            "mqtt: broker %s %s with %s (a %d-byte packet) in flight: it takes no packet that large and did not "
            "say its limit; sending stills under %d bytes from now on (set mqtt.max_packet_size to the broker's "
            "limit, e.g. Mosquitto's max_packet_size)",
            self._mqtt.where,
            "said Packet too large" if said else f"dropped the connection {losses} times running",
            what,
            size,
            self._learned,
        )

    def _fit(self, jpeg: bytes, max_bytes: int) -> tuple[bytes, int, int] | None:
        return self._reencode(jpeg, max_bytes) if self._reencode is not None else None

    def _dropped(self, still: dict[str, object], reason: str, refused: str = "") -> _Refit:
        """A still dropped here, noted for the ``stills_dropped`` of its event's ``end``."""
        self._dropped_stills.setdefault(str(still["event_id"]), []).append(int(str(still["index"])))
        while len(self._dropped_stills) > 64:
            del self._dropped_stills[next(iter(self._dropped_stills))]
        return _Refit(None, _dumps({**still, "dropped": True, "dropped_reason": reason}), refused)


def _dumps(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
