"""The outbox: durable, ordered, seq never reused, bounded by a disk budget, repaired after a crash."""

import errno
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edgecam.outbox as outbox_module
from edgecam import disk
from edgecam.config import StorageSettings
from edgecam.errors import StorageError
from edgecam.models import Event, Topics
from edgecam.outbox import CACHE_KIB, Erased, Outbox, Pending, jpeg_size
from edgecam.state_dir import check_state_dir
from tests.conftest import DoorEvent, make_door_event

DEVICE = "front-door"
TOPICS = Topics(f"edgecam/{DEVICE}")
DAY = 86400.0


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    return StorageSettings(dir=tmp_path / "state")


@pytest.fixture
def door() -> DoorEvent:
    return make_door_event(TOPICS, DEVICE, n_stills=2)


def append_all(outbox: Outbox, door: DoorEvent) -> list[int]:
    return [outbox.append(event, still) for event, still in door.rows]


def files(storage: StorageSettings) -> list[str]:
    return sorted(p.relative_to(storage.dir).as_posix() for p in storage.stills_dir.rglob("*") if p.is_file())


def payloads(outbox: Outbox) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in outbox.pending(limit=100_000)]


def test_stills_are_on_disk_before_their_rows_and_pending_is_oldest_first(
    storage: StorageSettings, door: DoorEvent
) -> None:
    with Outbox(storage) as outbox:
        seqs = append_all(outbox, door)
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 4
        pending = outbox.pending()
        assert [p.seq for p in pending] == seqs
        for p, (event, still) in zip(pending, door.rows, strict=True):
            assert json.loads(p.payload) == event.payload(p.seq)
            assert b" " not in p.payload  # compact JSON
            if still is None:
                assert (p.still_path, p.still_topic) == (None, None)
            else:
                assert p.still_path == storage.stills_dir / door.event_id / f"{still.index}.jpg"
                assert p.still_path.read_bytes() == still.jpeg
                assert p.still_topic == TOPICS.still(door.event_id, still.index)
        assert files(storage) == [f"stills/{door.event_id}/1.jpg", f"stills/{door.event_id}/2.jpg"]
        assert outbox.depth() == 4
        assert [p.seq for p in outbox.pending(limit=2)] == seqs[:2]
        assert [p.seq for p in outbox.pending(after_seq=seqs[1])] == seqs[2:]


def test_delivered_events_are_not_sent_again_and_seq_keeps_rising_after_a_restart(
    storage: StorageSettings, door: DoorEvent
) -> None:
    outbox = Outbox(storage)
    first = append_all(outbox, door)
    outbox.delivered([first[1]])
    assert [p.seq for p in outbox.pending()] == [first[0], *first[2:]]
    outbox.delivered(first)
    outbox.delivered(first[:1])  # twice is harmless
    assert outbox.depth() == 0
    outbox.close()
    outbox.close()

    with Outbox(storage) as reopened:
        assert reopened.pending() == []
        later = append_all(reopened, door)
        assert later[0] > first[-1]
        assert later == sorted(later)


def test_undelivered_events_survive_a_restart(storage: StorageSettings, door: DoorEvent) -> None:
    with Outbox(storage) as outbox:
        seqs = append_all(outbox, door)
        before = outbox.pending()
    with Outbox(storage) as reopened:
        assert reopened.pending() == before
        assert [p.seq for p in before] == seqs


def test_a_sending_thread_with_its_own_connection(storage: StorageSettings, door: DoorEvent) -> None:
    writer = Outbox(storage)
    seqs = append_all(writer, door)
    seen: list[Pending] = []

    def publisher_thread() -> None:  # an exception here fails the test (pytest reports it)
        with Outbox(storage, for_sending=True) as reader:
            seen.extend(reader.pending())
            reader.delivered(p.seq for p in seen[:2])

    thread = threading.Thread(target=publisher_thread)
    thread.start()
    thread.join(10)
    assert [p.seq for p in seen] == seqs
    assert [p.seq for p in writer.pending()] == seqs[2:]
    writer.close()


