"""``edgecam fleet``: one line per door heard on the broker, from its retained topics only.

Per device (``<mqtt.topic_prefix>/<device>``) it reads ``availability``, ``door``, ``last_event``, ``stats`` (the
outbox's depth and oldest waiting event, ``time_synced``, and ``last_event`` when its own topic is absent) and
``agent`` (the ``version`` of the active claim, ``edgecam.mqtt.claim``). ``Fleet`` keeps that state and makes the
rows; ``render_table`` lines them up for a terminal, and ``edgecam listen`` puts the same rows at the top of its
index page (``edgecam.eventlog_pages``). A value not heard is ``-``; one that arrived but cannot be read (bad JSON,
a wrong type, a word that is not a word) is ``?``: a payload never reaches the terminal or the page as it came.
"""

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from edgecam.config import DEVICE_ID_PATTERN, Settings
from edgecam.errors import BrokerError, ConfigError
from edgecam.mqtt.claim import Claim

logger = logging.getLogger(__name__)

TOPICS = ("availability", "door", "last_event", "stats", "agent")
"""The retained topics the fleet is read from, as their topics end (``edgecam.models.Topics``)."""
COLUMNS = ("device", "availability", "door", "last event", "age", "outbox", "oldest waiting", "clock synced", "version")
"""The table's header."""
UNKNOWN = "-"
"""A value not heard (or, for ``oldest waiting``, nothing waiting)."""
UNREADABLE = "?"
"""A value that arrived but cannot be read."""

SUBSCRIBE_TIMEOUT_S = 10.0
"""How long ``run_fleet`` waits for the broker to confirm the subscriptions before it gives up."""
QUIET_S = 0.5
"""After the SUBACK, the retained messages have all come once none has arrived for this long."""
SETTLE_MAX_S = 5.0
"""The longest ``run_fleet`` waits for the retained messages after the SUBACK, however many keep coming."""
COALESCE_S = 0.2
"""``--watch``: after a message, wait this long for the others of its burst before the table is made again."""
WATCH_EVERY_S = 10.0
"""``--watch`` with no number: seconds between two looks at the table when no message arrives (ages move)."""

NAME = re.compile(DEVICE_ID_PATTERN)
_WORD = re.compile(r"^[A-Za-z0-9_.+-]{1,32}$")
"""What a state or a version may look like to be shown; anything else (escape sequences, markup) is ``?``."""


class _Bad:
    """A value that arrived but could not be read."""


BAD = _Bad()


@dataclass
class DeviceState:
    """What the broker holds for one device; None: not heard (or cleared), ``BAD``: unreadable."""

    device_id: str
    availability: str | _Bad | None = None
    door: str | _Bad | None = None
    last_event: datetime | _Bad | None = None
    """From ``<base>/last_event``."""
    stats: dict[str, Any] | _Bad | None = None
    """The JSON object of ``<base>/stats``."""
    version: str | _Bad | None = None
    """The ``version`` of the active claim on ``<base>/agent``."""

    def take(self, what: str, payload: bytes) -> bool:
        """Keep the message of topic ``<base>/<what>`` (one of ``TOPICS``); whether anything changed.

        An empty payload clears the value (a retained message deleted); ``agent`` messages other than an ``active``
        claim (an agent ``checking`` or on ``standby``) change nothing.
        """
        before = (self.availability, self.door, self.last_event, self.stats, self.version)
        if what == "availability":
            self.availability = _word(payload)
        elif what == "door":
            self.door = _word(payload)
        elif what == "last_event":
            self.last_event = _moment(payload.decode(errors="replace")) if payload else None
        elif what == "stats":
            self.stats = _stats(payload)
        elif what == "agent":
            if not payload:
                self.version = None
            else:
                claim = Claim.parse(payload)
                if claim is None:
                    self.version = BAD
                elif claim.state == "active":
                    self.version = claim.version if _WORD.fullmatch(claim.version) else BAD if claim.version else None
        else:
            raise ValueError(f"{what!r} is not one of {TOPICS}")
        return before != (self.availability, self.door, self.last_event, self.stats, self.version)

    def row(self, now: datetime) -> "FleetRow":
        """The device's line at ``now`` (aware): every value as text, ``-`` unknown, ``?`` unreadable."""
        stats = self.stats
        last_event = self.last_event
        if last_event is None and isinstance(stats, dict) and stats.get("last_event") is not None:
            last_event = _moment(str(stats["last_event"]))
        if isinstance(last_event, datetime):
            when, age = last_event.astimezone().strftime("%Y-%m-%d %H:%M:%S"), human_age(now - last_event)
        else:
            when = age = _text(last_event)
        if isinstance(stats, dict):
            depth = _count(stats.get("depth"))
            oldest = stats.get("oldest_waiting_s")
            if oldest is None:
                waiting = UNKNOWN
            elif isinstance(oldest, int | float) and not isinstance(oldest, bool) and oldest >= 0:
                waiting = human_seconds(float(oldest))
            else:
                waiting = UNREADABLE
            synced = stats.get("time_synced")
            clock = "yes" if synced is True else "no" if synced is False else UNKNOWN if synced is None else UNREADABLE
        else:
            depth = waiting = clock = _text(stats)
        return FleetRow(
            self.device_id,
            _text(self.availability),
            _text(self.door),
            when,
            age,
            depth,
            waiting,
            clock,
            _text(self.version),
        )


