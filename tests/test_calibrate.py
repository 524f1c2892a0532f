import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from numpy.typing import NDArray

from edgecam.calibrate import Calibration, calibrate
from edgecam.cli import main
from edgecam.config import DoorSettings, Settings
from edgecam.contact import open_contact
from edgecam.door_reference import load_reference
from edgecam.errors import CameraError, EdgecamError
from edgecam.models import Frame
from edgecam.sources import open_source
from edgecam.sources.simulated import DOOR_ZONE
from edgecam.zones import polygon_mask
from tests.fake_pi import install_fake_picamera

MASK = [(0.0, 0.0), (0.2, 0.0), (0.2, 0.3), (0.0, 0.3)]


def settings(tmp_path: Path, **simulated: object) -> Settings:
    return Settings.model_validate(
        {
            "device_id": "cal",
            "storage": {"dir": str(tmp_path / "state")},
            "camera": {"source": "simulated", "simulated": {"first_opening": 20.0, **simulated}},
            "motion": {"zone": DOOR_ZONE, "masks": [MASK]},
        }
    )


def run(s: Settings, **kwargs: object) -> Path:
    source = open_source(s.camera, realtime=False)
    try:
        calibrate(s, source, s.door_reference_path, **kwargs)  # type: ignore[arg-type]
    finally:
        source.close()
    return s.door_reference_path


def test_a_quiet_scene_gives_a_reference_and_a_picture_with_the_masks_burned_in(tmp_path: Path) -> None:
    s = settings(tmp_path)
    path = run(s)
    reference = load_reference(path)
    assert reference.gray.shape == (240, 320)
    assert reference.frames == 31  # door.calibrate_seconds at 10 fps, both ends counted
    assert not reference.gray[polygon_mask([MASK], 320, 240)].any()
    picture = cv2.imread(str(path.with_suffix(".png")))
    assert picture is not None
    assert picture.shape == (480, 640, 3)
    inner = cv2.erode(polygon_mask([MASK], 640, 480).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert len(np.unique(picture[inner], axis=0)) == 1, "the mask is one flat colour: nothing of the scene shows"


def test_a_door_moving_meanwhile_writes_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path, first_opening=4.0)  # learning from 2 s (after motion.calibration) to 5 s
    with pytest.raises(EdgecamError, match=r"^calibrate: something moved in the door zone .* at t=4\.\d s; keep"):
        run(s)
    assert not s.storage.dir.exists()


def test_a_light_switched_meanwhile_writes_nothing(tmp_path: Path) -> None:
    # The hall light comes on with the door at 4 s +- 0.3 s: the change of light is seen first.
    s = settings(tmp_path, light_with_door=True, first_opening=4.0, lamp=0.6)
    with pytest.raises(EdgecamError, match=r"^calibrate: the light changed"):
        run(s)
    assert not s.door_reference_path.exists()


def test_the_door_contact_saying_open_writes_nothing(tmp_path: Path) -> None:
    factory = MockFactory()
    try:
        contact = open_contact(DoorSettings(contact_pin=17), factory)
        factory.pin(17).drive_high()  # a switch to ground with the pull-up: high is open
        s = settings(tmp_path)
        with pytest.raises(EdgecamError, match=r"^calibrate: the door contact says the door is open"):
            run(s, contact=contact)
        assert not s.door_reference_path.exists()
    finally:
        factory.close()


class Dark:
    """A camera in a dark hall: black frames."""

    fps = 10.0

    def frames(self) -> Iterator[Frame]:
        for i in range(100):
            yield Frame(i, i / self.fps, np.zeros((240, 320), np.uint8))

    def still(self) -> NDArray[np.uint8]:
        return np.zeros((480, 640, 3), np.uint8)

    def close(self) -> None:
        pass


def test_a_dark_scene_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(EdgecamError, match=r"^door\.reference: the door zone in it shows too little detail"):
        calibrate(s, Dark(), s.door_reference_path)
    assert not s.door_reference_path.exists()


def test_a_clip_too_short_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path, duration=4.0)
    with pytest.raises(CameraError, match=r"^calibrate: the camera's frames ended before 3 s of quiet scene"):
        run(s)


def test_the_command_says_where_it_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("EDGECAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EDGECAM_CAMERA__SIMULATED__FIRST_OPENING", "30")
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    out = tmp_path / "ref.npz"
    assert main(["calibrate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"saved {out}" in printed
    assert str(out.with_suffix(".png")) in printed
    assert load_reference(out).frames > 0


def learn(s: Settings) -> Calibration:
    """Calibrate from the settings' simulated camera, as ``edgecam calibrate`` does."""
    source = open_source(s.camera, realtime=False)
    try:
        return calibrate(s, source, s.door_reference_path)
    finally:
        source.close()


DARK_HALL = {"noise": 0.0, "light_level": 0.01, "sensor_gain": 12.0, "shot_noise": 4.0, "read_noise": 0.8}
"""The benchmark's dark-gain12 scene: an eighth of the light at gain 12; the door's change about 20 grey levels."""


def test_a_dark_hall_is_learnt_with_a_warning_that_says_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, **DARK_HALL)
    # door.confirm off: the detector keeps the fixed motion.threshold, which this door's change stays under.
    s = s.model_copy(update={"door": s.door.model_copy(update={"confirm": False})})
    done = learn(s)
    assert [w.code for w in done.warnings] == ["too_dark"]
    assert load_reference(s.door_reference_path).frames > 0, "still learnt: the warning does not refuse"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert warned[0].startswith("calibrate: the door zone is too dark")
    assert "add light or an infrared lamp" in warned[0]


def test_a_lit_hall_is_learnt_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path)
    done = learn(s)
    assert done.warnings == ()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_dark_hall_needs_no_warning_where_the_door_confirms_motion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, **DARK_HALL)  # door.confirm: the reference made here scales the threshold with the light
    done = learn(s)
    assert done.warnings == ()


def test_calibrate_on_a_pi_camera_that_stops_giving_frames_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    camera = install_fake_picamera(monkeypatch, tmp_path)(realtime=True, fail_after=5, hang_limit=30.0)
    config = tmp_path / "edgecam.toml"
    config.write_text(f'[camera]\nsource = "picamera2"\nframe_timeout = 1.0\n[storage]\ndir = "{tmp_path / "state"}"\n')
    began = time.monotonic()
    assert main(["calibrate", "--config", str(config)]) == 1
    assert time.monotonic() - began < 6.0, "the timed-out capture is cancelled, so the camera stops"
    assert capsys.readouterr().err.splitlines() == [
        "edgecam: camera.source: the Pi camera gave no frame for 1 s (camera.frame_timeout); is the ribbon cable "
        "seated?"
    ]
    assert camera.hangs == []
    assert not camera.is_open
    assert not (tmp_path / "state" / "door-reference.npz").exists()
