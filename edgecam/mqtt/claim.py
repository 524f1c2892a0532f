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
from edgecam.broker_settings import MqttSettings
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.models import Topics, iso_ms, utc_now
from edgecam.mqtt.subscriber import Subscriber

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
Step = Literal["activate", "yield"] | None
"""What the publisher does next on a connection: publish as the device, yield it, or nothing yet."""


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
        self.since = ""
        """When this process first published as the device (ISO 8601 UTC), for its ``active`` claim."""
        self.unanswered = False
        """No echo came on ``<base>/agent`` (an ACL without it): publish without checking the claim."""
        self.told_standby: set[str] = set()
        """Instances whose ``standby`` has been reported."""
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
        self.since = self.since or iso_ms(utc_now())


class ClaimCheck:
    """The claim on one connection: it says what to do next; the publisher makes the MQTT calls.

    ``checking``: reading the claim after the connect; ``waiting``: another agent's claim was found, in case that
    one is still running; ``active``: this agent publishes as the device.
    """

    def __init__(
        self, device: DeviceClaim, device_id: str, topic: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start checking, for the device's claim ``device`` on ``topic`` (``<base>/agent``)."""
        self.state: Literal["checking", "waiting", "active"] = "checking"
        self.other: Claim | None = None
        """Another agent's ``active`` claim, if it is the latest seen while checking."""
        self.availability: bytes | None = None
        """The device's latest availability seen on this connection."""
        self._device = device
        self._device_id = device_id
        self._topic = topic
        self._clock = clock
        self._until = 0.0
        """When checking or waiting ends (monotonic)."""

    @property
    def active(self) -> bool:
        """This agent publishes as the device on this connection."""
        return self.state == "active"

    def start(self) -> Claim:
        """Read the claim before publishing anything: the ``checking`` message to publish.

        The retained claim arrives before the echo of ``checking``.
        """
        self._until = self._clock() + CHECK_TIMEOUT_S
        return Claim(self._device.instance, "checking")

    def due(self) -> bool:
        """Checking or waiting has taken its time: the probation is over, or no echo came."""
        return self.state != "active" and self._clock() >= self._until

    def timed_out(self) -> None:
        """Say why the agent publishes when ``due``: after no echo (an ACL without the topic), once."""
        if self.state == "checking":
            self._device.unanswered = True
            logger.warning(
                "mqtt: no echo on %s (refused, or none within %g s), so this agent cannot tell whether another one "
                "uses device_id '%s'; publishing anyway (does the broker's ACL let this device read and write it? "
                "docs/security.md)",
                self._topic,
                CHECK_TIMEOUT_S,
                self._device_id,
            )

    def refused(self) -> None:
        """The broker refused a message on the claim's topic: no echo will come, so stop waiting for one."""
        if self.state == "checking":
            self._until = 0.0

    def heard(self, payload: bytes) -> Step:
        """A message on ``<base>/agent``."""
        claim = Claim.parse(payload)
        if claim is None:
            return None
        if claim.instance == self._device.instance:
            if claim.state == "active" and self.state == "checking":
                self.other = None
            elif claim.state == "checking" and self.state == "checking":
                return self._decide()
            return None
        if claim.state == "standby":
            if claim.instance not in self._device.told_standby:
                self._device.told_standby.add(claim.instance)
                logger.warning(
                    "mqtt: another edgecam agent (%s) also has device_id '%s' and waits without publishing until "
                    "this one stops: give each camera its own device_id (device_id in the settings file, or "
                    "EDGECAM_DEVICE_ID)",
                    claim.describe(),
                    self._device_id,
                )
        elif claim.state == "active":
            self.other = claim
            if self.state != "checking":
                return "yield"  # claimed live: it found this one gone, or it is a live duplicate
        return None

    def activate(self) -> Claim:
        """Publish as the device from now on: the ``active`` claim to retain."""
        if self.other is not None:
            logger.info("mqtt: taking over device_id '%s' from %s", self._device_id, self.other.describe())
        self.state = "active"
        self._device.claimed()
        return Claim(self._device.instance, "active", self._device.since)

    def _decide(self) -> Step:
        verdict = self._device.checked(self.other, self.availability)
        if verdict == "claim":
            return "activate"
        if verdict == "yield":
            return "yield"
        self.state = "waiting"
        self._until = self._clock() + PROBATION_S
        logger.info(
            "mqtt: device_id '%s' was last claimed by another agent (%s); publishing nothing for %g s in case "
            "it is still running",
            self._device_id,
            self.other.describe() if self.other else "?",
            PROBATION_S,
        )
        return None


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
