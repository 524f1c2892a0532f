"""The outbox: durable, ordered, seq never reused, one connection per thread."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgecam.errors import StorageError
from edgecam.models import Event, Topics
from edgecam.outbox import Outbox, Pending
from tests.conftest import DoorEvent, make_door_event

DEVICE = "front-door"
TOPICS = Topics(f"edgecam/{DEVICE}")


@pytest.fixture
def door(tmp_path: Path) -> DoorEvent:
    return make_door_event(tmp_path / "stills", TOPICS, DEVICE, n_stills=2)


def append_all(outbox: Outbox, door: DoorEvent) -> list[int]:
    return [outbox.append(event, still) for event, still in door.rows]


def test_pending_is_oldest_first_and_carries_what_the_publisher_needs(tmp_path: Path, door: DoorEvent) -> None:
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
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
                assert p.still_path == still.path
                assert p.still_topic == TOPICS.still(door.event_id, still.index)
        assert outbox.depth() == 4
        assert [p.seq for p in outbox.pending(limit=2)] == seqs[:2]
        assert [p.seq for p in outbox.pending(after_seq=seqs[1])] == seqs[2:]


def test_seq_keeps_rising_after_acks_and_a_restart(tmp_path: Path, door: DoorEvent) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    outbox = Outbox(path)
    first = append_all(outbox, door)
    outbox.ack(first[1])
    assert [p.seq for p in outbox.pending()] == [first[0], *first[2:]]
    for seq in first:
        outbox.ack(seq)
    outbox.ack(first[0])  # acknowledging twice is harmless
    assert outbox.depth() == 0
    outbox.close()
    outbox.close()

    # A restart: the highest seq was acknowledged and deleted, yet it is never used again.
    with Outbox(path) as reopened:
        assert reopened.pending() == []
        later = append_all(reopened, door)
        assert later[0] > first[-1]
        assert later == sorted(later)


def test_unacknowledged_events_survive_a_restart(tmp_path: Path, door: DoorEvent) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        seqs = append_all(outbox, door)
        before = outbox.pending()
    with Outbox(path) as reopened:
        assert reopened.pending() == before
        assert [p.seq for p in before] == seqs


def test_a_reader_thread_with_its_own_connection(tmp_path: Path, door: DoorEvent) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path)
    seqs = append_all(writer, door)
    seen: list[Pending] = []

    def publisher_thread() -> None:  # an exception here fails the test (pytest reports it)
        with Outbox(path) as reader:
            seen.extend(reader.pending())
            for p in seen[:2]:
                reader.ack(p.seq)

    thread = threading.Thread(target=publisher_thread)
    thread.start()
    thread.join(10)
    assert [p.seq for p in seen] == seqs
    assert [p.seq for p in writer.pending()] == seqs[2:]
    writer.close()


def test_a_still_needs_its_file_and_topic(tmp_path: Path, door: DoorEvent) -> None:
    event, still = door.rows[1]
    assert still is not None
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        with pytest.raises(ValueError, match="path"):
            outbox.append(event, replace(still, path=None))
        with pytest.raises(ValueError, match="topic"):
            outbox.append(replace(event, extra={}), still)
        assert outbox.depth() == 0


def test_an_unusable_location_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="outbox: cannot create"):
        Outbox(tmp_path / "file" / "outbox.sqlite3")
    (tmp_path / "garbage.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="garbage.sqlite3"):
        Outbox(tmp_path / "garbage.sqlite3")


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from edgecam.models import Event
    from edgecam.outbox import Outbox

    outbox = Outbox(Path(sys.argv[1]))
    while True:
        seq = outbox.append(Event("start", "e1", "front-door", datetime.now(UTC), 0.5))
        print(seq, flush=True)
    """
)


def test_a_process_killed_mid_write_loses_no_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=repo, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(50)]
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    child.stdout.close()

    with Outbox(path) as outbox:
        stored = [p.seq for p in outbox.pending(limit=100_000)]
        assert set(committed) <= set(stored)
        assert stored == sorted(stored)
        assert all(json.loads(p.payload)["seq"] == p.seq for p in outbox.pending(limit=100_000))
        assert outbox.append(Event("start", "e2", DEVICE, datetime.now(UTC), 0.5)) > stored[-1]


def test_an_outbox_from_a_newer_edgecam_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StorageError, match="schema 99"):
        Outbox(path)
