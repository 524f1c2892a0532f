import hashlib
import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError, ConfigError
from edgecam.models import Frame
from edgecam.scene_settings import SimulatedSettings
from edgecam.settings_file import load_settings
from edgecam.sources.opencv import OpenCVSource
from edgecam.sources.scene import CAMERA_LIGHT_OVERSHOOT, CameraLight, door_openings
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


def test_sensor_noise_grows_with_brightness_and_with_gain() -> None:
    wall = np.s_[100:200, 20:200]

    def wall_noise(light_level: float, gain: float) -> tuple[float, float]:
        """The noise's variance on the wall, and the wall's mean grey level without noise."""
        scene = {"noise": 0, "light_level": light_level, "sensor_gain": gain, "first_opening": 100.0}
        noisy = SceneRenderer(SimulatedSettings(**scene, shot_noise=4.0, read_noise=1.0), 640, 480)
        clean = SceneRenderer(SimulatedSettings(**scene), 640, 480)
        diffs = [noisy.render(i)[0][wall].astype(float) - clean.render(i)[0][wall] for i in range(3)]
        return float(np.var(diffs)), float(clean.render(0)[0][wall].mean())

    (bright, grey), (dim, dim_grey) = wall_noise(1.0, 1.0), wall_noise(0.25, 1.0)
    assert grey > 3.5 * dim_grey
    assert bright > 2.5 * dim  # shot noise: the variance follows the grey level
    assert bright == pytest.approx(4.0**2 * grey / 255 + 1.0, rel=0.15)
    assert dim == pytest.approx(4.0**2 * dim_grey / 255 + 1.0, rel=0.15)
    # As bright a picture from a quarter of the light at gain 4: four times the shot noise's variance and sixteen
    # times the read noise's.
    gained, gained_grey = wall_noise(0.25, 4.0)
    assert gained_grey == pytest.approx(grey, abs=1.0)
    assert gained == pytest.approx(4 * 4.0**2 * grey / 255 + 16.0, rel=0.15)


def test_sensor_gain_brightens_the_picture_like_more_light() -> None:
    dim_gained = SceneRenderer(SimulatedSettings(noise=0, light_level=0.25, sensor_gain=4.0), 640, 480)
    lit = SceneRenderer(SimulatedSettings(noise=0), 640, 480)
    assert np.abs(at(dim_gained, 1.0) - at(lit, 1.0)).mean() < 1.0


def test_a_lamp_ramps_up_over_lamp_rise_seconds() -> None:
    sim = SimulatedSettings(light_switching=True, lamp=0.6, lamp_rise=1.5, light_ramp=0.0, noise=0, door_period=20)
    renderer = SceneRenderer(sim, 640, 480)
    switch = next(s for s in renderer.script_at(30.0).switches if s.on)  # off in the first gap, on in the second
    wall = np.s_[60:200, 20:200]

    def wall_mean(t: float) -> float:
        return float(at(renderer, t)[wall].mean())

    frames = [math.ceil(switch.t * sim.fps) + i for i in range(round(1.5 * sim.fps) + 1)]
    ramp = [float(renderer.render(i)[0][wall].astype(float).mean()) for i in frames]
    assert all(b > a + 1.0 for a, b in itertools.pairwise(ramp))  # brightening every frame for 1.5 s
    assert wall_mean(switch.t + 1.6) == pytest.approx(wall_mean(switch.t + 4.0), abs=0.01)  # then steady
    assert wall_mean(switch.t - 0.1) < 0.6 * wall_mean(switch.t + 4.0)
    assert renderer.state(switch.t + 0.75).brightness == pytest.approx((0.4 + 1.0) / 2)
    at_once = SceneRenderer(sim.model_copy(update={"lamp_rise": 0.0}), 640, 480)
    assert at(at_once, switch.t + 0.1)[wall].mean() == pytest.approx(wall_mean(switch.t + 4.0), abs=0.01)


