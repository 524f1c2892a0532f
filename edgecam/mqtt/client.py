"""Connecting to the broker: credentials, TLS, configured paho clients, the brokers to try, one-line errors."""

import logging
import random
import socket
import ssl
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.credentials import check_private, read_secret
from edgecam.errors import ConfigError

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
