"""The event log of ``edgecam listen``: deduplication, restarts, retention, forget, stills on disk, path safety."""

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecam.eventlog import THUMB_WIDTH, Admission, EventLog, Message, local_day
from edgecam.eventlog_views import Verdict
from edgecam.listen import Listener
from edgecam.models import Event, Topics, iso_ms

PREFIX = "edgecam"
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


def real_jpeg(seed: int, width: int = 320, height: int = 240) -> bytes:
    """A JPEG OpenCV can decode: a gradient with a seed-dependent tint."""
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    image = np.dstack(
        [
            np.tile(ramp, (height, 1)),
            np.full((height, width), seed % 256, np.uint8),
            np.zeros((height, width), np.uint8),
        ]
    )
    done, encoded = cv2.imencode(".jpg", image)
    assert done
    return bytes(encoded.tobytes())


@dataclass
class Door:
    """A door event's messages as the agent publishes them (the JPEG of each still before its JSON)."""

    device: str
    event_id: str
    start: datetime
    n_stills: int = 2
    first_seq: int = 1
    synced: bool = True
    jpegs: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.jpegs = {index: real_jpeg(index + len(self.event_id)) for index in range(1, self.n_stills + 1)}

    @property
    def topics(self) -> Topics:
        return Topics(f"{PREFIX}/{self.device}")

    def event(self, kind: str, seconds: float, seq: int, **extra: object) -> tuple[str, bytes]:
        moment = self.start + timedelta(seconds=seconds)
        event = Event(kind, self.event_id, self.device, moment, 0.3, extra, time_synced=self.synced)  # type: ignore[arg-type]
        return self.topics.events, json.dumps(event.payload(seq)).encode()

    def start_message(self) -> tuple[str, bytes]:
        return self.event("start", 0, self.first_seq, door="closed")

    def still(self, index: int) -> list[tuple[str, bytes]]:
        jpeg = self.jpegs[index]
        extra = {
            "index": index,
            "sha256": hashlib.sha256(jpeg).hexdigest(),
            "bytes": len(jpeg),
            "width": 320,
            "height": 240,
            "topic": self.topics.still(self.event_id, index),
        }
        return [
            (self.topics.still(self.event_id, index), jpeg),
            self.event("still", 0.5 * index, self.first_seq + index, **extra),
        ]

    def end_message(self) -> tuple[str, bytes]:
        extra = {"duration_s": 4.2, "stills": self.n_stills, "door": "closed"}
        return self.event("end", 4.2, self.first_seq + self.n_stills + 1, **extra)

    def messages(self) -> list[tuple[str, bytes]]:
        out = [self.start_message()]
        for index in range(1, self.n_stills + 1):
            out += self.still(index)
        return [*out, self.end_message()]

    @property
    def day(self) -> str:
        return local_day(iso_ms(self.start))


def forget_message(
    device: str, forget: object, seq: int = 100, when: datetime = NOW, own_id: str = "f0f0f0f0aa"
) -> tuple[str, bytes]:
    payload = {
        "v": 1,
        "type": "forget",
        "event_id": own_id,
        "device_id": device,
        "seq": seq,
        "time": iso_ms(when),
        "score": 0,
        "time_synced": True,
        "boot_id": "b",
        "forget": forget,
    }
    return f"{PREFIX}/{device}/events", json.dumps(payload).encode()


