import itertools
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.config import CameraSettings, SimulatedSettings
from edgecam.errors import CameraError, ConfigError
from edgecam.models import Frame
from edgecam.settings_file import load_settings
from edgecam.sources.opencv import OpenCVSource
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import DOOR_ZONE, SceneRenderer, SimulatedSource, render_clip
from edgecam.zones import polygon_mask


def camera(**sim: object) -> CameraSettings:
    return CameraSettings(simulated=SimulatedSettings.model_validate(sim))


def take(n: int, **sim: object) -> list[Frame]:
    source = SimulatedSource(camera(**sim), realtime=False)
    try:
        return list(itertools.islice(source.frames(), n))
    finally:
        source.close()


def at(renderer: SceneRenderer, t: float) -> NDArray[np.float64]:
    return renderer.render(round(t * renderer.sim.fps))[0].astype(np.float64)


def zone_masks(width: int = 640, height: int = 480) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    inside = polygon_mask([DOOR_ZONE], width, height)
    return inside, ~inside


def test_same_seed_same_frames_and_another_seed_differs() -> None:
    a, b = take(30, seed=7), take(30, seed=7)
    c = take(30, seed=8)
    assert all(np.array_equal(x.gray, y.gray) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].gray, c[0].gray)


def test_frames_are_grey_at_detection_size_and_timed_by_index() -> None:
    source = SimulatedSource(
        CameraSettings(detect_width=160, detect_height=120, simulated=SimulatedSettings(fps=5)), realtime=False
    )
    frames = list(itertools.islice(source.frames(), 12))
    assert all(f.gray.shape == (120, 160) and f.gray.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(12))
    assert frames[11].t == pytest.approx(11 / 5)
    assert source.fps == 5
    still = source.still()
    assert still.shape == (480, 640, 3)
    assert still.dtype == np.uint8


def test_still_is_the_latest_frame_in_colour() -> None:
    source = SimulatedSource(camera(), realtime=False)
    frames = source.frames()
    next(frames)
    latest = next(frames)
    renderer = SceneRenderer(SimulatedSettings(), 640, 480)
    assert np.array_equal(source.still(), renderer.render(latest.index)[0])
    source.still()[:] = 0  # a copy: scribbling on it does not change the next still
    assert source.still().any()


def test_still_before_any_frame_is_a_camera_error() -> None:
    with pytest.raises(CameraError, match="no frame"):
        SimulatedSource(camera(), realtime=False).still()


def test_close_ends_the_frames_and_is_idempotent() -> None:
    source = SimulatedSource(camera(), realtime=True)
    frames = source.frames()
    next(frames)
    source.close()
    source.close()
    assert list(frames) == []


def test_door_openings_follow_the_script() -> None:
    assert door_openings(SimulatedSettings(), 40) == [(4.0, 8.0), (16.0, 20.0), (28.0, 32.0)]
    sim = SimulatedSettings(first_opening=1, door_period=10, door_opening=0.5, door_open=3, door_closing=1.5)
    assert door_openings(sim, 24) == [(1.0, 6.0), (11.0, 16.0), (21.0, 24.0)]  # the last one clipped
    assert door_openings(SimulatedSettings(), 3.9) == []


def test_a_door_period_shorter_than_an_opening_is_refused() -> None:
    with pytest.raises(ConfigError, match="door_period"):
        load_settings(camera={"simulated": {"door_period": 3.5}})


def test_door_opening_changes_the_door_zone_and_barely_anything_else() -> None:
    renderer = SceneRenderer(SimulatedSettings(), 640, 480)
    inside, outside = zone_masks()
    closed = at(renderer, 3.5)
    for t in (4.5, 5.5, 6.5, 7.5):  # opening, open, open, closing
        diff = np.abs(at(renderer, t) - closed).mean(axis=2)
        assert diff[inside].mean() > 20, t
        assert diff[outside].mean() < 5, t  # sensor noise only
    shut_again = np.abs(at(renderer, 9.0) - closed).mean(axis=2)
    assert shut_again[inside].mean() < 5