def test_a_consumer_confirms_whole_events(storage: StorageSettings) -> None:
    a, b = make_door_event(TOPICS, DEVICE, 1), make_door_event(TOPICS, DEVICE, 1)
    with Outbox(storage) as outbox:
        append_all(outbox, a)
        later = append_all(outbox, b)
        assert outbox.confirm([a.event_id, "not-an-event"]) == 3
        assert outbox.confirm([a.event_id]) == 0
        assert [p.seq for p in outbox.pending()] == later


def test_a_still_event_needs_its_topic(storage: StorageSettings, door: DoorEvent) -> None:
    event, still = door.rows[1]
    with Outbox(storage) as outbox:
        with pytest.raises(ValueError, match="topic"):
            outbox.append(Event("still", event.event_id, DEVICE, event.time, 0.4, {}), still)
        assert outbox.depth() == 0


def test_an_unusable_location_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="storage.dir: cannot create"):
        Outbox(StorageSettings(dir=tmp_path / "file"))
    state = StorageSettings(dir=tmp_path / "state")
    state.dir.mkdir()
    state.outbox_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="outbox.sqlite3"):
        Outbox(state)


def test_a_state_directory_under_a_file_is_one_line_without_a_wrong_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    state = tmp_path / "file" / "state"
    with pytest.raises(StorageError) as err:
        check_state_dir(StorageSettings(dir=state), "run")
    assert str(err.value) == f"storage.dir: cannot create {state}: a part of it is a file, not a folder"


OPEN_AS_USER = """
import sys
from pathlib import Path
from edgecam.config import StorageSettings
from edgecam.errors import StorageError
from edgecam.outbox import Outbox
try:
    Outbox(StorageSettings(dir=Path(sys.argv[1])))
except StorageError as err:
    print(err)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user (setpriv) takes root")
def test_an_outbox_left_by_another_user_says_whose_it_is_and_the_fix() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # pytest's tmp_path is root's alone
        Path(name).chmod(0o755)
        state = Path(name) / "state"
        Outbox(StorageSettings(dir=state)).close()  # root ran edgecam by hand once
        os.chown(state, 65534, 65534)
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        repo = Path(__file__).resolve().parents[1]
        done = subprocess.run(
            [*user, sys.executable, "-c", OPEN_AS_USER, str(state)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )
    db = state / "outbox.sqlite3"
    assert done.stdout.splitlines() == [
        f"outbox: cannot use {db}: attempt to write a readonly database: {db} belongs to root, not to nobody, "
        f"the user edgecam runs as: sudo chown -R nobody {state}, or run edgecam as root"
    ], done.stderr


def test_an_outbox_from_a_newer_edgecam_is_refused(storage: StorageSettings) -> None:
    Outbox(storage).close()
    with sqlite3.connect(storage.outbox_path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StorageError, match="schema 99"):
        Outbox(storage)


def test_an_outbox_of_the_first_schema_is_upgraded_with_its_events(storage: StorageSettings) -> None:
    storage.dir.mkdir(parents=True)
    still = storage.dir / "old.jpg"
    still.write_bytes(b"\xff\xd8jpeg")
    start = {"v": 1, "type": "start", "event_id": "e1", "device_id": DEVICE, "seq": 7, "score": 0.3}
    still_event = {**start, "type": "still", "seq": 8, "index": 1}
    with sqlite3.connect(storage.outbox_path) as db:
        db.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL,"
            " still_path TEXT, still_topic TEXT)"
        )
        db.execute("INSERT INTO outbox VALUES (7, ?, NULL, NULL)", (json.dumps(start).encode(),))
        db.execute("INSERT INTO outbox VALUES (8, ?, ?, 't/1')", (json.dumps(still_event).encode(), str(still)))
        db.execute("PRAGMA user_version=1")
    db.close()
    with Outbox(storage) as outbox:
        pending = outbox.pending()
        assert [(p.seq, json.loads(p.payload)) for p in pending] == [(7, start), (8, still_event)]
        assert pending[1].still_path == still
        outbox.recover(TOPICS.still)
        after = outbox.pending()
        assert after[:2] == pending, "the old still is known, not an orphan"
        assert json.loads(after[2].payload)["interrupted"] is True  # e1 had no end
        assert outbox.confirm(["e1"]) == 3
        assert outbox.append(Event("start", "e2", DEVICE, datetime.now(UTC), 0.5)) == 10


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from edgecam.config import StorageSettings
    from edgecam.models import Event
    from edgecam.outbox import Outbox

    outbox = Outbox(StorageSettings(dir=Path(sys.argv[1])))
    while True:
        seq = outbox.append(Event("start", "e1", "front-door", datetime.now(UTC), 0.5))
        print(seq, flush=True)
    """
)


