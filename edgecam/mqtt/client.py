"""Connecting to the broker: credentials, TLS, configured paho clients, one-line errors; and a small subscriber."""

import logging
import random
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.credentials import check_private, read_secret
from edgecam.errors import BrokerError, ConfigError

logger = logging.getLogger(__name__)


def read_password(settings: MqttSettings) -> str | None:
    """The broker password from ``mqtt.password_file`` or the systemd credential (newline stripped), or None."""
    path = settings.secret_file("password")
    if path is None:
        return None
    return read_secret("mqtt.password_file", path)


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context that verifies the broker's certificate and host name, or None without ``mqtt.tls``."""
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"mqtt.ca_file: cannot load {settings.ca_file}: {err}") from err
    if settings.cert_file is not None:
        key = settings.secret_file("key")
        if key is not None:
            check_private("mqtt.key_file", key)
        try:
            context.load_cert_chain(settings.cert_file, key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"mqtt.cert_file: cannot load {settings.cert_file} with its key {key}: {err}") from err
    if settings.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def warn_if_insecure(settings: MqttSettings) -> None:
    """Say on every connect that the broker is not verified, when ``mqtt.tls_insecure`` is on."""
    if settings.tls and settings.tls_insecure:
        logger.warning(
            "mqtt: mqtt.tls_insecure is on: the certificate of broker %s:%d is NOT verified (for tests only)",
            settings.host,
            settings.port,
        )


def new_client(
    settings: MqttSettings,
    client_id: str,
    password: str | None,
    tls: ssl.SSLContext | None,
    reconnect: bool,
    persistent: bool = False,
) -> paho.Client:
    """A paho client for ``settings``: protocol, credentials and TLS set, not connected.

    With ``reconnect`` false, paho's network thread ends when the connection does. With ``persistent`` (MQTT
    3.1.1) the broker keeps the session; for MQTT 5 that is chosen in ``connect``.
    """
    if settings.protocol == "5":
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=reconnect,
        )
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id,
            clean_session=not persistent,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=reconnect,
        )
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if tls is not None:
        client.tls_set_context(tls)
    return client


def broker_order(settings: MqttSettings) -> list[MqttSettings]:
    """The brokers to try, one ``MqttSettings`` each.

    ``mqtt.hosts`` shuffled (``hosts_order = "random"``) or as listed, else ``mqtt.host`` alone.
    """
    brokers = settings.brokers
    if settings.hosts_order == "random":
        random.shuffle(brokers)
    return brokers


def first_connect_delay(settings: MqttSettings) -> float:
    """Seconds to wait before the first connect: uniform over ``[0, mqtt.connect_spread]``."""
    return random.uniform(0.0, settings.connect_spread)


def connect(client: paho.Client, settings: MqttSettings) -> None:
    """Open the TCP (and TLS) connection and send CONNECT resuming the session; raises OSError."""
    if settings.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = settings.session_expiry
        client.connect(settings.host, settings.port, settings.keepalive, clean_start=False, properties=properties)
    else:
        client.connect(settings.host, settings.port, settings.keepalive)


def message_expiry(protocol: str, seconds: int | None) -> Properties | None:
    """PUBLISH properties with a Message Expiry Interval of ``seconds``, or None: MQTT 3.1.1, or no expiry.

    The broker deletes a message held for a subscriber, or retained, once the interval has passed since it received
    it, and sends the remaining interval with it (MQTT 5.0 section 3.3.2.3.3).
    """
    if protocol != "5" or seconds is None:
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = seconds
    return properties


def describe_connect_error(settings: MqttSettings, err: Exception) -> str:
    """One line saying why a connection attempt failed, without a traceback."""
    where = f"{settings.host}:{settings.port}"
    if isinstance(err, socket.gaierror):
        return f"mqtt: cannot resolve broker host {settings.host}: {err.strerror or err}"
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = (err.verify_message or str(err)).rstrip(".")
        return f"mqtt: TLS: the certificate of broker {where} is not trusted: {reason}"
    if isinstance(err, ssl.SSLError):
        return f"mqtt: TLS handshake with broker {where} failed: {err.reason or err}"
    if settings.tls and isinstance(err, ConnectionResetError):
        # The TCP connection was up, so the handshake failed: most likely a listener without TLS.
        return f"mqtt: TLS handshake with broker {where} failed: {err.strerror} (is it a TLS port?)"
    if isinstance(err, TimeoutError):
        return f"mqtt: cannot reach broker {where}: timed out"
    if isinstance(err, OSError):
        return f"mqtt: cannot reach broker {where}: {err.strerror or err}"
    return f"mqtt: cannot connect to broker {where}: {err}"


