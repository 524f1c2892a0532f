"""Fixtures the integration tests share: agents run as processes, and a subscriber to what they publish."""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker
from tests.integration.test_agent import BASE, Inbox, start_agent
from tests.integration.test_reliability import Child


@pytest.fixture
def listen() -> Iterator[Callable[[Broker], Inbox]]:
    """Subscribe to the device's topics with a session the broker keeps: ``listen(broker) -> Inbox``."""
    clients: list[mqtt.Client] = []

    def subscribe(broker: Broker) -> Inbox:
        box = Inbox()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="itest-subscriber", clean_session=False)
        client.on_message = box.on_message
        client.on_connect = lambda c, *_: c.subscribe(f"{BASE}/#", qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append(client)
        assert subscribed.wait(5), broker.log_text()
        return box

    yield subscribe
    for client in clients:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def inbox(mosquitto: Broker, listen: Callable[[Broker], Inbox]) -> Inbox:
    """What a subscriber to the device's topics on the test's ``mosquitto`` received."""
    return listen(mosquitto)


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start agents on ``<tmp_path>/state``: ``run_agent(broker, *command, module="edgecam", **env)``."""
    children: list[Child] = []

    def run(broker: Any, *command: str, module: str = "edgecam", **env: str) -> Child:
        child = Child(start_agent(broker, tmp_path, None, *command, module=module, **env))
        children.append(child)
        return child

    yield run
    for child in children:
        child.kill()
