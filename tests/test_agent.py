"""The agent in this process, with a door contact on gpiozero's mock pins, against a real Mosquitto."""

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from numpy.typing import NDArray

from edgecam.agent import Agent
from edgecam.config import CameraSettings, Settings, StorageSettings
from edgecam.contact import open_contact
from edgecam.discovery import camera_model
from edgecam.errors import StorageError
from edgecam.models import Event, Frame, Still, Topics
from edgecam.outbox import Outbox
from edgecam.sources.simulated import DOOR_ZONE, SimulatedSource
from edgecam.store import MAX_WAITING_STILLS, RETRY_STORE_S, Store
from edgecam.systemd import Notifier
from edgecam.vitals import Vitals
from tests.conftest import Broker, Collector, make_door_event
from tests.fake_pi import install_fake_picamera

pytestmark = pytest.mark.integration

DEVICE = "contact-door"
TOPICS = Topics(f"edgecam/{DEVICE}")
PIN = 17


class ReedSwitch:
    """The simulated hall, with the reed switch's mock pin open (high, against the pull-up) from frame to frame."""

    def __init__(self, settings: Settings, factory: MockFactory, opens: int, shuts: int) -> None:
        self._scene = SimulatedSource(settings.camera, realtime=False)
        self._pin = factory.pin(PIN)
        self._open = range(opens, shuts)

    @property
    def fps(self) -> float:
        return self._scene.fps

    def frames(self) -> Iterator[Frame]:
        for frame in self._scene.frames():
            if frame.index in self._open:
                self._pin.drive_high()
            else:
                self._pin.drive_low()
            yield frame

    def still(self) -> NDArray[np.uint8]:
        return self._scene.still()

    def close(self) -> None:
        self._scene.close()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.close()


