"""The whole agent, run as `edgecam run` in a child process, against a real Mosquitto broker."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.simulated import DOOR_ZONE, render_clip
from tests.conftest import Broker

pytestmark = pytest.mark.integration

DEVICE = "itest-door"
BASE = f"edgecam/{DEVICE}"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Inbox:
    """Everything a plain paho subscriber received under the device's base topic."""

    events: list[dict[str, Any]] = field(default_factory=list)
    stills: dict[str, bytes] = field(default_factory=dict)
    retained: dict[str, bytes] = field(default_factory=dict)
    """The latest payload of each state topic (availability, motion, door, snapshot)."""
    history: dict[str, list[bytes]] = field(default_factory=dict)
    """Every payload of each state topic, in arrival order."""
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            if msg.topic == f"{BASE}/events":
                self.events.append(json.loads(msg.payload))
            elif "/stills/" in msg.topic:
                self.stills[msg.topic] = bytes(msg.payload)
            else:
                name = msg.topic.removeprefix(BASE + "/")
                self.retained[name] = bytes(msg.payload)
                self.history.setdefault(name, []).append(bytes(msg.payload))
            self.cond.notify_all()

    def wait(self, check: Callable[["Inbox"], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: check(self), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; events: {self.events}")


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Broker]) -> Broker:
    """A broker that keeps sessions across a restart, so the test's subscriber misses nothing while it is down."""
    return mosquitto_factory(persistence=True)


@pytest.fixture(scope="module")
def door_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    path = tmp_path_factory.mktemp("clip") / "door.avi"
    return path, render_clip(path, SimulatedSettings(first_opening=3.0, door_period=9.0), 20.0)


