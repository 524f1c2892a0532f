"""The scene monitor in the frame loop: warnings logged once as they start and once as they clear."""

import logging
from collections.abc import Iterator

import pytest

from edgecam.config import Settings
from edgecam.models import Frame, MotionResult
from edgecam.scene_monitor import ASSESS_EVERY_S, CLEAR_S, START_S, SceneMonitor
from edgecam.viewing import BUSY_WINDOW_S
from tests.test_viewing import DOOR, MOVING, QUIET, TINY, Polygon, frames


def stream(start: float, seconds: float, level: float, noise: float, fps: float = 10.0) -> Iterator[Frame]:
    scenes = frames(level, noise, count=4, seed=round(start))
    first = round(start * fps)
    for i in range(first, first + round(seconds * fps)):
        yield Frame(i, i / fps, scenes[i % 4])


def feed(watch: SceneMonitor, frames_: Iterator[Frame], result: MotionResult = QUIET) -> tuple[str, ...]:
    warnings = watch.warnings
    for frame in frames_:
        warnings = watch.update(frame, result)
    return warnings


def monitor(zone: Polygon = DOOR) -> SceneMonitor:
    return SceneMonitor(Settings.model_validate({"motion": {"zone": zone}}))


def logged(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgecam.scene_monitor" and r.levelno == level]


def test_the_monitor_warns_once_a_dark_scene_has_lasted_and_once_when_it_is_light_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.scene_monitor")
    watch = monitor()
    assert feed(watch, stream(0, START_S - 2 * ASSESS_EVERY_S, 20, 3.0)) == (), "not at the first dark frame"
    assert feed(watch, stream(START_S - 2 * ASSESS_EVERY_S, 3 * ASSESS_EVERY_S, 20, 3.0)) == ("too_dark",)
    assert feed(watch, stream(START_S + ASSESS_EVERY_S, 60, 20, 3.0)) == ("too_dark",)
    warned = logged(caplog, logging.WARNING)
    assert len(warned) == 1
    assert "too dark" in warned[0]
    assert "motion.threshold" in warned[0]
    t = START_S + ASSESS_EVERY_S + 60
    assert feed(watch, stream(t, CLEAR_S - 2 * ASSESS_EVERY_S, 150, 1.0)) == ("too_dark",), "not at once"
    t += CLEAR_S - 2 * ASSESS_EVERY_S
    assert feed(watch, stream(t, 3 * ASSESS_EVERY_S + 60, 150, 1.0)) == ()
    cleared = logged(caplog, logging.INFO)
    assert len(cleared) == 1
    assert "no longer too dark" in cleared[0]
    assert len(logged(caplog, logging.WARNING)) == 1


def test_a_scene_hovering_at_the_level_does_not_flap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.scene_monitor")
    watch = monitor()
    assert feed(watch, stream(0, START_S + 2 * ASSESS_EVERY_S, 20, 2.0)) == ("too_dark",)
    t = START_S + 2 * ASSESS_EVERY_S
    for level in (30, 34) * 20:  # either side of the level, 25 / 0.8 = 31 grey levels, for 200 s
        assert feed(watch, stream(t, ASSESS_EVERY_S, level, 1.0)) == ("too_dark",)
        t += ASSESS_EVERY_S
    assert len(logged(caplog, logging.WARNING)) == 1
    assert logged(caplog, logging.INFO) == [], "no clearing"


@pytest.mark.parametrize(
    "result",
    [
        MOVING,
        MotionResult(score=0.0, moving=False, door="open"),  # the zone shows the hall behind the door
        MotionResult(score=0.0, moving=False, settling=True),
        MotionResult(score=0.0, moving=False, calibrating=True),
    ],
)
def test_the_monitor_leaves_out_frames_that_do_not_show_the_closed_door_still(result: MotionResult) -> None:
    watch = monitor()
    assert feed(watch, stream(0, 3 * START_S, 20, 3.0), result) == ()


def test_a_tiny_zone_is_warned_of_at_start(caplog: pytest.LogCaptureFixture) -> None:
    watch = monitor(TINY)
    assert watch.warnings == ("zone_too_small",)
    assert "motion.zone" in caplog.text
    assert feed(watch, stream(0, 2 * START_S, 200, 1.0)) == ("zone_too_small",)
    assert len(logged(caplog, logging.WARNING)) == 1


def busy_run(watch: SceneMonitor, seconds: float, moving: object) -> tuple[str, ...]:
    fps = 10.0
    scenes = frames(150, 1.0, count=2)
    warnings: tuple[str, ...] = ()
    for i in range(round(seconds * fps)):
        warnings = watch.update(Frame(i, i / fps, scenes[i % 2]), MOVING if moving(i) else QUIET)  # type: ignore[operator]
    return warnings


def test_a_zone_moving_in_a_large_share_of_the_frames_is_busy(caplog: pytest.LogCaptureFixture) -> None:
    watch = monitor()
    seconds = BUSY_WINDOW_S + START_S + 2 * ASSESS_EVERY_S
    assert busy_run(watch, seconds, lambda i: (i // 20) % 2) == ("zone_busy",)  # a street: half of the frames
    (warned,) = logged(caplog, logging.WARNING)
    assert "motion.zone" in warned
    assert "street" in warned


def test_door_events_now_and_then_do_not_make_a_zone_busy() -> None:
    watch = monitor()
    assert busy_run(watch, 2 * BUSY_WINDOW_S, lambda i: i % 600 < 40) == ()  # the door moves 4 s a minute