UNSUPPORTED_PROTOCOL_VERSION = 0x84
"""CONNACK reason code (MQTT 5 section 3.2.2.2; paho maps MQTT 3.1.1's return code 1 to it)."""
RETAIN_NOT_SUPPORTED = 0x9A
"""CONNACK or DISCONNECT reason code of a broker that keeps no retained messages (MQTT 5 section 3.2.2.2)."""
KEEP_ALIVE_TIMEOUT = 0x8D
"""What paho 2.x's ``on_disconnect`` says when nothing came back within the keepalive (its own, not the broker's)."""


def describe_refusal(settings: MqttSettings, reason: ReasonCode) -> str:
    """One line for a CONNACK that refuses the connection, naming the setting to change where one helps."""
    line = f"mqtt: broker {settings.host}:{settings.port} refused the connection: {reason}"
    if reason.value == UNSUPPORTED_PROTOCOL_VERSION and settings.protocol == "5":
        line += '; it speaks only MQTT 3.1.1: set mqtt.protocol = "3.1.1"'
    return line


def describe_closed_before_connack(settings: MqttSettings, error: str = "") -> str:
    """One line for a server that accepted TCP (and TLS) but closed the connection without a CONNACK.

    ``error`` is what the socket said, as paho logs it (e.g. ``failed to receive on socket: [SSL:
    TLSV13_ALERT_CERTIFICATE_REQUIRED] ...``): then the server spoke TLS and ended it.
    """
    where = f"{settings.host}:{settings.port}"
    if "[SSL" in error:
        # TLS 1.3: the broker checks the client's certificate after the handshake, and says no with an alert.
        reason = error.removeprefix("failed to receive on socket: ")
        return (
            f"mqtt: broker {where} ended the TLS connection before answering CONNECT: {reason}; "
            "check mqtt.cert_file and mqtt.key_file (a certificate from the CA the broker trusts)"
        )
    if settings.tls:
        line = (
            f"mqtt: the server at {where} answered, but not as an MQTT broker (it closed the TLS connection before "
            "answering CONNECT; a broker refusing this client's certificate does that too); check mqtt.host and "
            "mqtt.port (8883 for MQTT over TLS), mqtt.cert_file and mqtt.key_file"
        )
    else:
        line = (
            f"mqtt: the server at {where} answered, but not as an MQTT broker (it closed the connection before "
            "answering CONNECT); check mqtt.host and mqtt.port (1883, or 8883 with mqtt.tls)"
        )
    if settings.protocol == "3.1.1":
        # MQTT 3.1.1 has no reason codes for most refusals: the broker just closes (MQTT 3.1.1 section 3.1.4).
        line += (
            '; or a broker refusing this client without saying why (e.g. retain_available false): mqtt.protocol = "5"'
            " makes it say why"
        )
    return line


@dataclass(frozen=True)
class BrokerLimits:
    """What the broker states in its MQTT 5 CONNACK (MQTT 5 section 3.2.2.3); None where it states nothing."""

    max_packet_size: int | None = None
    """Maximum Packet Size: the largest packet it takes, bytes (section 3.2.2.3.6)."""
    receive_maximum: int | None = None
    """Receive Maximum: QoS 1 and 2 messages it takes unacknowledged at once (section 3.2.2.3.3)."""
    maximum_qos: int | None = None
    """Maximum QoS it supports (section 3.2.2.3.4)."""

    @classmethod
    def from_connack(cls, properties: Properties | None) -> "BrokerLimits":
        """The limits in a CONNACK's properties (paho's names); none for MQTT 3.1.1."""
        if properties is None:
            return cls()
        return cls(
            getattr(properties, "MaximumPacketSize", None),
            getattr(properties, "ReceiveMaximum", None),
            getattr(properties, "MaximumQoS", None),
        )


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