def start_agent(
    mosquitto: Any,
    tmp_path: Path,
    clip: Path | None,
    *command: str,
    module: str = "edgecam",
    cwd: Path | str = ROOT,
    **env: str,
) -> subprocess.Popen[str]:
    """``edgecam run`` (or ``command``) in a child process, on ``clip`` or the simulated camera.

    ``module`` is what ``python -m`` runs, from the repository's root: ``tests.crashpoint`` kills edgecam on cue.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    environ.update(
        EDGECAM_DEVICE_ID=DEVICE,
        EDGECAM_MQTT__HOST=mosquitto.host,
        EDGECAM_MQTT__PORT=str(mosquitto.port),
        EDGECAM_MQTT__CONNECT_SPREAD="0",
        EDGECAM_STORAGE__DIR=str(tmp_path / "state"),
        EDGECAM_CAMERA__SOURCE=str(clip) if clip else "simulated",
        EDGECAM_MOTION__ZONE=json.dumps(DOOR_ZONE),
    )
    environ.update(env)
    argv = [sys.executable, "-m", module, *(command or ("run",))]
    return subprocess.Popen(argv, env=environ, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(agent: subprocess.Popen[str], timeout: float = 60) -> str:
    _, err = agent.communicate(timeout=timeout)
    assert agent.returncode == 0, err
    assert "Traceback" not in err
    return err


def check_events(box: Inbox, openings: int) -> None:
    """Every message arrived; duplicates (at least once) are recognised by seq; first arrivals are in seq order."""
    first: dict[int, dict[str, Any]] = {}
    for e in box.events:
        first.setdefault(e["seq"], e)
    assert list(first) == list(range(1, len(first) + 1)), "every seq, first seen in order"
    by_event: dict[str, list[dict[str, Any]]] = {}
    for e in first.values():
        by_event.setdefault(e["event_id"], []).append(e)
    assert len(by_event) == openings
    for msgs in by_event.values():
        kinds = [m["type"] for m in msgs]
        assert kinds == ["start"] + ["still"] * (len(kinds) - 2) + ["end"]
        assert msgs[-1]["stills"] == len(kinds) - 2 >= 1
        for m in msgs[1:-1]:
            jpeg = box.stills[m["topic"]]
            assert hashlib.sha256(jpeg).hexdigest() == m["sha256"]
            assert len(jpeg) == m["bytes"]


def test_door_openings_arrive_as_start_stills_end_with_matching_jpegs(
    mosquitto: Broker, inbox: Inbox, tmp_path: Path, door_clip: tuple[Path, list[tuple[float, float]]]
) -> None:
    clip, openings = door_clip
    agent = start_agent(mosquitto, tmp_path, clip, EDGECAM_CAMERA__REALTIME="false")
    finish(agent)
    inbox.wait(lambda b: len({e["event_id"] for e in b.events if e["type"] == "end"}) == len(openings), 10, "every end")
    check_events(inbox, len(openings))
    assert len(inbox.events) == len({e["seq"] for e in inbox.events}), "no duplicates without an outage"
    inbox.wait(lambda b: b.retained.get("availability") == b"offline", 10, "availability offline")
    assert inbox.retained["motion"] == b"OFF"
    last_still = [e for e in inbox.events if e["type"] == "still"][-1]
    assert inbox.retained["snapshot"] == inbox.stills[last_still["topic"]]


def test_a_broker_stopped_during_an_event_gets_every_message_in_order_once_back(
    mosquitto: Broker, inbox: Inbox, tmp_path: Path, door_clip: tuple[Path, list[tuple[float, float]]]
) -> None:
    clip, openings = door_clip
    agent = start_agent(mosquitto, tmp_path, clip)  # paced at the clip's frame rate
    inbox.wait(lambda b: any(e["type"] == "start" for e in b.events), 30, "the first start")
    mosquitto.stop()
    time.sleep(3)  # the door keeps moving while the broker is down: those messages go to the outbox
    mosquitto.start()
    finish(agent)
    inbox.wait(lambda b: len({e["event_id"] for e in b.events if e["type"] == "end"}) == len(openings), 20, "every end")
    check_events(inbox, len(openings))


def test_availability_turns_offline_when_the_agent_is_killed(mosquitto: Broker, inbox: Inbox, tmp_path: Path) -> None:
    agent = start_agent(mosquitto, tmp_path, None, EDGECAM_MQTT__KEEPALIVE="5")
    try:
        inbox.wait(lambda b: b.retained.get("availability") == b"online", 20, "availability online")
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        inbox.wait(lambda b: b.retained.get("availability") == b"offline", 15, "the last will")
    finally:
        agent.kill()
        agent.communicate()


def test_sigterm_stops_cleanly_and_says_offline(mosquitto: Broker, inbox: Inbox, tmp_path: Path) -> None:
    agent = start_agent(mosquitto, tmp_path, None)
    inbox.wait(lambda b: b.retained.get("availability") == b"online", 20, "availability online")
    agent.send_signal(signal.SIGTERM)
    finish(agent, timeout=20)
    inbox.wait(lambda b: b.retained.get("availability") == b"offline", 5, "availability offline")


def test_an_unreachable_broker_is_one_clear_line_and_events_wait_in_the_outbox(
    tmp_path: Path, door_clip: tuple[Path, list[tuple[float, float]]]
) -> None:
    class Closed:
        host, port = "127.0.0.1", 9  # discard port: nothing listens

    agent = start_agent(Closed(), tmp_path, door_clip[0], EDGECAM_CAMERA__REALTIME="false")
    err = finish(agent)
    assert "Traceback" not in err
    refused = [line for line in err.splitlines() if "127.0.0.1:9" in line]
    assert refused, err
    assert all(len(line) < 200 for line in refused)
    assert "stay in the outbox" in err


def test_after_calibrate_the_door_state_is_published_and_events_carry_it(
    mosquitto: Broker, inbox: Inbox, tmp_path: Path
) -> None:
    clip = tmp_path / "door.avi"
    sim = SimulatedSettings(first_opening=3.5, door_period=20.0, door_opening=1.0, door_open=1.5, door_closing=1.0)
    render_clip(clip, sim, 9.5)  # quiet for 3.5 s, the door open from 3.5 s to 7 s
    finish(start_agent(mosquitto, tmp_path, clip, "calibrate", EDGECAM_DOOR__CALIBRATE_SECONDS="1"))
    assert (tmp_path / "state" / "door-reference.npz").is_file()
    err = finish(start_agent(mosquitto, tmp_path, clip))  # paced at the clip's frame rate
    assert "door: state from the reference" in err
    inbox.wait(lambda b: any(e["type"] == "end" for e in b.events), 10, "the end")
    start, end = (e for e in inbox.events if e["type"] in ("start", "end"))
    assert end["door"] == "closed"
    assert start["door"] in ("open", "closed")
    inbox.wait(lambda b: b.retained.get("availability") == b"offline", 10, "availability offline")
    assert inbox.history["door"] == [b"closed", b"open", b"closed"]
