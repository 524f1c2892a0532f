"""The agent says in ``<base>/stats`` when the scene is outside what the detector can do."""

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgecam.agent import Agent
from edgecam.config import Settings
from edgecam.sources.simulated import DOOR_ZONE, SimulatedSource
from tests.conftest import Broker, Collector

pytestmark = pytest.mark.integration

DARK_HALL = {"noise": 0.0, "light_level": 0.01, "sensor_gain": 12.0, "shot_noise": 4.0, "read_noise": 0.8}
"""The benchmark's dark-gain12 scene: an eighth of the light at gain 12; the door's change about 20 grey levels."""


def warnings_in_stats(stats: str) -> Callable[[Collector], list[list[str]]]:
    def seen(collector: Collector) -> list[list[str]]:
        return [json.loads(m.payload).get("scene_warnings") for m in collector.on(stats)]

    return seen


def test_the_stats_say_too_dark_once_a_dark_hall_has_lasted(
    mosquitto: Broker,
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings.model_validate(
        {
            "device_id": "dark-hall",
            "storage": {"dir": str(tmp_path / "state")},
            "mqtt": mosquitto.settings(stats_interval=1.0).model_dump(),
            "camera": {"source": "simulated", "simulated": {**DARK_HALL, "first_opening": 600.0}},
            "motion": {"zone": DOOR_ZONE},
            "homeassistant": {"enabled": False},
        }
    )
    stats = f"{settings.topic_base}/stats"
    collector = collector_factory(mosquitto, (stats,))
    scene = SimulatedSource(settings.camera, realtime=False)  # frame time runs ahead of the clock
    stop = threading.Event()
    agent = threading.Thread(target=Agent(settings, lambda: scene, open_door_contact=lambda: None).run, args=(stop,))
    agent.start()
    seen = warnings_in_stats(stats)
    try:
        collector.wait_for(lambda c: ["too_dark"] in seen(c), timeout=30)
    finally:
        stop.set()
        agent.join(20)
    assert not agent.is_alive()
    warned = [r.getMessage() for r in caplog.records if r.name == "edgecam.scene_monitor" and r.levelname == "WARNING"]
    assert len(warned) == 1
    assert warned[0].startswith("scene: the door zone is too dark")
