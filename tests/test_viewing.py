"""Viewing conditions: the door zone's figures on synthetic frames of known light, noise and detail."""

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.config import Settings
from edgecam.models import MotionResult
from edgecam.viewing import DoorZoneView, judge

W, H = 320, 240
Polygon = list[tuple[float, float]]
DOOR: Polygon = [(0.35, 0.1), (0.65, 0.1), (0.65, 0.95), (0.35, 0.95)]
"""The door zone of these scenes: about 96 x 204 pixels at 320x240, most of it the door leaf."""
TINY: Polygon = [(0.56, 0.5), (0.61, 0.5), (0.61, 0.55), (0.56, 0.55)]
"""16 x 12 pixels round the door handle."""
QUIET = MotionResult(score=0.0, moving=False)
MOVING = MotionResult(score=0.3, moving=True)


def door_scene(level: float) -> NDArray[np.float64]:
    """A hall with a panelled door, the leaf at grey ``level``: all contrast scales with the light, as in a hall."""
    image = np.full((H, W), 0.8 * level)
    image[24:228, 112:208] = level  # the door leaf
    image[44:104, 130:190] = 0.7 * level  # its panels
    image[144:204, 130:190] = 0.7 * level
    image[120:140, 186:194] = 0.3 * level  # the handle
    image[:, 108:112] = 0.5 * level  # the frame
    image[:, 208:212] = 0.5 * level
    return image


def frames(level: float, noise: float, count: int = 2, seed: int = 0) -> list[NDArray[np.uint8]]:
    """``count`` frames of ``door_scene(level)`` with Gaussian sensor noise of ``noise`` grey levels."""
    rng = np.random.default_rng(seed)
    scene = door_scene(level)
    return [
        np.asarray(np.clip(np.rint(scene + rng.normal(0, noise, scene.shape)), 0, 255), np.uint8) for _ in range(count)
    ]


def view(zone: Polygon = DOOR, blur: int = 0, masks: Sequence[Polygon] = ()) -> DoorZoneView:
    s = Settings.model_validate({"motion": {"zone": zone, "blur": blur, "masks": list(masks)}})
    return DoorZoneView.for_settings(s)


def codes(
    gray: NDArray[np.uint8], previous: NDArray[np.uint8] | None, zone_view: DoorZoneView | None = None
) -> set[str]:
    viewing = (zone_view or view()).assess(gray, previous)
    return {w.code for w in judge(viewing, threshold=25)}


def test_a_lit_clean_door_gives_its_figures_and_no_warning() -> None:
    previous, gray = frames(200, 1.0)
    viewing = view().assess(gray, previous)
    assert abs(viewing.pixels - 96 * 204) < 500
    assert viewing.share == pytest.approx(viewing.pixels / (W * H))
    assert viewing.brightness == pytest.approx(200, abs=2)
    assert viewing.noise is not None
    assert viewing.noise < 0.6, "1 grey level of noise, half of it at the detector's half size"
    assert viewing.detail is not None
    assert viewing.detail > 2
    assert viewing.clipped == 0
    assert judge(viewing, threshold=25) == []


def test_the_noise_is_measured_as_the_detector_sees_it_after_its_blur() -> None:
    previous, gray = frames(120, 6.0)
    raw = view(blur=0).assess(gray, previous).noise
    blurred = view(blur=1).assess(gray, previous).noise
    assert raw == pytest.approx(3.0, rel=0.1), "the detector's half size, a mean of 2x2, halves white noise"
    assert blurred == pytest.approx(1.0, rel=0.15), "a 3x3 box blur on top divides it by 3"


def test_the_detail_does_not_count_the_noise() -> None:
    previous, gray = frames(120, 0.5)
    clean = view().assess(gray, previous)
    previous, gray = frames(120, 8.0)
    noisy = view().assess(gray, previous)
    assert clean.detail is not None
    assert noisy.detail == pytest.approx(clean.detail, rel=0.2)


def test_a_dark_hall_is_too_dark_for_the_threshold() -> None:
    previous, gray = frames(24, 3.0)  # a door that changes a pixel by about 19 grey levels: under 25
    viewing = view().assess(gray, previous)
    warnings = judge(viewing, threshold=25)
    assert [w.code for w in warnings] == ["too_dark"]
    assert "motion.threshold" in warnings[0].message
    assert "light" in warnings[0].message
    assert judge(viewing, threshold=12) == [], "with a threshold the door's change passes, not too dark"


def test_black_frames_are_too_dark_and_nothing_else() -> None:
    black = np.zeros((H, W), np.uint8)
    (warning,) = judge(view().assess(black, black), threshold=25)
    assert warning.code == "too_dark"
    assert "add light or an infrared lamp" in warning.message
    assert "motion.threshold" not in warning.message, "no threshold sees a door in a black picture"


def test_a_picture_whose_noise_reaches_the_threshold_is_too_noisy() -> None:
    previous, gray = frames(120, 30.0)
    warnings = judge(view().assess(gray, previous), threshold=25)
    assert [w.code for w in warnings] == ["too_noisy"]
    assert "motion.blur" in warnings[0].message
    assert "motion.threshold" in warnings[0].message


def test_a_dark_picture_with_the_door_lost_in_the_noise_is_too_dark_and_too_noisy() -> None:
    previous, gray = frames(20, 14.0)  # 7 at half size: 4 times it passes the door's change of about 16
    warnings = judge(view().assess(gray, previous), threshold=25)
    assert [w.code for w in warnings] == ["too_dark", "too_noisy"]
    assert "light" in warnings[1].message
    assert codes(gray, previous, view(blur=3)) == {"too_dark"}, "a wider blur takes the noise under the change"


def test_a_zone_too_small_for_the_detection_size() -> None:
    previous, gray = frames(200, 1.0)
    viewing = view(TINY).assess(gray, previous)
    assert viewing.pixels < 300
    warnings = judge(viewing, threshold=25)
    assert [w.code for w in warnings] == ["zone_too_small"]
    assert "motion.zone" in warnings[0].message
    assert codes(gray, previous) == set()


def test_masks_take_their_pixels_out_of_the_zone() -> None:
    mask = [(0.3, 0.05), (0.7, 0.05), (0.7, 0.93), (0.3, 0.93)]  # all of the door zone but its bottom rows
    previous, gray = frames(200, 1.0)
    assert "zone_too_small" in codes(gray, previous, view(masks=[mask]))


def test_a_clipped_flat_zone_is_overexposed_and_featureless() -> None:
    sky = np.full((H, W), 255, np.uint8)
    warnings = judge(view().assess(sky, sky), threshold=25)
    assert {w.code for w in warnings} == {"zone_overexposed", "zone_featureless"}
    overexposed = next(w for w in warnings if w.code == "zone_overexposed")
    assert "motion.masks" in overexposed.message


def test_a_plain_wall_is_featureless() -> None:
    rng = np.random.default_rng(1)
    wall = [np.asarray(np.clip(np.rint(140 + rng.normal(0, 2, (H, W))), 0, 255), np.uint8) for _ in range(2)]
    warnings = judge(view().assess(wall[1], wall[0]), threshold=25)
    assert [w.code for w in warnings] == ["zone_featureless"]
    assert "motion.zone" in warnings[0].message


def test_a_door_reference_without_noise_is_judged_on_its_light_and_detail() -> None:
    (reference,) = frames(20, 0.0, count=1)
    viewing = view().assess(reference)
    assert viewing.noise is None
    assert [w.code for w in judge(viewing, threshold=25)] == ["too_dark"]
