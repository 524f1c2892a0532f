"""The broker's settings: the MQTT connection and topics, and Home Assistant discovery (sections of ``Settings``)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from edgecam.section import Section, systemd_credential

MIN_PACKET_SIZE = 4096
"""Smallest ``mqtt.max_packet_size`` accepted: an event JSON and its topic must fit with room to spare."""


def _check_topic_segment(value: str) -> str:
    if any(c in value for c in "/+#\0"):
        raise ValueError("one topic level: must not contain '/', '+', '#' or NUL")
    return value


def _check_not_reserved(value: str) -> str:
    if value.startswith("$"):
        raise ValueError(
            "must not start with '$': brokers reserve such topics (MQTT 5 section 4.7.2) and a '#' subscriber "
            "never sees them"
        )
    return value


def _split_host_port(value: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port or None); raises ValueError."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address is written [address] or [address]:port")
        port = rest[1:] if rest else None
    elif value.count(":") > 1:
        raise ValueError("write an IPv6 address in brackets, [address]:port")
    else:
        host, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if not host or any(c.isspace() or c in "/\0" for c in host) or len(host) > 253:
        raise ValueError("not a host name or address")
    if port is None:
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port)


def _check_host_port(value: str) -> str:
    _split_host_port(value)
    return value


def _check_no_nul(value: str | None) -> str | None:
    if value is not None and "\0" in value:
        raise ValueError("must not contain NUL")
    return value


class MqttSettings(Section):
    """The broker connection and topics."""

    host: str = Field("localhost", min_length=1, max_length=253, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    hosts: list[Annotated[str, AfterValidator(_check_host_port)]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Brokers to fail over between, each 'host' or 'host:port' ('[v6 address]:port'; no port: mqtt.port), "
            "e.g. the nodes of a cluster; empty: mqtt.host alone."
        ),
    )
    hosts_order: Literal["random", "listed"] = Field(
        "random",
        description=(
            "'random': each start tries mqtt.hosts in a shuffled order, spreading a fleet over them; 'listed': "
            "from the first, for a preferred broker with stand-bys."
        ),
    )
    connect_spread: float = Field(
        3.0,
        ge=0.0,
        le=600.0,
        description=(
            "The agent's first connect waits a random 0 to this many seconds, so a fleet powering up together "
            "does not reach the broker at once."
        ),
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version: '5' or '3.1.1'.")
    topic_prefix: Annotated[str, AfterValidator(_check_topic_segment), AfterValidator(_check_not_reserved)] = Field(
        "edgecam",
        min_length=1,
        max_length=128,
        description="First part of every topic: <prefix>/<device_id>.",
    )
    client_id: Annotated[str | None, AfterValidator(_check_no_nul)] = Field(
        None, max_length=128, description="MQTT client id; default 'edgecam-<device_id>'."
    )
    keepalive: int = Field(
        30,
        ge=5,
        le=3600,
        description="Seconds of silence before a ping; no answer within as long again means a dead link.",
    )
    username: Annotated[str | None, AfterValidator(_check_no_nul)] = Field(
        None, max_length=256, description="Broker user name."
    )
    password_file: Path | None = Field(
        None, description="File holding the broker password (never put the password itself in settings)."
    )
    reconnect_min: float = Field(1.0, ge=0.1, le=60.0, description="First delay before reconnecting, seconds.")
    reconnect_max: float = Field(60.0, ge=1.0, le=3600.0, description="Longest delay between reconnects, seconds.")
    max_inflight: int = Field(10, ge=1, le=100, description="Most outbox rows published and not yet acknowledged.")
    max_packet_size: int = Field(
        0,
        ge=0,
        le=268_435_460,
        description=(
            "Largest MQTT packet the broker takes, bytes (its max_packet_size); 0: what the broker states (MQTT 5), "
            "else found out. Larger stills are re-encoded to fit."
        ),
    )
    session_expiry: int = Field(
        86400,
        ge=0,
        le=2**32 - 2,
        description="Seconds the broker keeps this client's session (MQTT 5) after the connection drops.",
    )
    stats_interval: float = Field(
        60.0, ge=1.0, le=86400.0, description="Seconds between two outbox reports on <base>/stats."
    )
    tls: bool = Field(
        False, description="Connect with TLS (port 8883) and verify the broker's certificate and host name."
    )
    ca_file: Path | None = Field(
        None, description="CA certificates (PEM) that sign the broker's certificate; default the system's."
    )
    cert_file: Path | None = Field(None, description="This device's client certificate (PEM), for brokers that ask.")
    key_file: Path | None = Field(
        None,
        description=(
            "The client certificate's private key (PEM, mode 0600); default the systemd credential "
            "'mqtt-client-key', else in cert_file."
        ),
    )
    tls_insecure: bool = Field(
        False, description="For tests only: accept any broker certificate and host name (warned on every connect)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "MqttSettings":
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("mqtt.reconnect_max must be >= mqtt.reconnect_min")
        if self.hosts and "host" in self.model_fields_set:
            raise ValueError("set mqtt.hosts or mqtt.host, not both (put every broker in mqtt.hosts)")
        if len(set(self.hosts)) < len(self.hosts):
            raise ValueError("mqtt.hosts names a broker twice")
        ports = {port or self.port for _, port in map(_split_host_port, self.hosts)} or {self.port}
        if 8883 in ports and not self.tls:
            raise ValueError("mqtt.port 8883 is MQTT over TLS: set mqtt.tls = true, or use port 1883")
        tls_keys = [k for k in ("ca_file", "cert_file", "key_file", "tls_insecure") if getattr(self, k)]
        if tls_keys and not self.tls:
            raise ValueError(f"mqtt.{tls_keys[0]} needs mqtt.tls = true")
        if self.tls and 1883 in ports:
            raise ValueError("mqtt.tls on port 1883, the plain MQTT port: use port 8883, or mqtt.tls = false")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("mqtt.key_file needs mqtt.cert_file, the certificate it belongs to")
        if 0 < self.max_packet_size < MIN_PACKET_SIZE:
            raise ValueError(f"mqtt.max_packet_size must be 0 (the broker's own) or at least {MIN_PACKET_SIZE} bytes")
        return self

    @property
    def brokers(self) -> list["MqttSettings"]:
        """These settings once per broker of ``mqtt.hosts``, in its order, with that broker's host and port.

        An entry without a port gets ``mqtt.port``. Without ``mqtt.hosts``: ``[self]``.
        """
        if not self.hosts:
            return [self]
        return [
            self.model_copy(update={"host": host, "port": port or self.port, "hosts": []})
            for host, port in map(_split_host_port, self.hosts)
        ]

    @property
    def where(self) -> str:
        """The brokers for a log line: ``host:port``, or those of ``mqtt.hosts`` joined by ``, ``."""
        return ", ".join(f"{b.host}:{b.port}" for b in self.brokers)

    def secret_file(self, name: Literal["password", "key"]) -> Path | None:
        """``mqtt.password_file`` / ``mqtt.key_file``, else the systemd credential (``LoadCredential=``) if any."""
        path = self.password_file if name == "password" else self.key_file
        if path is not None:
            return path
        if name == "key" and self.cert_file is None:
            return None
        return systemd_credential("mqtt-password" if name == "password" else "mqtt-client-key")


class HomeAssistantSettings(Section):
    """Home Assistant MQTT discovery: the device and its entities appear by themselves (docs/home-assistant.md)."""

    enabled: bool = Field(
        True,
        description=(
            "Announce the device to Home Assistant (retained discovery configs); false removes what this agent "
            "announced before, at its next connect."
        ),
    )
    discovery_prefix: Annotated[str, AfterValidator(_check_topic_segment), AfterValidator(_check_not_reserved)] = Field(
        "homeassistant",
        min_length=1,
        max_length=128,
        description="Home Assistant's discovery prefix (its MQTT integration's setting, 'homeassistant' by default).",
    )
    status_topic: Annotated[str, AfterValidator(_check_not_reserved)] = Field(
        "homeassistant/status",
        min_length=1,
        max_length=256,
        pattern=r"^[^+#\x00]+$",
        description=(
            "Where Home Assistant publishes its birth message 'online' (its MQTT integration's birth topic, "
            "'homeassistant/status' whatever the discovery prefix); the device is announced again on it."
        ),
    )
    discovery: Literal["component", "device"] = Field(
        "component",
        description=(
            "'component': one config topic per entity, every Home Assistant since 2023.8; 'device': one config "
            "topic for the whole device, Home Assistant 2024.11 and later."
        ),
    )
    device_name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The device's name in Home Assistant (entity ids follow from it); default the device_id.",
    )