@dataclass(frozen=True)
class FleetRow:
    """One line of the table, as text (``COLUMNS`` in order)."""

    device: str
    availability: str
    door: str
    last_event: str
    age: str
    outbox: str
    oldest_waiting: str
    clock_synced: str
    version: str

    def cells(self) -> tuple[str, ...]:
        """The values in the order of ``COLUMNS``."""
        return (
            self.device,
            self.availability,
            self.door,
            self.last_event,
            self.age,
            self.outbox,
            self.oldest_waiting,
            self.clock_synced,
            self.version,
        )


class Fleet:
    """The devices heard on the broker, by id; fed (device, topic end, payload) from one thread at a time."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceState] = {}

    def take(self, device: str, what: str, payload: bytes) -> bool:
        """Keep one message of ``<prefix>/<device>/<what>``; whether the table changed (new device or value).

        A ``device`` that is not a device id is ignored (False). Raises ValueError for a ``what`` not in ``TOPICS``.
        """
        if not NAME.fullmatch(device):
            return False
        if what not in TOPICS:
            raise ValueError(f"{what!r} is not one of {TOPICS}")
        state = self._devices.get(device)
        if state is None:
            if not payload:
                return False  # a retained message deleted, of a device never heard
            state = self._devices[device] = DeviceState(device)
            state.take(what, payload)
            return True
        return state.take(what, payload)

    def take_topic(self, prefix: str, topic: str, payload: bytes) -> bool:
        """``take`` for a message on ``topic``; False (ignored) for a topic that is not ``<prefix>/<device>/<what>``."""
        if not topic.startswith(prefix + "/"):
            return False
        parts = topic[len(prefix) + 1 :].split("/")
        if len(parts) != 2 or parts[1] not in TOPICS or not NAME.fullmatch(parts[0]):
            return False
        return self.take(parts[0], parts[1], payload)

    def devices(self) -> list[str]:
        """The device ids heard, sorted."""
        return sorted(self._devices)

    def rows(self, now: datetime, device: str | None = None) -> list[FleetRow]:
        """One row per device (or only ``device``), sorted by id; ages at ``now`` (aware)."""
        return [self._devices[name].row(now) for name in self.devices() if device in (None, name)]


def human_seconds(seconds: float) -> str:
    """A duration in words a glance reads: ``12 s``, ``3 min``, ``5 h``, ``2 d`` (rounded down)."""
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def human_age(age: timedelta) -> str:
    """``human_seconds`` of ``age``; ``in 3 min`` for a time ahead of this clock (one of the clocks is off)."""
    seconds = age.total_seconds()
    return human_seconds(seconds) if seconds >= 0 else "in " + human_seconds(-seconds)


def render_table(rows: list[FleetRow]) -> str:
    """The header and the rows, columns left-aligned and two spaces apart, one line each (no trailing newline)."""
    lines = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _word(payload: bytes) -> str | _Bad | None:
    if not payload:
        return None
    text = payload.decode(errors="replace").strip()
    return text if _WORD.fullmatch(text) else BAD


def _moment(text: str) -> datetime | _Bad:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return BAD
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stats(payload: bytes) -> dict[str, Any] | _Bad | None:
    if not payload:
        return None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return BAD
    return body if isinstance(body, dict) else BAD


def _count(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return UNREADABLE


def _text(value: str | _Bad | datetime | dict[str, Any] | None) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, _Bad):
        return UNREADABLE
    return str(value)


def run_fleet(
    settings: Settings,
    out: TextIO,
    device: str | None = None,
    watch: float | None = None,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Print the fleet's table to ``out``; 0, or 1 when no device (or not ``device``) was heard.

    Subscribes (clean session, client id ``edgecam-fleet-<random>``, publishing nothing) to ``<prefix>/+/<topic>``
    for each of ``TOPICS``, waits for the SUBACK (at most ``SUBSCRIBE_TIMEOUT_S``), then for the retained messages:
    until none has come for ``QUIET_S`` (at most ``SETTLE_MAX_S``). Without ``watch`` it prints the table once. With
    ``watch`` (seconds) it goes on until ``stop``: after each burst of messages, and every ``watch`` seconds (ages
    move), it makes the table again and prints it, under a line with the time, when it differs from the last one
    printed. Raises ConfigError for a bad ``device``, BrokerError when the broker does not confirm in time.
    """
    if device is not None and not NAME.fullmatch(device):
        raise ConfigError(f"fleet --device: {device!r} is not a device id (letters, digits, '_' and '-')")
    if watch is not None and not watch > 0:
        raise ConfigError(f"fleet --watch: {watch} is not allowed: a number of seconds more than 0")
    from edgecam.mqtt.subscriber import Subscriber

    prefix = settings.mqtt.topic_prefix
    fleet = Fleet()
    lock = threading.Lock()
    changed = threading.Event()
    last_message = [time.monotonic()]

    def take(topic: str, payload: bytes, retain: bool) -> None:
        with lock:
            if fleet.take_topic(prefix, topic, payload):
                changed.set()
            last_message[0] = time.monotonic()

    filters = [f"{prefix}/{device or '+'}/{topic}" for topic in TOPICS]
    subscriber = Subscriber(settings.mqtt, filters, take, f"edgecam-fleet-{secrets.token_hex(4)}", qos=0)
    where = settings.mqtt.where
    subscriber.start()
    try:
        if not subscriber.wait_subscribed(SUBSCRIBE_TIMEOUT_S):
            raise BrokerError(
                f"fleet: broker {where} did not confirm the subscription within {SUBSCRIBE_TIMEOUT_S:g} s"
            )
        subscribed = time.monotonic()
        last_message[0] = max(last_message[0], subscribed)
        while time.monotonic() - last_message[0] < QUIET_S and time.monotonic() - subscribed < SETTLE_MAX_S:
            time.sleep(0.05)
        nobody = f"fleet: {'device ' + device + ' not' if device else 'no device'} heard under {prefix}/ on {where}"
        if watch is None:
            with lock:
                rows = fleet.rows(now(), device)
            print(render_table(rows) if rows else nobody, file=out)
            return 0 if rows else 1
        shown = ""
        while not (stop is not None and stop.is_set()):
            with lock:
                changed.clear()
                rows = fleet.rows(now(), device)
            table = render_table(rows) if rows else nobody
            if table != shown:
                stamp = now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
                print(("\n" if shown else "") + f"at {stamp}\n{table}", file=out, flush=True)
                shown = table
            deadline = time.monotonic() + watch
            while not (stop is not None and stop.is_set()) and time.monotonic() < deadline:
                if changed.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                    time.sleep(COALESCE_S)
                    break
        return 0
    finally:
        subscriber.stop()
