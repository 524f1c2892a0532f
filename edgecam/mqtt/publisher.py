"""The publisher: drains the outbox to the broker, keeps availability and the retained states, reconnects.

Delivery: every outbox row is published with QoS 1, at most ``mqtt.max_inflight`` rows at once, and marked
delivered only when the broker has acknowledged all of its messages (PUBACK), or with ``outbox.confirm =
"consumer"`` when a subscriber confirms its event on ``<base>/ack``. Each connection gets a fresh paho client,
so nothing paho kept from a lost connection is re-sent by paho itself; after every (re)connect the worker
re-sends all undelivered rows, oldest first. Within one connection paho sends messages in the order they were
published, so a subscriber sees each event's first copy in seq order. A message may arrive twice (at least
once); ``event_id`` + ``seq`` identify it. The session is persistent (clean start off, ``mqtt.session_expiry``).
"""

import hashlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.commands import MAX_ACK_BYTES, MAX_COMMAND_BYTES, Commands, sparingly
from edgecam.config import MqttSettings, OutboxSettings, StorageSettings
from edgecam.errors import BrokerError, StorageError
from edgecam.models import Topics, iso_ms, utc_now
from edgecam.mqtt.claim import (
    CHECK_TIMEOUT_S,
    MAX_CLAIM_BYTES,
    PROBATION_S,
    RESUME_AFTER_S,
    Claim,
    DeviceClaim,
    Standby,
    instance_id,
)
from edgecam.mqtt.client import (
    RETAIN_NOT_SUPPORTED,
    BrokerLimits,
    connect,
    describe_closed_before_connack,
    describe_connect_error,
    describe_refusal,
    new_client,
    publish_packet_size,
    read_password,
    tls_context,
    warn_if_insecure,
)
from edgecam.outbox import Outbox, Pending

logger = logging.getLogger(__name__)

CONNACK_TIMEOUT = 10.0
"""Seconds to wait for the broker's answer to CONNECT before trying again."""
_POLL = 1.0
"""Seconds between two looks at the outbox when nothing wakes the worker."""
_OK = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
MAX_WAITING_COMMANDS = 256
"""Commands held for the agent's frame loop; more are dropped."""
MAX_TOPIC_NAME = 256
"""Longest command name (the topic after ``<base>/set/``) handed to the agent; a longer one is cut and refused."""
STABLE_AFTER = 10.0
"""Seconds a connection must last before the reconnect delay starts again from ``mqtt.reconnect_min``."""
LOSSES_TO_SUSPECT = 3
"""Connections lost in a row, each soon after it was accepted, with the same still in flight: the broker drops
packets that large without saying so (MQTT 3.1.1 cannot say it)."""
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


class _NetEvent(NamedTuple):
    """What paho's network thread tells the worker."""

    gen: int
    """Which connection (client) it came from."""
    kind: Literal["connected", "refused", "lost", "ack", "confirm", "claim", "availability"]
    mid: int = 0
    reason: str = ""
    payload: bytes = b""
    """A consumer's confirmation (``confirm``)."""
    retain: bool | None = None
    """Whether the broker keeps retained messages, when it said so (CONNACK, or reason code Retain not supported)."""
    detail: str = ""
    """paho's error for a lost socket (``lost``), e.g. a TLS alert."""
    code: int = 0
    """The reason code of a lost connection or an acknowledgement."""
    limits: BrokerLimits | None = None
    """What the broker stated in its CONNACK (``connected``)."""


@dataclass
class _Connection:
    """One paho client and what is in flight on it; replaced on every reconnect."""

    client: paho.Client
    gen: int
    started: float
    online: bool = False
    ended: str | None = None
    """Why this connection is over (lost, refused, no answer), or None while it lasts."""
    mids: dict[int, int] = field(default_factory=dict)
    """Unacknowledged message id -> outbox seq (0 for availability and the retained states)."""
    rows: dict[int, set[int]] = field(default_factory=dict)
    """Outbox seq -> its unacknowledged message ids."""
    last_sent: int = 0
    """The highest seq published on this connection (or in this pass, when confirming by consumer)."""
    states_sent: dict[str, str] = field(default_factory=dict)
    """Retained state topic -> the payload the broker has acknowledged or has in flight."""
    states_in_flight: dict[int, str] = field(default_factory=dict)
    """Message id -> the retained state topic it carries."""
    stats_mid: int | None = None
    """The last stats message; the next waits until the broker has it (a silent link queues nothing more)."""
    claim: Literal["checking", "waiting", "active"] = "checking"
    """Whether this agent publishes as the device on this connection (``edgecam.mqtt.claim``)."""
    claim_by: float = 0.0
    """When checking or waiting for the claim ends (monotonic)."""
    other: Claim | None = None
    """Another agent's ``active`` claim, if it is the latest seen while checking."""
    availability: bytes | None = None
    """The device's latest availability seen on this connection."""
    again_now: bool = False
    """Reconnect at once, without a warning: the connection ended for something the agent has now adapted to."""
    limits: BrokerLimits = field(default_factory=BrokerLimits)
    online_at: float = 0.0
    lost_code: int = 0
    """The reason code the connection ended with (MQTT 5 DISCONNECT from the broker), 0 if none."""
    kinds: dict[int, Literal["still", "snapshot"]] = field(default_factory=dict)
    """Message id -> what it carries, for the JPEGs of rows."""
    jpeg_packets: dict[int, int] = field(default_factory=dict)
    """Message id of a row's JPEG -> the size of its PUBLISH packet, bytes."""
    stills_refused: dict[int, str] = field(default_factory=dict)
    """Outbox seq -> why the broker refused its still; decided once its event JSON is answered."""


