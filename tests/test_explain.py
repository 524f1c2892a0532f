from typing import Literal

import numpy as np
import pytest

from edgecam.config import MotionSettings, Settings
from edgecam.explain import PLOT_HEIGHT, SHEET_FRAMES, Trace, render_sheet
from edgecam.models import MotionResult

W, H, FPS = 64, 48, 25.0
FRAMES = 3000
"""Two minutes at 25 fps."""


def shade(index: int) -> int:
    """The grey level of frame ``index``: its time, readable back from the sheet."""
    return 30 + round(200 * index / FRAMES)


def time_of(level: float) -> float:
    return (level - 30) * FRAMES / 200 / FPS


def sheet_times(trace: Trace) -> list[float]:
    """The clip time each tile of the sheet shows, from its median grey level."""
    settings = Settings(device_id="explain-test", motion=MotionSettings(zone=[(0.2, 0.2), (0.4, 0.2), (0.4, 0.8)]))
    sheet = render_sheet(settings, trace)
    tile_w = sheet.shape[1] // SHEET_FRAMES
    row = sheet[: sheet.shape[0] - PLOT_HEIGHT, :, 0]
    return [time_of(float(np.median(row[:, i * tile_w : (i + 1) * tile_w]))) for i in range(SHEET_FRAMES)]


def run(starts: set[int]) -> Trace:
    trace = Trace()
    for i in range(FRAMES):
        event: Literal["start", "end"] | None = "start" if i in starts else "end" if i - 50 in starts else None
        result = MotionResult(score=0.5 if event else 0.0, moving=event == "start", event=event)
        trace.add(i / FPS, np.full((H, W), shade(i), np.uint8), result, None)
    return trace


@pytest.mark.parametrize(
    ("starts", "shown"),
    [
        pytest.param(set(), [0.0, 30.0, 60.0, 90.0], id="no event: the run in quarters"),
        pytest.param({1250}, [0.0, 40.0, 50.0, 80.0], id="one event at 50 s among the run in thirds"),
    ],
)
def test_the_sheet_fills_the_tiles_no_event_takes_with_frames_from_across_the_run(
    starts: set[int], shown: list[float]
) -> None:
    trace = run(starts)
    assert sheet_times(trace) == pytest.approx(shown, abs=3.0)
    assert len(trace.frames) + len(trace.spread) <= 40, "a long run keeps a bounded number of frames"


def test_with_many_events_the_sheet_shows_the_first_frame_and_the_first_events() -> None:
    assert sheet_times(run({500, 1000, 1500, 2000, 2500})) == pytest.approx([0.0, 20.0, 40.0, 60.0], abs=0.5)