def test_the_leaf_looks_narrower_as_the_door_swings_open() -> None:
    renderer = SceneRenderer(SimulatedSettings(noise=0), 640, 480)
    row, left, right = round(0.55 * 480), round(0.38 * 640) + 1, round(0.62 * 640) - 1

    def leaf_width(index: int) -> int:
        grey = renderer.render(index)[0].mean(axis=2)
        return int((grey[row, left:right] > 90).sum())  # the painted leaf is light, the room behind it dark

    widths = [leaf_width(index) for index in range(40, 51)]  # the swing open: 1 s from t = 4 s
    assert widths[0] == right - left
    assert all(b <= a for a, b in itertools.pairwise(widths))
    assert widths[-1] < 0.4 * widths[0]


def test_light_switching_changes_the_whole_frame_between_openings() -> None:
    renderer = SceneRenderer(SimulatedSettings(light_switching=True), 640, 480)
    steady = SceneRenderer(SimulatedSettings(light_switching=False), 640, 480)

    def block_means(image: NDArray[np.float64]) -> NDArray[np.float64]:
        means: NDArray[np.float64] = image.mean(axis=2).reshape(4, 120, 4, 160).mean(axis=(1, 3))
        return means

    lit = block_means(at(renderer, 9.0))  # after the first opening, before the switch
    dark = block_means(at(renderer, 12.0))  # after the switch and the exposure ramp
    lit_again = block_means(at(renderer, 24.0))  # switched back on in the next gap
    assert (dark < 0.85 * lit).all()
    assert np.allclose(lit_again, lit, rtol=0.02)
    assert np.allclose(block_means(at(steady, 12.0)), lit, rtol=0.02)
    # The switch itself happens between openings, never while the door moves.
    switch_times = [s.t for s in renderer.script_at(60).switches]
    openings = door_openings(renderer.sim, 60)
    assert not any(start <= t <= end for t in switch_times for start, end in openings)


def test_passer_by_walks_outside_the_door_zone() -> None:
    walker = SceneRenderer(SimulatedSettings(passer_by=True), 640, 480)
    nobody = SceneRenderer(SimulatedSettings(passer_by=False), 640, 480)
    inside, outside = zone_masks()
    seen = 0
    for index in range(80, 160):  # the gap after the first opening
        diff = np.abs(walker.render(index)[0].astype(int) - nobody.render(index)[0]).max(axis=2)
        assert not diff[inside].any(), index
        seen += int((diff[outside] > 30).sum() > 1000)
    assert seen > 10  # the person is in view for several frames


def test_render_clip_reads_back_through_opencv(tmp_path: Path) -> None:
    sim = SimulatedSettings(seed=3, light_switching=True, passer_by=True)
    path = tmp_path / "door.avi"
    openings = render_clip(path, sim, 14.0)
    assert openings == door_openings(sim, 14.0) == [(4.0, 8.0)]
    source = OpenCVSource(CameraSettings(source=str(path)), realtime=False)
    frames = list(source.frames())
    source.close()
    assert source.fps == 10
    assert len(frames) == 140
    assert frames[-1].t == pytest.approx(13.9)
    assert all(f.gray.shape == (240, 320) for f in frames)
    simulated = take(140, seed=3, light_switching=True, passer_by=True)
    for read, made in zip(frames[::10], simulated[::10], strict=True):
        assert np.abs(read.gray.astype(int) - made.gray).mean() < 2


def test_render_clip_refuses_an_unknown_container(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.avi"):
        render_clip(tmp_path / "door.mp4", SimulatedSettings(), 1.0)


def test_render_clip_keeps_a_fractional_frame_rate_in_mkv_and_refuses_it_in_avi(tmp_path: Path) -> None:
    sim = SimulatedSettings(fps=7.5, noise=0)
    with pytest.raises(ValueError, match="use .mkv for 7.5 fps"):
        render_clip(tmp_path / "door.avi", sim, 1.0)
    render_clip(tmp_path / "door.mkv", sim, 2.0)
    source = OpenCVSource(CameraSettings(source=str(tmp_path / "door.mkv")), realtime=False)
    assert source.fps == 7.5
    assert len(list(source.frames())) == 15
    source.close()
