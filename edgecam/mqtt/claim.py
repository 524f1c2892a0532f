"""Which agent publishes as a device: an instance id per state directory and a claim on ``<base>/agent``.

Two agents with one device_id (the default is the host name; Raspberry Pi OS names every Pi ``raspberrypi``)
would take each other's session (same client id) and publish two outboxes' ``seq`` under one device. So an agent
publishes only while it holds the device's claim, a retained ``{"instance", "state": "active", "since",
"version"}`` on ``<base>/agent``. After each connect it reads the claim before it publishes anything (it sends a
``checking`` message there and waits for its echo: the retained claim arrives before it). The agent already
running keeps the device; the other yields: it publishes nothing, says so in one line, and watches under another
client id until the holder has been offline for ``RESUME_AFTER_S``. A replaced camera (an old claim, nobody
coming back) takes over after ``PROBATION_S``.
"""

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgecam import __version__
from edgecam.config import MqttSettings
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.models import Topics
from edgecam.mqtt.client import Subscriber

logger = logging.getLogger(__name__)

INSTANCE_FILE = "instance"
"""The file in the state directory that holds this agent's instance id (32 hex digits)."""
DUPLICATE_WINDOW_S = 60.0
"""Another agent's claim found at two connects this close together is a live agent, not an old claim."""
PROBATION_S = 10.0
"""How long an agent that finds another's claim (a replaced camera's, or a live duplicate's) waits, connected
and silent, before it takes the device over: a live agent with the same client id reconnects within it."""
RESUME_AFTER_S = 10.0
"""How long the holder's ``availability`` must have said ``offline`` before a yielded agent takes over."""
CHECK_TIMEOUT_S = 10.0
"""How long to wait for the echo on ``<base>/agent``; without it (an old ACL) the agent publishes as before."""
MAX_CLAIM_BYTES = 1024
"""A longer message on ``<base>/agent`` is not a claim."""

ClaimState = Literal["active", "checking", "standby"]
Verdict = Literal["claim", "wait", "yield"]


def instance_id(state_dir: Path) -> str:
    """This agent's instance id: made once in ``<state_dir>/instance``, the same after every restart.

    Raises StorageError when the file can be neither read nor written.
    """
    path = state_dir / INSTANCE_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as err:
        raise StorageError(f"storage: cannot read {path}: {getattr(err, 'strerror', None) or err}") from err
    if re.fullmatch(r"[0-9a-f]{32}", text):
        return text
    new = uuid.uuid4().hex
    try:
        write_atomically(path, new.encode("ascii"))
    except OSError as err:
        raise StorageError(f"storage: cannot write {path}: {err.strerror or err}") from err
    return new


@dataclass(frozen=True)
class Claim:
    """A message on ``<base>/agent``.

    ``active`` (retained): the agent publishing as the device; ``checking``: an agent reading the claim after a
    connect; ``standby``: an agent that yielded.
    """

    instance: str
    state: ClaimState
    since: str = ""
    """ISO 8601 UTC time the claim was made (``active`` only)."""
    version: str = __version__

    def encode(self) -> bytes:
        """Compact JSON."""
        body = {"instance": self.instance, "state": self.state, "since": self.since, "version": self.version}
        return json.dumps({k: v for k, v in body.items() if v}, separators=(",", ":")).encode()

    @staticmethod
    def parse(payload: bytes) -> "Claim | None":
        """The claim in ``payload``, or None for anything else (too long, not JSON, unknown state)."""
        if len(payload) > MAX_CLAIM_BYTES:
            return None
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        instance, state = body.get("instance"), body.get("state")
        if not isinstance(instance, str) or state not in ("active", "checking", "standby"):
            return None
        since, version = body.get("since", ""), body.get("version", "")
        return Claim(
            instance, state, since if isinstance(since, str) else "", version if isinstance(version, str) else ""
        )

    def describe(self) -> str:
        """``instance 1a2b3c4d, since <time>`` for a log line."""
        return f"instance {self.instance[:8]}" + (f", since {self.since}" if self.since else "")


class DeviceClaim:
    """Decides, after each connect, whether this agent may publish as the device (pure; the clock is a seam)."""

    def __init__(self, instance: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.instance = instance
        self.held = False
        """This process has published as the device: finding another's claim later means it was taken over."""
        self.resuming = False
        """The holder was seen going offline while this agent waited: take the device back at once."""
        self._clock = clock
        self._sighted_at: float | None = None

    def checked(self, other: Claim | None, availability: bytes | None) -> Verdict:
        """The verdict once the claim is read.

        ``other`` is another instance's ``active`` claim if that is the current one; ``availability`` the device's
        retained availability (``online`` means the holder is connected now).
        """
        if other is None or self.resuming:
            return "claim"
        if availability == b"online" or self.held:
            return "yield"  # an agent connected now holds it, or took it over while this one was away
        now = self._clock()
        if self._sighted_at is not None and now - self._sighted_at < DUPLICATE_WINDOW_S:
            return "yield"  # its owner came back and took the session again: a live duplicate
        self._sighted_at = now
        return "wait"

    def claimed(self) -> None:
        """This agent now holds the device."""
        self.held = True
        self.resuming = False


class Standby:
    """A yielded agent's watch on ``<base>/availability`` under its own client id, which takes nobody's session."""

    def __init__(
        self, mqtt: MqttSettings, topics: Topics, client_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Prepare the watch; raise ConfigError for an unreadable password or CA file."""
        self._topics = topics
        self._clock = clock
        self._offline_since: float | None = None
        self._subscriber = Subscriber(mqtt, [topics.availability], self._on_message, client_id)

    def start(self, notice: Claim) -> None:
        """Connect in the background and say ``standby`` once on ``<base>/agent`` (not retained)."""
        self._subscriber.start()
        self._subscriber.publish(self._topics.agent, notice.encode())

    def gone(self) -> bool:
        """The device's availability has said ``offline`` for ``RESUME_AFTER_S``."""
        since = self._offline_since
        return since is not None and self._clock() - since >= RESUME_AFTER_S

    def stop(self) -> None:
        """Disconnect; idempotent."""
        self._subscriber.stop()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload == b"online":
            self._offline_since = None
        elif self._offline_since is None:
            self._offline_since = self._clock()