def test_a_shadow_edge_lies_just_inside_the_door_zones_right_border_while_the_lamp_is_on() -> None:
    sim = SimulatedSettings(light_switching=True, lamp=0.6, noise=0, door_period=20)
    shaded = SceneRenderer(sim.model_copy(update={"shadow": 0.5}), 640, 480)
    plain = SceneRenderer(sim, 640, 480)
    row = np.s_[100:110]  # on the closed door leaf's upper rail and the wall beside it

    def ratio(t: float) -> NDArray[np.float64]:
        column_ratio: NDArray[np.float64] = (at(shaded, t)[row] / at(plain, t)[row]).mean(axis=(0, 2))
        return column_ratio

    lit, dark = ratio(3.0), ratio(17.0)  # before the first opening; after the switch off in its gap
    right = round(0.62 * 640)
    edge = int(np.argmax(lit < 0.75))
    assert right - 0.05 * 640 < edge < right
    assert (lit[: edge - 4] > 0.98).all()
    assert (lit[edge + 4 :] < 0.6).all()
    assert (np.abs(dark - 1.0) < 0.02).all()  # the shadow is the lamp's: gone with the light off


def test_a_person_stands_in_the_door_zone_while_the_door_stays_shut() -> None:
    sim = SimulatedSettings(person_at_door=15.0, door_period=30.0, noise=0)
    renderer = SceneRenderer(sim, 640, 480)
    nobody = SceneRenderer(sim.model_copy(update={"person_at_door": 0.0}), 640, 480)
    inside, _ = zone_masks()
    stand = renderer.script_at(20.0).stands[0]
    assert stand.duration >= 15.0
    assert door_openings(sim, 60.0) == door_openings(nobody.sim, 60.0)
    openings = door_openings(sim, 60.0)
    assert not any(start < stand.end and stand.start < end for start, end in openings)
    for t in np.arange(stand.start, stand.end, 0.5):
        assert renderer.state(float(t)).door_angle == 0.0
    for t in np.arange(stand.start + 2.0, stand.end - 2.0, 1.5):  # standing, not walking
        changed = np.abs(at(renderer, float(t)) - at(nobody, float(t))).max(axis=2) > 30
        assert changed[inside].mean() > 0.15, t  # a good part of the door zone is the person
        assert changed[inside].sum() > 0.7 * changed.sum(), t  # and the person is mostly in the door zone


def test_a_person_standing_longer_than_the_gap_between_openings_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"door_period .*person_at_door"):
        load_settings(camera={"simulated": {"person_at_door": 10.0, "door_period": 12.0}})


def test_jpeg_quality_round_trips_every_frame_through_jpeg() -> None:
    plain = SceneRenderer(SimulatedSettings(), 640, 480)
    compressed = SceneRenderer(SimulatedSettings(jpeg_quality=30), 640, 480)
    for index in (0, 45):
        image = plain.render(index)[0]
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 30])
        assert ok
        assert np.array_equal(compressed.render(index)[0], np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR)))
        assert np.abs(compressed.render(index)[0].astype(int) - image).mean() > 1.0


def test_a_side_light_ramps_on_beyond_an_edge_just_inside_the_door_zone() -> None:
    sim = SimulatedSettings(side_light=0.12, lamp_rise=1.0, noise=0, door_period=20)  # the white door unclipped
    lit = SceneRenderer(sim, 640, 480)
    plain = SceneRenderer(sim.model_copy(update={"side_light": 0.0}), 640, 480)
    switch = lit.script_at(10.0).side_switches[0]  # on in the first gap, off in the next
    assert switch.on
    assert not any(start <= switch.t <= end for start, end in door_openings(sim, 30.0))
    rows, wall = np.s_[100:110], np.s_[100:200, 440:620]  # the wall right of the door frame

    def ratio(t: float, where: slice | tuple[slice, ...]) -> NDArray[np.float64]:
        return np.asarray(at(lit, t)[where] / at(plain, t)[where], np.float64)

    assert np.allclose(ratio(switch.t - 0.2, wall), 1.0)
    assert ratio(switch.t + 0.5, wall).mean() == pytest.approx(1.06, abs=0.01)  # half way up its 1 s ramp
    assert ratio(switch.t + 1.1, wall).mean() == pytest.approx(1.12, abs=0.01)
    columns = ratio(switch.t + 1.1, rows).mean(axis=(0, 2))
    edge, right = int(np.argmax(columns > 1.06)), round(0.62 * 640)
    assert right - 0.05 * 640 < edge < right
    assert np.allclose(columns[: edge - 4], 1.0)  # the rest of the picture, most of it, is as it was
    off = lit.script_at(30.0).side_switches[1]
    assert not off.on
    assert np.allclose(ratio(off.t + 1.1, wall), 1.0)


