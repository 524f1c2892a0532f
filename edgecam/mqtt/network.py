"""paho's network thread: its callbacks become events for the publisher's worker and commands for the agent.

Nothing here touches the worker's state: each callback puts a ``NetEvent`` on a queue and wakes the worker.
"""

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Literal, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.commands import MAX_ACK_BYTES, MAX_COMMAND_BYTES, sparingly
from edgecam.models import Topics
from edgecam.mqtt.claim import MAX_CLAIM_BYTES
from edgecam.mqtt.client import RETAIN_NOT_SUPPORTED, BrokerLimits, describe_refusal

logger = logging.getLogger(__name__)

MAX_WAITING_COMMANDS = 256
"""Commands held for the agent's frame loop; more are dropped."""
MAX_DISCOVERY_PEEK = 16
"""Bytes kept of a Home Assistant message: enough to tell ``online`` and an empty config from the rest."""
MAX_TOPIC_NAME = 256
"""Longest command name (the topic after ``<base>/set/``) handed to the agent; a longer one is cut and refused."""


class NetEvent(NamedTuple):
    """What paho's network thread tells the worker."""

    gen: int
    """Which connection (client) it came from."""
    kind: Literal["connected", "refused", "lost", "ack", "confirm", "claim", "availability", "discovery"]
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
    topic: str = ""
    """Where a Home Assistant message came from (``discovery``; ``retain`` then says whether it was retained)."""


class Network:
    """The callbacks of every paho client the publisher makes; they run in that client's network thread.

    The client's user data is its connection number (``gen``), which every event carries.
    """

    def __init__(
        self, mqtt: MqttSettings, topics: Topics, wake: threading.Event, discovery_filters: Sequence[str] = ()
    ) -> None:
        """Report to ``events`` and set ``wake`` for the worker; messages on ``discovery_filters`` too."""
        self.broker = mqtt
        """The broker of the current connection (``mqtt`` with its host and port); the worker sets it."""
        self._topics = topics
        self._discovery_filters = list(discovery_filters)
        self._wake = wake
        self.events: queue.SimpleQueue[NetEvent] = queue.SimpleQueue()
        self.connected = False
        """The broker has accepted the current connection; the worker clears it when it drops one."""
        self._socket_errors: dict[int, str] = {}
        """Connection -> paho's last error on its socket; paho's network thread alone uses it."""
        self._commands_prefix = topics.commands.removesuffix("#")
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=MAX_WAITING_COMMANDS)
        self._dropped_commands = 0

    @property
    def _where(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def attach(self, client: paho.Client) -> None:
        """Route ``client``'s callbacks here."""
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_log = self._on_log
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def take_commands(self) -> list[tuple[str, bytes]]:
        """The ``<base>/set/<name>`` messages received since the last call, as (name, payload), unchecked."""
        taken: list[tuple[str, bytes]] = []
        while True:
            try:
                taken.append(self._commands.get_nowait())
            except queue.Empty:
                return taken

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
            self.events.put(NetEvent(gen, "refused", reason=describe_refusal(self.broker, reason), retain=retain))
        else:
            self.connected = True
            # MQTT 5 section 3.2.2.3.5: absent means available.
            retain = getattr(properties, "RetainAvailable", 1) != 0 if properties is not None else True
            limits = BrokerLimits.from_connack(properties)
            self.events.put(NetEvent(gen, "connected", retain=retain, limits=limits))
        self._wake.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        gen: int,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        if flags.is_disconnect_packet_from_server:
            why = f"broker {self._where} closed the connection: {reason}"
        elif str(reason) == "Unspecified error":  # what paho reports for a dropped socket
            why = f"lost the connection to broker {self._where}"
        else:
            why = f"lost the connection to broker {self._where}: {reason}"
        retain = False if reason.value == RETAIN_NOT_SUPPORTED else None  # a retained message refused
        detail = self._socket_errors.pop(gen, "")
        self.events.put(NetEvent(gen, "lost", reason=why, retain=retain, code=reason.value, detail=detail))
        self._wake.set()

    def _on_log(self, client: paho.Client, gen: int, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_errors[gen] = buf  # read by _on_disconnect, in this same thread

    def _on_publish(
        self, client: paho.Client, gen: int, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self.events.put(NetEvent(gen, "ack", mid, str(reason) if reason.is_failure else "", code=reason.value))
        self._wake.set()

    def _on_message(self, client: paho.Client, gen: int, message: paho.MQTTMessage) -> None:
        if message.topic == self._topics.ack:
            self.events.put(NetEvent(gen, "confirm", payload=bytes(message.payload[: MAX_ACK_BYTES + 1])))
            self._wake.set()
        elif message.topic in (self._topics.agent, self._topics.availability):
            kind: Literal["claim", "availability"] = "claim" if message.topic == self._topics.agent else "availability"
            self.events.put(NetEvent(gen, kind, payload=bytes(message.payload[: MAX_CLAIM_BYTES + 1])))
            self._wake.set()
        elif any(paho.topic_matches_sub(f, message.topic) for f in self._discovery_filters):
            payload = bytes(message.payload[:MAX_DISCOVERY_PEEK])
            self.events.put(NetEvent(gen, "discovery", payload=payload, retain=message.retain, topic=message.topic))
            self._wake.set()
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
