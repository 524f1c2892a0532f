"""How a broker, or a cluster, copes with a fleet of door agents: N agents, every event and still counted end to end.

Usage: .venv/bin/python scripts/fleet_sim.py [--broker mosquitto|nats] [--agents N] [--rate R] [--duration S]
       [--stills K] [--still-kb KB] [--storm [--spread S] [--burst B]] [--real] [--matrix | --quick] [--json PATH]

Each run starts its own broker: one Mosquitto (``tests.conftest.Broker``, MQTT 5) or a NATS JetStream cluster of
``--nodes`` nodes (``tests.nats_cluster.NatsCluster``, MQTT 3.1.1), agent i on node i mod nodes. The agents are:

- light (default): worker processes (``--workers``), each holding a share of the agents as paho clients, each
  client sending what ``edgecam.mqtt.publisher.Publisher`` sends, built by edgecam's own code: the client from
  ``mqtt.client.new_client`` and ``connect`` (client id ``edgecam-<device>``, persistent session, the last will
  ``offline``), the claim of ``mqtt.claim`` (``checking``, its echo, then the retained ``active`` claim), ``online``,
  the retained snapshot set again on a reconnect and the messages of each outbox row from
  ``mqtt.messages.Messages`` (still, snapshot, event JSON; QoS 1, retained flags and expiries as edgecam sets them),
  the retained motion state and ``<base>/stats``, ``offline`` when it stops. Door events come from
  ``tests.conftest.make_door_event`` (``--stills`` fake JPEGs of ``--still-kb`` kB), their rows made into
  ``outbox.Pending`` as ``Outbox.append`` makes them and published at their capture times (start, a still every
  0.5 s, the end 4.2 s after the start), at most ``mqtt.max_inflight`` rows unacknowledged; a lost connection is
  replaced after the publisher's backoff, on the next of the agent's brokers, and its unacknowledged rows go again.
  tests/test_fleet_sim.py holds this pattern to a real Publisher's.
- ``--real``: ``python -m edgecam --config <file> run`` per agent on the simulated camera, a door opening every
  60/``--rate`` s (the scene's ``door_period``, at least 2 s) from a random first opening, for ``--duration`` s of
  scene; small N only. What was sent is read from each agent's outbox afterwards; there is no publisher-side
  timing, and the latency is from the event's capture time to its arrival.

Events: each light agent has ``--rate`` x ``--duration`` / 60 door events (a fraction decides by lot), at times drawn
uniformly over ``--duration`` s after its first connect's spread (``mqtt.connect_spread``, 3 s by default), one
at a time as one camera sees them (one falling due during another begins ``EVENT_GAP`` s after it ends); then up to
``--drain`` s for everything to arrive. ``--storm``: every agent starts connecting at the same instant
(``--spread`` s of first-connect jitter from ``mqtt.client.first_connect_delay``, 0 = none) with ``--burst`` door
events already waiting in its outbox, sent right after it connects.

A subscriber (edgecam's ``mqtt.subscriber.Subscriber``, persistent session, QoS 1, on node 0: a different node than
most agents) takes ``<prefix>/+/events`` and ``<prefix>/+/events/+/stills/+``; it keeps the first arrival of each
event message (device, event_id, seq) and still (event_id, index) and counts the copies. Figures per run:

- ``complete``: event messages and stills that arrived at least once, of those sent (published at least once);
  ``burst``: whether every message and still of the storm's burst events arrived.
- ``dup``: arrivals beyond the first; ``reord``: first arrivals whose seq is below one already seen from the device.
- ``ev/s``: event messages delivered per second, from the first publish to the last first arrival.
- ``puback``: publish call to PUBACK, every QoS 1 message (light agents); ``e2e``: first publish (``--real``: the
  event's time) to the subscriber's first arrival, event messages and stills; milliseconds, p50 and p95.
- ``connect``: the first CONNECT to the first accepted CONNACK of each agent (retries included), ms p50/p95/max;
  ``fails``: connection attempts refused, unanswered within ``CONNACK_TIMEOUT``, closed before CONNACK or failing
  in TCP; ``all conn``: seconds from the start until the last agent was connected.
- ``broker cpu``: all broker processes' utime+stime over the run (/proc/<pid>/stat), % of one core; ``rss``: the
  largest node's peak resident memory (VmHWM), MB. ``client cpu``: this process (the subscriber) and the worker
  processes or agents together, % of one core: against nproc it shows whether the load generator kept up.

Mosquitto keeps any number of messages queued for the subscriber (``max_queued_messages 0``), so its default queue
limit is not counted against the fleet. ``--matrix`` runs N = 10, 30, 100, 300 on Mosquitto and on NATS, then the
storm at N = 300 with spread 0 and 10 on both; ``--quick`` is CI's smoke run (3 agents, 10 s). Prints one table
row per run under a line naming the machine, writes ``{"machine": {...}, "args": {...}, "runs": [...]}`` to
``--json`` (default bench-out/fleet.json); logs, settings and state go beside it (bench-out/fleet/). Exit status 1
when a run lost anything or could not run."""

import argparse
import contextlib
import importlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.conftest, tests.nats_cluster

