import concurrent.futures
import errno
import importlib.util
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from edgecam.capture import still_bgr
from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources import check_source, picamera
from edgecam.sources.picamera import PiCameraSource
from edgecam.sources.picamera_fake import FakeClock, FakePicamera2
from edgecam.sources.picamera_fake_sensors import CMA_IN_USE, SENSORS, ZERO_2W_CMA
from edgecam.sources.simulated import SceneRenderer
from tests.fake_pi import install_fake_picamera

BASE = {"fps": 10, "still_width": 640, "still_height": 480, "detect_width": 320, "detect_height": 240}
MB = 1 << 20


def settings(**overrides: Any) -> CameraSettings:
    return CameraSettings(source="picamera2", **{**BASE, **overrides})


def board_settings(**overrides: Any) -> CameraSettings:
    """The shipped defaults: no still size set, so the source chooses one for the board."""
    return CameraSettings(source="picamera2", **overrides)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., FakePicamera2]:
    """``install_fake_picamera``: call it to set the next fake's options."""
    return install_fake_picamera(monkeypatch, tmp_path)


def scene_i420(bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The I420 a full-range YUV420 camera makes of ``bgr``: Y as is, U and V averaged over 2 x 2 pixels."""
    height, width = bgr.shape[:2]
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    chroma = [cv2.resize(ycrcb[:, :, c], (width // 2, height // 2), interpolation=cv2.INTER_AREA) for c in (2, 1)]
    return np.concatenate([ycrcb[:, :, 0].reshape(-1), *(c.reshape(-1) for c in chroma)]).reshape(-1, width)


def timestamps(frames: list[Any]) -> list[int]:
    return [int(f.metadata["SensorTimestamp"]) for f in frames]


# Opening -------------------------------------------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_picamera2(tmp_path: Path) -> None:
    poisoned = tmp_path / "picamera2"
    poisoned.mkdir()
    (poisoned / "__init__.py").write_text("raise RuntimeError('picamera2 was imported')\n")
    code = "import sys, edgecam.sources, edgecam.sources.picamera; assert 'picamera2' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_without_picamera2_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        PiCameraSource(settings())


def test_check_config_says_in_one_line_that_picamera2_is_not_installed() -> None:
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CameraError) as caught:
        check_source(CameraSettings(source="picamera2"))
    assert str(caught.value) == picamera.NOT_INSTALLED


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((0, 3, 38), "camera.source: cannot open the Pi camera: No camera number 0 found"),
        ((0, 3, 36), "camera.source: cannot open the Pi camera: no camera found; check its ribbon cable"),
    ],
)
def test_a_missing_camera_is_a_one_line_camera_error(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, int, int], expected: str
) -> None:
    # picamera2 0.3.37 says so; before, it indexes an empty list (IndexError).
    monkeypatch.setattr(picamera, "_make_camera", lambda n: FakePicamera2(n, missing=True, version=version))
    with pytest.raises(CameraError) as caught:
        PiCameraSource(settings())
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_a_busy_camera_says_busy_though_picamera2_hides_it_in_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(picamera, "_make_camera", lambda n: FakePicamera2(n, busy=True))
    with pytest.raises(CameraError) as caught:
        PiCameraSource(settings())
    assert str(caught.value) == (
        "camera.source: cannot open the Pi camera: Camera __init__ sequence did not complete. "
        "(Failed to acquire camera: Device or resource busy); is another program using the camera?"
    )


@pytest.mark.parametrize("installed", ["0.3.19", None])
def test_picamera2_before_0_3_20_is_refused_in_one_line(
    fake: Callable[..., FakePicamera2], monkeypatch: pytest.MonkeyPatch, installed: str | None
) -> None:
    # 0.3.19 has no cancel_all_and_flush() and a numeric wait blocks for ever: a dead camera could not be stopped.
    camera = fake(version=(0, 3, 19))
    monkeypatch.setattr(picamera, "_installed_version", lambda: installed)
    with pytest.raises(CameraError) as caught:
        PiCameraSource(settings())
    message = str(caught.value)
    assert message.startswith(f"camera.source: picamera2 {installed or '(version unknown)'} is too old")
    assert "0.3.20" in message
    assert "sudo apt install python3-picamera2" in message
    assert "\n" not in message
    assert not camera.is_open
    assert "capture_request" not in camera.calls
    assert camera.hangs == []


def test_a_still_size_is_set_whole_no_smaller_than_detection_and_the_timeout_spans_frames() -> None:
    with pytest.raises(ValidationError, match="camera.still_width is set and camera.still_height is not: set both"):
        CameraSettings(source="picamera2", still_width=2028)
    assert CameraSettings(source="picamera2").still_width is None
    # picamera2 itself would refuse it at start, in words that name neither setting (picamera2.py:1006-1012).
    with pytest.raises(ValidationError, match="256x192 is smaller than camera.detect_width/detect_height 320x240"):
        CameraSettings(source="picamera2", still_width=256, still_height=192)
    with pytest.raises(ValidationError, match="frame_timeout = 5 s is shorter than two frames at camera.fps = 0.125"):
        CameraSettings(source="picamera2", fps=0.125)


# The configuration -------------------------------------------------------------------------------------------------


def test_configured_once_with_yuv420_main_lores_and_the_sensor_mode_of_the_still(
    fake: Callable[..., FakePicamera2],
) -> None:
    camera = fake()
    source = PiCameraSource(settings(fps=12.5))
    (config,) = camera.configurations
    assert config["main"]["size"] == (640, 480)
    assert config["main"]["format"] == "YUV420"
    assert config["lores"]["size"] == (320, 240)
    assert config["lores"]["format"] == "YUV420"
    assert config["buffer_count"] == 3
    assert config["controls"]["FrameDurationLimits"] == (80_000, 80_000)
    # The HQ camera's smallest mode that sees the whole sensor and has a 640x480 still's pixels: 2028x1520, not
    # the cropped 1332x990 that picamera2 would pick on its own.
    assert camera.camera_configuration()["sensor"] == {"bit_depth": 12, "output_size": (2028, 1520)}
    assert config["raw"]["size"] == (2028, 1520)
    assert camera.started
    assert source.fps == 12.5
    assert "sensor_modes" not in camera.calls  # it configures the camera once per mode
    source.close()


@pytest.mark.parametrize(
    ("sensor", "still", "mode"),
    [
        ("imx477", (2028, 1520), (2028, 1520)),
        ("imx708", (2304, 1296), (2304, 1296)),
        ("imx219", (1640, 1232), (1640, 1232)),
    ],
)
def test_the_default_configuration_fits_a_zero_2_w(
    fake: Callable[..., FakePicamera2],
    sensor: str,
    still: tuple[int, int],
    mode: tuple[int, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = fake(sensor=sensor, cma=ZERO_2W_CMA)
    with caplog.at_level(logging.INFO, logger="edgecam.sources.picamera"):
        source = PiCameraSource(board_settings())
    frame = next(iter(source.frames()))
    assert frame.gray.shape == (240, 320)
    assert source.still().shape == (still[1] * 3 // 2, still[0])
    config = camera.camera_configuration()
    assert config["main"]["size"] == still
    assert config["sensor"]["output_size"] == mode
    # The board's 64 MB hold the camera's buffers and what else it keeps in CMA, with room to spare.
    assert camera.cma_used + CMA_IN_USE <= ZERO_2W_CMA - 8 * MB
    started = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Pi camera running"))
    assert f"stills {still[0]}x{still[1]} YUV420" in started
    assert "chosen for this board" in started
    assert f"sensor mode {mode[0]}x{mode[1]}" in started
    assert "3 buffers" in started
    assert "CMA 64 MiB" in started
    source.close()


def test_the_old_rgb888_preview_configuration_does_not_fit_a_zero_2_w() -> None:
    # What edgecam asked before: RGB888 main at 2028x1520, 4 buffers, picamera2's default raw stream: ~56 MB.
    camera = FakePicamera2(cma_bytes=ZERO_2W_CMA)
    old = camera.create_preview_configuration(
        main={"size": (2028, 1520), "format": "RGB888"}, lores={"size": (320, 240), "format": "YUV420"}
    )
    assert old["raw"] is not None  # picamera2 adds a raw stream unless told raw=None
    with pytest.raises(OSError, match="Cannot allocate memory") as caught:
        camera.configure(old)
    assert caught.value.errno == errno.ENOMEM
    roomy = FakePicamera2(cma_bytes=256 * MB)
    roomy.configure(old)
    assert 56e6 < roomy.stream_bytes < 57e6  # 4 x (9.3 MB main + 4.7 MB raw + 0.1 MB lores)


@pytest.mark.parametrize(
    ("sensor", "mode"), [("imx477", (2028, 1520)), ("imx708", (2304, 1296)), ("imx219", (1640, 1232))]
)
def test_the_old_default_still_size_still_starts_on_a_zero_2_w(
    fake: Callable[..., FakePicamera2], sensor: str, mode: tuple[int, int]
) -> None:
    # 2028x1520 set by the user: on the Camera Module 3 and the v2 the mode with all the still's pixels does not
    # fit 64 MB (4608x2592: 59 MB), so the largest mode with the whole view that fits is scaled up.
    camera = fake(sensor=sensor, cma=ZERO_2W_CMA)
    source = PiCameraSource(settings(still_width=2028, still_height=1520))
    next(iter(source.frames()))
    assert source.still().shape == (1520 * 3 // 2, 2028)
    assert camera.camera_configuration()["sensor"]["output_size"] == mode
    source.close()


def test_the_camera_module_3_reads_its_whole_sensor(fake: Callable[..., FakePicamera2]) -> None:
    # On its own, picamera2 gives a 1280x720 still the cropped 1536x864 mode (the centre 3072x1728 of 4608x2592).
    alone = FakePicamera2(sensor="imx708")
    alone.configure(alone.create_preview_configuration(main={"size": (1280, 720)}))
    assert alone.camera_configuration()["sensor"]["output_size"] == (1536, 864)
    crops = {m.size: m.crop for m in SENSORS["imx708"]}
    for still in [(1280, 720), None]:
        camera = fake(sensor="imx708", cma=ZERO_2W_CMA)
        size = {"still_width": still[0], "still_height": still[1]} if still else {}
        source = PiCameraSource(board_settings(**size))
        mode = camera.camera_configuration()["sensor"]["output_size"]
        assert crops[mode] == (0, 0, 4608, 2592)
        assert camera.camera_configuration()["main"]["size"] == (still or (2304, 1296))
        source.close()


def test_picamera2s_sensor_modes_would_run_a_zero_2_w_out_of_memory() -> None:
    # Why the source reads _raw_modes: sensor_modes configures the camera once per mode (raspberrypi/picamera2#1358).
    with pytest.raises(OSError, match="Cannot allocate memory"):
        FakePicamera2(cma_bytes=ZERO_2W_CMA).sensor_modes  # noqa: B018


def test_out_of_camera_memory_names_the_settings_to_change(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(cma=ZERO_2W_CMA)
    with pytest.raises(CameraError) as caught:
        PiCameraSource(settings(still_width=4056, still_height=3040))
    message = str(caught.value)
    assert message.startswith("camera.source: cannot start the Pi camera: [Errno 12] Cannot allocate memory")
    assert "stills of 4056x3040" in message
    assert "CMA 64 MiB" in message
    assert "camera.still_width/still_height" in message
    assert "\n" not in message
    assert not camera.is_open


def test_without_cmatotal_the_smallest_board_is_assumed(fake: Callable[..., FakePicamera2]) -> None:
    sizes = []
    for cma in (None, 64 * MB, 40 * MB):
        camera = fake(sensor="imx477", cma=cma)
        source = PiCameraSource(board_settings())
        sizes.append(camera.camera_configuration()["main"]["size"])
        source.close()
    assert sizes[0] == sizes[1] == (2028, 1520), "no CmaTotal: planned as 64 MB"
    assert sizes[2][0] < 2028, "a board with less gets a smaller still"


def test_a_chosen_still_comes_from_a_binned_mode_that_keeps_the_frame_rate(
    fake: Callable[..., FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    # The v2's full mode (3280x2464) would give a 2028x1520 still on 256 MB, at 21 fps at most.
    camera = fake(sensor="imx219", cma=256 * MB)
    source = PiCameraSource(board_settings(fps=25.0))
    config = camera.camera_configuration()
    assert (config["main"]["size"], config["sensor"]["output_size"]) == ((1640, 1232), (1640, 1232))
    next(iter(source.frames()))
    source.close()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_sensor_mode_slower_than_camera_fps_is_said_in_one_line(
    fake: Callable[..., FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    fake(sensor="imx477", cma=256 * MB)
    source = PiCameraSource(board_settings(still_width=4056, still_height=3040, fps=15.0))
    next(iter(source.frames()))
    source.close()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("Pi camera: 10 fps, not camera.fps = 15: the sensor mode 4056x3040 is no faster")


def test_a_still_larger_than_the_sensor_is_said_to_be_scaled_up(
    fake: Callable[..., FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    fake(sensor="imx219", cma=256 * MB)
    source = PiCameraSource(board_settings(still_width=4056, still_height=3040))
    source.close()
    assert any("are scaled up from the sensor mode 3280x2464" in r.getMessage() for r in caplog.records)


def test_a_configuration_the_camera_refuses_closes_it_and_is_a_camera_error(
    fake: Callable[..., FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = fake()

    def refuse(config: object = None) -> None:
        raise RuntimeError("Failed to configure camera: Invalid argument")  # libcamera's, py_main.cpp

    monkeypatch.setattr(camera, "configure", refuse)
    with pytest.raises(CameraError, match="cannot start the Pi camera: Failed to configure camera: Invalid argument"):
        PiCameraSource(settings())
    assert not camera.is_open


# Frames and stills -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(320, 240), (200, 150), (201, 151)])
def test_frames_are_the_lores_y_plane_at_detection_size(
    fake: Callable[..., FakePicamera2], width: int, height: int
) -> None:
    # 200 wide pads each lores row to a 256-byte stride; 201 x 151 is odd, which picamera2 refuses.
    fake()
    source = PiCameraSource(settings(detect_width=width, detect_height=height))
    for frame in itertools.islice(source.frames(), 3):
        assert frame.gray.shape == (height, width)
        assert frame.gray.dtype == np.uint8
        assert frame.gray.flags.c_contiguous
        y_plane = source.still()[:480]  # full-range Y is the grey level
        expected = cv2.resize(y_plane, (width, height), interpolation=cv2.INTER_AREA)
        assert np.abs(frame.gray.astype(int) - expected).mean() < 3
    source.close()


def test_frames_carry_the_camera_metadata_and_monotonic_time(fake: Callable[..., FakePicamera2]) -> None:
    fake()
    source = PiCameraSource(settings())
    frames = list(itertools.islice(source.frames(), 3))
    for key in ("ExposureTime", "AnalogueGain", "Lux", "ColourGains", "SensorTimestamp"):
        assert key in frames[0].metadata
    assert [f.index for f in frames] == [0, 1, 2]
    assert 0.0 <= frames[0].t <= frames[1].t <= frames[2].t
    source.close()


@pytest.mark.parametrize(("width", "height"), [(640, 480), (600, 450), (2028, 1520)])
def test_still_is_the_main_stream_as_i420_without_padding_or_a_mode_switch(
    fake: Callable[..., FakePicamera2], width: int, height: int
) -> None:
    # 600 and 2028 wide rows are padded to strides of 640 and 2048 bytes; the still has none of it.
    camera = fake(sim=SimulatedSettings(seed=5))
    source = PiCameraSource(settings(still_width=width, still_height=height))
    scene = SceneRenderer(SimulatedSettings(seed=5, fps=10), width, height)
    for frame in itertools.islice(source.frames(), 3):
        still = source.still()
        assert still.shape == (height * 3 // 2, width)
        assert still.dtype == np.uint8
        assert still.flags.c_contiguous
        index = camera.requests[frame.index].index
        bgr = scene.render(index)[0]
        assert np.array_equal(still, scene_i420(bgr))
        assert np.abs(still_bgr(still).astype(int) - bgr).mean() < 4
    source.close()
    assert camera.calls.count("configure") == 1
    assert camera.calls.count("start") == 1
    assert not any(call.startswith("create_still") for call in camera.calls)
    assert camera.calls[-3:] == ["cancel_all_and_flush", "stop", "close"]


def test_every_request_is_released_and_at_most_one_is_held(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake()
    source = PiCameraSource(settings())
    for _ in itertools.islice(source.frames(), 20):
        source.still()
        assert sum(not r.released for r in camera.requests) <= 1
    source.close()
    assert len(camera.requests) == 20
    assert all(r.released for r in camera.requests)


def test_still_before_any_frame_is_a_camera_error(fake: Callable[..., FakePicamera2]) -> None:
    fake()
    source = PiCameraSource(settings())
    with pytest.raises(CameraError, match="no frame"):
        source.still()
    source.close()


def test_a_buffer_that_cannot_be_synced_is_a_one_line_camera_error(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(sync_fails_at=2)
    source = PiCameraSource(settings())
    frames = source.frames()
    assert len(list(itertools.islice(frames, 2))) == 2
    with pytest.raises(CameraError) as caught:
        next(frames)
    assert str(caught.value) == "camera.source: cannot read a Pi camera frame: [Errno 22] Invalid argument"
    assert isinstance(caught.value.__cause__, OSError)
    source.close()
    assert all(r.released for r in camera.requests)


# A busy frame loop -------------------------------------------------------------------------------------------------


def test_a_busy_caller_gets_the_newest_frame_and_the_sensor_never_waits(fake: Callable[..., FakePicamera2]) -> None:
    clock = FakeClock()
    camera = fake(clock=clock, sleep=clock.sleep)
    source = PiCameraSource(settings())
    frames = source.frames()
    quick = list(itertools.islice(frames, 5))
    period = int(quick[0].metadata["FrameDuration"]) * 1000
    assert np.diff(timestamps(quick)).tolist() == [period] * 4
    busy = []
    for frame in itertools.islice(frames, 4):
        busy.append(frame)
        clock.sleep(0.35)  # 3.5 frames of work with the frame held, as when a still is grabbed
    # Each capture after the busy spell returns the newest frame, 3 or 4 frames on; those between were recycled.
    steps = [round(d / period) for d in np.diff(timestamps([quick[-1], *busy]))]
    assert steps[0] == 1
    assert all(step in (3, 4) for step in steps[1:])
    assert camera.dropped == sum(step - 1 for step in steps)
    assert camera.lost == 0  # three buffers: the sensor always had one to fill
    source.close()


def test_with_two_buffers_a_busy_caller_makes_the_sensor_lose_frames() -> None:
    # Why three buffers: with two, the held frame and the one picamera2 keeps leave the sensor none.
    clock = FakeClock()
    for buffers, lost in ((2, True), (3, False)):
        camera = FakePicamera2(clock=clock, sleep=clock.sleep)
        camera.configure(camera.create_preview_configuration(main={"size": (640, 480)}, buffer_count=buffers))
        camera.start()
        held = camera.capture_request()
        held_at = held.get_metadata()["SensorTimestamp"]
        clock.sleep(0.55)
        held.release()
        newest = camera.capture_request()
        assert (camera.lost > 0) is lost
        # With two, the frame returned is the one picamera2 kept 0.45 s ago; with three, the newest.
        assert (newest.get_metadata()["SensorTimestamp"] - held_at < 0.3e9) is lost
        newest.release()
        camera.close()


def test_detection_keeps_its_frame_rate_while_stills_are_encoded_slowly(fake: Callable[..., FakePicamera2]) -> None:
    # Real time: every frame's still is copied in the loop and handed to a worker that takes 0.25 s to encode it.
    camera = fake(realtime=True)
    source = PiCameraSource(settings(still_width=2028, still_height=1520))
    shots: queue.Queue[NDArray[np.uint8] | None] = queue.Queue(maxsize=1)
    encoded = []

    def encoder() -> None:
        while (shot := shots.get()) is not None:
            time.sleep(0.25)
            encoded.append(shot.shape)

    worker = threading.Thread(target=encoder)
    worker.start()
    try:
        frames = []
        for frame in itertools.islice(source.frames(), 21):
            frames.append(frame)
            if not shots.full():
                shots.put(source.still())
    finally:
        shots.put(None)
        worker.join(5)
        source.close()
    gaps = np.diff(timestamps(frames)) / (int(frames[0].metadata["FrameDuration"]) * 1000)
    assert gaps.mean() < 1.1  # 20 frame periods for 20 frames
    assert camera.lost == 0
    assert encoded  # the worker was busy meanwhile


# Failure and closing -----------------------------------------------------------------------------------------------


def test_a_camera_that_stops_delivering_is_a_camera_error(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(fail_after=3)
    source = PiCameraSource(settings(frame_timeout=2.0))
    frames = source.frames()
    assert len(list(itertools.islice(frames, 3))) == 3
    with pytest.raises(CameraError, match=r"no frame for 2 s \(camera.frame_timeout\)") as caught:
        next(frames)
    assert isinstance(caught.value.__cause__, concurrent.futures.TimeoutError)
    source.close()
    assert all(r.released for r in camera.requests)


def test_after_a_frame_timeout_close_cancels_the_capture_then_stops_within_seconds(
    fake: Callable[..., FakePicamera2],
) -> None:
    # Real time, as on the Pi: the timed-out capture stays queued, and stop() would wait behind it for ever.
    camera = fake(realtime=True, fail_after=2, hang_limit=8.0)
    source = PiCameraSource(settings(frame_timeout=0.5))
    frames = source.frames()
    assert len(list(itertools.islice(frames, 2))) == 2
    began = time.monotonic()
    with pytest.raises(CameraError, match=r"no frame for 0.5 s"):
        next(frames)
    assert time.monotonic() - began < 1.5
    began = time.monotonic()
    source.close()
    assert time.monotonic() - began < 5.0
    calls = camera.calls
    assert calls.index("cancel_all_and_flush") < calls.index("stop") < calls.index("close")
    assert camera.hangs == []
    assert not camera.is_open


def test_close_gives_up_on_a_stop_that_hangs(
    fake: Callable[..., FakePicamera2], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(picamera, "STOP_WAIT", 0.3)
    camera = fake(realtime=True, stop_hangs=True, hang_limit=1.0)
    source = PiCameraSource(settings())
    next(iter(source.frames()))
    began = time.monotonic()
    source.close()
    assert time.monotonic() - began < 1.0
    assert "Pi camera: stop() did not return within 0.3 s; going on without it" in caplog.messages
    assert not camera.is_open  # closed all the same


def test_close_from_another_thread_ends_a_frame_loop_that_waits(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(realtime=True, fail_after=1, hang_limit=8.0)
    source = PiCameraSource(settings(frame_timeout=30.0))
    ended = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for _ in source.frames():
                pass
        except CameraError as err:
            errors.append(err)
        ended.set()

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.4)  # the loop has had its frame and waits for the next
    source.close()
    assert ended.wait(2.0)
    thread.join()
    assert errors == []
    assert camera.hangs == []


def test_close_is_idempotent_and_ends_the_frames(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake()
    source = PiCameraSource(settings())
    frames = source.frames()
    next(frames)
    source.close()
    source.close()
    assert list(frames) == []
    assert camera.calls.count("close") == 1
    assert not camera.is_open
    assert all(r.released for r in camera.requests)


# Pure functions ----------------------------------------------------------------------------------------------------


def test_i420_cuts_the_stride_padding_of_every_plane() -> None:
    width, height, stride = 6, 4, 8
    yuv = np.full((height * 3 // 2, stride), 255, np.uint8)  # 255: padding
    flat = yuv.reshape(-1)
    y = np.arange(24, dtype=np.uint8).reshape(height, width)
    u = np.arange(100, 106, dtype=np.uint8).reshape(2, 3)
    v = np.arange(200, 206, dtype=np.uint8).reshape(2, 3)
    yuv[:height, :width] = y
    flat[32:40].reshape(2, 4)[:, :3] = u
    flat[40:48].reshape(2, 4)[:, :3] = v
    out = picamera.i420(yuv, width, height)
    assert out.shape == (6, 6)
    assert out.reshape(-1).tolist() == [*y.reshape(-1).tolist(), *u.reshape(-1).tolist(), *v.reshape(-1).tolist()]


def test_cma_total_reads_proc_meminfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(picamera, "MEMINFO", meminfo)
    assert picamera.cma_total() is None  # no file
    meminfo.write_text("MemTotal:  426068 kB\nCmaTotal:          65536 kB\nCmaFree:  1 kB\n")
    assert picamera.cma_total() == 64 * MB
