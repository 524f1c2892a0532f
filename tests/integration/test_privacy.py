"""The agent as a process, held off by the privacy schedule or the GPIO switch while the simulated door swings."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.test_agent import BASE, Inbox
from tests.integration.test_reliability import Child
from tests.integration.test_security_agent import Client

pytestmark = pytest.mark.integration

SWINGING_DOOR = {
    "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "1.0",
    "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "2",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.3",
    "EDGECAM_CAMERA__SIMULATED__DURATION": "4",
    "EDGECAM_MOTION__CALIBRATION": "0.5",
    "EDGECAM_MOTION__EVENT_GAP": "0.3",
    "EDGECAM_MQTT__STATS_INTERVAL": "1",
}
"""Four seconds of scene in real time, the door swinging open and shut from 1 s and again from 3 s, then the end."""


def privacy(box: Inbox) -> object:
    return json.loads(box.retained["privacy"])


def held_off_by(*holders: str) -> Callable[[Inbox], bool]:
    """The latest ``<base>/privacy`` says detection is off, held off by ``holders``."""
    return lambda box: (
        [json.loads(p) for p in box.history.get("privacy", [])[-1:]]
        == [{"detect": "OFF", "held_off_by": list(holders)}]
    )


def test_a_schedule_window_covering_now_lets_no_door_event_or_still_out_and_the_agent_keeps_reporting(
    mosquitto: Broker, inbox: Inbox, run_agent: Callable[..., Child]
) -> None:
    agent = run_agent(mosquitto, EDGECAM_PRIVACY__SCHEDULE='["00:00-24:00"]', **SWINGING_DOOR)
    log = agent.finish(timeout=30)  # the scene ends after 4 s: every frame went through the loop
    inbox.wait(lambda b: b.retained.get("availability") == b"offline", 10, "availability offline")
    assert "privacy: detection off, held off by the schedule (privacy.schedule)" in log
    assert agent.lines("agent: start ") == [], "the door swung twice and no event started"
    assert inbox.events == []
    assert inbox.stills == {}
    assert "snapshot" not in inbox.retained
    assert privacy(inbox) == {"detect": "OFF", "held_off_by": ["schedule"]}
    assert inbox.history["detect"] == [b"OFF"], "never ON, not even for a moment at start"
    assert inbox.history["availability"] == [b"online", b"offline"]
    assert len(inbox.history["stats"]) >= 3, "stats every second while held off"


def test_a_gpio_switch_holding_detection_off_is_reported(
    mosquitto: Broker, inbox: Inbox, run_agent: Callable[..., Child]
) -> None:
    # gpiozero's mock pins in the child: a pulled-up pin reads high, here the level that holds detection off.
    agent = run_agent(
        mosquitto,
        GPIOZERO_PIN_FACTORY="mock",
        EDGECAM_PRIVACY__GPIO_PIN="22",
        EDGECAM_PRIVACY__GPIO_OFF_WHEN="high",
        EDGECAM_PRIVACY__GPIO_PULL="up",
        **{**SWINGING_DOOR, "EDGECAM_CAMERA__SIMULATED__DURATION": "2"},
    )
    log = agent.finish(timeout=30)
    inbox.wait(lambda b: b.retained.get("availability") == b"offline", 10, "availability offline")
    assert "privacy: detection off, held off by the GPIO switch (privacy.gpio_pin)" in log
    assert inbox.events == []
    assert privacy(inbox) == {"detect": "OFF", "held_off_by": ["gpio"]}


def test_on_sent_while_the_schedule_holds_detection_off_is_remembered_and_changes_nothing_yet(
    mosquitto: Broker, run_agent: Callable[..., Child], tmp_path: Path
) -> None:
    client = Client(mosquitto)
    try:
        agent = run_agent(mosquitto, EDGECAM_PRIVACY__SCHEDULE='["00:00-24:00"]')
        client.inbox.wait(held_off_by("schedule"), 20, "held off by the schedule")
        client.send(f"{BASE}/set/detect", b"OFF")
        client.inbox.wait(held_off_by("switch", "schedule"), 10, "held off by the switch and the schedule")
        assert (tmp_path / "state" / "detect").read_text() == "OFF"
        client.send(f"{BASE}/set/detect", b"ON")
        client.inbox.wait(held_off_by("schedule"), 10, "held off by the schedule alone")
        assert (tmp_path / "state" / "detect").read_text() == "ON", "remembered for when the window ends"
        assert client.inbox.history["detect"] == [b"OFF"], "ON did not turn detection on"
        log = agent.stop(20)
    finally:
        client.stop()
    assert "privacy: detection stays off, held off by the schedule (privacy.schedule)" in log