def test_a_process_killed_mid_write_loses_no_committed_event(storage: StorageSettings) -> None:
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(storage.dir)], cwd=repo, stdout=subprocess.PIPE)
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(50)]
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    child.stdout.close()

    with Outbox(storage) as outbox:
        stored = [p.seq for p in outbox.pending(limit=100_000)]
        assert set(committed) <= set(stored)
        assert stored == sorted(stored)
        assert all(json.loads(p.payload)["seq"] == p.seq for p in outbox.pending(limit=100_000))
        assert outbox.append(Event("start", "e2", DEVICE, datetime.now(UTC), 0.5)) > stored[-1]


# The disk budget.


def big_event(n_stills: int = 2) -> DoorEvent:
    return make_door_event(TOPICS, DEVICE, n_stills=n_stills, jpeg_size=150_000)


def test_past_the_budget_delivered_stills_go_first_then_undelivered_ones_oldest_first(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state", max_bytes=1_000_000)
    with Outbox(storage) as outbox:
        delivered = big_event()
        outbox.delivered(append_all(outbox, delivered))
        waiting = [big_event() for _ in range(3)]
        for door in waiting:
            append_all(outbox, door)
        assert outbox.used_bytes() <= storage.max_bytes
        # 4 events of 2 stills of 150 kB do not fit in 1 MB: the delivered event's stills went first...
        assert not (storage.stills_dir / delivered.event_id).exists()
        # ...then the oldest undelivered one's, marked dropped in the still and in the end.
        events = payloads(outbox)
        assert outbox.depth() == 12, "every undelivered row is kept"
        dropped = [e for e in events if e.get("dropped")]
        assert dropped
        assert {e["event_id"] for e in dropped} == {waiting[0].event_id}
        end = next(e for e in events if e["event_id"] == waiting[0].event_id and e["type"] == "end")
        assert end["stills_dropped"] == [e["index"] for e in dropped]
        kept = files(storage)
        assert all(f"stills/{door.event_id}/{i}.jpg" in kept for door in waiting[1:] for i in (1, 2))
        pending_still = next(p for p in outbox.pending() if json.loads(p.payload).get("dropped"))
        assert pending_still.still_path is None
        stats = outbox.stats()
        assert stats.stills_dropped == len(dropped)
        assert stats.depth == 12
        assert stats.bytes == outbox.used_bytes() <= stats.max_bytes


def test_an_end_written_after_its_stills_were_dropped_says_which(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state", max_bytes=1_000_000)
    with Outbox(storage) as outbox:
        door = big_event(n_stills=8)  # 1.2 MB of stills in one event: the first ones make room for the last
        append_all(outbox, door)
        end = payloads(outbox)[-1]
        assert end["type"] == "end"
        dropped = end["stills_dropped"]
        assert dropped == list(range(1, len(dropped) + 1)), "oldest first"
        assert files(storage) == [f"stills/{door.event_id}/{i}.jpg" for i in range(len(dropped) + 1, 9)]
        assert outbox.used_bytes() <= storage.max_bytes


def test_retention_deletes_delivered_events_and_never_undelivered_ones(tmp_path: Path) -> None:
    clock = Clock()
    storage = StorageSettings(dir=tmp_path / "state", retention_days=2)
    with Outbox(storage, clock=clock) as outbox:
        old = make_door_event(TOPICS, DEVICE, 1)
        outbox.delivered(append_all(outbox, old))
        stuck = append_all(outbox, make_door_event(TOPICS, DEVICE, 1))
        clock.now += 1 * DAY
        recent = make_door_event(TOPICS, DEVICE, 1)
        outbox.delivered(append_all(outbox, recent))
        clock.now += 1.5 * DAY
        outbox.sweep()
        assert not (storage.stills_dir / old.event_id).exists()
        assert (storage.stills_dir / recent.event_id / "1.jpg").exists()
        assert [p.seq for p in outbox.pending()] == stuck
        (rows,) = sqlite3.connect(storage.outbox_path).execute("SELECT COUNT(*) FROM outbox").fetchone()
        assert rows == 6, "the old event's 3 rows are gone; the stuck and the recent ones stay"


def test_a_warning_at_80_percent_of_the_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.outbox")
    storage = StorageSettings(dir=tmp_path / "state", max_bytes=1_000_000)
    with Outbox(storage) as outbox:
        append_all(outbox, big_event(n_stills=4))
        assert outbox.used_bytes() < 800_000
        assert "%" not in caplog.text
        append_all(outbox, big_event(n_stills=1))
        assert outbox.used_bytes() >= 800_000
        assert re.search(r"outbox: \d+ of storage.max_bytes 1000000 bytes used \(\d+ %\)", caplog.text)


def test_a_full_disk_drops_the_oldest_undelivered_still_and_keeps_the_row(
    storage: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Outbox(storage) as outbox:
        first = make_door_event(TOPICS, DEVICE, 1)
        append_all(outbox, first)
        real = disk.write_atomically
        refusals = iter([True])

        def full_once(path: Path, data: bytes) -> None:
            if next(refusals, False):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data)

        monkeypatch.setattr(outbox_module, "write_atomically", full_once)
        second = make_door_event(TOPICS, DEVICE, 1)
        append_all(outbox, second)
        assert files(storage) == [f"stills/{second.event_id}/1.jpg"]
        first_still = payloads(outbox)[1]
        assert first_still["dropped"] is True
        assert outbox.depth() == 6


def test_a_still_the_disk_refuses_for_good_leaves_its_row_marked_dropped(
    storage: StorageSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: Path, data: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(outbox_module, "write_atomically", broken)
    with Outbox(storage) as outbox:
        append_all(outbox, make_door_event(TOPICS, DEVICE, 1))
        still, end = payloads(outbox)[1:]
        assert still["dropped"] is True
        assert end["stills_dropped"] == [1]
    assert "Input/output error" in caplog.text


# Recovery on start.


def test_recovery_removes_temporary_files_and_makes_rows_and_stills_agree(
    storage: StorageSettings, caplog: pytest.LogCaptureFixture
) -> None:
    interrupted = make_door_event(TOPICS, DEVICE, 3)
    lost_still = make_door_event(TOPICS, DEVICE, 1)
    with Outbox(storage) as outbox:
        append_all(outbox, lost_still)
        (start, _), (still_1, jpeg_1), (still_2, jpeg_2), (still_3, jpeg_3), _ = interrupted.rows
        outbox.append(start)
        outbox.append(still_1, jpeg_1)
    # As a crash would leave it: still 2 renamed but its row not committed, still 3 half written, no end.
    assert jpeg_2 is not None
    folder = storage.stills_dir / interrupted.event_id
    (folder / "2.jpg").write_bytes(jpeg_2.jpeg)
    (folder / ".3.jpg.tmp").write_bytes(b"\xff\xd8half")
    (storage.stills_dir / lost_still.event_id / "1.jpg").unlink()  # lost, say, on a card that lied about fsync
    (storage.stills_dir / "stranger").mkdir()
    (storage.stills_dir / "stranger" / "1.jpg").write_bytes(b"not ours")

    with Outbox(storage) as outbox:
        outbox.recover(TOPICS.still)
        events = payloads(outbox)
        assert files(storage) == [f"stills/{interrupted.event_id}/1.jpg", f"stills/{interrupted.event_id}/2.jpg"]
        lost = next(e for e in events if e["event_id"] == lost_still.event_id and e["type"] == "still")
        assert lost["dropped"] is True
        assert next(e for e in events if e["event_id"] == lost_still.event_id and e["type"] == "end")[
            "stills_dropped"
        ] == [1]
        mine = [e for e in events if e["event_id"] == interrupted.event_id]
        assert [e["type"] for e in mine] == ["start", "still", "still", "end"]
        recovered = mine[2]
        assert recovered["recovered"] is True
        assert (recovered["index"], recovered["sha256"], recovered["bytes"]) == (2, jpeg_2.sha256, len(jpeg_2.jpeg))
        assert (recovered["width"], recovered["height"]) == (640, 480)
        assert recovered["topic"] == TOPICS.still(interrupted.event_id, 2)
        assert mine[3]["interrupted"] is True
        assert mine[3]["stills"] == 2
        outbox.recover(TOPICS.still)
        assert payloads(outbox) == events, "recovering twice changes nothing"
    assert "a crash after it was saved" in caplog.text


def test_a_damaged_database_is_one_clear_error(storage: StorageSettings, door: DoorEvent) -> None:
    with Outbox(storage) as outbox:
        append_all(outbox, door)
    data = bytearray(storage.outbox_path.read_bytes())
    data[4096 : 4096 + 512] = b"\x55" * 512  # scribble over a page after the header
    storage.outbox_path.write_bytes(bytes(data))

    def start() -> None:
        with Outbox(storage) as outbox:
            outbox.recover(TOPICS.still)

    with pytest.raises(StorageError, match=r"outbox.sqlite3 .*damaged|outbox.sqlite3: database disk image"):
        start()


def test_jpeg_size_reads_a_real_jpeg() -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((120, 200, 3), np.uint8))
    assert ok
    assert jpeg_size(buf.tobytes()) == (200, 120)
    assert jpeg_size(b"not a jpeg") is None


class BootClock:
    """CLOCK_BOOTTIME as the test moves it: seconds since this boot, suspend included."""

    def __init__(self) -> None:
        self.now = 120.0

    def __call__(self) -> float:
        return self.now


def test_the_oldest_waiting_age_ignores_the_wall_clock_jumping_by_years_within_a_boot(tmp_path: Path) -> None:
    wall, since_boot = Clock(), BootClock()
    wall.now = 1_600_000_000.0  # fake-hwclock's last saved time, years behind, until NTP synchronises
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage, clock=wall, boot_clock=since_boot, boot="boot-a") as outbox:
        append_all(outbox, make_door_event(TOPICS, DEVICE, 1))
        wall.now += 30.0
        since_boot.now += 30.0
        wall.now += 3 * 365 * DAY  # the first NTP sync sets the clock
        assert outbox.stats().oldest_waiting_s == pytest.approx(30.0)
        wall.now -= 5 * 365 * DAY  # and a clock set backwards does not make it negative or smaller
        since_boot.now += 10.0
        assert outbox.stats().oldest_waiting_s == pytest.approx(40.0)
        assert outbox.stats().payload()["oldest_waiting_s"] == 40.0

    # After a reboot the boot clock starts again: the age comes from the wall clock.
    since_boot.now = 5.0
    with Outbox(storage, clock=Clock(), boot_clock=since_boot, boot="boot-b") as rebooted:
        first_wall = 1_600_000_000.0
        assert rebooted.stats().oldest_waiting_s == pytest.approx(Clock().now - first_wall)


def test_an_outbox_of_the_second_schema_is_upgraded_and_keeps_its_ages(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    storage.dir.mkdir(parents=True)
    start = {"v": 1, "type": "start", "event_id": "e1", "device_id": DEVICE, "seq": 3, "score": 0.3}
    with sqlite3.connect(storage.outbox_path) as db:
        db.executescript(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, type TEXT NOT NULL,"
            " payload BLOB NOT NULL, created REAL NOT NULL, delivered REAL, still_path TEXT, still_topic TEXT,"
            " still_bytes INTEGER NOT NULL DEFAULT 0, still_state TEXT);"
            "CREATE INDEX outbox_waiting ON outbox (seq) WHERE delivered IS NULL;"
            "CREATE INDEX outbox_event ON outbox (event_id);"
            "CREATE INDEX outbox_kept ON outbox (seq, still_bytes) WHERE still_state = 'kept';"
            "PRAGMA user_version=2;"
        )
        db.execute(
            "INSERT INTO outbox (seq, event_id, type, payload, created) VALUES (3, 'e1', 'start', ?, 1790000000.0)",
            (json.dumps(start).encode(),),
        )
    db.close()
    wall, since_boot = Clock(), BootClock()
    wall.now += 50.0
    with Outbox(storage, clock=wall, boot_clock=since_boot, boot="boot-a") as outbox:
        assert [json.loads(p.payload) for p in outbox.pending()] == [start]
        assert outbox.stats().oldest_waiting_s == pytest.approx(50.0), "an old row's age comes from the wall clock"
        outbox.delivered([3])
        append_all(outbox, make_door_event(TOPICS, DEVICE, 0))
        since_boot.now += 7.0
        wall.now += 10 * 365 * DAY
        assert outbox.stats().oldest_waiting_s == pytest.approx(7.0), "a new row's from the boot clock"
    (version,) = sqlite3.connect(storage.outbox_path).execute("PRAGMA user_version").fetchone()
    assert version == outbox_module.SCHEMA_VERSION >= 3


def test_the_snapshot_to_publish_again_is_the_newest_delivered_still_until_it_expires(tmp_path: Path) -> None:
    wall, since_boot = Clock(), BootClock()
    storage = StorageSettings(dir=tmp_path / "state", retention_days=7, snapshot_expiry=1)
    with Outbox(storage, clock=wall, boot_clock=since_boot, boot="boot-a") as outbox:
        assert outbox.snapshot_still() is None, "no still yet"
        door = make_door_event(TOPICS, DEVICE, 2)
        seqs = append_all(outbox, door)
        assert outbox.snapshot_still() is None, "the newest still is still to be sent, as the snapshot too"
        outbox.delivered(seqs)
        assert outbox.snapshot_still() == (storage.stills_dir / door.event_id / "2.jpg", 0.0)

        newer = make_door_event(TOPICS, DEVICE, 1)
        newer_seqs = append_all(outbox, newer)
        assert outbox.snapshot_still() is None
        outbox.delivered(newer_seqs)
        since_boot.now += 3600.0
        snapshot = outbox.snapshot_still()
        assert snapshot is not None
        assert snapshot.path == storage.stills_dir / newer.event_id / "1.jpg"
        assert snapshot.age_s == pytest.approx(3600.0), "how long ago the still was taken, for what is left of a day"

        append_all(outbox, make_door_event(TOPICS, DEVICE, 0))  # an event without stills changes nothing
        assert outbox.snapshot_still() == snapshot
        since_boot.now += DAY
        assert outbox.snapshot_still() is None, "past storage.snapshot_expiry it is not set again"


def test_erase_deletes_the_events_rows_and_stills_and_keeps_the_others(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage) as outbox:
        gone, kept = make_door_event(TOPICS, DEVICE, 2), make_door_event(TOPICS, DEVICE, 1)
        outbox.delivered(append_all(outbox, gone) + append_all(outbox, kept))
        used = outbox.used_bytes()

        erased = outbox.erase([gone.event_id, "no-such-event"])

        assert erased == Erased(events=1, rows=4, stills=2, undelivered=0)
        assert files(storage) == [f"stills/{kept.event_id}/1.jpg"]
        assert outbox.event_ids() == [kept.event_id]
        assert outbox.used_bytes() < used
    with Outbox(storage) as reopened:
        assert reopened.event_ids() == [kept.event_id], "erased for good: a restart brings nothing back"


def test_an_erased_event_leaves_no_trace_in_the_database_files(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage) as outbox:
        gone = make_door_event(TOPICS, DEVICE, 2)
        outbox.delivered(append_all(outbox, gone) + append_all(outbox, make_door_event(TOPICS, DEVICE, 1)))
        outbox.erase([gone.event_id])
        files = b"".join(p.read_bytes() for p in storage.dir.glob("outbox.sqlite3*"))
    for still in gone.stills:
        assert still.sha256.encode() not in files, "its rows are overwritten, not left in free pages or the WAL"


def test_erase_refuses_undelivered_events_unless_forced(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage) as outbox:
        door = make_door_event(TOPICS, DEVICE, 1)
        seqs = append_all(outbox, door)
        outbox.delivered(seqs[:1])

        with pytest.raises(StorageError, match=r"forget: 2 messages of these events are not delivered yet.*--force"):
            outbox.erase([door.event_id])
        assert outbox.depth() == 2
        assert files(storage) == [f"stills/{door.event_id}/1.jpg"], "nothing deleted"

        assert outbox.erase([door.event_id], force=True) == Erased(events=1, rows=3, stills=1, undelivered=2)
        assert outbox.depth() == 0
        assert files(storage) == []


def test_event_ids_before_a_moment_are_those_begun_before_it(tmp_path: Path) -> None:
    wall = Clock()
    storage = StorageSettings(dir=tmp_path / "state")
    with Outbox(storage, clock=wall) as outbox:
        old = make_door_event(TOPICS, DEVICE, 1)
        append_all(outbox, old)
        wall.now += DAY
        new = make_door_event(TOPICS, DEVICE, 1)
        append_all(outbox, new)
        assert outbox.event_ids(before=wall.now - 1) == [old.event_id]
        assert outbox.event_ids() == [old.event_id, new.event_id]


def test_an_event_whose_failed_commit_reached_the_disk_after_all_is_not_stored_twice(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path)
    event = make_door_event(Topics("edgecam/front"), "front", n_stills=0).rows[0][0]
    with Outbox(storage) as outbox:
        seq = outbox.last_seq() + 1
        assert outbox.append(event, None, seq) == seq
        assert outbox.append(event, None, seq) == seq  # the Store trying again with the seq it gave out
        assert outbox.depth() == 1


def test_the_newest_door_events_start_time_survives_a_restart(storage: StorageSettings) -> None:
    with closing(Outbox(storage)) as outbox:
        assert outbox.last_start() is None
        append_all(outbox, make_door_event(TOPICS, DEVICE, 1))
        append_all(outbox, make_door_event(TOPICS, DEVICE, 1, start=datetime(2026, 11, 23, 8, 0, tzinfo=UTC)))
    with closing(Outbox(storage)) as reopened:
        assert reopened.last_start() == "2026-11-23T08:00:00.000Z"


def test_each_connection_keeps_at_most_cache_kib_of_pages_in_memory(storage: StorageSettings) -> None:
    for for_sending in (False, True):  # the outbox thread's, and the publisher's
        with closing(Outbox(storage, for_sending=for_sending)) as outbox:
            assert outbox._db is not None
            assert outbox._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