class Clock:
    """A settable ``now`` for the log."""

    def __init__(self, moment: datetime = NOW) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def feed(listener: Listener, messages: list[tuple[str, bytes]]) -> list[str]:
    return [line for topic, payload in messages for line in listener.handle(topic, payload, False)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(out: Path, clock: Clock) -> Iterator[EventLog]:
    with EventLog(out, keep_days=7, now=clock) as opened:
        yield opened


@pytest.fixture
def listener(log: EventLog) -> Listener:
    return Listener(PREFIX, log)


def rows(out: Path, table: str) -> int:
    with sqlite3.connect(out / "events.sqlite3") as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


def files(out: Path) -> set[str]:
    return {path.relative_to(out).as_posix() for path in out.rglob("*.jpg")}


def test_a_message_seen_twice_is_kept_once(listener: Listener, log: EventLog, out: Path) -> None:
    door = Door("front-door", "aaaa1111", NOW - timedelta(hours=1))
    assert len(feed(listener, door.messages())) == 4
    assert feed(listener, door.messages()) == []
    assert (rows(out, "events"), rows(out, "stills"), rows(out, "messages")) == (1, 2, 4)
    (event,) = log.events_of_day(door.day)
    assert [still.verdict for still in event.stills] == [Verdict.OK, Verdict.OK]
    assert event.stills_expected == 2
    assert event.duration_s == pytest.approx(4.2)
    assert (event.door_start, event.door_end) == ("closed", "closed")
    assert event.begins == door.start
    assert event.time_synced
    assert files(out) == {
        f"front-door/{door.day}/aaaa1111-{index}{kind}" for index in (1, 2) for kind in (".jpg", ".thumb.jpg")
    }
    assert (out / "front-door" / door.day / "aaaa1111-1.jpg").read_bytes() == door.jpegs[1]


def test_a_thumbnail_is_240_px_wide_and_keeps_the_aspect_ratio(listener: Listener, out: Path) -> None:
    door = Door("front-door", "aaaa1111", NOW - timedelta(hours=1), n_stills=1)
    feed(listener, door.messages())
    thumb = cv2.imread(str(out / "front-door" / door.day / "aaaa1111-1.thumb.jpg"))
    assert thumb is not None
    assert thumb.shape[:2] == (180, THUMB_WIDTH)


def test_reopening_gives_the_same_contents(out: Path, clock: Clock) -> None:
    door = Door("front-door", "aaaa1111", NOW - timedelta(hours=1))
    with EventLog(out, 7, clock) as log:
        listener = Listener(PREFIX, log)
        feed(listener, [(f"{PREFIX}/front-door/availability", b"online"), *door.messages()])
        before = (log.devices(), log.days(), log.events_of_day(door.day))
    with EventLog(out, 7, clock) as log:
        assert (log.devices(), log.days(), log.events_of_day(door.day)) == before
        assert before[0][0].availability == "online"
        assert feed(Listener(PREFIX, log), door.messages()) == [], "what came before the restart is known"
        start = Message.parse(json.loads(door.start_message()[1]))
        assert log.admit("front-door", start) is Admission.DUPLICATE


def test_events_older_than_keep_days_go_with_their_files(
    listener: Listener, log: EventLog, out: Path, clock: Clock
) -> None:
    old = Door("front-door", "old00001", NOW - timedelta(days=6, hours=23))
    new = Door("front-door", "new00001", NOW - timedelta(hours=1), first_seq=10)
    feed(listener, old.messages() + new.messages())
    clock.moment = NOW + timedelta(hours=2)
    assert log.maintain() == 1, "the first sweep after opening"
    assert [event.event_id for day in log.days() for event in log.events_of_day(day.day)] == ["new00001"]
    assert not (out / "front-door" / old.day).exists() or old.day == new.day
    assert all("old00001" not in name for name in files(out))
    assert rows(out, "stills") == 2
    clock.moment += timedelta(minutes=5)
    assert log.maintain() == 0  # at most every 10 minutes


def test_retention_runs_when_the_log_is_opened(out: Path, clock: Clock) -> None:
    door = Door("front-door", "old00001", NOW - timedelta(days=2))
    with EventLog(out, 7, clock) as log:
        feed(Listener(PREFIX, log), door.messages())
    clock.moment = NOW + timedelta(days=6)
    with EventLog(out, 7, clock) as log:
        assert log.days() == []
    assert files(out) == set()
    assert not (out / "front-door" / door.day).exists(), "empty day folders are removed"


def test_an_unsynchronised_event_is_kept_from_when_it_arrived(listener: Listener, log: EventLog, clock: Clock) -> None:
    door = Door("front-door", "unsync01", datetime(2001, 1, 1, tzinfo=UTC), synced=False)
    feed(listener, door.messages())
    clock.moment = NOW + timedelta(days=6)
    assert log.expire() == 0
    clock.moment = NOW + timedelta(days=8)
    assert log.expire() == 1


def test_a_synchronised_event_older_than_keep_days_is_not_taken_in(listener: Listener, log: EventLog) -> None:
    feed(listener, Door("front-door", "old00001", NOW - timedelta(days=9)).messages())
    assert log.days() == []


def test_forget_one_event_erases_it_and_its_redelivery(listener: Listener, log: EventLog, out: Path) -> None:
    kept = Door("front-door", "kept0001", NOW - timedelta(hours=2))
    gone = Door("front-door", "gone0001", NOW - timedelta(hours=1), first_seq=10)
    other = Door("back-door", "gone0001", NOW - timedelta(hours=1))
    feed(listener, kept.messages() + gone.messages() + other.messages())
    (line,) = feed(listener, [forget_message("front-door", {"event_id": "gone0001"})])
    assert line == "14:00:00.000 front-door forget event=f0f0f0f0 removed 1 events, 2 stills".replace(
        "14:00:00.000", datetime.fromisoformat("2026-11-30T14:00:00+00:00").astimezone().strftime("%H:%M:%S.000")
    )
    assert {(e.device_id, e.event_id) for e in log.events_of_day(kept.day)} == {
        ("front-door", "kept0001"),
        ("back-door", "gone0001"),
    }
    assert not any(name.startswith("front-door/") and "gone0001" in name for name in files(out))
    assert feed(listener, gone.messages()) == [], "a copy after the forget must not bring it back"
    assert not any(name.startswith("front-door/") and "gone0001" in name for name in files(out))
    assert len(log.events_of_day(kept.day)) == 2


def test_a_forgotten_event_leaves_no_picture_data_in_the_database_files(
    listener: Listener, log: EventLog, out: Path
) -> None:
    gone = Door("front-door", "gone01", NOW - timedelta(hours=1))  # another length: other stills (real_jpeg)
    feed(listener, gone.messages() + Door("front-door", "kept0001", NOW - timedelta(hours=2), first_seq=10).messages())
    feed(listener, [forget_message("front-door", {"event_id": "gone01"})])
    stored = b"".join(path.read_bytes() for path in out.glob("events.sqlite3*"))
    for jpeg in gone.jpegs.values():
        assert hashlib.sha256(jpeg).hexdigest().encode() not in stored, "overwritten, not left in free pages or the WAL"


def test_forget_before_erases_the_events_begun_before_and_keeps_them_out(
    listener: Listener, log: EventLog, out: Path
) -> None:
    early = Door("front-door", "early001", datetime(2026, 11, 28, 9, tzinfo=UTC))
    late = Door("front-door", "late0001", datetime(2026, 11, 29, 9, tzinfo=UTC), first_seq=10)
    feed(listener, early.messages() + late.messages())
    (line,) = feed(listener, [forget_message("front-door", {"before": "2026-11-29T00:00:00.000Z"})])
    assert line.endswith("removed 1 events, 2 stills")
    assert [e.event_id for day in log.days() for e in log.events_of_day(day.day)] == ["late0001"]
    assert not (out / "front-door" / early.day).exists()
    assert feed(listener, early.messages()) == []
    never_seen = Door("front-door", "early002", datetime(2026, 11, 28, 10, tzinfo=UTC), first_seq=30)
    assert feed(listener, never_seen.messages()) == [], "begun before the cut: forgotten too"
    assert [e.event_id for day in log.days() for e in log.events_of_day(day.day)] == ["late0001"]


def test_forget_all_erases_every_event_of_the_device_only(listener: Listener, log: EventLog, out: Path) -> None:
    doors = [Door("front-door", f"front00{n}", NOW - timedelta(hours=n), first_seq=10 * n) for n in (1, 2)]
    back = Door("back-door", "back0001", NOW - timedelta(hours=1))
    feed(listener, [m for door in doors for m in door.messages()] + back.messages())
    (line,) = feed(listener, [forget_message("front-door", {"all": True})])
    assert line.endswith("removed 2 events, 4 stills")
    assert {e.device_id for day in log.days() for e in log.events_of_day(day.day)} == {"back-door"}
    assert not (out / "front-door").exists() or not any((out / "front-door").rglob("*"))
    assert feed(listener, doors[0].messages()) == []
    later = Door("front-door", "after001", NOW + timedelta(minutes=1), first_seq=50)
    assert len(feed(listener, later.messages())) == 4, "events after the forget are kept"


def test_a_forget_the_listener_does_not_understand_removes_nothing(listener: Listener, log: EventLog) -> None:
    door = Door("front-door", "kept0001", NOW - timedelta(hours=1))
    feed(listener, door.messages())
    for seq, shape in enumerate(
        ({"everything": True}, {"all": False}, {"event_id": "../x"}, {"before": "soon"}, "all")
    ):
        (line,) = feed(listener, [forget_message("front-door", shape, seq=100 + seq, own_id=f"odd{seq}")])
        assert "unknown forget" in line
        assert line.endswith("nothing removed")
    assert len(log.events_of_day(door.day)) == 1


def test_a_forget_is_confirmed_at_once_and_again_when_it_comes_again(listener: Listener) -> None:
    feed(listener, Door("front-door", "gone0001", NOW - timedelta(hours=1)).messages())
    assert listener.take_confirmations() == {"front-door": ["gone0001"]}
    forget = forget_message("front-door", {"event_id": "gone0001"})
    feed(listener, [forget])
    assert listener.take_confirmations() == {"front-door": ["f0f0f0f0aa"]}
    assert feed(listener, [forget]) == []
    assert listener.take_confirmations() == {"front-door": ["f0f0f0f0aa"]}


def test_an_event_is_confirmed_again_after_a_restart(out: Path, clock: Clock) -> None:
    door = Door("front-door", "whole001", NOW - timedelta(hours=1))
    with EventLog(out, 7, clock) as log:
        listener = Listener(PREFIX, log)
        feed(listener, door.messages())
        assert listener.take_confirmations() == {"front-door": ["whole001"]}
    with EventLog(out, 7, clock) as log:
        listener = Listener(PREFIX, log)
        feed(listener, [door.end_message()])  # the agent never got our confirmation
        assert listener.take_confirmations() == {"front-door": ["whole001"]}


def test_a_mismatched_still_is_kept_flagged_until_a_good_copy_comes(
    listener: Listener, log: EventLog, out: Path
) -> None:
    door = Door("front-door", "bad00001", NOW - timedelta(hours=1), n_stills=1)
    (jpeg_topic, jpeg), still_json = door.still(1)
    bad = real_jpeg(99)
    lines = feed(listener, [door.start_message(), (jpeg_topic, bad), still_json, door.end_message()])
    assert "sha256 MISMATCH" in lines[1]
    assert listener.mismatches == 1
    (event,) = log.events_of_day(door.day)
    assert event.stills[0].verdict is Verdict.MISMATCH
    assert (out / "front-door" / door.day / "bad00001-1.jpg").read_bytes() == bad
    assert listener.take_confirmations() == {}
    (line,) = feed(listener, [(jpeg_topic, jpeg)])
    assert "sha256 ok" in line
    assert (out / "front-door" / door.day / "bad00001-1.jpg").read_bytes() == jpeg
    assert listener.take_confirmations() == {"front-door": ["bad00001"]}


def test_ids_that_could_leave_the_folder_never_become_paths(listener: Listener, tmp_path: Path, out: Path) -> None:
    door = Door("front-door", "good0001", NOW - timedelta(hours=1))
    start = json.loads(door.start_message()[1])
    for bad_id in ("..", "../../escape", "a/b", "x" * 65, ""):
        (line,) = listener.handle(door.topics.events, json.dumps({**start, "event_id": bad_id}).encode(), False)
        assert "unusable id" in line
    (line,) = listener.handle(f"{door.topics.base}/events/../stills/1", real_jpeg(1), False)
    assert "unexpected topic" in line
    assert listener.handle(f"{PREFIX}/../events", door.start_message()[1], False) == []
    assert listener.handle(f"{PREFIX}/..%2f/events", door.start_message()[1], False) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(out)] == []
    assert files(out) == set()
    assert not (tmp_path / "escape").exists()


