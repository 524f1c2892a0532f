import sys

import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.errors import CameraError
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.simulated import SceneRenderer

W, H = 640, 480
QUIET = {"first_opening": 3600.0, "door_period": 3600.0}  # the door stays shut


def frames(sim: SimulatedSettings, indexes: range) -> list[NDArray[np.float64]]:
    renderer = SceneRenderer(sim, W, H)
    return [renderer.render(i)[0].astype(np.float64) for i in indexes]


def frozen_macroblocks(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """The share of the 16 x 16 macroblocks in which not one pixel changed from frame ``a`` to frame ``b``."""
    change = np.abs(b - a).max(axis=2)
    return float((change.reshape(H // 16, 16, W // 16, 16).max(axis=(1, 3)) == 0).mean())


def test_h264_keeps_the_scene_but_smears_and_freezes_the_noise_in_blocks() -> None:
    noisy = {"noise": 0.0, "light_level": 0.0417, "sensor_gain": 8.0, "shot_noise": 4.0, "read_noise": 0.8}
    raw = frames(SimulatedSettings(**noisy), range(21, 30))
    decoded = frames(SimulatedSettings(**noisy, h264_bitrate=300, h264_gop=10), range(21, 30))
    wall = np.s_[100:200, 20:200]
    for before, after in zip(raw, decoded, strict=True):
        assert 1.0 < np.abs(after - before).mean() < 12.0  # not the same pixels, but the same scene
        assert np.abs(after.mean() - before.mean()) < 2.0
        assert after[wall].std() < 0.8 * before[wall].std()  # the noise on the wall smoothed away
    # The sensor's noise changes every pixel of every frame; the predicted frames copy whole macroblocks instead.
    assert max(frozen_macroblocks(a, b) for a, b in zip(raw, raw[1:], strict=False)) == 0.0
    frozen = [frozen_macroblocks(a, b) for a, b in zip(decoded, decoded[1:], strict=False)]
    assert float(np.mean(frozen)) > 0.2


def test_h264_pulses_at_every_i_frame() -> None:
    sim = SimulatedSettings(**QUIET, shot_noise=4.0, read_noise=1.0, h264_bitrate=250, h264_gop=10)
    decoded = frames(sim, range(40))
    steps = [float(np.abs(b - a).mean()) for a, b in zip(decoded, decoded[1:], strict=False)]
    # steps[i] is the change from frame i to i + 1: frames 10, 20 and 30 start a group of pictures.
    at_i_frames = [steps[i - 1] for i in (10, 20, 30)]
    others = [s for i, s in enumerate(steps) if i + 1 not in (10, 20, 30)]
    assert min(at_i_frames) > 1.5 * float(np.median(others))


def test_h264_frames_are_deterministic_in_any_order() -> None:
    sim = SimulatedSettings(h264_bitrate=400, h264_gop=8)
    forwards = frames(sim, range(20))
    renderer = SceneRenderer(sim, W, H)
    for index in (17, 3, 12, 0, 19):
        assert np.array_equal(renderer.render(index)[0], forwards[index]), index


def test_h264_without_pyav_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails as where PyAV is not installed
    with pytest.raises(CameraError, match=r"camera\.simulated\.h264_bitrate .*PyAV") as caught:
        SceneRenderer(SimulatedSettings(h264_bitrate=300), W, H)
    assert "\n" not in str(caught.value)