from edgecam.broker_settings import MqttSettings  # noqa: E402
from edgecam.config import StorageSettings  # noqa: E402
from edgecam.models import Topics, iso_ms, utc_now  # noqa: E402
from edgecam.mqtt import client as mqtt_client  # noqa: E402
from edgecam.mqtt.claim import Claim  # noqa: E402
from edgecam.mqtt.client import connect, first_connect_delay, new_client  # noqa: E402
from edgecam.mqtt.limits import PacketLimit  # noqa: E402
from edgecam.mqtt.messages import Message, Messages  # noqa: E402
from edgecam.mqtt.publisher import CONNACK_TIMEOUT  # noqa: E402
from edgecam.mqtt.subscriber import Subscriber  # noqa: E402
from edgecam.outbox import Pending, Stats, payload_bytes  # noqa: E402
from edgecam.sources.simulated import DOOR_ZONE  # noqa: E402
from tests.conftest import MOSQUITTO, Broker, DoorEvent, make_door_event  # noqa: E402

PREFIX = "edgecam"
MATRIX_SIZES = (10, 30, 100, 300)
STORM_SIZE = 300
STORM_SPREADS = (0.0, 10.0)
SUBSCRIBER_ID = "fleet-sim-subscriber"
TICK = 0.01
"""Seconds a worker sleeps between two passes over its agents when nothing wakes it."""
EVENT_GAP = 2.0
"""Seconds from a door event's end to the next one's start at the least (``motion.event_gap``'s default)."""
STOP_TIMEOUT = 5.0
"""Seconds an agent waits for its rows and ``offline`` to be acknowledged when it stops (``Publisher.stop``)."""


# The brokers under test.