def test_the_cameras_own_light_brightens_the_whole_dark_frame_most_near_the_camera() -> None:
    renderer = SceneRenderer(SimulatedSettings(light_level=0.2, noise=0), 640, 480)
    dark = renderer.render(30)[0].astype(np.float64)
    lit = renderer.render(30, CameraLight(on=True, since=5.0))[0].astype(np.float64)
    gain = lit.mean(axis=2) / np.maximum(dark.mean(axis=2), 1.0)
    corner, middle, floor = gain[:40, :40].mean(), gain[200:280, 80:200].mean(), gain[450:, 80:200].mean()
    assert corner > 2.0, "the whole frame changes, the corners too"
    assert corner < middle < floor, "the beam is strongest in the middle, and nearest the camera strongest of all"
    assert lit.mean() > 4 * dark.mean()
    assert lit[:, :, 0].mean() == pytest.approx(lit[:, :, 2].mean(), rel=0.15), "infrared light: grey, not warm"
    weaker = SceneRenderer(SimulatedSettings(light_level=0.2, noise=0, camera_light=0.5), 640, 480)
    assert dark.mean() < weaker.render(30, CameraLight(on=True, since=5.0))[0].mean() < lit.mean()
    none = SceneRenderer(SimulatedSettings(light_level=0.2, noise=0, camera_light=0.0), 640, 480)
    assert np.array_equal(none.render(30, CameraLight(on=True, since=5.0))[0], dark)


def test_the_exposure_overshoots_after_the_light_switches_and_adapts_over_light_ramp() -> None:
    sim = SimulatedSettings(light_level=0.2, noise=0, light_ramp=0.5, camera_light=0.3)  # unclipped at twice
    renderer = SceneRenderer(sim, 640, 480)
    wall = np.s_[60:160, 20:200]

    def wall_level(light: CameraLight | None) -> float:
        return float(renderer.render(30, light)[0][wall].mean())

    settled_on, dark = wall_level(CameraLight(on=True, since=0.5)), wall_level(None)
    assert wall_level(CameraLight(on=True, since=0.0)) == pytest.approx(CAMERA_LIGHT_OVERSHOOT * settled_on, rel=0.02)
    assert wall_level(CameraLight(on=True, since=0.25)) == pytest.approx(1.5 * settled_on, rel=0.02)
    assert wall_level(CameraLight(on=False, since=0.0)) == pytest.approx(dark / CAMERA_LIGHT_OVERSHOOT, rel=0.05)
    assert np.array_equal(renderer.render(30, CameraLight(on=False, since=0.5))[0], renderer.render(30)[0])


def test_a_wired_source_is_lit_from_the_first_frame_after_its_pin_goes_on() -> None:
    lit = [False]
    source = SimulatedSource(camera(light_level=0.2), realtime=False)
    source.wire_light(lambda: lit[0])
    plain = take(40, light_level=0.2)
    levels = []
    for frame in itertools.islice(source.frames(), 40):
        levels.append(float(frame.gray.mean()))
        if frame.index == 9:
            lit[0] = True
            assert source.still().mean() == pytest.approx(levels[-1], abs=3.0), "the still is of the frame yielded"
        elif frame.index == 10:
            assert source.still().mean() > 3 * levels[9], "the still lit too"
        elif frame.index == 19:
            lit[0] = False
    assert levels[:10] == [float(f.gray.mean()) for f in plain[:10]]
    assert min(levels[10:20]) > 3 * max(levels[:10])
    assert max(levels[20:25]) < min(levels[:10]), "the exposure recovers from the light"
    assert levels[30:] == [float(f.gray.mean()) for f in plain[30:]], "then as if it had never been on"


