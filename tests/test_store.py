"""The outbox thread: stills developed and events stored in capture order, off the frame loop, with a real outbox."""

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edgecam.capture import Capture, Captured, Emitted, develop
from edgecam.config import CaptureSettings, StorageSettings
from edgecam.errors import StorageError
from edgecam.models import Event, Frame, MotionResult, Topics
from edgecam.outbox import Outbox
from edgecam.store import OutboxWriter, Store

TOPICS = Topics("edgecam/front")


def grey_bgr() -> np.ndarray:
    return np.full((120, 160, 3), 128, np.uint8)


def door_event(capture: Capture, frames: int) -> list[Captured]:
    """What ``capture`` makes of a door moving for ``frames`` frames at 10 fps, then quiet until the end."""
    captured: list[Captured] = []
    for i in range(frames + 3):
        moving = i < frames
        event = "start" if i == 0 else "end" if i == frames + 2 else None
        result = MotionResult(0.4 if moving else 0.0, moving, event=event, in_event=event != "end")  # type: ignore[arg-type]
        captured += capture.on_frame(Frame(i, i / 10, np.zeros((12, 16), np.uint8)), result, grey_bgr)
    return captured


def make_capture(room: Callable[[], bool] = lambda: True, stills: int = 2) -> Capture:
    settings = CaptureSettings(stills_per_event=stills, interval=0.0)
    clock = lambda: datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # noqa: E731
    return Capture(settings, [], "front", TOPICS, None, clock=clock, room=room)


def rows(storage: StorageSettings) -> list[tuple[int, str, dict[str, object]]]:
    with contextlib.closing(sqlite3.connect(storage.outbox_path)) as db:
        found = db.execute("SELECT seq, type, payload FROM outbox ORDER BY seq").fetchall()
    return [(seq, kind, json.loads(payload)) for seq, kind, payload in found]


class GatedEncoder:
    """``develop`` that waits for ``go`` before each still, as a slow encoder on a small board would."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.waiting = threading.Event()

    def __call__(self, captured: Captured) -> Emitted:
        self.waiting.set()
        assert self.go.wait(10), "the test never let the encoder go"
        return develop(captured, [], 85)


def test_the_start_is_stored_and_announced_before_its_stills_are_encoded(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    encoder = GatedEncoder()
    wakes = threading.Semaphore(0)
    writer = OutboxWriter(storage, encoder, wakes.release)
    try:
        writer.put(door_event(make_capture(), frames=2))
        assert encoder.waiting.wait(5), "the first still reached the encoder"
        assert wakes.acquire(timeout=5), "the publisher was woken for the start"
        assert [kind for _, kind, _ in rows(storage)] == ["start"], "stored while its still is being encoded"
    finally:
        encoder.go.set()
        writer.close()
    stored = rows(storage)
    assert [kind for _, kind, _ in stored] == ["start", "still", "still", "end"]
    assert [seq for seq, _, _ in stored] == [1, 2, 3, 4]
    stills = [payload for _, kind, payload in stored if kind == "still"]
    assert [(s["index"], s["width"], s["height"]) for s in stills] == [(1, 160, 120), (2, 160, 120)]
    for still in stills:
        jpeg = (storage.stills_dir / str(still["event_id"]) / f"{still['index']}.jpg").read_bytes()
        assert len(jpeg) == still["bytes"]


def test_an_encoder_that_falls_behind_skips_stills_never_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    encoder = GatedEncoder()
    writer = OutboxWriter(storage, encoder, lambda: None, max_shots=1)
    try:
        capture = make_capture(writer.room, stills=3)
        captured = door_event(capture, frames=1)  # start and the first still: the one shot allowed
        writer.put(captured)
        assert encoder.waiting.wait(5)
        captured = door_event(capture, frames=4)  # a second event while the encoder is stuck on the first still
    finally:
        encoder.go.set()
        writer.put(captured)
        writer.close()
    assert "skipped: the stills before it are still encoding" in caplog.text
    stored = rows(storage)
    assert [kind for _, kind, _ in stored] == ["start", "still", "end", "start", "end"]
    ends = [payload for _, kind, payload in stored if kind == "end"]
    stills = [kind for _, kind, _ in stored].count("still")
    assert sum(int(str(end["stills"])) for end in ends) == stills, "each end counts the stills that were stored"


def test_a_still_the_encoder_refuses_is_stored_as_dropped_and_the_event_goes_on(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")

    def refuse(captured: Captured) -> Emitted:
        raise StorageError("capture: OpenCV could not encode a (0,) still as JPEG")

    writer = OutboxWriter(storage, refuse, lambda: None)
    writer.put(door_event(make_capture(stills=1), frames=1))
    writer.close()
    stored = rows(storage)
    assert [kind for _, kind, _ in stored] == ["start", "still", "end"]
    assert stored[1][2].get("dropped") is True


def test_close_stores_what_is_queued_and_the_outbox_is_refused_in_one_line(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path / "state")
    writer = OutboxWriter(storage, lambda c: develop(c, [], 85), lambda: None)
    writer.put(door_event(make_capture(), frames=2))
    writer.close()
    writer.close()
    assert len(rows(storage)) == 4
    blocker = tmp_path / "file"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StorageError, match="storage.dir: cannot create"):
        OutboxWriter(StorageSettings(dir=blocker), lambda c: develop(c, [], 85), lambda: None)


def test_a_row_another_process_stores_meanwhile_takes_its_seq_and_the_events_go_on_after_it(tmp_path: Path) -> None:
    storage = StorageSettings(dir=tmp_path)
    capture = make_capture(stills=0)
    with Outbox(storage) as outbox:
        store = Store(outbox)
        first, second = door_event(capture, 3), door_event(capture, 3)
        store.put([develop(c, [], 85) for c in first])
        with Outbox(storage) as other:  # edgecam forget, in a process of its own
            forget = Event(
                "forget", "f1", "front", datetime(2026, 11, 30, 9, 1, tzinfo=UTC), 0.0, {"forget": {"all": True}}
            )
            taken = other.append(forget)
        assert store.put([develop(c, [], 85) for c in second])
    stored = rows(storage)
    assert [seq for seq, _, _ in stored] == list(range(1, len(stored) + 1)), "every seq once, none lost"
    assert [kind for _, kind, _ in stored] == ["start", "end", "forget", "start", "end"]
    assert stored[2][0] == taken
    assert all(payload["seq"] == seq for seq, _, payload in stored)
