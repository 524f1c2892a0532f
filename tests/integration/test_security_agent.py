"""The running agent's attack surface: no listening sockets, only validated commands in, no secret in sight."""

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker, wait_until
from tests.integration.test_agent import BASE, Inbox, start_agent

pytestmark = pytest.mark.integration

BUSY_DOOR = {
    "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "2.5",
    "EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD": "3",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPENING": "0.5",
    "EDGECAM_CAMERA__SIMULATED__DOOR_OPEN": "0.5",
    "EDGECAM_CAMERA__SIMULATED__DOOR_CLOSING": "0.5",
    "EDGECAM_MOTION__EVENT_GAP": "0.5",
}
"""The door opening every 3 s, for ever."""


class Client:
    """A paho client that records everything under the device's base topic and can publish commands."""

    def __init__(self, broker: Broker) -> None:
        self.inbox = Inbox()
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self.inbox.on_message
        self._client.on_connect = lambda c, *_: c.subscribe(f"{BASE}/#", qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(5)

    def send(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def client(mosquitto: Broker) -> Iterator[Client]:
    c = Client(mosquitto)
    yield c
    c.stop()


def listening_sockets(pid: int) -> list[str]:
    """The TCP sockets in LISTEN and the bound UDP sockets the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] == listening and fields[9] in inodes:
                found.append(f"{table} {fields[1]}")
    return found


def test_the_agent_listens_on_no_port(mosquitto: Broker, client: Client, tmp_path: Path) -> None:
    agent = start_agent(mosquitto, tmp_path, None, **BUSY_DOOR)
    try:
        client.inbox.wait(lambda b: any(e["type"] == "end" for e in b.events), 30, "a door event")
        assert listening_sockets(agent.pid) == []
        assert any(Path(f"/proc/{agent.pid}/fd").iterdir()), "the process was looked at while alive"
    finally:
        agent.kill()
        agent.communicate()


def test_detect_off_pauses_door_events_until_on_and_is_remembered(
    mosquitto: Broker, client: Client, tmp_path: Path
) -> None:
    agent = start_agent(mosquitto, tmp_path, None, **BUSY_DOOR)
    try:
        client.inbox.wait(lambda b: b.retained.get("detect") == b"ON", 20, "detect ON")
        client.inbox.wait(lambda b: any(e["type"] == "end" for e in b.events), 30, "a door event")
        client.send(f"{BASE}/set/detect", b"OFF")
        client.inbox.wait(lambda b: b.retained.get("detect") == b"OFF", 10, "detect OFF")
        starts = sum(e["type"] == "start" for e in client.inbox.events)
        # Two door periods with detection off: the door swings, no event starts.
        client.inbox.wait(lambda b: b.history["motion"][-1] == b"OFF", 10, "motion OFF")
        assert not wait_until(lambda: sum(e["type"] == "start" for e in client.inbox.events) > starts, 7)
        agent.terminate()
        agent.communicate(timeout=20)

        agent = start_agent(mosquitto, tmp_path, None, **BUSY_DOOR)  # remembered across a restart
        client.inbox.wait(lambda b: b.history["detect"][-1:] == [b"OFF"] and len(b.history["detect"]) >= 3, 20, "OFF")
        assert not wait_until(lambda: sum(e["type"] == "start" for e in client.inbox.events) > starts, 4)
        client.send(f"{BASE}/set/detect", b"ON")
        client.inbox.wait(lambda b: sum(e["type"] == "start" for e in b.events) > starts, 15, "events again")
    finally:
        agent.kill()
        agent.communicate()


def tree(root: Path, skip: Path) -> dict[str, int]:
    """Every file under ``root`` but ``skip``, with its size."""
    return {
        str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file() and skip not in p.parents
    }


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Client, Path]]:
    """One agent (and broker) for every fuzzing example, with its own empty working directory and home."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    c = Client(broker)
    root = tmp_path_factory.mktemp("agent")  # its working directory, home and state directory
    (root / "home").mkdir()
    agent = start_agent(broker, root, None, cwd=root, HOME=str(root / "home"), **BUSY_DOOR)
    c.inbox.wait(lambda b: b.retained.get("detect") == b"ON", 20, "detect ON")
    yield agent, c, root
    agent.kill()
    agent.communicate()
    c.stop()
    broker.kill()


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    st.sampled_from([b"ON ", b"on", b"OFF\x00", b"{}", b"[]", b"null", b"1e999", b'"ON"', b"\xff\xfe"]),
    st.integers(min_value=0, max_value=3_000_000).map(lambda n: b"O" * n),
)
# Printable names: a topic with control characters is refused by the broker itself (MQTT 5, 4.7.3).
names = st.one_of(
    st.just("detect"),
    st.text(alphabet=st.characters(exclude_characters="+#", exclude_categories=["C"]), max_size=60),
)


def detect_is(value: bytes) -> Callable[[Inbox], bool]:
    """The latest ``detect`` state the agent published is ``value``."""
    return lambda box: box.history.get("detect", [])[-1:] == [value]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, payload=payloads)
def test_malformed_huge_and_wrong_typed_commands_leave_the_agent_up_and_its_files_alone(
    fuzzed: tuple[subprocess.Popen[str], Client, Path], name: str, payload: bytes
) -> None:
    agent, c, root = fuzzed
    before = tree(root, root / "state")
    c.send(f"{BASE}/set/{name}", payload)
    # A valid command sent after it is acted on: the agent read the bad one and went on.
    for value in (b"OFF", b"ON"):
        c.send(f"{BASE}/set/detect", value)
        c.inbox.wait(detect_is(value), 10, f"detect {value!r}")
    assert agent.poll() is None, agent.communicate()[1]
    assert tree(root, root / "state") == before, "nothing written outside the state directory"


def test_the_fuzzed_agent_logged_its_refusals_sparingly(fuzzed: tuple[subprocess.Popen[str], Client, Path]) -> None:
    agent, c, _ = fuzzed
    agent.terminate()
    _, err = agent.communicate(timeout=20)
    assert agent.returncode == 0, err
    assert "Traceback" not in err
    refusals = [line for line in err.splitlines() if "commands: ignored" in line]
    assert len(refusals) <= 12, refusals