@dataclass(frozen=True)
class _Refit:
    """A still as the broker will take it: re-encoded, or dropped (``jpeg`` None); with the JSON describing it."""

    jpeg: bytes | None
    event: bytes
    """The still JSON; empty for a still refused in a PUBACK until its row is read again."""
    refused: str = ""
    """Why the broker refused it (PUBACK reason), if it did."""


@dataclass(frozen=True)
class InMemory:
    """An event the disk refused, published from memory as well as the connection allows (not durable)."""

    seq: int
    payload: bytes
    """The event's JSON, as the outbox will store it once the disk takes it."""
    still_topic: str | None = None
    jpeg: bytes = b""


class Publisher:
    """Publishes the outbox, availability and the retained states (motion, door) from one worker thread."""

    def __init__(
        self,
        mqtt: MqttSettings,
        topics: Topics,
        storage: StorageSettings,
        device_id: str,
        delivery: OutboxSettings | None = None,
        fit_still: FitStill | None = None,
    ) -> None:
        """Prepare the publisher; raise ConfigError for an unreadable password or CA file.

        ``fit_still`` re-encodes a still too large for the broker; without it such a still is dropped.
        """
        self._fit_still = fit_still
        self._learned_limit: int | None = None
        """A packet limit found out from connections lost with a large still in flight (the broker said none)."""
        self._suspect: tuple[int, int] = (0, 0)
        """(seq of the still in flight at the last losses, how many losses in a row)."""
        self._refits: dict[int, _Refit] = {}
        """Outbox seq -> its still as sent, for the rows not yet delivered; bounded."""
        self._dropped_stills: dict[str, list[int]] = {}
        """Event id -> indices of its stills dropped here, for its ``end``; bounded."""
        self._stills_reencoded = 0
        self._stills_refused = 0
        self._receive_maximum: int | None = None
        """The broker's Receive Maximum, when it is below ``mqtt.max_inflight``."""
        self._mqtt = mqtt
        self._topics = topics
        self._storage = storage
        self._by_consumer = delivery is not None and delivery.confirm == "consumer"
        self._resend_after = delivery.resend_after if delivery is not None else 0.0
        self._rewind_at: float | None = None
        self._stats_at = 0.0
        self._confirmations = Commands()
        self._commands_prefix = topics.commands.removesuffix("#")
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=MAX_WAITING_COMMANDS)
        self._dropped_commands = 0
        self._client_id = mqtt.client_id or f"edgecam-{device_id}"
        self._device_id = device_id
        self._instance = ""
        self._claim = DeviceClaim("")
        self._claimed_since = ""
        self._standby: Standby | None = None
        """The watch of a yielded agent: another agent publishes as this device."""
        self._claim_unanswered = False
        """No echo came on ``<base>/agent`` (an ACL without it): publish without checking the claim."""
        self._told_standby: set[str] = set()
        self._password = read_password(mqtt)
        self._tls = tls_context(mqtt)
        self._net: queue.SimpleQueue[_NetEvent] = queue.SimpleQueue()
        self._socket_errors: dict[int, str] = {}
        """Connection -> paho's last error on its socket; paho's network thread alone uses it."""
        self._wake_event = threading.Event()
        self._stopping = threading.Event()
        self._idle_cond = threading.Condition()
        self._idle = False
        self._wakes = 0
        self._states: dict[str, str] = {topics.motion: "OFF"}
        self._retain = True
        """The broker keeps retained messages (MQTT 5 CONNACK Retain Available; assumed for MQTT 3.1.1)."""
        self._connected = False
        self._gen = 0
        self._failures = 0
        self._refusals = 0
        """Connections in a row that ended with a refused event: they keep the reconnect delay growing."""
        self._stop_timeout = 5.0
        self._worker: threading.Thread | None = None
        self._unmarked: set[int] = set()
        """Seqs the broker has but the disk would not mark delivered (read-only): not sent again meanwhile."""
        self._mark_failures = 0
        self._unstored: tuple[InMemory, ...] = ()
        self._storage_fault: str | None = None
        self._unstored_gen = 0
        self._unstored_sent: set[int] = set()
        """Seqs of ``_unstored`` published on connection ``_unstored_gen``."""
        self._unstored_mids: set[int] = set()

    @property
    def connected(self) -> bool:
        """The broker has accepted the current connection."""
        return self._connected

    def start(self) -> None:
        """Connect in the background; never blocks on, nor raises for, an unreachable broker.

        Raises StorageError when the outbox cannot be opened.
        """
        if self._worker is not None:
            return
        Outbox(self._storage, for_sending=True).close()  # fail here, in the caller's thread, if it is unusable
        self._instance = instance_id(self._storage.dir)
        self._claim = DeviceClaim(self._instance)
        self._worker = threading.Thread(target=self._run, name="edgecam-publisher", daemon=True)
        self._worker.start()

    def wake(self) -> None:
        """New rows are in the outbox: publish them soon."""
        with self._idle_cond:
            self._idle = False
            self._wakes += 1
        self._wake_event.set()

    def set_motion(self, on: bool) -> None:
        """Set the retained motion state (``ON``/``OFF``), published now or on the next connect."""
        self._set_state(self._topics.motion, "ON" if on else "OFF")

    def set_detect(self, on: bool) -> None:
        """Set the retained detection state (``ON``/``OFF``), published now or on the next connect."""
        self._set_state(self._topics.detect, "ON" if on else "OFF")

    def set_door(self, state: str) -> None:
        """Set the retained door state (``open``/``closed``), published now or on the next connect."""
        self._set_state(self._topics.door, state)

    def send_unstored(self, rows: list[InMemory], fault: str | None) -> None:
        """Publish ``rows``, which the disk refused, from memory (each once per connection); say ``fault``.

        ``fault`` (what is wrong with the storage) goes into ``<base>/stats`` as ``storage``; ``([], None)`` once
        the disk takes the rows again.
        """
        if fault != self._storage_fault:
            self._stats_at = 0.0  # say it now
        self._unstored, self._storage_fault = tuple(rows), fault
        self._wake_event.set()

    def _set_state(self, topic: str, payload: str) -> None:
        self._states = {**self._states, topic: payload}  # replaced whole: the worker reads it without a lock
        self._wake_event.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every event is delivered (or confirmed) and nothing is in flight; False on timeout."""
        with self._idle_cond:
            return self._idle_cond.wait_for(lambda: self._idle, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Let in-flight messages finish, publish ``offline``, disconnect and join the threads; idempotent."""
        worker = self._worker
        if worker is None or self._stopping.is_set():
            if worker is not None:
                worker.join(timeout)
            return
        self._stop_timeout = timeout
        self._stopping.set()
        self._wake_event.set()
        worker.join(timeout + CONNACK_TIMEOUT)
        if worker.is_alive():
            logger.warning("mqtt: the publisher did not stop within %.1f s", timeout)

    def _make_client(self) -> paho.Client:
        """Construct a configured paho client (the test seam)."""
        # paho would reconnect by itself and re-send what it still holds; each connection gets a new client instead.
        client = new_client(self._mqtt, self._client_id, self._password, self._tls, reconnect=False, persistent=True)
        client.will_set(self._topics.availability, "offline", qos=1, retain=self._retain)
        client.max_inflight_messages_set(self._inflight())
        # A row is at most 3 messages (still, snapshot, event); plus availability, motion, door, stats and offline.
        client.max_queued_messages_set(3 * self._mqtt.max_inflight + 8)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_log = self._on_log
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # paho's network thread: hand everything to the worker, touch no state of it.

    def _on_connect(
        self,
        client: paho.Client,
        gen: int,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            retain = False if reason.value == RETAIN_NOT_SUPPORTED else None  # refused for the retained will
            self._net.put(_NetEvent(gen, "refused", reason=describe_refusal(self._mqtt, reason), retain=retain))
        else:
            self._connected = True
            # MQTT 5 section 3.2.2.3.5: absent means available.
            retain = getattr(properties, "RetainAvailable", 1) != 0 if properties is not None else True
            limits = BrokerLimits.from_connack(properties)
            self._net.put(_NetEvent(gen, "connected", retain=retain, limits=limits))
        self._wake_event.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        gen: int,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected = False
        if flags.is_disconnect_packet_from_server:
            why = f"broker {self._where} closed the connection: {reason}"
        elif str(reason) == "Unspecified error":  # what paho reports for a dropped socket
            why = f"lost the connection to broker {self._where}"
        else:
            why = f"lost the connection to broker {self._where}: {reason}"
        retain = False if reason.value == RETAIN_NOT_SUPPORTED else None  # a retained message refused
        detail = self._socket_errors.pop(gen, "")
        self._net.put(_NetEvent(gen, "lost", reason=why, retain=retain, code=reason.value, detail=detail))
        self._wake_event.set()

    def _on_log(self, client: paho.Client, gen: int, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_errors[gen] = buf  # read by _on_disconnect, in this same thread

    def _on_publish(
        self, client: paho.Client, gen: int, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self._net.put(_NetEvent(gen, "ack", mid, str(reason) if reason.is_failure else "", code=reason.value))
        self._wake_event.set()

    def _on_message(self, client: paho.Client, gen: int, message: paho.MQTTMessage) -> None:
        if message.topic == self._topics.ack:
            self._net.put(_NetEvent(gen, "confirm", payload=bytes(message.payload[: MAX_ACK_BYTES + 1])))
            self._wake_event.set()
        elif message.topic in (self._topics.agent, self._topics.availability):
            kind: Literal["claim", "availability"] = "claim" if message.topic == self._topics.agent else "availability"
            self._net.put(_NetEvent(gen, kind, payload=bytes(message.payload[: MAX_CLAIM_BYTES + 1])))
            self._wake_event.set()
        elif message.topic.startswith(self._commands_prefix):
            name = message.topic[len(self._commands_prefix) :]
            try:  # cut to just over the cap: the agent refuses it without this thread holding a huge payload
                self._commands.put_nowait((name[:MAX_TOPIC_NAME], bytes(message.payload[: MAX_COMMAND_BYTES + 1])))
            except queue.Full:
                self._dropped_commands += 1
                if sparingly(self._dropped_commands):
                    logger.warning(
                        "mqtt: %d commands dropped: they come faster than the agent reads them", self._dropped_commands
                    )

    def take_commands(self) -> list[tuple[str, bytes]]:
        """The ``<base>/set/<name>`` messages received since the last call, as (name, payload), unchecked."""
        taken: list[tuple[str, bytes]] = []
        while True:
            try:
                taken.append(self._commands.get_nowait())
            except queue.Empty:
                return taken

    # The worker thread: owns the paho client, the outbox connection and all the bookkeeping.

    def _run(self) -> None:
        conn: _Connection | None = None
        try:
            outbox = Outbox(self._storage, for_sending=True)
        except StorageError as err:
            logger.error("%s; nothing will be published", err)
            return
        try:
            retry_at = 0.0
            while not self._stopping.is_set():
                wakes = self._wakes
                try:
                    conn, retry_at = self._round(conn, outbox, retry_at)
                    self._update_idle(conn, outbox, wakes)
                except (BrokerError, StorageError) as err:
                    logger.error("%s", err)
                    self._drop(conn, outbox)
                    conn = None
                    retry_at = time.monotonic() + self._backoff()
                except Exception:
                    logger.exception("mqtt: unexpected error in the publisher; reconnecting")
                    self._drop(conn, outbox)
                    conn = None
                    retry_at = time.monotonic() + self._backoff()
                now = time.monotonic()
                timeout = _POLL if conn is not None else max(0.0, min(_POLL, retry_at - now))
                self._wake_event.wait(timeout)
                self._wake_event.clear()
            self._shutdown(conn, outbox)
        finally:
            if self._standby is not None:
                self._standby.stop()
            outbox.close()

    def _round(self, conn: _Connection | None, outbox: Outbox, retry_at: float) -> tuple[_Connection | None, float]:
        """One pass: handle network events, (re)connect when due, publish what is waiting."""
        if self._standby is not None and conn is None:
            if not self._standby.gone():
                return None, time.monotonic() + _POLL
            self._standby.stop()
            self._standby = None
            self._claim.resuming = True
            logger.info(
                "mqtt: the agent holding device_id '%s' has been offline for %g s; this one takes over",
                self._device_id,
                RESUME_AFTER_S,
            )
            retry_at = 0.0
        if conn is not None:
            self._drain(conn, outbox)
            if conn.ended is None and not conn.online and time.monotonic() - conn.started > CONNACK_TIMEOUT:
                conn.ended = f"no answer from broker {self._where} within {CONNACK_TIMEOUT:g} s"
            if conn.online and conn.ended is None and 0 < conn.online_at <= time.monotonic() - STABLE_AFTER:
                conn.online_at = -1.0  # proven: the next loss starts the reconnect delay afresh
                self._failures = self._refusals
            if conn.ended is not None:
                if conn.online:
                    self._suspect_too_large(conn)
                self._drop(conn, outbox)
                if self._standby is not None:
                    self._standby.start(Claim(self._instance, "standby"))
                    return None, time.monotonic() + _POLL
                if conn.again_now:
                    logger.debug("mqtt: %s; reconnecting now", conn.ended)
                    return None, 0.0
                delay = self._backoff()
                verb = "reconnecting" if conn.online else "retrying"
                logger.warning("mqtt: %s; %s in %.1f s", conn.ended, verb, delay)
                return None, time.monotonic() + delay
        if conn is None:
            if time.monotonic() < retry_at:
                return None, retry_at
            try:
                conn = self._connect()
            except (OSError, ValueError) as err:
                delay = self._backoff()
                logger.warning("%s; retrying in %.1f s", describe_connect_error(self._mqtt, err), delay)
                return None, time.monotonic() + delay
        if conn.online and conn.ended is None and conn.claim != "active" and time.monotonic() >= conn.claim_by:
            self._claim_due(conn, outbox)
        if conn.online and conn.claim == "active":
            self._publish_states(conn)
            self._publish_stats(conn, outbox)
            self._publish_rows(conn, outbox)
            self._publish_unstored(conn)
        return conn, retry_at

    @property
    def _where(self) -> str:
        return f"{self._mqtt.host}:{self._mqtt.port}"

    def _backoff(self) -> float:
        """The next delay before reconnecting: doubling from reconnect_min to reconnect_max, with jitter."""
        base = min(self._mqtt.reconnect_max, self._mqtt.reconnect_min * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return min(self._mqtt.reconnect_max, base * random.uniform(0.8, 1.2))

    def _connect(self) -> _Connection:
        self._gen += 1
        client = self._make_client()
        client.user_data_set(self._gen)
        logger.debug("mqtt: connecting to %s as %s", self._where, self._client_id)
        warn_if_insecure(self._mqtt)
        connect(client, self._mqtt)
        client.loop_start()
        return _Connection(client, self._gen, time.monotonic())

    def _drop(self, conn: _Connection | None, outbox: Outbox) -> None:
        """End a connection: stop its network thread and apply the acknowledgements it delivered."""
        if conn is None:
            return
        self._connected = False
        conn.ended = conn.ended or "dropped"
        conn.client.disconnect()
        conn.client.loop_stop()
        try:
            self._drain(conn, outbox)
        except StorageError as err:
            logger.error("%s; those events will be sent again", err)

    def _drain(self, conn: _Connection, outbox: Outbox) -> None:
        """Apply what the network thread reported for this connection; one commit for all acknowledged rows."""
        delivered: list[int] = []
        try:
            self._apply(conn, outbox, delivered)
        finally:
            self._mark_delivered(outbox, delivered)

    def _mark_delivered(self, outbox: Outbox, seqs: list[int]) -> None:
        """Mark rows delivered; while the disk refuses the mark, remember it here so the rows are not sent again."""
        self._unmarked.update(seqs)
        if not self._unmarked:
            return
        try:
            outbox.delivered(sorted(self._unmarked))
        except StorageError as err:
            self._mark_failures += 1
            if sparingly(self._mark_failures):
                logger.warning("%s; %d delivered events remembered in memory meanwhile", err, len(self._unmarked))
            return
        self._unmarked.clear()
        self._mark_failures = 0

    def _apply(self, conn: _Connection, outbox: Outbox, delivered: list[int]) -> None:
        while True:
            try:
                event = self._net.get_nowait()
            except queue.Empty:
                return
            if event.kind == "confirm":
                self._confirm(event.payload, outbox)  # a confirmation counts whichever connection brought it
                continue
            if event.gen != conn.gen:
                continue  # from a connection already dropped
            if event.kind == "connected":
                if conn.ended is None:
                    self._set_retain(event.retain is not False)
                    conn.limits = event.limits or BrokerLimits()
                    self._on_online(conn, outbox)
            elif event.kind == "claim":
                self._on_claim(conn, outbox, event.payload)
            elif event.kind == "availability":
                conn.availability = event.payload
            elif event.kind in ("refused", "lost"):
                if conn.ended is None:
                    if event.retain is False and self._retain:
                        self._set_retain(False)
                        conn.ended = f"broker {self._where} refused a retained message"
                        conn.again_now = True
                    elif event.kind == "refused":
                        conn.ended = event.reason.removeprefix("mqtt: ")
                    elif not conn.online:
                        conn.ended = describe_closed_before_connack(self._mqtt, event.detail).removeprefix("mqtt: ")
                    else:
                        conn.ended = event.reason
                        conn.lost_code = event.code
            else:
                self._acked(conn, event, delivered)

    def _on_online(self, conn: _Connection, outbox: Outbox) -> None:
        conn.online = True
        conn.online_at = time.monotonic()
        receive_maximum = conn.limits.receive_maximum
        if receive_maximum is not None and receive_maximum < self._inflight():
            # paho ignores it and cannot change its window once connected: a new client gets the broker's.
            self._receive_maximum = receive_maximum
            logger.info(
                "mqtt: broker %s takes at most %d unacknowledged messages (Receive Maximum), fewer than "
                "mqtt.max_inflight %d; reconnecting to keep to it",
                self._where,
                receive_maximum,
                self._mqtt.max_inflight,
            )
            conn.ended = f"broker {self._where} has a Receive Maximum of {receive_maximum}"
            conn.again_now = True
            return
        if conn.limits.maximum_qos == 0:
            conn.ended = (
                f"broker {self._where} takes only QoS 0 (Maximum QoS in its CONNACK), and edgecam publishes at "
                f"QoS 1 to know what the broker has; allow QoS 1 on the broker (Mosquitto: remove max_qos 0)"
            )
            return
        depth = outbox.depth()
        logger.info(
            "mqtt: connected to broker %s (MQTT %s)%s",
            self._where,
            self._mqtt.protocol,
            f"; sending {depth} waiting events" if depth else "",
        )
        if not self._retain or self._claim_unanswered:
            self._activate(conn, outbox)  # no retained claim to read
            return
        # Read the claim before publishing anything: the retained one arrives before the echo of "checking".
        conn.claim_by = time.monotonic() + CHECK_TIMEOUT_S
        conn.client.subscribe([(self._topics.agent, 1), (self._topics.availability, 1)])
        info = conn.client.publish(self._topics.agent, Claim(self._instance, "checking").encode(), qos=1)
        self._check(info, self._topics.agent)
        conn.mids[info.mid] = 0
        conn.states_in_flight[info.mid] = self._topics.agent

    # Who publishes as the device (edgecam.mqtt.claim, docs/mqtt.md#connection).

    def _on_claim(self, conn: _Connection, outbox: Outbox, payload: bytes) -> None:
        claim = Claim.parse(payload)
        if claim is None or conn.ended is not None:
            return
        if claim.instance == self._instance:
            if claim.state == "active" and conn.claim == "checking":
                conn.other = None
            elif claim.state == "checking" and conn.claim == "checking":
                self._decide(conn, outbox)
            return
        if claim.state == "standby":
            if claim.instance not in self._told_standby:
                self._told_standby.add(claim.instance)
                logger.warning(
                    "mqtt: another edgecam agent (%s) also has device_id '%s' and waits without publishing until "
                    "this one stops: give each camera its own device_id (device_id in the settings file, or "
                    "EDGECAM_DEVICE_ID)",
                    claim.describe(),
                    self._device_id,
                )
        elif claim.state == "active":
            if conn.claim == "checking":
                conn.other = claim
            else:
                self._yield(conn, claim)  # claimed live: it found this one gone, or it is a live duplicate

    def _decide(self, conn: _Connection, outbox: Outbox) -> None:
        verdict = self._claim.checked(conn.other, conn.availability)
        if verdict == "claim":
            self._activate(conn, outbox)
        elif verdict == "yield":
            self._yield(conn, conn.other)
        else:
            conn.claim = "waiting"
            conn.claim_by = time.monotonic() + PROBATION_S
            logger.info(
                "mqtt: device_id '%s' was last claimed by another agent (%s); publishing nothing for %g s in case "
                "it is still running",
                self._device_id,
                conn.other.describe() if conn.other else "?",
                PROBATION_S,
            )

    def _claim_due(self, conn: _Connection, outbox: Outbox) -> None:
        """Checking or waiting took its time: the probation is over, or no echo came (an ACL without the topic)."""
        if conn.claim == "checking":
            self._claim_unanswered = True
            logger.warning(
                "mqtt: no echo on %s (refused, or none within %g s), so this agent cannot tell whether another one "
                "uses device_id '%s'; publishing anyway (does the broker's ACL let this device read and write it? "
                "docs/security.md)",
                self._topics.agent,
                CHECK_TIMEOUT_S,
                self._device_id,
            )
        self._activate(conn, outbox)

    def _yield(self, conn: _Connection, other: Claim | None) -> None:
        """Another agent publishes as this device: stop, say so once, and watch for it to go."""
        logger.error(
            "mqtt: another edgecam agent (%s) publishes as device_id '%s', so this agent publishes nothing and keeps "
            "its events in its outbox (%s) until that one has been offline for %g s: give each camera its own "
            "device_id (device_id in the settings file, or EDGECAM_DEVICE_ID)",
            other.describe() if other else "a client with the same client id",
            self._device_id,
            self._storage.dir,
            RESUME_AFTER_S,
        )
        conn.ended = "yielded"
        self._standby = Standby(self._mqtt, self._topics, f"{self._client_id}-standby-{self._instance[:8]}")

    def _activate(self, conn: _Connection, outbox: Outbox) -> None:
        """Publish as the device on this connection: the claim, ``online``, the states; take commands."""
        if conn.other is not None:
            logger.info("mqtt: taking over device_id '%s' from %s", self._device_id, conn.other.describe())
        conn.claim = "active"
        self._claim.claimed()
        self._claimed_since = self._claimed_since or iso_ms(utc_now())
        if self._retain:
            claim = Claim(self._instance, "active", self._claimed_since).encode()
            info = conn.client.publish(self._topics.agent, claim, qos=1, retain=True)
            self._check(info, self._topics.agent)
            conn.mids[info.mid] = 0
            conn.states_in_flight[info.mid] = self._topics.agent
        info = conn.client.publish(self._topics.availability, "online", qos=1, retain=self._retain)
        self._check(info, self._topics.availability)
        conn.mids[info.mid] = 0
        if self._retain:
            self._publish_snapshot(conn, outbox)
        conn.client.subscribe(self._topics.commands, qos=1)
        if self._by_consumer:
            conn.client.subscribe(self._topics.ack, qos=1)
        self._stats_at = 0.0

    def _set_retain(self, available: bool) -> None:
        """Publish the states retained or not from now on, saying so once when it changes."""
        if available == self._retain:
            return
        self._retain = available
        if available:
            logger.info("mqtt: broker %s keeps retained messages again; the states are retained again", self._where)
            return
        logger.warning(
            "mqtt: broker %s does not keep retained messages (retain_available false): availability, motion, door, "
            "detect, stats and snapshot go out without retain and the last will too, so a new subscriber gets no "
            "current state and Home Assistant shows nothing until the next change; to fix, set retain_available "
            "true in the broker's configuration (mosquitto.conf)",
            self._where,
        )

    def _publish_snapshot(self, conn: _Connection, outbox: Outbox) -> None:
        """Set the retained snapshot again: a broker restarted without persistence has forgotten it."""
        path = outbox.snapshot_still()
        if path is None:
            return
        try:
            jpeg = path.read_bytes()
        except OSError as err:  # deleted for the budget since the look
            logger.debug("mqtt: cannot read %s for the snapshot: %s", path, err.strerror or err)
            return
        limit = self._packet_limit(conn)
        room = None if limit is None else limit - publish_packet_size(self._mqtt.protocol, self._topics.snapshot, 0)
        if room is not None and len(jpeg) > room:  # its still went out re-encoded, or not at all
            fitted = self._fit_still(jpeg, room) if self._fit_still is not None else None
            if fitted is None:
                return
            jpeg = fitted[0]
        info = conn.client.publish(self._topics.snapshot, jpeg, qos=1, retain=True)
        self._check(info, self._topics.snapshot)
        conn.mids[info.mid] = 0
        conn.states_in_flight[info.mid] = self._topics.snapshot

    def _confirm(self, payload: bytes, outbox: Outbox) -> None:
        """A consumer's ``<base>/ack``: a JSON list of event ids it has whole."""
        event_ids = self._confirmations.parse_ack(payload)
        if event_ids is None or not self._by_consumer:
            return
        changed = outbox.confirm(event_ids)
        logger.debug("mqtt: a consumer confirmed %d events (%d messages)", len(event_ids), changed)

    def _acked(self, conn: _Connection, event: _NetEvent, delivered: list[int]) -> None:
        seq = conn.mids.pop(event.mid, None)
        if seq is None:
            return
        state = conn.states_in_flight.pop(event.mid, None)
        if event.reason and seq == 0:
            # Not sent again on this connection: the answer would be the same (and would come back at once).
            logger.warning("mqtt: the broker refused %s: %s", state or "a state message", event.reason)
            if state == self._topics.agent and conn.claim == "checking":
                conn.claim_by = 0.0  # no echo will come: the next round goes on without the check
            return
        kind = conn.kinds.pop(event.mid, None)
        if event.reason and kind == "snapshot":
            # Only a copy of the still for new subscribers: the next still sets it again.
            logger.warning("mqtt: the broker refused the snapshot of event seq=%d: %s", seq, event.reason)
        elif event.reason and kind == "still" and event.code not in MAY_CLEAR:
            if event.code in REFUSED_FOR_GOOD:
                self._still_refused(seq, event.reason)
            else:
                conn.stills_refused[seq] = event.reason  # dropped if the broker takes its event JSON
        elif event.reason:
            self._refusals += 1
            if conn.ended is None:
                conn.ended = (
                    f"the broker refused event seq={seq}: {event.reason}; it stays in the outbox (does the "
                    f"broker's ACL let this device write {self._topics.base}/#?)"
                )
            return
        if seq == 0:
            return
        waiting = conn.rows.get(seq)
        if waiting is None:
            return
        waiting.discard(event.mid)
        if not waiting:
            del conn.rows[seq]
            reason = conn.stills_refused.pop(seq, None)
            if reason is not None:
                self._still_refused(seq, reason)
            elif seq in self._refits and self._refits[seq].jpeg is not None:
                del self._refits[seq]  # delivered; a dropped one is kept for a resend (consumer confirmation)
            self._refusals = 0
            if not self._by_consumer:
                delivered.append(seq)

    def _check(self, info: paho.MQTTMessageInfo, topic: str) -> None:
        if info.rc not in _OK:
            raise BrokerError(f"mqtt: cannot queue a message on {topic}: {paho.error_string(info.rc)}")

    def _publish_states(self, conn: _Connection) -> None:
        for topic, payload in self._states.items():
            if topic in conn.states_in_flight.values() or conn.states_sent.get(topic) == payload:
                continue
            info = conn.client.publish(topic, payload, qos=1, retain=self._retain)
            self._check(info, topic)
            conn.states_sent[topic] = payload
            conn.states_in_flight[info.mid] = topic
            conn.mids[info.mid] = 0

    def _publish_stats(self, conn: _Connection, outbox: Outbox) -> None:
        now = time.monotonic()
        if now < self._stats_at or conn.stats_mid in conn.mids:
            return
        self._stats_at = now + self._mqtt.stats_interval
        stats = {
            **outbox.stats().payload(),
            "stills_reencoded": self._stills_reencoded,
            "stills_refused": self._stills_refused,
            "time": iso_ms(utc_now()),
        }
        stats["storage"] = self._storage_fault or "ok"
        payload = json.dumps(stats, separators=(",", ":"))
        info = conn.client.publish(self._topics.stats, payload, qos=1, retain=self._retain)
        self._check(info, self._topics.stats)
        conn.mids[info.mid] = 0
        conn.stats_mid = info.mid

    def _publish_unstored(self, conn: _Connection) -> None:
        """Publish what waits in memory (``send_unstored``) after the outbox's rows, within ``max_inflight``."""
        if conn.gen != self._unstored_gen:
            self._unstored_gen, self._unstored_sent, self._unstored_mids = conn.gen, set(), set()
        self._unstored_mids &= conn.mids.keys()  # the ones not yet acknowledged
        room = self._mqtt.max_inflight - len(conn.rows) - (len(self._unstored_mids) + 2) // 3
        for row in self._unstored:
            if room <= 0:
                return
            if row.seq in self._unstored_sent:
                continue
            event = row.payload
            still: list[tuple[str, bytes, bool]] = []
            if row.still_topic is not None and row.jpeg:
                fitted, event = self._fitted(conn, row.seq, row.still_topic, row.jpeg, event)
                if fitted is not None:
                    still = [(row.still_topic, fitted, False), (self._topics.snapshot, fitted, self._retain)]
            messages = [*still, (self._topics.events, event, False)]
            for topic, payload, retain in messages:
                info = conn.client.publish(topic, payload, qos=1, retain=retain)
                self._check(info, topic)
                conn.mids[info.mid] = 0  # no outbox row to mark delivered
                self._unstored_mids.add(info.mid)
            self._unstored_sent.add(row.seq)
            room -= 1

    def _publish_rows(self, conn: _Connection, outbox: Outbox) -> None:
        room = self._mqtt.max_inflight - len(conn.rows)
        if room <= 0:
            return
        rows = outbox.pending(limit=room, after_seq=conn.last_sent)
        for row in rows:
            if row.seq not in self._unmarked and not self._publish_row(conn, row):
                return
            conn.last_sent = row.seq
        if self._by_consumer and not rows and not conn.rows:
            self._resend_unconfirmed(conn, outbox)

    def _resend_unconfirmed(self, conn: _Connection, outbox: Outbox) -> None:
        """Every ``outbox.resend_after`` seconds, go over the rows no consumer has confirmed again."""
        now = time.monotonic()
        if self._rewind_at is None:
            if outbox.pending(limit=1):
                self._rewind_at = now + self._resend_after
        elif now >= self._rewind_at:
            self._rewind_at = None
            logger.info("mqtt: %d events not confirmed by a consumer; sending them again", outbox.depth())
            conn.last_sent = 0

    def _publish_row(self, conn: _Connection, row: Pending) -> bool:
        """Publish one row's messages; False (nothing published) if its event JSON cannot fit the broker's limit."""
        messages: list[tuple[str, bytes, bool]] = []
        event = row.payload
        limit = self._packet_limit(conn)
        if limit is not None and publish_packet_size(self._mqtt.protocol, self._topics.events, len(event)) > limit:
            self._event_too_large(row.seq, len(event), limit)
            return False
        if row.still_path is not None and row.still_topic is not None:
            try:
                jpeg = row.still_path.read_bytes()
            except OSError as err:
                logger.warning(
                    "mqtt: cannot read the still of event seq=%d (%s: %s); publishing the event without it",
                    row.seq,
                    row.still_path,
                    err.strerror or err,
                )
                # Deleted for the budget after the row was read: say so, as the outbox now does.
                event = json.dumps({**json.loads(event), "dropped": True}, separators=(",", ":")).encode()
            else:
                fitted, event = self._fitted(conn, row.seq, row.still_topic, jpeg, event)
                if fitted is not None:
                    messages += [(row.still_topic, fitted, False), (self._topics.snapshot, fitted, self._retain)]
        event = self._with_dropped_stills(event)
        messages.append((self._topics.events, event, False))
        mids: set[int] = set()
        for n, (topic, payload, retain) in enumerate(messages):
            info = conn.client.publish(topic, payload, qos=1, retain=retain)
            self._check(info, topic)
            mids.add(info.mid)
            conn.mids[info.mid] = row.seq
            if n < len(messages) - 1:
                conn.kinds[info.mid] = "still" if n == 0 else "snapshot"
                conn.jpeg_packets[info.mid] = publish_packet_size(self._mqtt.protocol, topic, len(payload))
        conn.rows[row.seq] = mids
        return True

    # Broker limits (docs/mqtt.md#broker-limits): a still the broker will not take must not hold back the rest.

    def _inflight(self) -> int:
        """Unacknowledged messages paho may have: ``mqtt.max_inflight``, or the broker's lower Receive Maximum."""
        return min(self._mqtt.max_inflight, self._receive_maximum or self._mqtt.max_inflight)

    def _packet_limit(self, conn: _Connection) -> int | None:
        """The largest PUBLISH packet to send: the least of what the broker stated, the user set and was found."""
        limits = [conn.limits.max_packet_size, self._mqtt.max_packet_size or None, self._learned_limit]
        known = [limit for limit in limits if limit]
        return min(known) if known else None

    def _fitted(
        self, conn: _Connection, seq: int, still_topic: str, jpeg: bytes, event: bytes
    ) -> tuple[bytes | None, bytes]:
        """The still as the broker will take it (None: dropped) and the still JSON that describes it."""
        limit = self._packet_limit(conn)
        overhead = max(publish_packet_size(self._mqtt.protocol, t, 0) for t in (still_topic, self._topics.snapshot))
        refit = self._refits.get(seq)
        if refit is not None and refit.refused and not refit.event:
            still = json.loads(event)
            self._remember_dropped(still)
            dropped = {"dropped": True, "dropped_reason": f"refused by the broker: {refit.refused}"}
            refit = self._refits[seq] = _Refit(None, _dumps({**still, **dropped}), refit.refused)
        if refit is not None and (refit.jpeg is None or limit is None or overhead + len(refit.jpeg) <= limit):
            return refit.jpeg, refit.event
        if limit is None or overhead + len(jpeg) <= limit:
            return jpeg, event
        fitted = self._fit_still(jpeg, limit - overhead) if self._fit_still is not None else None
        still = json.loads(event)
        if fitted is None:
            refit = _Refit(None, _dumps({**still, "dropped": True, "dropped_reason": TOO_LARGE}))
            self._remember_dropped(still)
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
                    if limit == conn.limits.max_packet_size
                    else "mqtt.max_packet_size"
                    if limit == self._mqtt.max_packet_size
                    else "found out",
                    "sent re-encoded smaller" if fitted else f"dropped, {TOO_LARGE} even re-encoded",
                    told,
                )
        self._refits[seq] = refit
        while len(self._refits) > 4 * self._mqtt.max_inflight:
            del self._refits[next(iter(self._refits))]
        self._stats_at = 0.0  # a dashboard sees it at once
        return refit.jpeg, refit.event

    def _still_refused(self, seq: int, reason: str) -> None:
        """The broker refused the still of row ``seq`` for good: count it, say so, send the row again without it."""
        self._stills_refused += 1
        self._stats_at = 0.0
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

    def _event_too_large(self, seq: int, size: int, limit: int) -> None:
        logger.error(
            "mqtt: event seq=%d (%d bytes of JSON) does not fit the broker's limit of %d bytes; it and the events "
            "after it wait in the outbox: raise the broker's max_packet_size (or mqtt.max_packet_size)",
            seq,
            size,
            limit,
        )

    def _remember_dropped(self, still: dict[str, object]) -> None:
        """Note a still dropped here, for the ``stills_dropped`` of its event's ``end``."""
        self._dropped_stills.setdefault(str(still["event_id"]), []).append(int(str(still["index"])))
        while len(self._dropped_stills) > 64:
            del self._dropped_stills[next(iter(self._dropped_stills))]

    def _with_dropped_stills(self, event: bytes) -> bytes:
        """An ``end`` with the stills dropped here added to its ``stills_dropped``."""
        if not self._dropped_stills or b'"type":"end"' not in event:
            return event
        end = json.loads(event)
        dropped = self._dropped_stills.get(str(end["event_id"]))
        if not dropped:
            return event
        return _dumps({**end, "stills_dropped": sorted({*end.get("stills_dropped", []), *dropped})})

    def _suspect_too_large(self, conn: _Connection) -> None:
        """A connection is lost: was it the largest still in flight, as the last few times (the limit unstated)?"""
        in_flight = [(conn.mids[mid], size) for mid, size in conn.jpeg_packets.items() if mid in conn.mids]
        if not in_flight or 0 < conn.online_at < time.monotonic() - SOON:
            self._suspect = (0, 0)
            return
        seq = min(seq for seq, _ in in_flight)
        size = max(size for s, size in in_flight if s == seq)
        losses = self._suspect[1] + 1 if self._suspect[0] == seq else 1
        said = conn.lost_code == PACKET_TOO_LARGE
        self._suspect = (seq, losses)
        if not said and losses < LOSSES_TO_SUSPECT:
            return
        self._suspect = (0, 0)
        self._learned_limit = min(size // 2, self._learned_limit or size)
        self._refits.pop(seq, None)
        logger.warning(
            "mqtt: broker %s %s with the still of event seq=%d (a %d-byte packet) in flight: it takes no packet that "
            "large and did not say its limit; sending stills under %d bytes from now on (set mqtt.max_packet_size to "
            "the broker's limit, e.g. Mosquitto's max_packet_size)",
            self._where,
            "said Packet too large" if said else f"dropped the connection {losses} times running",
            seq,
            size,
            self._learned_limit,
        )

    def _update_idle(self, conn: _Connection | None, outbox: Outbox, wakes: int) -> None:
        busy = conn is not None and bool(conn.mids)
        idle = not busy and outbox.depth() == 0  # with confirm = "consumer": every event confirmed
        with self._idle_cond:
            if self._wakes != wakes:
                idle = False  # woken meanwhile: rows may have been added after the look
            if idle != self._idle:
                self._idle = idle
                self._idle_cond.notify_all()

    def _shutdown(self, conn: _Connection | None, outbox: Outbox) -> None:
        """Give in-flight messages a moment, publish ``offline``, disconnect."""
        if conn is None:
            return
        deadline = time.monotonic() + self._stop_timeout
        if conn.online and conn.ended is None and conn.claim == "active":
            self._wait_acks(conn, outbox, lambda: not conn.rows, time.monotonic() + self._stop_timeout / 2)
            info = conn.client.publish(self._topics.availability, "offline", qos=1, retain=self._retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                conn.mids[info.mid] = 0
                mid = info.mid
                self._wait_acks(conn, outbox, lambda: mid not in conn.mids, deadline)
        self._drop(conn, outbox)
        if conn.online:
            logger.info("mqtt: disconnected from broker %s", self._where)

    def _wait_acks(self, conn: _Connection, outbox: Outbox, done: Callable[[], bool], deadline: float) -> None:
        while conn.ended is None and not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake_event.wait(min(remaining, 0.1))
            self._wake_event.clear()
            self._drain(conn, outbox)


def _dumps(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