def door_settings(mosquitto: Broker, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """The agent's settings for the simulated hall's door zone against ``mosquitto``, with ``sections`` besides."""
    return Settings.model_validate(
        {
            "device_id": DEVICE,
            "storage": {"dir": str(tmp_path / "state")},
            "mqtt": mosquitto.settings().model_dump(),
            "motion": {"zone": DOOR_ZONE},
            **sections,
        }
    )


def run_agent(
    mosquitto: Broker,
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    factory: MockFactory,
    contact: tuple[int, int],
    door: dict[str, Any],
    simulated: dict[str, Any],
) -> Collector:
    settings = door_settings(
        mosquitto,
        tmp_path,
        camera={"source": "simulated", "simulated": {"duration": 9.0, **simulated}},
        door={"contact_pin": PIN, **door},
    )
    collector = collector_factory(mosquitto, (f"{TOPICS.base}/#",))
    agent = Agent(
        settings,
        open_camera=lambda: ReedSwitch(settings, factory, *contact),
        open_door_contact=lambda: open_contact(settings.door, factory),
    )
    agent.run(threading.Event())
    collector.wait_for(lambda c: [m.payload for m in c.on(TOPICS.availability)][-1:] == [b"offline"])
    return collector


def test_the_contact_alone_makes_an_event_and_the_door_state(
    mosquitto: Broker, collector_factory: Callable[..., Collector], tmp_path: Path, factory: MockFactory
) -> None:
    collector = run_agent(
        mosquitto,
        collector_factory,
        tmp_path,
        factory,
        contact=(30, 45),  # open from 3.0 s to 4.5 s
        door={"contact_mode": "contact_only"},
        simulated={"first_opening": 3600.0},  # the camera sees nothing move
    )
    events = collector.events(TOPICS)
    assert [(e["type"], e.get("door")) for e in events] == [("start", "open"), ("end", "closed")]
    assert events[1]["stills"] == 0, "no still without movement in the picture"
    assert events[1]["duration_s"] == pytest.approx(1.5 + 2.0)  # until event_gap after the contact shut
    assert [m.payload for m in collector.on(TOPICS.door)][-1] == b"closed"
    later = collector_factory(mosquitto, (TOPICS.door,))
    later.wait_for(lambda c: bool(c.on(TOPICS.door)))
    assert [(m.payload, m.retain) for m in later.on(TOPICS.door)] == [(b"closed", True)]


@pytest.mark.parametrize(
    ("door", "events"),
    [({"contact_mode": "any", "confirm": False}, 1), ({"contact_mode": "any"}, 0), ({"contact_mode": "both"}, 0)],
    ids=["any-unconfirmed", "any", "both"],
)
def test_a_shut_contact_vetoes_what_the_camera_sees_unless_confirmation_is_off(
    mosquitto: Broker,
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    factory: MockFactory,
    door: dict[str, object],
    events: int,
) -> None:
    collector = run_agent(
        mosquitto,
        collector_factory,
        tmp_path,
        factory,
        contact=(0, 0),  # shut all along: the door on camera is, say, the neighbour's reflection
        door=door,
        simulated={"first_opening": 3.0},
    )
    starts = [e for e in collector.events(TOPICS) if e["type"] == "start"]
    assert len(starts) == events
    assert [m.payload for m in collector.on(TOPICS.door)][-1:] == [b"closed"]


class RefusingOutbox(Outbox):
    """A real outbox whose disk refuses every row while ``full`` is set, as a disk full of someone else's files."""

    full = True

    def append(self, event: Event, still: Still | None = None, seq: int | None = None) -> int:
        if self.full:
            raise StorageError(f"outbox: cannot store a {event.type} event in {self.path}: database or disk is full")
        return super().append(event, still, seq)


def test_events_the_disk_refuses_wait_in_memory_in_order_and_keep_only_the_newest_jpegs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    outbox = RefusingOutbox(StorageSettings(dir=tmp_path / "state"))
    store = Store(outbox, clock=lambda: now[0])
    doors = [make_door_event(TOPICS, DEVICE, n_stills=3) for _ in range(10)]
    for door in doors:
        assert not store.put(door.rows)
    assert "40 events wait in memory" in caplog.text
    outbox.full = False
    assert not store.put([]), "not tried again before RETRY_STORE_S"
    now[0] += RETRY_STORE_S
    assert store.put([])
    stored = [json.loads(p.payload) for p in outbox.pending(limit=100)]
    assert [(e["event_id"], e["type"]) for e in stored] == [(e.event_id, e.type) for d in doors for e, _ in d.rows]
    stills = [e for e in stored if e["type"] == "still"]
    assert [bool(e.get("dropped")) for e in stills] == [True] * (30 - MAX_WAITING_STILLS) + [False] * MAX_WAITING_STILLS
    outbox.close()


def test_events_still_refused_when_the_agent_stops_are_reported_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with RefusingOutbox(StorageSettings(dir=tmp_path / "state")) as outbox:
        store = Store(outbox)
        store.put(make_door_event(TOPICS, DEVICE, n_stills=0).rows)
        store.flush(final=True)
    assert "2 events could not be stored and are lost" in caplog.text


class StallingCamera:
    """The simulated scene in real time, until ``stall`` is set: then the next frame never comes (a hung camera)."""

    def __init__(self, settings: Settings) -> None:
        self._scene = SimulatedSource(settings.camera, realtime=True)
        self.stall = threading.Event()
        self.release = threading.Event()
        self.fps = self._scene.fps

    def frames(self) -> Iterator[Frame]:
        for frame in self._scene.frames():
            if self.stall.is_set():
                self.release.wait()
                return
            yield frame

    def still(self) -> NDArray[np.uint8]:
        return self._scene.still()

    def close(self) -> None:
        self.release.set()
        self._scene.close()


def test_a_stalled_camera_stops_the_watchdog_pings(mosquitto: Broker, tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.1)
    settings = Settings.model_validate(
        {"device_id": DEVICE, "storage": {"dir": str(tmp_path / "state")}, "mqtt": mosquitto.settings().model_dump()}
    )
    camera = StallingCamera(settings)
    notifier = Notifier({"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"})  # a ping every 0.1 s
    stop = threading.Event()
    agent = threading.Thread(target=Agent(settings, lambda: camera, notifier, lambda: None).run, args=(stop,))
    agent.start()

    def pings(seconds: float) -> int:
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                count += sock.recv(256) == b"WATCHDOG=1"
        return count

    try:
        assert pings(1.0) >= 5, "the frame loop pings while frames come"
        camera.stall.set()
        pings(0.3)  # the frame under way, if any, may still ping
        assert pings(1.5) == 0, "no frame, no ping: systemd's watchdog would restart the agent"
    finally:
        stop.set()
        camera.release.set()
        agent.join(20)
        sock.close()


def test_events_waiting_in_memory_are_offered_for_publishing_and_keep_their_seq_once_stored(tmp_path: Path) -> None:
    from edgecam.mqtt.publisher import InMemory

    now = [0.0]
    offered: list[tuple[list[InMemory], str | None]] = []
    with contextlib.closing(RefusingOutbox(StorageSettings(dir=tmp_path / "state"))) as outbox:
        outbox.full = False
        before = make_door_event(TOPICS, DEVICE, n_stills=1)
        store = Store(outbox, clock=lambda: now[0], announce=lambda rows, fault: offered.append((rows, fault)))
        assert store.put(before.rows)
        outbox.full = True
        door = make_door_event(TOPICS, DEVICE, n_stills=2)
        assert not store.put(door.rows)
        rows, fault = offered[-1]
        assert fault is not None
        assert [r.seq for r in rows] == [4, 5, 6, 7], "seqs follow the stored ones"
        assert [json.loads(r.payload)["type"] for r in rows] == ["start", "still", "still", "end"]
        assert [r.jpeg for r in rows[1:3]] == [s.jpeg for s in door.stills]
        assert rows[1].still_topic == TOPICS.still(door.event_id, 1)
        outbox.full = False
        now[0] += RETRY_STORE_S
        assert store.put([])
        assert offered[-1] == ([], None), "nothing waits in memory any more: the fault is over"
        stored = {p.seq: p.payload for p in outbox.pending(limit=100)}
        assert {r.seq: r.payload for r in rows} == {seq: stored[seq] for seq in (4, 5, 6, 7)}, "same seq, same message"


class FailingCamera:
    """The simulated door opening at 3 s; at ``fail_at`` (a frame index) it fails, or the agent is told to stop."""

    def __init__(self, settings: Settings, fail_at: int, stop: threading.Event | None = None) -> None:
        self._scene = SimulatedSource(settings.camera, realtime=False)
        self._fail_at = fail_at
        self._stop = stop
        self.fps = self._scene.fps

    def frames(self) -> Iterator[Frame]:
        from edgecam.errors import CameraError

        for frame in self._scene.frames():
            if frame.index == self._fail_at:
                if self._stop is None:
                    raise CameraError("camera.source: 'rtsp://cam.lan/stream1' stopped delivering frames")
                self._stop.set()
            yield frame

    def still(self) -> NDArray[np.uint8]:
        return self._scene.still()

    def close(self) -> None:
        self._scene.close()


@pytest.mark.parametrize(
    ("stopping", "why"), [(True, "(the agent is stopping)"), (False, "(the camera failed)")], ids=["sigterm", "camera"]
)
def test_an_event_cut_short_is_closed_and_says_why(
    mosquitto: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, stopping: bool, why: str
) -> None:
    from edgecam.errors import CameraError

    caplog.set_level("INFO")
    settings = door_settings(
        mosquitto,
        tmp_path,
        camera={"source": "simulated", "simulated": {"first_opening": 3.0, "duration": 20.0}},
    )
    stop = threading.Event()
    camera = FailingCamera(settings, fail_at=45, stop=stop if stopping else None)  # 1.5 s into the opening
    agent = Agent(settings, lambda: camera, Notifier({}), lambda: None)
    if stopping:
        agent.run(stop)
    else:
        with pytest.raises(CameraError, match="stopped delivering frames"):
            agent.run(stop)
    ends = [line for line in caplog.messages if line.startswith("agent: end ")]
    assert len(ends) == 1
    assert ends[0].endswith(why)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "outbox.sqlite3")) as db:
        rows = db.execute("SELECT type, event_id FROM outbox ORDER BY seq").fetchall()  # delivered or not
    assert rows[0][0] == "start"
    assert tuple(rows[-1]) == ("end", rows[0][1]), "the end is stored at once, not at the next start"


