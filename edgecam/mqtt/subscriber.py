"""A small MQTT client that subscribes to topic filters and hands messages on (listen, fleet, forget, the claim)."""

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.errors import BrokerError
from edgecam.mqtt.client import (
    KEEP_ALIVE_TIMEOUT,
    broker_order,
    describe_closed_before_connack,
    describe_connect_error,
    describe_refusal,
    new_client,
    read_password,
    tls_context,
    warn_if_insecure,
)

logger = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]
"""Receives (topic, payload, retained) of each message."""


class Subscriber:
    """A small MQTT client: subscribes to topic filters (again on every reconnect) and hands messages on.

    Why it cannot connect (the same lines as the publisher's) is logged once per distinct problem while it retries.
    """

    def __init__(
        self,
        mqtt: MqttSettings,
        filters: Sequence[str],
        on_message: MessageCallback,
        client_id: str = "",
        persistent: bool = False,
        qos: int = 1,
    ) -> None:
        """Prepare the client; raise ConfigError for an unreadable password or CA file.

        ``qos`` 0 suits a reader of retained messages alone: on nats-server 2.9 a QoS 1 subscription is a JetStream
        consumer, which it may fail to create while a cluster node is down.

        ``persistent`` (with a ``client_id`` of its own): the broker keeps the session, and queues what is published
        while the client is away, for ``mqtt.session_expiry`` seconds (MQTT 5) or until it comes back (3.1.1).
        """
        self._brokers = broker_order(mqtt)
        self._mqtt = self._brokers[0]
        """The broker connected or tried next (``mqtt`` with its host and port)."""
        self._persistent = persistent
        self._filters = list(filters)
        self._qos = qos
        self._callback = on_message
        self._subscribed = threading.Event()
        self._connected = False
        self._answered = False
        """The broker answered the current connection attempt with a CONNACK."""
        self._socket_error = ""
        """paho's last error on the socket, e.g. a TLS alert (paho's network thread alone uses it)."""
        self._told: str | None = None
        """The problem last logged, until a connection succeeds: retries that meet it again say nothing."""
        self._client = new_client(
            mqtt, client_id, read_password(mqtt), tls_context(mqtt), reconnect=True, persistent=persistent
        )
        self._client.reconnect_delay_set(max(1, round(mqtt.reconnect_min)), max(1, round(mqtt.reconnect_max)))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_log = self._on_log
        self._started = False

    def start(self) -> None:
        """Connect in the background; reconnects by itself."""
        if self._started:
            return
        self._started = True
        if self._mqtt.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._mqtt.session_expiry if self._persistent else 0
            self._client.connect_async(
                self._mqtt.host,
                self._mqtt.port,
                self._mqtt.keepalive,
                clean_start=not self._persistent,
                properties=properties,
            )
        else:
            self._client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        """Publish at QoS 1; paho sends it once connected. ``wait_for_publish(timeout)`` on the result waits."""
        return self._client.publish(topic, payload, qos=1, retain=retain)

    def publish_confirmed(self, messages: Sequence[tuple[str, bytes, bool]], timeout: float) -> None:
        """Publish (topic, payload, retain) at QoS 1 and wait until the broker has each one (its PUBACK).

        Raises:
            BrokerError: the connection went, paho's queue is full, or not all were confirmed within ``timeout`` s.
        """
        try:
            sent = [self.publish(topic, payload, retain) for topic, payload, retain in messages]
            for info in sent:
                info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as err:  # paho: the connection went, or its queue is full
            raise BrokerError(str(err)) from err
        unconfirmed = sum(not info.is_published() for info in sent)
        if unconfirmed:
            raise BrokerError(f"the broker did not confirm {unconfirmed} of {len(sent)} messages within {timeout:g} s")

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the broker has confirmed the subscriptions; False on timeout."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        """Disconnect and stop the network thread; idempotent."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        where = f"{self._mqtt.host}:{self._mqtt.port}"
        self._answered = True
        if reason.is_failure:
            self._tell(describe_refusal(self._mqtt, reason))
            return
        logger.log(logging.DEBUG if self._told is None else logging.INFO, "mqtt: connected to broker %s", where)
        self._told = None
        warn_if_insecure(self._mqtt)
        self._connected = True
        client.subscribe([(f, self._qos) for f in self._filters])

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho 2.x calls this from its ``except OSError`` around connecting (Client.loop_forever): that error.
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            self._tell(describe_connect_error(self._mqtt, err))
        else:
            self._tell(f"mqtt: cannot reach broker {self._mqtt.host}:{self._mqtt.port}")
        self._next_broker(client)

    def _next_broker(self, client: paho.Client) -> None:
        """Point paho's reconnect at the next broker of ``mqtt.hosts``."""
        if len(self._brokers) == 1 or not self._started:
            return
        self._mqtt = self._brokers[(self._brokers.index(self._mqtt) + 1) % len(self._brokers)]
        # paho 2.2 client.py:880-905: the host and port setters refuse while a lost connection is being handled,
        # which is when this runs; reconnect() connects to these two attributes.
        client._host, client._port = self._mqtt.host, self._mqtt.port

    def _on_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = buf  # read by _on_disconnect, in this same thread

    def _tell(self, problem: str) -> None:
        """Log why the connection failed, unless that was the last thing said: paho retries every few seconds."""
        if problem != self._told:
            self._told = problem
            logger.warning("%s; retrying", problem)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()
        was_connected, self._connected = self._connected, False
        answered, self._answered = self._answered, False
        socket_error, self._socket_error = self._socket_error, ""
        if self._started and was_connected:
            logger.warning("mqtt: lost the connection to broker %s:%d; reconnecting", self._mqtt.host, self._mqtt.port)
        elif self._started and not answered and reason.value == KEEP_ALIVE_TIMEOUT:
            where = f"{self._mqtt.host}:{self._mqtt.port}"
            self._tell(
                f"mqtt: the server at {where} accepted the connection but gave no answer to CONNECT within "
                f"{self._mqtt.keepalive} s (mqtt.keepalive), not as an MQTT broker would; check mqtt.host and "
                "mqtt.port (1883, or 8883 with mqtt.tls)"
            )
        elif self._started and not answered:
            self._tell(describe_closed_before_connack(self._mqtt, socket_error))
        self._next_broker(client)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [f for f, r in zip(self._filters, reasons, strict=False) if r.is_failure]
        if refused:
            logger.warning("mqtt: the broker refused the subscription to %s", ", ".join(refused))
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._callback(message.topic, bytes(message.payload), bool(message.retain))
