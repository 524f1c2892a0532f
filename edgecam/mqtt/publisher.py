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
from edgecam.mqtt.client import (
    connect,
    describe_connect_error,
    new_client,
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


class _NetEvent(NamedTuple):
    """What paho's network thread tells the worker."""

    gen: int
    """Which connection (client) it came from."""
    kind: Literal["connected", "refused", "lost", "ack", "confirm"]
    mid: int = 0
    reason: str = ""
    payload: bytes = b""
    """A consumer's confirmation (``confirm``)."""


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


class Publisher:
    """Publishes the outbox, availability and the retained states (motion, door) from one worker thread."""

    def __init__(
        self,
        mqtt: MqttSettings,
        topics: Topics,
        storage: StorageSettings,
        device_id: str,
        delivery: OutboxSettings | None = None,
    ) -> None:
        """Prepare the publisher; raise ConfigError for an unreadable password or CA file."""
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
        self._password = read_password(mqtt)
        self._tls = tls_context(mqtt)
        self._net: queue.SimpleQueue[_NetEvent] = queue.SimpleQueue()
        self._wake_event = threading.Event()
        self._stopping = threading.Event()
        self._idle_cond = threading.Condition()
        self._idle = False
        self._wakes = 0
        self._states: dict[str, str] = {topics.motion: "OFF"}
        self._connected = False
        self._gen = 0
        self._failures = 0
        self._refusals = 0
        """Connections in a row that ended with a refused event: they keep the reconnect delay growing."""
        self._stop_timeout = 5.0
        self._worker: threading.Thread | None = None

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
        client.will_set(self._topics.availability, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(self._mqtt.max_inflight)
        # A row is at most 3 messages (still, snapshot, event); plus availability, motion, door, stats and offline.
        client.max_queued_messages_set(3 * self._mqtt.max_inflight + 8)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
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
            self._net.put(_NetEvent(gen, "refused", reason=str(reason)))
        else:
            self._connected = True
            self._net.put(_NetEvent(gen, "connected"))
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
        self._net.put(_NetEvent(gen, "lost", reason=why))
        self._wake_event.set()

    def _on_publish(
        self, client: paho.Client, gen: int, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self._net.put(_NetEvent(gen, "ack", mid, str(reason) if reason.is_failure else ""))
        self._wake_event.set()

    def _on_message(self, client: paho.Client, gen: int, message: paho.MQTTMessage) -> None:
        if message.topic == self._topics.ack:
            self._net.put(_NetEvent(gen, "confirm", payload=bytes(message.payload[: MAX_ACK_BYTES + 1])))
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
            outbox.close()

    def _round(self, conn: _Connection | None, outbox: Outbox, retry_at: float) -> tuple[_Connection | None, float]:
        """One pass: handle network events, (re)connect when due, publish what is waiting."""
        if conn is not None:
            self._drain(conn, outbox)
            if conn.ended is None and not conn.online and time.monotonic() - conn.started > CONNACK_TIMEOUT:
                conn.ended = f"no answer from broker {self._where} within {CONNACK_TIMEOUT:g} s"
            if conn.ended is not None:
                self._drop(conn, outbox)
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
        if conn.online:
            self._publish_states(conn)
            self._publish_stats(conn, outbox)
            self._publish_rows(conn, outbox)
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
            outbox.delivered(delivered)

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
                    self._on_online(conn, outbox)
            elif event.kind in ("refused", "lost"):
                if conn.ended is None:
                    conn.ended = (
                        f"broker {self._where} refused the connection: {event.reason}"
                        if event.kind == "refused"
                        else event.reason
                    )
            else:
                self._acked(conn, event, delivered)

    def _on_online(self, conn: _Connection, outbox: Outbox) -> None:
        conn.online = True
        self._failures = self._refusals
        depth = outbox.depth()
        logger.info(
            "mqtt: connected to broker %s (MQTT %s)%s",
            self._where,
            self._mqtt.protocol,
            f"; sending {depth} waiting events" if depth else "",
        )
        info = conn.client.publish(self._topics.availability, "online", qos=1, retain=True)
        self._check(info, self._topics.availability)
        conn.mids[info.mid] = 0
        conn.client.subscribe(self._topics.commands, qos=1)
        if self._by_consumer:
            conn.client.subscribe(self._topics.ack, qos=1)
        self._stats_at = 0.0

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
            return
        if event.reason:
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
            info = conn.client.publish(topic, payload, qos=1, retain=True)
            self._check(info, topic)
            conn.states_sent[topic] = payload
            conn.states_in_flight[info.mid] = topic
            conn.mids[info.mid] = 0

    def _publish_stats(self, conn: _Connection, outbox: Outbox) -> None:
        now = time.monotonic()
        if now < self._stats_at or conn.stats_mid in conn.mids:
            return
        self._stats_at = now + self._mqtt.stats_interval
        stats = {**outbox.stats().payload(), "time": iso_ms(utc_now())}
        info = conn.client.publish(self._topics.stats, json.dumps(stats, separators=(",", ":")), qos=1, retain=True)
        self._check(info, self._topics.stats)
        conn.mids[info.mid] = 0
        conn.stats_mid = info.mid

    def _publish_rows(self, conn: _Connection, outbox: Outbox) -> None:
        room = self._mqtt.max_inflight - len(conn.rows)
        if room <= 0:
            return
        rows = outbox.pending(limit=room, after_seq=conn.last_sent)
        for row in rows:
            self._publish_row(conn, row)
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

    def _publish_row(self, conn: _Connection, row: Pending) -> None:
        messages: list[tuple[str, bytes, bool]] = []
        event = row.payload
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
                messages += [(row.still_topic, jpeg, False), (self._topics.snapshot, jpeg, True)]
        messages.append((self._topics.events, event, False))
        mids: set[int] = set()
        for topic, payload, retain in messages:
            info = conn.client.publish(topic, payload, qos=1, retain=retain)
            self._check(info, topic)
            mids.add(info.mid)
            conn.mids[info.mid] = row.seq
        conn.rows[row.seq] = mids

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
        if conn.online and conn.ended is None:
            self._wait_acks(conn, outbox, lambda: not conn.rows, time.monotonic() + self._stop_timeout / 2)
            info = conn.client.publish(self._topics.availability, "offline", qos=1, retain=True)
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