def test_vitals_give_the_frame_rate_and_detector_time_of_the_last_ten_seconds() -> None:
    now = [100.0]
    vitals = Vitals(clock=lambda: now[0])
    assert vitals.payload()["fps"] is None  # no frame yet
    for _ in range(30):  # 3 s at 10 fps, 2 ms each
        now[0] += 0.1
        vitals.frame(0.002)
    for _ in range(200):  # then 20 s at 5 fps with detection off
        now[0] += 0.2
        vitals.frame(None)
    shown = vitals.payload()
    assert shown["fps"] == 5.0
    assert shown["detect_ms"] is None  # nothing detected within the window
    assert shown["uptime_s"] == 43
    vitals.frame(0.004)
    assert vitals.payload()["detect_ms"] == 4.0


@pytest.mark.parametrize(
    ("source", "model"),
    [
        ("simulated", "simulated door camera"),
        ("picamera2", "Raspberry Pi camera (picamera2)"),
        ("/dev/video0", "USB camera"),
        ("rtsp://user:secret@cam.lan/stream", "network camera"),
        ("clip.h264", "recorded video"),
    ],
)
def test_home_assistant_names_the_kind_of_camera_never_its_address(source: str, model: str) -> None:
    assert camera_model(CameraSettings(source=source)) == model


