"""The publisher: drains the outbox to the broker, keeps availability and the retained states, reconnects.

Delivery: every outbox row is published with QoS 1, at most ``mqtt.max_inflight`` rows at once, and marked
delivered only when the broker has acknowledged all of its messages (PUBACK), or with ``outbox.confirm =
"consumer"`` when a subscriber confirms its event on ``<base>/ack``. Each connection gets a fresh paho client,
so nothing paho kept from a lost connection is re-sent by paho itself; after every (re)connect the worker
re-sends all undelivered rows, oldest first. Within one connection paho sends messages in the order they were
published, so a subscriber sees each event's first copy in seq order. A message may arrive twice (at least
once); ``event_id`` + ``seq`` identify it. The session is persistent (clean start off, ``mqtt.session_expiry``).
"""

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edgecam.broker_settings import MqttSettings
from edgecam.commands import Commands, sparingly
from edgecam.config import OutboxSettings, StorageSettings
from edgecam.discovery import MAX_STALE_CLEARS, Discovery
from edgecam.errors import BrokerError, StorageError
from edgecam.models import Topics, iso_ms, utc_now
from edgecam.mqtt.claim import (
    RESUME_AFTER_S,
    Claim,
    ClaimCheck,
    DeviceClaim,
    Standby,
    Step,
    instance_id,
)
from edgecam.mqtt.client import (
    BrokerLimits,
    broker_order,
    connect,
    describe_closed_before_connack,
    describe_connect_error,
    first_connect_delay,
    message_expiry,
    new_client,
    read_password,
    tls_context,
    warn_if_insecure,
)
from edgecam.mqtt.limits import MAY_CLEAR, REFUSED_FOR_GOOD, FitStill, PacketLimit
from edgecam.mqtt.messages import Messages
from edgecam.mqtt.network import NetEvent, Network
from edgecam.mqtt.unstored import InMemory as InMemory  # the agent and the tests import it from here
from edgecam.mqtt.unstored import Unstored
from edgecam.outbox import Outbox, Pending

logger = logging.getLogger(__name__)

CONNACK_TIMEOUT = 10.0
"""Seconds to wait for the broker's answer to CONNECT before trying again."""
_POLL = 1.0
"""Seconds between two looks at the outbox when nothing wakes the worker."""
_OK = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
STABLE_AFTER = 10.0
"""Seconds a connection must last before the reconnect delay starts again from ``mqtt.reconnect_min``."""