class Cluster(Protocol):
    """What this script uses of ``tests.nats_cluster.NatsCluster``."""

    @property
    def hosts(self) -> list[str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pids(self) -> list[int]: ...

    def settings(self, i: int, **overrides: Any) -> MqttSettings: ...


class UnderTest(Protocol):
    """A broker or a cluster started for one run."""

    name: str

    def agent_settings(self, index: int, **overrides: Any) -> MqttSettings: ...

    def subscriber_settings(self) -> MqttSettings: ...

    def pids(self) -> list[int]: ...

    def stop(self) -> None: ...


class Mosquitto:
    """One Mosquitto, MQTT 5, queueing without limit for the subscriber."""

    name = "mosquitto"

    def __init__(self, workdir: Path) -> None:
        self._broker = Broker(workdir, config="max_queued_messages 0")
        self._broker.start()

    def agent_settings(self, index: int, **overrides: Any) -> MqttSettings:
        return self._broker.settings(**overrides)

    def subscriber_settings(self) -> MqttSettings:
        return self._broker.settings()

    def pids(self) -> list[int]:
        proc = self._broker._proc  # noqa: SLF001  # the fixture keeps its process to itself
        return [proc.pid] if proc is not None and proc.poll() is None else []

    def stop(self) -> None:
        self._broker.kill()


class Nats:
    """A NATS JetStream cluster, MQTT 3.1.1; agent i on node i mod nodes, the subscriber on node 0."""

    name = "nats"

    def __init__(self, workdir: Path, nodes: int) -> None:
        module = importlib.import_module("tests.nats_cluster")  # written beside this script; imported when used
        self._cluster: Cluster = module.NatsCluster(workdir, nodes=nodes)
        self._nodes = nodes
        self._cluster.start()

    def agent_settings(self, index: int, **overrides: Any) -> MqttSettings:
        node = index % self._nodes
        hosts = self._cluster.hosts
        # Its own node first, then the others: where the publisher goes when a connection fails.
        values = self._cluster.settings(node, **overrides).model_dump(exclude_unset=True)
        del values["host"], values["port"]
        return MqttSettings(**values, hosts=hosts[node:] + hosts[:node], hosts_order="listed")

    def subscriber_settings(self) -> MqttSettings:
        return self._cluster.settings(0)

    def pids(self) -> list[int]:
        return self._cluster.pids()

    def stop(self) -> None:
        self._cluster.stop()


def start_broker(kind: str, workdir: Path, nodes: int) -> UnderTest:
    """Start ``kind`` (``mosquitto`` or ``nats``) in ``workdir``."""
    if kind == "nats":
        return Nats(workdir, nodes)
    return Mosquitto(workdir)


# One light agent: edgecam's messages without camera or disk.


@dataclass
class Row:
    """One outbox row of a light agent, from its door event to the broker's PUBACKs."""

    pending: Pending
    jpeg: bytes | None
    still: tuple[str, int] | None
    """(event_id, index) of its still, if it has one."""
    burst: bool = False
    mids: set[int] = field(default_factory=set)
    published: bool = False


def rows_of(door: DoorEvent, seq: int) -> list[tuple[float, Row]]:
    """A door event's rows as the outbox holds them, seqs from ``seq``, each with its seconds after the event's start.

    Each row's payload is what ``Outbox.append`` stores (``payload_bytes(event.payload(seq))``).
    """
    start = door.rows[0][0].time
    rows: list[tuple[float, Row]] = []
    for offset, (event, still) in enumerate(door.rows):
        topic = event.extra.get("topic") if still is not None else None
        pending = Pending(
            seq + offset,
            payload_bytes(event.payload(seq + offset)),
            Path(f"stills/{event.event_id}/{still.index}.jpg") if still is not None else None,
            topic if isinstance(topic, str) else None,
            event.type,
        )
        still_key = (event.event_id, still.index) if still is not None else None
        row = Row(pending, still.jpeg if still is not None else None, still_key)
        rows.append(((event.time - start).total_seconds(), row))
    return rows


@dataclass
class AgentResult:
    """What one agent sent and saw, for the tally."""

    device: str
    events: list[tuple[str, int]] = field(default_factory=list)
    """(event_id, seq) of every event message published at least once."""
    stills: list[tuple[str, int]] = field(default_factory=list)
    burst_events: list[tuple[str, int]] = field(default_factory=list)
    burst_stills: list[tuple[str, int]] = field(default_factory=list)
    first_publish: dict[str, float] = field(default_factory=dict)
    """``e:<event_id>:<seq>`` or ``s:<event_id>:<index>`` -> wall time of its first publish."""
    puback_s: list[float] = field(default_factory=list)
    connect_s: float | None = None
    connected_after_s: float | None = None
    """Seconds from the start of the run to the agent's first accepted CONNACK."""
    failures: dict[str, int] = field(default_factory=dict)
    unacknowledged: int = 0


class LightAgent:
    """One door agent's MQTT traffic, in the order ``Publisher`` sends it; driven by ``pump`` from one thread.

    paho's network thread only records what happened (CONNACK, messages on ``<base>/agent``, PUBACKs, loss);
    ``pump`` acts on it, as the publisher's worker does.
    """

    def __init__(
        self, device: str, settings: MqttSettings, storage: StorageSettings, instance: str, wake: threading.Event
    ) -> None:
        self.device = device
        self.settings = settings
        self.topics = Topics(f"{settings.topic_prefix}/{device}")
        self._limit = PacketLimit(settings, self.topics, None, lambda: None)
        self.messages = Messages(self.topics, storage, self._limit)
        self._storage = storage
        self._instance = instance
        self._since = ""
        self._client_id = settings.client_id or f"edgecam-{device}"
        self._brokers = settings.brokers
        self._broker = 0
        self._wake = wake
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._gen = 0
        self._phase = "down"  # down, connecting, checking, active
        self._connect_started = 0.0
        self._retry_at = 0.0
        self._failures_in_row = 0
        self._flags: dict[str, Any] = {}
        self._inflight: dict[int, tuple[float, Row | None]] = {}
        self._early: dict[int, float] = {}
        self._rows: deque[Row] = deque()
        self._scheduled: list[tuple[float, Row]] = []
        self._doors: list[tuple[float, int, int]] = []
        self._door_ends = 0.0
        """When the current door event has ended (monotonic): the next may begin."""
        """Door events to come: (monotonic start, stills, bytes per still)."""
        self._seq = 0
        self._stats_at = 0.0
        self._newest_still: tuple[Row, float] | None = None
        """The newest still row and when it was taken (monotonic): the snapshot set again on connect."""
        self._delivered_newest = False
        self.result = AgentResult(device)
        self._first_attempt: float | None = None
        self._started = 0.0
        self.stopping = False

    # The door events.

    def add_door_event(self, at: float, stills: int, still_bytes: int, burst: bool = False) -> None:
        """A door event starting ``at`` (monotonic), made then; its rows join the outbox at their capture times.

        A ``burst`` event is made now, its rows all waiting from ``at``.
        """
        if burst:
            door = make_door_event(self.topics, self.device, stills, still_bytes, utc_now())
            self.add_rows(at, rows_of(door, self._seq + 1), burst)
        else:
            self._doors.append((at, stills, still_bytes))
            self._doors.sort()

    def add_rows(self, at: float, rows: list[tuple[float, Row]], burst: bool = False) -> None:
        """Rows (``rows_of``) joining the outbox ``at`` (monotonic) plus each one's offset (all at once for a burst)."""
        self._seq = max([self._seq, *(row.pending.seq for _, row in rows)])
        for offset, row in rows:
            row.burst = burst
            self._scheduled.append((at + (0.0 if burst else offset), row))
        self._scheduled.sort(key=lambda item: (item[0], item[1].pending.seq))

    @property
    def done(self) -> bool:
        """Every row scheduled so far has been acknowledged."""
        return not self._doors and not self._scheduled and not self._rows

    # paho's network thread.

    def _on_connect(
        self, client: paho.Client, gen: int, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._lock:
            if gen == self._gen:
                self._flags["connack"] = (time.monotonic(), reason.is_failure, str(reason))
        self._wake.set()

    def _on_message(self, client: paho.Client, gen: int, message: paho.MQTTMessage) -> None:
        if message.topic == self.topics.agent:
            claim = Claim.parse(bytes(message.payload))
            if claim is not None and claim.instance == self._instance and claim.state == "checking":
                with self._lock:
                    if gen == self._gen:
                        self._flags["echo"] = True
                self._wake.set()

    def _on_publish(self, client: paho.Client, gen: int, mid: int, reason: ReasonCode, properties: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if gen != self._gen:
                return
            sent = self._inflight.pop(mid, None)
            if sent is None:
                self._early[mid] = now  # acknowledged before _publish had noted it
                return
            self.result.puback_s.append(now - sent[0])
            row = sent[1]
            if row is not None:
                row.mids.discard(mid)
        self._wake.set()

    def _on_disconnect(
        self, client: paho.Client, gen: int, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._lock:
            if gen == self._gen:
                self._flags["lost"] = str(reason)
        self._wake.set()

    # The worker's thread.

    def start(self, now: float, delay: float) -> None:
        """Make the first connect ``delay`` s after ``now`` (the run's start)."""
        self._started = now
        self._retry_at = now + delay

    def pump(self, now: float) -> None:
        """One pass, like ``Publisher._round``: network news, (re)connect when due, publish what is waiting."""
        # One door event at a time, as one camera sees them: one due during another begins after it.
        while self._doors and self._doors[0][0] <= now and now >= self._door_ends:
            _, stills, still_bytes = self._doors.pop(0)
            door = make_door_event(self.topics, self.device, stills, still_bytes, utc_now())
            rows = rows_of(door, self._seq + 1)
            self.add_rows(now, rows)
            self._door_ends = now + rows[-1][0] + EVENT_GAP
        while self._scheduled and self._scheduled[0][0] <= now:
            self._rows.append(self._scheduled.pop(0)[1])
        with self._lock:
            flags, self._flags = self._flags, {}
            self._rows_acked()
        if self._client is not None:
            self._network(now, flags)
        if self._client is None and not self.stopping and now >= self._retry_at:
            self._connect(now)
        if self._phase == "active" and self._client is not None:
            self._publish_stats(now)
            self._publish_rows()

    def _network(self, now: float, flags: dict[str, Any]) -> None:
        client = self._client
        assert client is not None
        connack = flags.get("connack")
        if connack is not None and self._phase == "connecting":
            at, failed, reason = connack
            if failed:
                self._ended("refused", now)
                return
            self._failures_in_row = 0
            if self.result.connect_s is None and self._first_attempt is not None:
                self.result.connect_s = at - self._first_attempt
                self.result.connected_after_s = at - self._started
            self._phase = "checking"
            client.subscribe([(self.topics.agent, 1), (self.topics.availability, 1)])
            self._publish(self.topics.agent, Claim(self._instance, "checking").encode(), False, None)
        if flags.get("echo") and self._phase == "checking":
            self._activate(now)
        if "lost" in flags:
            self._ended("lost" if self._phase != "connecting" else "closed before CONNACK", now)
        elif self._phase == "connecting" and now - self._connect_started > CONNACK_TIMEOUT:
            self._ended("no CONNACK", now)

    def _connect(self, now: float) -> None:
        settings = self._brokers[self._broker % len(self._brokers)]
        self._gen += 1
        gen = self._gen
        client = new_client(settings, self._client_id, None, None, reconnect=False, persistent=True)
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(3 * settings.max_inflight + 12)
        client.user_data_set(gen)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._phase = "connecting"
        self._connect_started = now
        if self._first_attempt is None:
            self._first_attempt = now
        try:
            connect(client, settings)
        except OSError:
            self._ended("TCP", now)
            return
        client.loop_start()

    def _ended(self, why: str, now: float) -> None:
        """Drop the connection; its unacknowledged rows go again on the next one, after the backoff."""
        if self._phase != "active" or why != "lost":
            self.result.failures[why] = self.result.failures.get(why, 0) + 1
        else:
            self.result.failures["lost after connect"] = self.result.failures.get("lost after connect", 0) + 1
        self._drop()
        self._broker += 1
        s = self.settings
        base = min(s.reconnect_max, s.reconnect_min * 2.0 ** min(self._failures_in_row, 30))
        self._failures_in_row += 1
        self._retry_at = now + min(s.reconnect_max, base * random.uniform(0.8, 1.2))

    def _drop(self) -> None:
        client, self._client = self._client, None
        with self._lock:
            self._gen += 1
            self._inflight.clear()
            self._early.clear()
            self._flags = {}
            for row in self._rows:
                row.mids.clear()
                row.published = False
        self._phase = "down"
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _activate(self, now: float) -> None:
        """``Publisher._activate`` then ``_publish_states``: the claim, ``online``, the snapshot, the motion state."""
        self._phase = "active"
        self._since = self._since or iso_ms(utc_now())
        self._publish(self.topics.agent, Claim(self._instance, "active", self._since).encode(), True, None)
        self._publish(self.topics.availability, b"online", True, None)
        if self._newest_still is not None and self._delivered_newest:
            row, taken = self._newest_still
            assert row.jpeg is not None
            message = self.messages.snapshot(None, row.jpeg, now - taken)
            if message is not None:
                self._send(message, None)
        assert self._client is not None
        self._client.subscribe(self.topics.commands, qos=1)
        self._publish(self.topics.motion, b"OFF", True, None)
        self._stats_at = 0.0

    def _publish_stats(self, now: float) -> None:
        if now < self._stats_at:
            return
        self._stats_at = now + self.settings.stats_interval
        waiting = len(self._rows) + len(self._scheduled)
        held = sum(len(row.jpeg or b"") for row in self._rows)
        stats = Stats(waiting, held, self._storage.max_bytes, None, 0)
        body = {**stats.payload(), **self._limit.counts(), "storage": "ok", "time": iso_ms(utc_now())}
        self._publish(self.topics.stats, json.dumps(body, separators=(",", ":")).encode(), True, None)

    def _publish_rows(self) -> None:
        room = self.settings.max_inflight - sum(1 for row in self._rows if row.published)
        for row in self._rows:
            if room <= 0:
                return
            if row.published:
                continue
            row.published = True
            room -= 1
            for message in self.messages.of_row(row.pending, row.jpeg, None, True):
                self._send(message, row)
            if row.still is not None:
                self._newest_still = (row, time.monotonic())
                self._delivered_newest = False

    def _rows_acked(self) -> None:
        while self._rows and self._rows[0].published and not self._rows[0].mids:
            row = self._rows.popleft()
            if self._newest_still is not None and self._newest_still[0] is row:
                self._delivered_newest = True
        # Rows acknowledged out of order stay until those before them are: the outbox marks by seq either way.

    def _send(self, message: Message, row: Row | None) -> None:
        self._publish(message.topic, message.payload, message.retain, row, message.expiry)
        if row is None:
            return
        wall = time.time()
        pending = row.pending
        if message.topic == self.topics.events:
            key = f"e:{json.loads(pending.payload)['event_id']}:{pending.seq}"
            if key not in self.result.first_publish:
                event_id = key.split(":")[1]
                self.result.first_publish[key] = wall
                self.result.events.append((event_id, pending.seq))
                if row.burst:
                    self.result.burst_events.append((event_id, pending.seq))
        elif message.kind == "still" and row.still is not None:
            key = f"s:{row.still[0]}:{row.still[1]}"
            if key not in self.result.first_publish:
                self.result.first_publish[key] = wall
                self.result.stills.append(row.still)
                if row.burst:
                    self.result.burst_stills.append(row.still)

    def _publish(self, topic: str, payload: bytes, retain: bool, row: Row | None, expiry: int | None = None) -> None:
        client = self._client
        assert client is not None
        properties = mqtt_client.message_expiry(self.settings.protocol, expiry)
        sent_at = time.monotonic()
        # Not under self._lock: paho calls on_publish holding its own lock, which publish takes too.
        info = client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        with self._lock:
            acked_at = self._early.pop(info.mid, None)
            if acked_at is not None:
                self.result.puback_s.append(acked_at - sent_at)
                return
            self._inflight[info.mid] = (sent_at, row)
            if row is not None:
                row.mids.add(info.mid)

    def stop(self, deadline: float) -> None:
        """``Publisher._shutdown``: ``offline`` (retained) once the rows are in, wait for it, disconnect."""
        self.stopping = True
        client = self._client
        if client is not None and self._phase == "active":
            self._publish(self.topics.availability, b"offline", True, None)
            while time.monotonic() < deadline:
                with self._lock:
                    if not self._inflight:
                        break
                time.sleep(0.01)
        with self._lock:
            self._rows_acked()
        self.result.unacknowledged = len(self._rows) + len(self._scheduled) + len(self._doors)
        self._drop()


# The worker processes.


@dataclass(frozen=True)
class AgentPlan:
    """One light agent: its device id, settings and door events."""

    device: str
    settings: dict[str, Any]
    delay: float
    """Seconds after the start before its first connect."""
    events_at: list[float]
    """Seconds after the start at which its door events begin."""
    burst: int


@dataclass(frozen=True)
class RunPlan:
    """What a run does, as the workers need it."""

    stills: int
    still_bytes: int
    drain: float
    storage_dir: str


def worker(plan: RunPlan, agents: list[AgentPlan], go: Any, out: Any) -> None:
    """A worker process: run ``agents`` from the moment ``go`` is set; put their results and CPU seconds on ``out``."""
    wake = threading.Event()
    storage = StorageSettings(dir=Path(plan.storage_dir))
    light = [LightAgent(a.device, MqttSettings(**a.settings), storage, uuid.uuid4().hex, wake) for a in agents]
    out.put(("ready", None))
    go.wait()
    cpu0 = time.process_time()
    start = time.monotonic()
    for agent, a in zip(light, agents, strict=True):
        agent.start(start, a.delay)
        for _ in range(a.burst):
            agent.add_door_event(start, plan.stills, plan.still_bytes, burst=True)
        for at in a.events_at:
            agent.add_door_event(start + at, plan.stills, plan.still_bytes)
    last = max((at for a in agents for at in a.events_at), default=0.0) + max((a.delay for a in agents), default=0)
    deadline = start + last + 5.0 + plan.drain
    while True:
        now = time.monotonic()
        for agent in light:
            agent.pump(now)
        if now > start + last + 5.0 and all(agent.done for agent in light) or now > deadline:
            break
        wake.wait(TICK)
        wake.clear()
    stop_by = time.monotonic() + STOP_TIMEOUT
    for agent in light:
        agent.stop(stop_by)
    out.put(("done", ([agent.result for agent in light], time.process_time() - cpu0)))


# The subscriber.


class Tally:
    """The subscriber's record: first arrivals of event messages and stills, copies, order per device."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[tuple[str, str, int], float] = {}
        """(device, event_id, seq) -> wall time of the first arrival."""
        self.stills: dict[tuple[str, int], float] = {}
        self.event_times: dict[tuple[str, str, int], str] = {}
        """(device, event_id, seq) -> the event's own time (ISO 8601), for ``--real``."""
        self.duplicates = 0
        self.reordered = 0
        self._highest: dict[str, int] = {}

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        now = time.time()
        parts = topic.split("/")
        with self.lock:
            if len(parts) == 3 and parts[2] == "events":
                body = json.loads(payload)
                key = (parts[1], str(body["event_id"]), int(body["seq"]))
                if key in self.events:
                    self.duplicates += 1
                    return
                self.events[key] = now
                self.event_times[key] = str(body.get("time", ""))
                if key[2] < self._highest.get(key[0], 0):
                    self.reordered += 1
                self._highest[key[0]] = max(key[2], self._highest.get(key[0], 0))
            elif len(parts) == 6 and parts[2] == "events" and parts[4] == "stills":
                still = (parts[3], int(parts[5]))
                if still in self.stills:
                    self.duplicates += 1
                    return
                self.stills[still] = now

    def has(self, events: set[tuple[str, str, int]], stills: set[tuple[str, int]]) -> bool:
        with self.lock:
            return events <= self.events.keys() and stills <= self.stills.keys()


# Broker processes.


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (proc(5) /proc/<pid>/stat fields 14, 15); 0 once it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS); 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class BrokerMeter:
    """Broker processes' CPU over the run and peak RSS, sampled every second (VmHWM where it is readable)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._ticks = {pid: cpu_ticks(pid) for pid in pids}
        self._began = time.monotonic()
        self._peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self._read()

    def _read(self) -> None:
        for pid in self.pids:
            self._peak[pid] = max(self._peak[pid], status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS"))

    def finish(self) -> tuple[float, float]:
        """(% of one core, all processes; MB, the largest peak RSS of one process)."""
        self._read()
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._began
        used = sum(cpu_ticks(pid) - self._ticks[pid] for pid in self.pids) / os.sysconf("SC_CLK_TCK")
        return 100.0 * used / wall, max(self._peak.values(), default=0) / 1024


# One run.


@dataclass(frozen=True)
class Spec:
    """One run of the table."""

    broker: str
    agents: int
    rate: float
    duration: float
    stills: int
    still_kb: int
    storm: bool
    spread: float
    burst: int
    real: bool
    drain: float
    workers: int
    nodes: int
    seed: int

    @property
    def name(self) -> str:
        kind = "real" if self.real else "light"
        storm = f" storm spread {self.spread:g}" if self.storm else ""
        return f"{self.broker} N={self.agents} {kind}{storm}"


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p`` percentile (nearest rank) of ``values``; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def ms(values: Sequence[float], p: float) -> float:
    return round(1000 * percentile(values, p), 1) if values else math.nan


def event_plan(spec: Spec, rng: random.Random) -> list[float]:
    """Seconds into ``--duration`` at which one agent's door events begin: rate x duration / 60, by lot for a part."""
    expected = spec.rate * spec.duration / 60.0
    count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
    return sorted(rng.uniform(0, spec.duration) for _ in range(count))


def run_light(
    spec: Spec, under: UnderTest, workdir: Path, rng: random.Random
) -> tuple[list[AgentResult], float, float]:
    """Run the light agents in worker processes; (results, worker CPU seconds, wall seconds of the run)."""
    spread = spec.spread if spec.storm else MqttSettings.model_fields["connect_spread"].default
    plans: list[AgentPlan] = []
    for i in range(spec.agents):
        device = f"door-{i:03d}"
        settings = under.agent_settings(i, connect_spread=spread)
        plans.append(
            AgentPlan(
                device,
                settings.model_dump(exclude_unset=True),
                first_connect_delay(settings),
                [spread + at for at in event_plan(spec, rng)],
                spec.burst if spec.storm else 0,
            )
        )
    plan = RunPlan(spec.stills, spec.still_kb * 1000, spec.drain, str(workdir / "state"))
    context = mp.get_context("spawn")
    go = context.Event()
    out: Any = context.Queue()
    count = max(1, min(spec.workers, spec.agents))
    processes = [
        context.Process(target=worker, args=(plan, plans[w::count], go, out), daemon=True) for w in range(count)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        kind, _unused = out.get(timeout=120)
        assert kind == "ready"
    began = time.monotonic()
    go.set()
    results: list[AgentResult] = []
    cpu = 0.0
    for _ in processes:
        kind, (part, seconds) = out.get(timeout=spec.duration + spread + spec.drain + 120)
        results += part
        cpu += seconds
    wall = time.monotonic() - began
    for process in processes:
        process.join(30)
    return results, cpu, wall


def real_settings(spec: Spec, settings: MqttSettings, device: str, state: Path, rng: random.Random) -> str:
    """The TOML settings file of one ``--real`` agent."""
    period = max(2.0, 60.0 / spec.rate)
    first = 2.5 + rng.uniform(0, period)
    where: dict[str, Any] = (
        {"hosts": settings.hosts, "hosts_order": settings.hosts_order}
        if settings.hosts
        else {"host": settings.host, "port": settings.port}
    )
    mqtt = {
        **where,
        "protocol": settings.protocol,
        "connect_spread": spec.spread if spec.storm else settings.connect_spread,
    }
    lines = [
        f'device_id = "{device}"',
        "[camera]",
        'source = "simulated"',
        "[camera.simulated]",
        f"door_period = {period}",
        f"first_opening = {first}",
        f"duration = {spec.duration + first}",
        "[motion]",
        f"zone = {json.dumps(DOOR_ZONE)}",
        "[storage]",
        f'dir = "{state}"',
        "[mqtt]",
        *(f"{key} = {json.dumps(value)}" for key, value in mqtt.items()),
    ]
    return "\n".join(lines) + "\n"


def run_real(spec: Spec, under: UnderTest, workdir: Path, rng: random.Random) -> tuple[list[AgentResult], float]:
    """``edgecam run`` per agent until its scene ends (or ``--drain`` after), then what its outbox holds."""
    children: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    began = time.monotonic()
    for i in range(spec.agents):
        device = f"door-{i:03d}"
        folder = workdir / device
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "edgecam.toml"
        conf.write_text(real_settings(spec, under.agent_settings(i), device, folder / "state", rng))
        argv = [sys.executable, "-m", "edgecam", "--config", str(conf), "run"]
        with (folder / "agent.log").open("wb") as log:
            child = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        children.append((device, folder / "state", child))
    deadline = began + spec.duration + 2.5 + 60.0 / spec.rate + spec.drain
    for _, _, child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    results = []
    for device, state, _ in children:
        result = AgentResult(device)
        path = state / "outbox.sqlite3"
        if path.exists():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                rows = db.execute("SELECT seq, event_id, still_topic, still_state, delivered FROM outbox").fetchall()
            for seq, event_id, topic, still_state, delivered in rows:
                result.events.append((event_id, seq))
                if topic is not None and still_state in ("kept", "deleted"):
                    result.stills.append((event_id, int(topic.rsplit("/", 1)[1])))
                result.unacknowledged += delivered is None
        results.append(result)
    return results, time.monotonic() - began


def run_one(spec: Spec, workdir: Path) -> dict[str, Any]:
    """Start the broker, the subscriber and the fleet; tally; stop everything."""
    rng = random.Random(spec.seed)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    load = os.getloadavg()
    under = start_broker(spec.broker, workdir / "broker", spec.nodes)
    tally = Tally()
    subscriber: Subscriber | None = None
    try:
        sub_settings = under.subscriber_settings()
        filters = [f"{PREFIX}/+/events", f"{PREFIX}/+/events/+/stills/+"]
        subscriber = Subscriber(sub_settings, filters, tally.on_message, SUBSCRIBER_ID, persistent=True)
        subscriber.start()
        if not subscriber.wait_subscribed(30):
            raise RuntimeError("the subscriber did not subscribe within 30 s")
        meter = BrokerMeter(under.pids())
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        began_wall = time.time()
        cpu_workers = 0.0
        if spec.real:
            results, wall = run_real(spec, under, workdir, rng)
        else:
            results, cpu_workers, wall = run_light(spec, under, workdir, rng)
        sent_events = {(r.device, e, s) for r in results for e, s in r.events}
        sent_stills = {still for r in results for still in r.stills}
        waited = time.monotonic()
        while not tally.has(sent_events, sent_stills) and time.monotonic() - waited < spec.drain:
            time.sleep(0.1)
        broker_cpu, broker_rss = meter.finish()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_all = time.time() - began_wall
        own = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        kids = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        client_cpu = 100.0 * (own + max(kids, cpu_workers)) / wall_all
    finally:
        if subscriber is not None:
            subscriber.stop()
        under.stop()
    return tally_run(spec, results, tally, sent_events, sent_stills, wall, broker_cpu, broker_rss, client_cpu, load)


def tally_run(
    spec: Spec,
    results: list[AgentResult],
    tally: Tally,
    sent_events: set[tuple[str, str, int]],
    sent_stills: set[tuple[str, int]],
    wall: float,
    broker_cpu: float,
    broker_rss: float,
    client_cpu: float,
    load: tuple[float, float, float],
) -> dict[str, Any]:
    """The figures of one run (see the module's docstring)."""
    with tally.lock:
        got_events = sent_events & tally.events.keys()
        got_stills = sent_stills & tally.stills.keys()
        e2e: list[float] = []
        firsts: list[float] = []
        for r in results:
            for key, at in r.first_publish.items():
                kind, event_id, number = key.split(":")
                firsts.append(at)
                arrived = (
                    tally.events.get((r.device, event_id, int(number)))
                    if kind == "e"
                    else tally.stills.get((event_id, int(number)))
                )
                if arrived is not None:
                    e2e.append(arrived - at)
        if spec.real:
            for got in got_events:
                made = datetime.fromisoformat(tally.event_times[got].replace("Z", "+00:00")).timestamp()
                firsts.append(made)
                e2e.append(tally.events[got] - made)
        arrivals = [tally.events[key] for key in got_events]
        duplicates, reordered = tally.duplicates, tally.reordered
    span = (max(arrivals) - min(firsts)) if arrivals and firsts else math.nan
    burst_events = {(r.device, e, s) for r in results for e, s in r.burst_events}
    burst_stills = {still for r in results for still in r.burst_stills}
    burst_ok = None
    if spec.storm and not spec.real:
        burst_ok = bool(burst_events) and burst_events <= got_events and burst_stills <= got_stills
    connects = [r.connect_s for r in results if r.connect_s is not None]
    connected_after = [r.connected_after_s for r in results if r.connected_after_s is not None]
    failures: dict[str, int] = {}
    for r in results:
        for why, n in r.failures.items():
            failures[why] = failures.get(why, 0) + n
    puback = [s for r in results for s in r.puback_s]
    return {
        "name": spec.name,
        "spec": asdict(spec),
        "load_average_at_start": [round(x, 2) for x in load],
        "events_sent": len(sent_events),
        "events_delivered": len(got_events),
        "stills_sent": len(sent_stills),
        "stills_delivered": len(got_stills),
        "events_complete": round(len(got_events) / len(sent_events), 4) if sent_events else math.nan,
        "stills_complete": round(len(got_stills) / len(sent_stills), 4) if sent_stills else math.nan,
        "door_events_sent": len({(d, e) for d, e, _ in sent_events}),
        "duplicates": duplicates,
        "reordered": reordered,
        "events_per_s": round(len(got_events) / span, 2) if span and not math.isnan(span) else math.nan,
        "puback_ms": {"p50": ms(puback, 50), "p95": ms(puback, 95), "count": len(puback)},
        "e2e_ms": {
            "p50": ms(e2e, 50),
            "p95": ms(e2e, 95),
            "count": len(e2e),
            "from": "event time" if spec.real else "publish",
        },
        "connect_ms": {"p50": ms(connects, 50), "p95": ms(connects, 95), "max": ms(connects, 100)},
        "connected": len(connects),
        "all_connected_s": round(max(connected_after), 2) if len(connected_after) == spec.agents else None,
        "connect_failures": failures,
        "unacknowledged_rows": sum(r.unacknowledged for r in results),
        "burst_complete": burst_ok,
        "broker_cpu_pct": round(broker_cpu, 1),
        "broker_peak_rss_mb": round(broker_rss, 1),
        "client_cpu_pct": round(client_cpu, 1),
        "wall_s": round(wall, 1),
    }


# The table.


def shown(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per run."""
    head = (
        f"{'run':<34} {'ev sent':>7} {'ev %':>6} {'still %':>7} {'dup':>4} {'reord':>5} {'ev/s':>6} "
        f"{'puback p50/p95':>14} {'e2e p50/p95':>13} {'connect p50/p95/max':>19} {'fails':>5} {'all conn':>8} "
        f"{'burst':>5} {'brk cpu%':>8} {'rss MB':>6} {'cli cpu%':>8}"
    )
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<34} failed: {r['error'].splitlines()[-1]}")
            continue
        c, p, e = r["connect_ms"], r["puback_ms"], r["e2e_ms"]
        burst = r["burst_complete"]
        print(
            f"{r['name']:<34} {r['events_sent']:>7} {100 * r['events_complete']:>6.1f} "
            f"{100 * r['stills_complete']:>7.1f} {r['duplicates']:>4} {r['reordered']:>5} "
            f"{shown(r['events_per_s'], 1):>6} "
            f"{shown(p['p50']) + '/' + shown(p['p95']):>14} {shown(e['p50']) + '/' + shown(e['p95']):>13} "
            f"{shown(c['p50']) + '/' + shown(c['p95']) + '/' + shown(c['max']):>19} "
            f"{sum(r['connect_failures'].values()):>5} {shown(r['all_connected_s'], 1):>8} "
            f"{'-' if burst is None else ('yes' if burst else 'NO'):>5} {r['broker_cpu_pct']:>8.1f} "
            f"{r['broker_peak_rss_mb']:>6.1f} {r['client_cpu_pct']:>8.1f}"
        )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "paho_mqtt": paho.__version__ if hasattr(paho, "__version__") else "",
        "mosquitto": MOSQUITTO,
        "nats_server": shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin"),
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def specs(args: argparse.Namespace) -> list[Spec]:
    """The runs asked for: one, the matrix, or the quick one."""
    one = Spec(
        args.broker,
        args.agents,
        args.rate,
        args.duration,
        args.stills,
        args.still_kb,
        args.storm,
        args.spread,
        args.burst,
        args.real,
        args.drain,
        args.workers,
        args.nodes,
        args.seed,
    )
    if args.quick:
        return [replace(one, agents=3, rate=6.0, duration=10.0, drain=min(args.drain, 30.0))]
    if not args.matrix:
        return [one]
    runs = [replace(one, broker=b, agents=n, storm=False) for b in ("mosquitto", "nats") for n in MATRIX_SIZES]
    runs += [
        replace(one, broker=b, agents=STORM_SIZE, storm=True, spread=s)
        for b in ("nats", "mosquitto")
        for s in STORM_SPREADS
    ]
    return runs


def lost(row: dict[str, Any]) -> bool:
    return "error" in row or row["events_complete"] < 1 or row["stills_complete"] < 1 or row["burst_complete"] is False


def main(argv: list[str] | None = None) -> int:
    """Run the fleet(s), print the table, write the JSON; 1 when a run lost anything or could not run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", choices=("mosquitto", "nats"), default="mosquitto", help="(default mosquitto)")
    parser.add_argument("--nodes", type=int, default=3, help="NATS cluster nodes (default 3)")
    parser.add_argument("--agents", type=int, default=10, help="door agents N (default 10)")
    parser.add_argument("--rate", type=float, default=1.0, help="door events per agent per minute (default 1)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of door events (default 60)")
    parser.add_argument("--stills", type=int, default=3, help="stills per door event (default 3)")
    parser.add_argument("--still-kb", type=int, default=100, help="kB per still (default 100)")
    parser.add_argument("--storm", action="store_true", help="all agents connect at once, a burst waiting in each")
    parser.add_argument("--spread", type=float, default=0.0, help="storm's first-connect jitter, seconds (default 0)")
    parser.add_argument("--burst", type=int, default=1, help="door events waiting in each outbox at a storm (1)")
    parser.add_argument("--real", action="store_true", help="real 'edgecam run' agents on the simulated camera")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for delivery after (default 60)")
    parser.add_argument(
        "--workers", type=int, default=max(2, min(4, os.cpu_count() or 2)), help="light agents' processes"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the event times (default 1)")
    parser.add_argument("--matrix", action="store_true", help="N = 10, 30, 100, 300 on both, the storms at 300")
    parser.add_argument("--quick", action="store_true", help="CI's smoke run: 3 agents, 10 s")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-out" / "fleet.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.rate <= 0 or args.duration <= 0 or args.stills < 0 or args.still_kb < 1:
        parser.error("--agents, --rate, --duration and --still-kb must be positive, --stills at least 0")
    if MOSQUITTO is None and (args.broker == "mosquitto" or args.matrix):
        print("mosquitto is not installed: apt-get install mosquitto (scripts/common.sh ensure_mosquitto)")
        return 2

    info = machine()
    print(
        f"machine: {info['cores']} cores ({info['cores_allowed']} allowed), load average "
        f"{' '.join(f'{x:.2f}' for x in info['load_average'])}; Python {info['python']}",
        flush=True,
    )
    out = args.json.with_suffix("") if args.json.suffix else args.json.with_name(f"{args.json.name}.d")
    rows: list[dict[str, Any]] = []
    for spec in specs(args):
        print(f"running {spec.name} ...", flush=True)
        folder = out / spec.name.replace(" ", "-").replace("=", "")
        try:
            rows.append(run_one(spec, folder))
        except Exception:  # noqa: BLE001  # the other runs go on; the error is in the table and the JSON
            traceback.print_exc()
            rows.append({"name": spec.name, "spec": asdict(spec), "error": traceback.format_exc()})
    print()
    print_table(rows)
    report = {
        "machine": {**info, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 1 if any(lost(row) for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