def test_the_day_is_the_local_date_of_the_start(
    listener: Listener, log: EventLog, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        door = Door("front-door", "night001", datetime(2026, 11, 30, 2, 30, tzinfo=UTC))  # 21:30 the day before
        feed(listener, door.messages())
        assert [day.day for day in log.days()] == ["2026-11-29"]
        assert (out / "front-door" / "2026-11-29" / "night001-1.jpg").exists()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_stills_follow_a_start_that_comes_late_onto_another_day(
    listener: Listener, log: EventLog, out: Path
) -> None:
    door = Door("front-door", "late0001", datetime(2026, 11, 29, 12, tzinfo=UTC), n_stills=1)
    still_later = Door("front-door", "late0001", datetime(2026, 11, 30, 12, tzinfo=UTC), n_stills=1)
    feed(listener, still_later.still(1))  # the start was lost, then comes again after the still
    assert [day.day for day in log.days()] == [still_later.day]
    feed(listener, [door.start_message()])
    assert [day.day for day in log.days()] == [door.day]
    (event,) = log.events_of_day(door.day)
    assert event.started
    assert [still.file for still in event.stills] == [f"front-door/{door.day}/late0001-1.jpg"]
    assert files(out) == {f"front-door/{door.day}/late0001-1.jpg", f"front-door/{door.day}/late0001-1.thumb.jpg"}
    assert not (out / "front-door" / still_later.day).exists()


def test_states_are_kept_per_device(listener: Listener, log: EventLog, clock: Clock) -> None:
    for what, value in (("availability", b"online"), ("motion", b"ON"), ("door", b"open"), ("detect", b"OFF")):
        listener.handle(f"{PREFIX}/front-door/{what}", value, True)
    (device,) = log.devices()
    assert (device.availability, device.motion, device.door, device.detect) == ("online", "ON", "open", "OFF")
    assert device.last_heard is None, "retained states are the broker's memory, not the device heard now"
    assert device.last_event is None
    listener.handle(f"{PREFIX}/front-door/motion", b"OFF", False)
    (device,) = log.devices()
    assert (device.motion, device.last_heard) == ("OFF", clock.moment)