# Frames of the hall as rendered before camera.simulated.style existed (sha256 of the BGR bytes, this machine's
# numpy and OpenCV): the default look must stay byte for byte the same, so existing scenes and seeds keep their truth.
HALL_BEFORE_STYLES = [
    ({}, 640, 480, 0, "8a0924d34a1879f369ab9655891bd252ce19eb715db9094721af20ef791276e3"),
    ({}, 640, 480, 45, "d6b91c39b4c03cd5b70ffc4f9ce1595e3db03f30dffafbeb26638737946afd0d"),
    (
        {
            "seed": 5,
            "light_switching": True,
            "lamp": 0.6,
            "lamp_rise": 1.0,
            "shadow": 0.6,
            "shot_noise": 4.0,
            "read_noise": 0.8,
            "sensor_gain": 2.0,
            "jpeg_quality": 40,
            "passer_by": True,
            "shake": 1.0,
        },
        640,
        480,
        123,
        "cbd8f25c62a906cae5a34789911791be466a60f7ec4404b991f300d2788df610",
    ),
    (
        {"seed": 30, "person_at_door": 12.0, "door_period": 25.0, "passer_by": True, "walk_through": True},
        640,
        480,
        112,  # walking up to the door
        "d5a044dd79c6d90b643b3d058d97190338015759bbb62e500191f4aad16ca3f2",
    ),
    (
        {"seed": 30, "person_at_door": 12.0, "door_period": 25.0, "passer_by": True, "walk_through": True},
        640,
        480,
        165,  # standing at the door
        "e1a24c31f580757f146f0431f34a1d7264e63f6bbf945726d7bbf902b80b2e49",
    ),
    (
        {"seed": 30, "person_at_door": 12.0, "door_period": 25.0, "passer_by": True, "walk_through": True},
        640,
        480,
        55,  # stepping out through the open door
        "1073aa5f54f033963797a459b52f30da71b8007acec00b1f4655f2d667effd39",
    ),
    (
        {"seed": 9, "infrared": True, "side_light": 0.5, "lamp_rise": 0.5, "light_level": 0.6, "noise": 5.0},
        320,
        240,
        150,
        "712baeacd8e66b833ad6dac9b191dfef3c498cb0b15905a3faa81ff125d4a7ea",
    ),
]


@pytest.mark.parametrize(("sim", "width", "height", "index", "digest"), HALL_BEFORE_STYLES)
def test_the_default_hall_renders_byte_for_byte_as_before(
    sim: dict[str, object], width: int, height: int, index: int, digest: str
) -> None:
    image = SceneRenderer(SimulatedSettings.model_validate(sim), width, height).render(index)[0]
    assert hashlib.sha256(image.tobytes()).hexdigest() == digest


@pytest.mark.parametrize(
    ("simulated", "message"),
    [
        ({"style": "garage"}, r"camera\.simulated\.style: 'garage' is not allowed"),
        ({"person_pose": "sitting"}, r"camera\.simulated\.person_pose: 'sitting' is not allowed"),
        ({"h264_bitrate": -5}, r"camera\.simulated\.h264_bitrate: -5 is not allowed"),
        ({"h264_gop": 0}, r"camera\.simulated\.h264_gop: 0 is not allowed"),
        ({"jpeg_quality": 30, "h264_bitrate": 300}, r"jpeg_quality .*h264_bitrate"),
        ({"h264_bitrate": 300, "width": 641}, r"h264_bitrate needs an even width and height .*641x480"),
        ({"style": "porch", "walk_through": True}, r"walk_through: drawn for style 'hall' only"),
        ({"style": "porch-grey", "passer_by": True}, r"passer_by: drawn for style 'hall' only"),
        ({"pet": True, "door_period": 8.0}, r"door_period .*pet"),
        ({"person_pose": "lean"}, r"person_pose .*person_at_door"),
    ],
)
def test_new_scene_settings_are_refused_with_one_line_naming_them(simulated: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(camera={"simulated": simulated})
    assert "\n" not in str(caught.value)
