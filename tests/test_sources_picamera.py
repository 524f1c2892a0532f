import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgecam.config import CameraSettings, SimulatedSettings
from edgecam.errors import CameraError
from edgecam.sources import picamera
from edgecam.sources.picamera import PiCameraSource
from edgecam.sources.picamera_fake import FakePicamera2
from edgecam.sources.simulated import SceneRenderer

BASE = {"fps": 10, "still_width": 640, "still_height": 480, "detect_width": 320, "detect_height": 240}


def settings(**overrides: Any) -> CameraSettings:
    return CameraSettings(source="picamera2", **{**BASE, **overrides})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePicamera2]:
    """Install a fake Picamera2 behind the adapter's factory; call it to set the fake's options."""
    made: list[FakePicamera2] = []

    def install(**options: Any) -> FakePicamera2:
        camera = FakePicamera2(**options)
        made.append(camera)
        return camera

    def make_camera(camera_num: int) -> FakePicamera2:
        return made[-1] if made else install()

    monkeypatch.setattr(picamera, "_make_camera", make_camera)
    return install


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


def test_a_camera_that_will_not_open_is_a_one_line_camera_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_camera(camera_num: int) -> Any:
        raise RuntimeError('No camera number 0 found - use "rpicam-hello --list-cameras"\nmore detail')

    monkeypatch.setattr(picamera, "_make_camera", no_camera)
    with pytest.raises(CameraError) as caught:
        PiCameraSource(settings())
    assert str(caught.value).startswith("camera.source: cannot open the Pi camera: No camera number 0 found")
    assert "\n" not in str(caught.value)


def test_configured_once_with_main_at_still_size_and_lores_yuv_at_detect_size(
    fake: Callable[..., FakePicamera2],
) -> None:
    camera = fake()
    source = PiCameraSource(settings(fps=12.5))
    (config,) = camera.configurations
    assert config["main"]["size"] == (640, 480)
    assert config["main"]["format"] == "RGB888"
    assert config["lores"]["size"] == (320, 240)
    assert config["lores"]["format"] == "YUV420"
    assert config["controls"]["FrameDurationLimits"] == (80_000, 80_000)
    assert camera.started
    assert source.fps == 12.5
    source.close()


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
        expected = cv2.resize(
            cv2.cvtColor(source.still(), cv2.COLOR_BGR2GRAY), (width, height), interpolation=cv2.INTER_AREA
        )
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


def test_still_is_the_main_stream_in_bgr_without_a_mode_switch(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(sim=SimulatedSettings(seed=5))
    source = PiCameraSource(settings())
    scene = SceneRenderer(SimulatedSettings(seed=5, fps=10), 640, 480)
    for frame in itertools.islice(source.frames(), 4):
        still = source.still()
        assert still.shape == (480, 640, 3)
        assert np.array_equal(still, scene.render(frame.index)[0])
    source.close()
    assert camera.calls.count("configure") == 1
    assert camera.calls.count("start") == 1
    assert not any(call.startswith("create_still") for call in camera.calls)
    assert camera.calls[-2:] == ["stop", "close"]


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


def test_a_camera_that_stops_delivering_is_a_camera_error(fake: Callable[..., FakePicamera2]) -> None:
    camera = fake(fail_after=3)
    source = PiCameraSource(settings(frame_timeout=2.0))
    frames = source.frames()
    assert len(list(itertools.islice(frames, 3))) == 3
    with pytest.raises(CameraError, match=r"no frame for 2 s \(camera.frame_timeout\)"):
        next(frames)
    source.close()
    assert all(r.released for r in camera.requests)


def test_a_configuration_the_camera_refuses_closes_it_and_is_a_camera_error(
    fake: Callable[..., FakePicamera2],
) -> None:
    camera = fake()
    with pytest.raises(CameraError, match="lores stream dimensions may not exceed main stream"):
        PiCameraSource(settings(still_width=256, still_height=192))  # smaller than the detection size
    assert not camera.is_open