@dataclass
class _Connection:
    """One paho client and what is in flight on it; replaced on every reconnect."""

    client: paho.Client
    gen: int
    started: float
    claim: ClaimCheck
    """Whether this agent publishes as the device on this connection (``edgecam.mqtt.claim``)."""
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
    again_now: bool = False
    """Reconnect at once, without a warning: the connection ended for something the agent has now adapted to."""
    limits: BrokerLimits = field(default_factory=BrokerLimits)
    online_at: float = 0.0
    """When the broker accepted the connection (monotonic)."""
    stable: bool = False
    """It has lasted ``STABLE_AFTER``: the next loss starts the reconnect delay afresh."""
    discovery_refused: bool = False
    """The broker refused a Home Assistant config on this connection (said once)."""
    lost_code: int = 0
    """The reason code the connection ended with (MQTT 5 DISCONNECT from the broker), 0 if none."""
    kinds: dict[int, Literal["still", "snapshot"]] = field(default_factory=dict)
    """Message id -> what it carries, for the JPEGs of rows and the snapshot set again on connect."""
    jpeg_packets: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Message id of every JPEG -> (seq of its event, 0 for the snapshot set on connect; its PUBLISH packet bytes)."""
    stills_refused: dict[int, str] = field(default_factory=dict)
    """Outbox seq -> why the broker refused its still; decided once its event JSON is answered."""


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
        discovery: Discovery | None = None,
        vitals: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Prepare the publisher; raise ConfigError for an unreadable password or CA file.

        ``fit_still`` re-encodes a still too large for the broker; without it such a still is dropped.
        ``discovery`` is announced to Home Assistant on every connect and whenever Home Assistant comes online.
        ``vitals`` gives the frame loop's fields of ``<base>/stats`` (called from the worker thread).
        """
        self._vitals = vitals
        self._limit = PacketLimit(mqtt, topics, fit_still, self._stats_now, storage.event_expiry is not None)
        self._messages = Messages(topics, storage, self._limit)
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
        self._client_id = mqtt.client_id or f"edgecam-{device_id}"
        self._device_id = device_id
        self._claim = DeviceClaim("")
        self._standby: Standby | None = None
        """The watch of a yielded agent: another agent publishes as this device."""
        self._password = read_password(mqtt)
        self._tls = tls_context(mqtt)
        self._wake_event = threading.Event()
        self._discovery = discovery
        self._brokers = broker_order(mqtt)
        self._at = 0
        """Index in ``_brokers`` of the broker connected or tried next."""
        self._answered_by: set[str] = set()
        """The brokers (``host:port``) that have accepted a connection of this publisher."""
        self._network = Network(self._broker, topics, self._wake_event, discovery.filters() if discovery else [])
        self._stopping = threading.Event()
        self._idle_cond = threading.Condition()
        self._idle = False
        self._wakes = 0
        self._states: dict[str, str] = {topics.motion: "OFF"}
        self._retain = True
        """The broker keeps retained messages (MQTT 5 CONNACK Retain Available; assumed for MQTT 3.1.1)."""
        self._gen = 0
        self._failures = 0
        self._refusals = 0
        """Connections in a row that ended with a refused event: they keep the reconnect delay growing."""
        self._stop_timeout = 5.0
        self._worker: threading.Thread | None = None
        self._unmarked: set[int] = set()
        """Seqs the broker has but the disk would not mark delivered (read-only): not sent again meanwhile."""
        self._mark_failures = 0
        self._unstored = Unstored(mqtt.max_inflight)

    @property
    def connected(self) -> bool:
        """The broker has accepted the current connection."""
        return self._network.connected

    def start(self) -> None:
        """Connect in the background; never blocks on, nor raises for, an unreachable broker.

        Raises StorageError when the outbox cannot be opened.
        """
        if self._worker is not None:
            return
        Outbox(self._storage, for_sending=True).close()  # fail here, in the caller's thread, if it is unusable
        self._claim = DeviceClaim(instance_id(self._storage.dir))
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

    def set_detect(self, on: bool, held_off_by: Sequence[str] = ()) -> None:
        """Set the retained detection state (``ON``/``OFF``) and what holds it off, published now or on connect.

        ``held_off_by``: any of ``switch``, ``schedule``, ``gpio`` (``Topics.privacy``); empty while ``on``.
        """
        privacy = {"detect": "ON" if on else "OFF", "held_off_by": list(held_off_by)}
        self._set_state(self._topics.privacy, json.dumps(privacy, separators=(",", ":")))
        self._set_state(self._topics.detect, "ON" if on else "OFF")

    def set_last_event(self, time: str) -> None:
        """Set the retained start time (ISO 8601) of the latest door event, published now or on the next connect."""
        self._set_state(self._topics.last_event, time)

    def set_door(self, state: str) -> None:
        """Set the retained door state (``open``/``closed``), published now or on the next connect."""
        self._set_state(self._topics.door, state)

    def send_unstored(self, rows: list[InMemory], fault: str | None) -> None:
        """Publish ``rows``, which the disk refused, from memory (each once per connection); say ``fault``.

        ``fault`` (what is wrong with the storage) goes into ``<base>/stats`` as ``storage``; ``([], None)`` once
        the disk takes the rows again.
        """
        if fault != self._unstored.fault:
            self._stats_now()
        self._unstored.hold(rows, fault)
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
        # A row is at most 3 messages (still, snapshot, event); plus the claim, availability, the states, stats,
        # offline, and Home Assistant's configs (announced twice at most: on connect and on its birth) and removals.
        announced = 2 * len(self._discovery.configs) + MAX_STALE_CLEARS if self._discovery else 0
        client.max_queued_messages_set(3 * self._mqtt.max_inflight + 12 + announced)
        self._network.attach(client)
        return client

    def take_commands(self) -> list[tuple[str, bytes]]:
        """The ``<base>/set/<name>`` messages received since the last call, as (name, payload), unchecked."""
        return self._network.take_commands()

    # The worker thread: owns the paho client, the outbox connection and all the bookkeeping.

    def _run(self) -> None:
        conn: _Connection | None = None
        try:
            outbox = Outbox(self._storage, for_sending=True)
        except StorageError as err:
            logger.error("%s; nothing will be published", err)
            return
        try:
            retry_at = time.monotonic() + first_connect_delay(self._mqtt)
            while not self._stopping.is_set():
                # Cleared before the round, not after the wait: a wake between the two would be lost for _POLL.
                self._wake_event.clear()
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
            now = time.monotonic()
            if conn.ended is None and not conn.online and now - conn.started > CONNACK_TIMEOUT:
                conn.ended = (
                    f"no answer from broker {self._where} within {CONNACK_TIMEOUT:g} s (is it an MQTT broker? "
                    "check mqtt.host and mqtt.port)"
                )
            if conn.online and conn.ended is None and not conn.stable and conn.online_at <= now - STABLE_AFTER:
                conn.stable = True
                self._failures = self._refusals
            if conn.ended is not None:
                if conn.online:
                    in_flight = [jpeg for mid, jpeg in conn.jpeg_packets.items() if mid in conn.mids]
                    self._limit.connection_lost(in_flight, now - conn.online_at, conn.lost_code)
                self._drop(conn, outbox)
                if self._standby is not None:
                    self._standby.start(Claim(self._claim.instance, "standby"))
                    return None, time.monotonic() + _POLL
                if conn.again_now:
                    logger.debug("mqtt: %s; reconnecting now", conn.ended)
                    return None, 0.0
                delay = self._backoff()
                verb = "reconnecting" if conn.online else "retrying"
                logger.warning("mqtt: %s; %s in %.1f s%s", conn.ended, verb, delay, self._next_broker())
                return None, time.monotonic() + delay
        if conn is None:
            if time.monotonic() < retry_at:
                return None, retry_at
            try:
                conn = self._connect()
            except (OSError, ValueError) as err:
                delay = self._backoff()
                problem = describe_connect_error(self._broker, err)
                logger.warning("%s; retrying in %.1f s%s", problem, delay, self._next_broker())
                return None, time.monotonic() + delay
        if conn.online and conn.ended is None and conn.claim.due():
            conn.claim.timed_out()
            self._activate(conn, outbox)
        if conn.online and conn.claim.active:
            self._publish_states(conn)
            self._publish_stats(conn, outbox)
            self._publish_rows(conn, outbox)
            self._publish_unstored(conn)
        return conn, retry_at

    @property
    def _broker(self) -> MqttSettings:
        return self._brokers[self._at]

    @property
    def _where(self) -> str:
        return f"{self._broker.host}:{self._broker.port}"

    def _next_broker(self) -> str:
        """Move on to the next broker of ``mqtt.hosts``; what to add to the log line saying so ("" with one)."""
        if len(self._brokers) == 1:
            return ""
        self._at = (self._at + 1) % len(self._brokers)
        return f" with broker {self._where}"

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
        self._network.broker = self._broker
        warn_if_insecure(self._broker)
        connect(client, self._broker)
        client.loop_start()
        return _Connection(
            client, self._gen, time.monotonic(), ClaimCheck(self._claim, self._device_id, self._topics.agent)
        )

    def _drop(self, conn: _Connection | None, outbox: Outbox) -> None:
        """End a connection: stop its network thread and apply the acknowledgements it delivered."""
        if conn is None:
            return
        self._network.connected = False
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
                event = self._network.events.get_nowait()
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
                if conn.ended is None:
                    self._take_step(conn, outbox, conn.claim.heard(event.payload))
            elif event.kind == "availability":
                conn.claim.availability = event.payload
            elif event.kind == "discovery":
                if conn.claim.active and self._discovery is not None:
                    for topic, payload in self._discovery.heard(event.topic, event.payload, event.retain is True):
                        self._publish(conn, topic, payload, retain=self._retain, state=True)
            elif event.kind in ("refused", "lost"):
                if conn.ended is None:
                    if event.retain is False and self._retain:
                        self._set_retain(False)
                        conn.ended = f"broker {self._where} refused a retained message"
                        conn.again_now = True
                    elif event.kind == "refused":
                        conn.ended = event.reason.removeprefix("mqtt: ")
                    elif not conn.online and self._where in self._answered_by:
                        conn.ended = (
                            f"broker {self._where} closed the connection before answering CONNECT, though it "
                            "took this agent before: it cannot take clients now (e.g. a cluster node while "
                            "another node is down)"
                        )
                    elif not conn.online:
                        conn.ended = describe_closed_before_connack(self._broker, event.detail).removeprefix("mqtt: ")
                    else:
                        conn.ended = event.reason
                        conn.lost_code = event.code
            else:
                self._acked(conn, event, delivered)

    def _on_online(self, conn: _Connection, outbox: Outbox) -> None:
        conn.online = True
        self._answered_by.add(self._where)
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
        if not self._retain or self._claim.unanswered:
            self._activate(conn, outbox)  # no retained claim to read
            return
        conn.client.subscribe([(self._topics.agent, 1), (self._topics.availability, 1)])
        self._publish(conn, self._topics.agent, conn.claim.start().encode(), state=True)

    # Who publishes as the device (edgecam.mqtt.claim, docs/mqtt.md#connection).

    def _take_step(self, conn: _Connection, outbox: Outbox, step: Step) -> None:
        if step == "activate":
            self._activate(conn, outbox)
        elif step == "yield":
            self._yield(conn)

    def _yield(self, conn: _Connection) -> None:
        """Another agent publishes as this device: stop, say so once, and watch for it to go."""
        other = conn.claim.other
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
        self._standby = Standby(self._mqtt, self._topics, f"{self._client_id}-standby-{self._claim.instance[:8]}")

    def _activate(self, conn: _Connection, outbox: Outbox) -> None:
        """Publish as the device on this connection: the claim, ``online``, the states; take commands."""
        claim = conn.claim.activate()
        if self._retain:
            self._publish(conn, self._topics.agent, claim.encode(), retain=True, state=True)
        self._publish(conn, self._topics.availability, "online", retain=self._retain)
        if self._retain:
            self._publish_snapshot(conn, outbox)
        if self._discovery is not None:
            for topic, payload in self._discovery.announce():
                self._publish(conn, topic, payload, retain=self._retain, state=True)
            if self._discovery.filters():
                conn.client.subscribe([(f, 1) for f in self._discovery.filters()])
        conn.client.subscribe(self._topics.commands, qos=1)
        if self._by_consumer:
            conn.client.subscribe(self._topics.ack, qos=1)
        self._stats_now()

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
        """Set the retained snapshot again: a broker restarted without persistence has forgotten it.

        It expires when it would have, ``storage.snapshot_expiry`` after the still was taken: never set again later.
        """
        snapshot = outbox.snapshot_still()
        if snapshot is None:
            return
        try:
            jpeg = snapshot.path.read_bytes()
        except OSError as err:  # deleted for the budget since the look
            logger.debug("mqtt: cannot read %s for the snapshot: %s", snapshot.path, err.strerror or err)
            return
        message = self._messages.snapshot(conn.limits.max_packet_size, jpeg, snapshot.age_s)
        if message is not None:
            topic, payload = message.topic, message.payload
            mid = self._publish(conn, topic, payload, retain=message.retain, expiry=message.expiry)
            conn.kinds[mid] = "snapshot"  # a broker that drops it for its size is found out as for a still
            conn.jpeg_packets[mid] = (0, self._limit.packet_size(topic, len(payload)))

    def _confirm(self, payload: bytes, outbox: Outbox) -> None:
        """A consumer's ``<base>/ack``: a JSON list of event ids it has whole."""
        event_ids = self._confirmations.parse_ack(payload)
        if event_ids is None or not self._by_consumer:
            return
        changed = outbox.confirm(event_ids)
        logger.debug("mqtt: a consumer confirmed %d events (%d messages)", len(event_ids), changed)

    def _acked(self, conn: _Connection, event: NetEvent, delivered: list[int]) -> None:
        seq = conn.mids.pop(event.mid, None)
        if seq is None:
            return
        state = conn.states_in_flight.pop(event.mid, None)
        kind = conn.kinds.pop(event.mid, None)
        if event.reason and kind == "snapshot":
            # Only a copy of the still for new subscribers: the next still sets it again.
            self._limit.snapshot_refused(event.reason)
        elif event.reason and seq == 0:
            # Not sent again on this connection: the answer would be the same (and would come back at once).
            what = "an event sent from memory" if self._unstored.carries(event.mid) else "a state message"
            if state is not None and self._discovery is not None and self._discovery.owns(state):
                if not conn.discovery_refused:  # the others are refused for the same reason
                    conn.discovery_refused = True
                    logger.warning(
                        "mqtt: the broker refused the Home Assistant discovery config %s: %s; let this device write "
                        "its configs (docs/mosquitto/edgecam.acl) or set homeassistant.enabled = false",
                        state,
                        event.reason,
                    )
                return
            logger.warning("mqtt: the broker refused %s: %s", state or what, event.reason)
            if state == self._topics.agent:
                conn.claim.refused()  # the next round goes on without the check
            return
        elif event.reason and kind == "still" and event.code not in MAY_CLEAR:
            if event.code in REFUSED_FOR_GOOD:
                self._limit.still_refused(seq, event.reason)
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
            self._limit.row_acked(seq, conn.stills_refused.pop(seq, None))
            self._refusals = 0
            if not self._by_consumer:
                delivered.append(seq)

    def _publish(
        self,
        conn: _Connection,
        topic: str,
        payload: str | bytes,
        retain: bool = False,
        seq: int = 0,
        state: bool = False,
        expiry: int | None = None,
    ) -> int:
        """Queue a QoS 1 message for row ``seq`` (0: none); a ``state`` is named when the broker refuses it.

        ``expiry``: seconds until the broker deletes it (MQTT 5 Message Expiry Interval; ignored for MQTT 3.1.1).
        """
        properties = message_expiry(self._mqtt.protocol, expiry)
        info = conn.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc not in _OK:
            raise BrokerError(f"mqtt: cannot queue a message on {topic}: {paho.error_string(info.rc)}")
        conn.mids[info.mid] = seq
        if state:
            conn.states_in_flight[info.mid] = topic
        return info.mid

    def _stats_now(self) -> None:
        """Publish the stats in the next round, whatever ``mqtt.stats_interval`` says (a dashboard sees it at once)."""
        self._stats_at = 0.0

    def _publish_states(self, conn: _Connection) -> None:
        for topic, payload in self._states.items():
            if topic in conn.states_in_flight.values() or conn.states_sent.get(topic) == payload:
                continue
            self._publish(conn, topic, payload, retain=self._retain, state=True)
            conn.states_sent[topic] = payload

    def _publish_stats(self, conn: _Connection, outbox: Outbox) -> None:
        now = time.monotonic()
        if now < self._stats_at or conn.stats_mid in conn.mids:
            return
        self._stats_at = now + self._mqtt.stats_interval
        storage = self._unstored.fault or "ok"
        vitals = self._vitals() if self._vitals is not None else {}
        stats = {
            **outbox.stats().payload(),
            **self._limit.counts(),
            **vitals,
            "storage": storage,
            "time": iso_ms(utc_now()),
        }
        payload = json.dumps(stats, separators=(",", ":"))
        conn.stats_mid = self._publish(conn, self._topics.stats, payload, retain=self._retain)

    def _publish_unstored(self, conn: _Connection) -> None:
        """Publish what waits in memory (``send_unstored``) after the outbox's rows, within ``max_inflight``."""
        self._unstored.send(conn.gen, conn.mids.keys(), len(conn.rows), lambda row: self._publish_in_memory(conn, row))

    def _publish_in_memory(self, conn: _Connection, row: InMemory) -> None:
        """Publish the messages of one event held in memory; there is no outbox row to mark."""
        for message in self._messages.of_in_memory(row, conn.limits.max_packet_size, self._retain):
            topic, payload = message.topic, message.payload
            mid = self._publish(conn, topic, payload, message.retain, expiry=message.expiry)  # no row to mark
            self._unstored.published(mid)
            if message.kind is not None:
                conn.jpeg_packets[mid] = (row.seq, self._limit.packet_size(topic, len(payload)))

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
        if not self._limit.event_fits(conn.limits.max_packet_size, row.seq, row.payload):
            return False
        jpeg: bytes | None = None
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
        mids: set[int] = set()
        for message in self._messages.of_row(row, jpeg, conn.limits.max_packet_size, self._retain):
            topic, payload = message.topic, message.payload
            mid = self._publish(conn, topic, payload, message.retain, row.seq, expiry=message.expiry)
            mids.add(mid)
            if message.kind is not None:
                conn.kinds[mid] = message.kind
                conn.jpeg_packets[mid] = (row.seq, self._limit.packet_size(topic, len(payload)))
        conn.rows[row.seq] = mids
        return True

    # Broker limits (docs/mqtt.md#broker-limits): a still the broker will not take must not hold back the rest.

    def _inflight(self) -> int:
        """Unacknowledged messages paho may have: ``mqtt.max_inflight``, or the broker's lower Receive Maximum."""
        return min(self._mqtt.max_inflight, self._receive_maximum or self._mqtt.max_inflight)

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
        if conn.online and conn.ended is None and conn.claim.active:
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
