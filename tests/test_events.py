from collections.abc import Sequence

import pytest

from edgecam.config import DoorSettings, MotionSettings
from edgecam.events import EventTracker

# --- the event policy: camera motion, door contact and door state ---

Reading = tuple[bool, str | None, bool | None]
"""camera moving, door state, contact open: one frame's inputs to the tracker."""


def track(readings: Sequence[Reading], mode: str = "any", **door: object) -> list[tuple[float, str | None]]:
    tracker = EventTracker(MotionSettings(), DoorSettings.model_validate({"contact_mode": mode, **door}))
    out: list[tuple[float, str | None]] = []
    for i, (moving, state, contact) in enumerate(readings):
        event = tracker.update(i / 10, moving, state, contact)  # type: ignore[arg-type]
        if event:
            out.append((round(i / 10, 1), event))
    return out


def contact_readings(moving: Sequence[int], contact: Sequence[int]) -> list[Reading]:
    """Frames at 10 fps: ``moving`` and ``contact`` are frame index ranges [a, b) where each is true."""
    frames = 100
    cam = [any(a <= i < b for a, b in zip(moving[::2], moving[1::2], strict=True)) for i in range(frames)]
    con = [any(a <= i < b for a, b in zip(contact[::2], contact[1::2], strict=True)) for i in range(frames)]
    return [(m, None, c) for m, c in zip(cam, con, strict=True)]


def test_without_contact_or_door_state_camera_motion_alone_makes_events() -> None:
    readings: list[Reading] = [(10 <= i < 20, None, None) for i in range(60)]
    assert track(readings) == [(1.2, "start"), (3.9, "end")]


@pytest.mark.parametrize("mode", ["any", "contact_only"])
def test_the_contact_opening_starts_an_event_at_once(mode: str) -> None:
    assert track(contact_readings([], [10, 20]), mode)[0] == (1.0, "start")


def test_with_a_contact_camera_motion_waits_for_the_contact_to_open() -> None:
    assert track(contact_readings([10, 20], []), "any") == []
    assert track(contact_readings([10, 20], [15, 18]), "any")[0] == (1.5, "start")
    # door.confirm off: as without a contact, three moving frames start an event though the contact is shut.
    assert track(contact_readings([10, 20], []), "any", confirm=False)[0] == (1.2, "start")


def test_in_both_mode_the_contact_vetoes_camera_motion_while_the_door_is_shut() -> None:
    assert track(contact_readings([10, 20], []), "both") == []
    assert track(contact_readings([], [10, 30]), "both") == []
    assert track(contact_readings([12, 20], [10, 30]), "both")[0] == (1.2, "start")
    assert track(contact_readings([12, 20], [10, 30]), "both", confirm=False)[0] == (1.4, "start")


def confirm_track(moving: Sequence[int], left: Sequence[int], **door: object) -> tuple[list[float], list[float]]:
    """Start times, and times motion was pending, for ``moving`` frames and frames the door left its closed look."""
    tracker = EventTracker(MotionSettings(), DoorSettings.model_validate(door))
    starts, pending = [], []
    for i in range(100):
        event = tracker.update(i / 10, i in moving, "closed", None, i in left)
        if event == "start":
            starts.append(i / 10)
        if tracker.pending:
            pending.append(i / 10)
    return starts, pending


def test_with_a_reference_motion_starts_an_event_only_once_the_door_leaves_its_closed_look() -> None:
    # A person at the shut door: the zone moves for 3 s, the door never leaves its closed look.
    starts, pending = confirm_track(range(10, 40), [])
    assert starts == []
    assert pending[0] == 1.0
    assert pending[-1] == pytest.approx(5.9, abs=0.11)  # door.confirm_window after the last motion
    # The door opens: one moving frame and the door's reading are enough, at once.
    assert confirm_track([10, 11], [11, 12])[0] == [1.1]
    # The door's reading without motion (a light coming on) starts nothing; nor motion 3 s before it.
    assert confirm_track([], range(10, 20))[0] == []
    assert confirm_track([10], [41])[0] == []
    # door.confirm off: three moving frames, as without a reference.
    assert confirm_track(range(10, 40), [], confirm=False)[0] == [1.2]


def test_in_contact_only_mode_camera_motion_starts_nothing() -> None:
    assert track(contact_readings([10, 40], []), "contact_only") == []


def test_an_event_waits_for_the_open_door_to_close() -> None:
    readings: list[Reading] = [(10 <= i < 20, "open" if 10 <= i < 70 else "closed", None) for i in range(100)]
    assert track(readings) == [(1.2, "start"), (7.0, "end")]
    # The contact shutting is door movement too: the event ends event_gap after it.
    assert track(contact_readings([10, 20], [10, 70]), "any") == [(1.0, "start"), (9.0, "end")]


def test_a_door_left_open_ends_the_event_after_open_quiet() -> None:
    readings: list[Reading] = [(10 <= i < 20, "open" if i >= 10 else "closed", None) for i in range(100)]
    assert track(readings, open_quiet=5.0) == [(1.2, "start"), (6.9, "end")]


def test_motion_in_front_of_a_door_that_looks_closed_keeps_no_event_going() -> None:
    tracker = EventTracker(MotionSettings(), DoorSettings())
    events = []
    for i in range(150):
        # The door opens at 1 s and reads closed again from 3 s; someone stays in front of it moving until 15 s.
        event = tracker.update(i / 10, 10 <= i < 150, "closed", None, 10 <= i < 30)
        if event:
            events.append((i / 10, event))
    assert events == [(1.0, "start"), (4.9, "end")]  # motion.event_gap after the last frame it looked open