class TimedCamera:
    """The simulated scene in real time, noting when the frame loop asks for each frame and from which thread."""

    def __init__(self, settings: Settings) -> None:
        self._scene = SimulatedSource(settings.camera, realtime=True)
        self.fps = self._scene.fps
        self.asked: list[float] = []
        self.loop_thread: threading.Thread | None = None

    def frames(self) -> Iterator[Frame]:
        self.loop_thread = threading.current_thread()
        for frame in self._scene.frames():
            self.asked.append(time.monotonic())
            yield frame

    def still(self) -> NDArray[np.uint8]:
        return self._scene.still()

    def close(self) -> None:
        self._scene.close()


def test_the_frame_loop_keeps_its_frame_rate_and_never_touches_the_disk_while_a_slow_encoder_works(
    mosquitto: Broker, collector_factory: Callable[..., Collector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from edgecam import capture

    settings = door_settings(
        mosquitto,
        tmp_path,
        camera={"source": "simulated", "simulated": {"first_opening": 3.0, "duration": 7.0}},
        capture={"stills_per_event": 3, "interval": 0.2},
    )
    collector = collector_factory(mosquitto, (f"{TOPICS.base}/events",))
    camera = TimedCamera(settings)
    encode = capture.encode_still
    start_seen_first: list[bool] = []

    def slow_encode(*args: Any) -> Still:
        if not start_seen_first:  # the first still: is its event's start at the broker before it is encoded?
            deadline = time.monotonic() + 5.0
            while not collector.events(TOPICS) and time.monotonic() < deadline:
                time.sleep(0.01)
            start_seen_first.append(bool(collector.events(TOPICS)))
        time.sleep(0.3)  # a Zero 2 W's encoder at 2028x1520
        return encode(*args)

    syncs: list[tuple[float, threading.Thread]] = []
    fsync = os.fsync

    def noted_fsync(fd: int) -> None:
        syncs.append((time.monotonic(), threading.current_thread()))
        fsync(fd)

    monkeypatch.setattr(capture, "encode_still", slow_encode)
    monkeypatch.setattr(os, "fsync", noted_fsync)
    Agent(settings, lambda: camera, Notifier({}), lambda: None).run(threading.Event())

    collector.wait_for(lambda c: any(e["type"] == "end" for e in c.events(TOPICS)))
    kinds = [e["type"] for e in collector.events(TOPICS)]
    assert kinds == ["start", "still", "still", "still", "end"]
    assert start_seen_first == [True], "the start was published before its first still was encoded"
    gaps = np.diff(camera.asked)
    assert len(camera.asked) >= 68, "7 s at 10 fps"
    assert gaps.max() < 0.25, f"a frame waited {gaps.max():.2f} s: for the encoder or the disk"
    looping = [thread for t, thread in syncs if camera.asked[0] <= t <= camera.asked[-1]]
    assert looping, "the outbox wrote durably while frames came"
    assert camera.loop_thread not in looping, "no fsync in the frame loop"


def test_in_the_dark_the_simulated_scene_is_lit_by_the_illuminators_mock_pin_for_each_events_stills(
    mosquitto: Broker, collector_factory: Callable[..., Collector], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import cv2

    from edgecam.sources.scene import door_openings

    caplog.set_level("INFO")
    settings = door_settings(
        mosquitto,
        tmp_path,
        camera={
            "source": "simulated",
            "realtime": False,
            "simulated": {"width": 320, "height": 240, "light_level": 0.2, "door_open": 1.0, "duration": 22.0},
        },
        illuminator={"pin": PIN, "settle": 0.5},
    )
    collector = collector_factory(mosquitto, (f"{TOPICS.base}/#",))
    Agent(settings, notifier=Notifier({})).run(threading.Event())  # the default seams: the agent opens the mock pin
    collector.wait_for(lambda c: sum(e["type"] == "end" for e in c.events(TOPICS)) == 2)
    events = collector.events(TOPICS)
    openings = door_openings(settings.camera.simulated, 22.0)
    assert [e["type"] for e in events].count("start") == len(openings) == 2
    stills = [e for e in events if e["type"] == "still"]
    assert len(stills) == 2 * settings.capture.stills_per_event
    collector.wait_for(lambda c: all(c.on(s["topic"]) for s in stills))
    for still in stills:
        jpeg = collector.on(still["topic"])[0].payload
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert image is not None
        assert image.mean() > 100, "lit: the hall unlit is about 33"
    switched = [m for m in caplog.messages if m.startswith("illuminator: ")]
    assert len(switched) == 4, switched
    assert all("last still" in m for m in switched[1::2]), "off once each event had its stills"


@pytest.mark.parametrize(
    ("other", "name"),
    [({"door": {"contact_pin": PIN}}, "door.contact_pin"), ({"privacy": {"gpio_pin": PIN}}, "privacy.gpio_pin")],
)
def test_the_illuminator_needs_a_pin_of_its_own(tmp_path: Path, other: dict[str, Any], name: str) -> None:
    from edgecam.agent import check_settings
    from edgecam.errors import ConfigError

    settings = Settings.model_validate(
        {"device_id": DEVICE, "storage": {"dir": str(tmp_path / "state")}, "illuminator": {"pin": PIN}, **other}
    )
    with pytest.raises(ConfigError, match=rf"^illuminator\.pin: GPIO{PIN} is {name} too: give the illuminator"):
        check_settings(settings)


def test_a_pi_camera_that_stops_giving_frames_ends_the_run_in_one_line_well_inside_the_watchdog(
    mosquitto: Broker,
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edgecam import cli

    # A Zero 2 W's 64 MB of CMA, the picamera2 the OS ships, and a ribbon cable that comes loose 4.5 s in, as the
    # door opens: the real library would hang for ever in stop() behind the timed-out capture.
    camera = install_fake_picamera(monkeypatch, tmp_path)(realtime=True, cma=64 << 20, fail_after=45, hang_limit=30.0)
    settings = tmp_path / "edgecam.toml"
    settings.write_text(
        f'device_id = "{DEVICE}"\n[camera]\nsource = "picamera2"\n[storage]\ndir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n[motion]\nzone = {json.dumps(DOOR_ZONE)}\n'
    )
    collector = collector_factory(mosquitto, (f"{TOPICS.base}/events",))
    status = cli.main(["run", "--config", str(settings)])
    ended = time.monotonic()
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [
        "edgecam: camera.source: the Pi camera gave no frame for 5 s (camera.frame_timeout); is the ribbon cable "
        "seated?"
    ]
    assert ended - camera.requests[-1].arrival < 10.0, "systemd's watchdog (30 s) never has to step in"
    assert camera.calls.index("cancel_all_and_flush") < camera.calls.index("stop")
    assert camera.hangs == []
    assert not camera.is_open
    collector.wait_for(lambda c: [e["type"] for e in c.events(TOPICS)][-1:] == ["end"])
    assert [e["type"] for e in collector.events(TOPICS)][0] == "start"


def test_the_pi_camera_drops_no_frame_while_a_slow_encoder_works_through_an_events_stills(
    mosquitto: Broker, collector_factory: Callable[..., Collector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecam import capture

    # The fake keeps only the newest frame while the frame loop is busy, as picamera2 does, and counts the others.
    camera = install_fake_picamera(monkeypatch, tmp_path)(realtime=True, cma=64 << 20)
    encode = capture.encode_still

    def slow_encode(*args: Any) -> Still:
        time.sleep(0.3)  # a Zero 2 W's encoder at 2028x1520
        return encode(*args)

    monkeypatch.setattr(capture, "encode_still", slow_encode)
    settings = door_settings(
        mosquitto,
        tmp_path,
        camera={"source": "picamera2"},
        capture={"stills_per_event": 3, "interval": 0.2},
    )
    collector = collector_factory(mosquitto, (f"{TOPICS.base}/events",))
    stop = threading.Event()
    threading.Timer(7.0, stop.set).start()  # the door opens at 4 s
    Agent(settings, notifier=Notifier({}), open_door_contact=lambda: None).run(stop)
    collector.wait_for(lambda c: any(e["type"] == "end" for e in c.events(TOPICS)))
    assert [e["type"] for e in collector.events(TOPICS)] == ["start", "still", "still", "still", "end"]
    assert camera.dropped == 0, "every frame the camera made was detected on"
    assert camera.lost == 0
