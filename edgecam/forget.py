"""``edgecam forget-ha``: removes this device from Home Assistant, with empty retained discovery configs."""

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from edgecam.config import Settings
from edgecam.discovery import node_filters, read_remembered, remember
from edgecam.errors import BrokerError
from edgecam.models import Topics
from edgecam.mqtt.subscriber import Subscriber


@dataclass(frozen=True)
class Forgotten:
    """What ``forget`` did."""

    topics: list[str]
    """The config topics emptied."""
    agent_online: bool
    """The device's retained availability says ``online``: its agent runs and will announce the device again."""


def forget(settings: Settings, remembered: Path, timeout: float = 10.0) -> Forgotten:
    """Remove this device from Home Assistant: an empty retained payload on each of its config topics.

    Those are the retained configs under this node (either form) and those in ``remembered``. Raises BrokerError
    when the broker cannot be reached or does not take them within ``timeout`` s.
    """
    prefix, node = settings.homeassistant.discovery_prefix, settings.device_id
    # Under this node, so the device's ACL lets it write and read it; an empty payload means nothing to Home Assistant.
    marker = f"{prefix}/sensor/{node}/forget-{secrets.token_hex(8)}/config"
    availability = Topics(settings.topic_base).availability
    found: set[str] = set()
    online = threading.Event()
    seen_marker = threading.Event()

    def heard(topic: str, payload: bytes, retained: bool) -> None:
        if topic == marker:
            seen_marker.set()
        elif topic == availability:
            if payload == b"online":
                online.set()
        elif payload and retained:
            found.add(topic)

    filters = [*node_filters(prefix, node), availability, marker]
    subscriber = Subscriber(settings.mqtt, filters, heard, f"edgecam-forget-{node}")
    subscriber.start()
    try:
        if not subscriber.wait_subscribed(timeout):
            raise BrokerError(f"forget-ha: no answer from broker {settings.mqtt.where}")
        # The broker sends the retained configs before anything published after the subscription.
        subscriber.publish(marker, b"")
        if not seen_marker.wait(timeout):
            raise BrokerError("forget-ha: the broker did not send this device's retained configs back")
        topics = sorted(found | set(read_remembered(remembered)))
        try:
            subscriber.publish_confirmed([(topic, b"", True) for topic in topics], timeout)
        except BrokerError as err:
            raise BrokerError(f"forget-ha: {err}; run it again") from err
    finally:
        subscriber.stop()
    remember(remembered, [])
    return Forgotten(topics, online.is_set())
