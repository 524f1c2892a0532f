"""Fixtures the integration tests share: agents run as processes, a subscriber to what they publish, Home Assistant."""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker
from tests.homeassistant import DEMO_VERSION, HomeAssistant, install_command, installed, python_missing
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


@pytest.fixture
def homeassistant_shell_commands() -> str:
    """The ``shell_command:`` body of the Home Assistant the ``homeassistant`` fixture starts: none."""
    return ""


@pytest.fixture
def homeassistant(
    request: pytest.FixtureRequest, mosquitto: Broker, tmp_path: Path, homeassistant_shell_commands: str
) -> Iterator[HomeAssistant]:
    """A real Home Assistant, running, onboarded, its MQTT integration connected to the test's ``mosquitto``.

    The version is the test's indirect parameter (default 2024.3.3); a module's ``homeassistant_shell_commands``
    fixture gives it shell commands. Not installed: the test is skipped naming the
    install command, or fails under REQUIRE_HOMEASSISTANT=1 (scripts/test), unless this machine has no
    Python for that version.
    """
    version: str = getattr(request, "param", DEMO_VERSION)
    if not installed(version):
        if reason := python_missing(version):
            pytest.skip(reason)
        message = f"Home Assistant {version} is not installed: run {install_command(version)}"
        if os.environ.get("REQUIRE_HOMEASSISTANT") == "1":
            pytest.fail(message + " (REQUIRE_HOMEASSISTANT=1)")
        pytest.skip(message)
    hass = HomeAssistant(version, tmp_path / f"homeassistant-{version}", shell_commands=homeassistant_shell_commands)
    try:
        ready_s = hass.start()
        hass.onboard()
        hass.add_mqtt(mosquitto.host, mosquitto.port)
        request.node.user_properties.append(("homeassistant_ready_s", round(ready_s, 1)))
        yield hass
    finally:
        hass.stop()
