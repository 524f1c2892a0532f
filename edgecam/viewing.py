"""Viewing conditions: whether the camera's view of the door zone is one the detector can work with.

From the grey detection frame it measures the door zone's brightness, its sensor noise as the detector sees it
(after ``motion.blur``), its detail and how much of it is clipped white, and, in the frame loop, how often the
zone moves. ``judge`` turns the figures into warnings that say what to do: the zone too dark or too noisy for
the detector, too small, white (a window, the sky), plain, or moving so often that it must hold a street or a
screen. ``scene_monitor.SceneMonitor`` does this in the frame loop. Pure numpy and OpenCV over arrays; no I/O.
"""

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import Settings
from edgecam.thresholds import LIT, MAD_TO_SIGMA, threshold_at
from edgecam.zones import Polygon, polygon_mask

logger = logging.getLogger(__name__)

WarningCode = Literal["too_dark", "too_noisy", "zone_too_small", "zone_overexposed", "zone_featureless", "zone_busy"]

MIN_ZONE_PIXELS = 1000
"""Door zone pixels (masks left out) at the detection size below which it is too small: a door 25 x 40 pixels,
whose edges moving a pixel or two change a few dozen pixels, no more than sensor noise or a shadow does."""
DOOR_CHANGE = 0.8
"""How much a door moving changes a pixel, as a fraction of the zone's median grey level: the door leaf replaced
by the darker hall behind it. In the benchmark's scenes it is 0.8 to 0.85 in every light (a lit hall: 175 grey
levels at a median of 206; dark-gain12: 20 at 25). A zone darker than ``threshold / DOOR_CHANGE`` is too dark
for ``motion.threshold``: a moving door cannot change its pixels by that much."""
DARK_FLOOR = 16.0
"""Median grey level below which the zone is too dark whatever the threshold: the door's edges differ by a few
grey levels, which quantisation, noise and compression hide (``edgecam.motion`` leaves such cells out of its
brightness estimate too)."""
NOISE_REACH = 4.0
"""Standard deviations of noise a change must stand above to be told from noise: a Gaussian passes 4 of them
once in 16 000 pixels, a pixel or two of a door zone per frame, far below ``motion.min_area``. The picture is too
noisy when 4 times its noise reaches ``motion.threshold`` (noise then changes pixels by itself) or the change a
door makes in this light (then no threshold tells the two apart)."""
FEATURELESS = 0.8
"""Detail (root-mean-square brightness step between neighbouring pixels, grey levels per pixel, noise taken out)
below which the zone is plain: in a zone drawn round a door, whose outline blurred over 3 pixels covers about a
tenth of it, the outline's edges are then under about 8 grey levels. A plain wall or the sky is near 0; the
benchmark's door 1.2 in dim light and 3.9 in full light, the real clips' zones 2.7 and 3.6."""
CLIPPED_LEVEL = 250
"""Grey level from which a pixel counts as clipped white (as ``edgecam.motion``'s BRIGHT)."""
OVEREXPOSED = 0.25
"""Share of the zone clipped white (a window, the sky, a lamp) from which it is overexposed: nothing changes
there when the door moves in front of it, and the zone's light is not the door's."""
BUSY_SHARE = 0.25
"""Share of the frames over ``BUSY_WINDOW_S`` in which the zone moved from which it is busy. A door used once a
minute moves in under a tenth of them; a street, a window onto one, trees or a screen in the zone far more."""
BUSY_WINDOW_S = 600.0
"""Seconds of frames over which ``BUSY_SHARE`` is counted."""
SAMPLES = 2000
"""About how many of the zone's pixels the medians and the detail are taken over (every n-th row and column):
the median of 2000 normal values is within 3 % of a standard deviation of the true one."""
CLEAR_MARGIN = 1.25
"""Hysteresis: a warned condition clears only once its figure is this factor on the good side of its level, so
a scene that hovers at a level does not warn and clear by turns."""


@dataclass(frozen=True)
class Viewing:
    """What the door zone shows: the figures the warnings are judged on. None where it was not measured."""

    pixels: int
    """Pixels of the door zone at the detection size, masks left out."""
    share: float
    """The zone's share of the detection frame, 0..1."""
    size: tuple[int, int]
    """Width and height of the detection frame, pixels."""
    brightness: float | None = None
    """Median grey level of the zone, 0..255."""
    noise: float | None = None
    """Standard deviation of a zone pixel from frame to frame after ``motion.blur``'s box blur, grey levels."""
    detail: float | None = None
    """Root-mean-square brightness step between neighbouring pixels after the blur, noise taken out, grey levels
    per pixel."""
    clipped: float | None = None
    """Share of the zone's pixels clipped white (at ``CLIPPED_LEVEL`` or above), 0..1."""
    moving: float | None = None
    """Share of the frames of the last ``BUSY_WINDOW_S`` in which the detector saw the zone move, 0..1."""

    def figures(self) -> str:
        """The measured figures in words, for a log line."""
        shown = [f"{self.pixels} pixels"]
        if self.brightness is not None:
            shown.append(f"median grey {self.brightness:.0f}")
        if self.noise is not None:
            shown.append(f"noise {self.noise:.2f}")
        if self.detail is not None:
            shown.append(f"detail {self.detail:.2f}")
        if self.clipped is not None:
            shown.append(f"{_percent(self.clipped)} white")
        if self.moving is not None:
            shown.append(f"moving in {_percent(self.moving)} of frames")
        return ", ".join(shown)


@dataclass(frozen=True)
class SceneWarning:
    """One thing about the scene that keeps the detector from working well, and what to do about it."""

    code: WarningCode
    """Short and stable, for ``<base>/stats``'s ``scene_warnings``."""
    message: str
    """The figures and what to change, in words."""


class DoorZoneView:
    """The door zone as the detector sees it (at half size, its pixels outside the masks, after its blur)."""

    def __init__(self, zone: Polygon, masks: Sequence[Polygon], blur: int, width: int, height: int) -> None:
        """Prepare the zone of ``width`` x ``height`` detection frames; ``blur`` is ``motion.blur``'s radius."""
        self.size = (width, height)
        self._half = (width // 2, height // 2)
        full = polygon_mask([zone], width, height) & ~polygon_mask(masks, width, height)
        counted = cv2.resize(full.astype(np.float32), self._half, interpolation=cv2.INTER_AREA) > 0.999
        self.pixels = int(np.count_nonzero(full))
        self.share = self.pixels / (width * height)
        self._kernel = 2 * blur + 1
        rows = np.flatnonzero(counted.any(axis=1))
        cols = np.flatnonzero(counted.any(axis=0))
        if counted.any():
            self._box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        else:
            self._box = (slice(0, 0), slice(0, 0))
        inside = counted[self._box]
        step = max(1, math.isqrt(int(np.count_nonzero(counted)) // SAMPLES))
        while step > 1 and not inside[::step, ::step].any():  # a sparse grid can miss a thin zone
            step -= 1
        self._step = step
        self._sampled = inside[::step, ::step]
        # Steps to the right along every step-th row, and down along every step-th column, both ends in the zone.
        self._across = inside[::step, 1:] & inside[::step, :-1]
        self._down = inside[1:, ::step] & inside[:-1, ::step]

    @classmethod
    def for_settings(cls, settings: Settings) -> "DoorZoneView":
        """The view of ``motion.zone`` less ``motion.masks`` at the detection size, after ``motion.blur``."""
        cam, motion = settings.camera, settings.motion
        return cls(motion.zone, motion.masks, motion.blur, cam.detect_width, cam.detect_height)

    def viewing(self) -> Viewing:
        """The figures known without a frame: the zone's size."""
        return Viewing(self.pixels, self.share, self.size)

    def assess(self, gray: NDArray[np.uint8], previous: NDArray[np.uint8] | None = None) -> Viewing:
        """The figures of the zone in ``gray``; with ``previous``, the frame just before it, its noise too.

        Without ``previous`` (a door reference: a mean of frames, nearly free of noise) the detail is taken as it
        is. Both are detection frames (``height`` x ``width`` uint8).
        """
        if not self._sampled.any():
            return self.viewing()
        box = self._halved(gray)
        step = self._step
        sampled = np.rint(box[::step, ::step][self._sampled]).astype(np.intp)
        histogram = np.bincount(sampled, minlength=256)
        brightness = _median(histogram)
        clipped = float(histogram[CLIPPED_LEVEL:].sum()) / sampled.size
        blurred = self._blurred(box)
        energy = self._step_energy(blurred)
        noise = None
        if previous is not None:
            difference = blurred - self._blurred(self._halved(previous))
            values = difference[::step, ::step][self._sampled]
            noise = MAD_TO_SIGMA * _middle(np.abs(values - _middle(values))) / math.sqrt(2.0)
            # A difference of two frames holds the noise of both: half its step energy is one frame's.
            energy -= self._step_energy(difference) / 2.0
        detail = math.sqrt(max(0.0, energy))
        return Viewing(self.pixels, self.share, self.size, brightness, noise, detail, clipped)

    def assess_stretch(self, frames: Sequence[NDArray[np.uint8]]) -> Viewing:
        """The figures of a quiet stretch of frames: each figure's median over the pairs of successive frames."""
        if len(frames) < 2:
            return self.assess(frames[0]) if frames else self.viewing()
        pairs = [self.assess(gray, previous) for previous, gray in zip(frames, frames[1:], strict=False)]

        def median(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return float(np.median(known)) if known else None

        return replace(
            pairs[0],
            brightness=median([p.brightness for p in pairs]),
            noise=median([p.noise for p in pairs]),
            detail=median([p.detail for p in pairs]),
            clipped=median([p.clipped for p in pairs]),
        )

    def _halved(self, gray: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The zone's box in ``gray`` at half size, as the detector compares it (``edgecam.motion``).

        In float32, where the detector rounds to whole grey levels: a median of whole levels would say little.
        """
        image = cv2.resize(gray.astype(np.float32), self._half, interpolation=cv2.INTER_AREA)
        return np.asarray(image, np.float32)[self._box]

    def _blurred(self, box: NDArray[np.float32]) -> NDArray[np.float32]:
        image = box
        if self._kernel > 1:
            image = np.asarray(cv2.blur(image, (self._kernel, self._kernel)), np.float32)
        return image

    def _step_energy(self, image: NDArray[np.float32]) -> float:
        """Mean squared step between horizontal plus vertical neighbours inside the zone, (grey levels/pixel)^2."""
        step = self._step
        across = np.diff(image[::step, :], axis=1)[self._across]
        down = np.diff(image[:, ::step], axis=0)[self._down]
        return (float(np.vdot(across, across)) / max(1, across.size)) + (float(np.vdot(down, down)) / max(1, down.size))


def _middle(values: NDArray[np.float32]) -> float:
    """The median of ``values`` (the upper one of an even count): ``np.partition``, 8x faster than ``np.median``."""
    return float(np.partition(values, values.size // 2)[values.size // 2])


def _median(histogram: NDArray[np.int64]) -> float:
    """The median of the grey levels counted in ``histogram`` (256 bins)."""
    cumulative = np.cumsum(histogram)
    return float(np.searchsorted(cumulative, (cumulative[-1] + 1) // 2))


def judge(
    viewing: Viewing, threshold: float, held: Collection[str] = (), *, relative: bool = False
) -> list[SceneWarning]:
    """The warnings ``viewing`` calls for, worst first, with ``threshold`` the detector's (``motion.threshold``).

    ``relative``: the detector scales its threshold with the light (the door confirms motion), so the threshold
    that matters is that at the zone's brightness (``edgecam.motion.threshold_at``). A code in ``held`` is
    already warned of: it holds until its figure is ``CLEAR_MARGIN`` on the good side.
    """

    def margin(code: WarningCode) -> float:
        return CLEAR_MARGIN if code in held else 1.0

    warnings: list[SceneWarning] = []
    if viewing.pixels < MIN_ZONE_PIXELS * margin("zone_too_small"):
        warnings.append(
            SceneWarning(
                "zone_too_small",
                f"motion.zone covers only {viewing.pixels} pixels ({100 * viewing.share:.2f} % of the "
                f"{viewing.size[0]}x{viewing.size[1]} detection frame, masks left out; under {MIN_ZONE_PIXELS}): "
                "a door moving in it changes too few pixels to tell from noise or a shadow; draw motion.zone round "
                "the whole door leaf and its swing, or raise camera.detect_width and detect_height",
            )
        )
    dark = False
    level = viewing.brightness
    if level is not None:
        threshold = float(threshold_at(threshold, np.array(level), relative=relative))
        name = "motion.threshold scaled to this light" if relative else "motion.threshold"
        change = DOOR_CHANGE * level
        black = level < DARK_FLOOR * margin("too_dark")
        dark = black or change < threshold * margin("too_dark")
        if dark:
            why = (
                f"under {DARK_FLOOR:g} a door's edges are lost in noise and compression; add light or an infrared lamp"
                if black
                else f"a door moving in it changes pixels by about {change:.0f} grey levels, less than "
                f"{name} ({threshold:g}); add light or an infrared lamp, or lower motion.threshold"
            )
            warnings.append(
                SceneWarning("too_dark", f"the door zone is too dark (median grey level {level:.0f} of 255): {why}")
            )
        if viewing.noise is not None:
            floor = NOISE_REACH * viewing.noise * margin("too_noisy")
            # Noise must stay under the threshold, and under the door's change where that is the smaller; where
            # the detector's threshold scales with the light, it rises with the noise, and only the door's change
            # limits.
            door_limits = relative or (level >= DARK_FLOOR and change < threshold)
            reach = change if door_limits else float(threshold)
            if floor >= reach:
                if floor >= change:
                    advice = "add light or an infrared lamp so the camera needs less gain, or raise motion.blur"
                else:
                    advice = (
                        f"raise motion.threshold to about {math.ceil(floor)} (a door changes pixels by about "
                        f"{change:.0f}) or motion.blur, or add light so the camera needs less gain"
                    )
                what = "the change a door makes in this light" if door_limits else name
                warnings.append(
                    SceneWarning(
                        "too_noisy",
                        f"the picture is too noisy: a pixel of the door zone varies by {viewing.noise:.1f} grey levels "
                        f"from frame to frame after motion.blur, and {NOISE_REACH:g} times that reaches {what} "
                        f"({reach:.0f}); {advice}",
                    )
                )
    if viewing.clipped is not None and viewing.clipped * margin("zone_overexposed") >= OVEREXPOSED:
        warnings.append(
            SceneWarning(
                "zone_overexposed",
                f"{_percent(viewing.clipped)} of the door zone is clipped white (a window, the sky or a lamp), where "
                "nothing is seen to change; put it in motion.masks or draw motion.zone round the door only",
            )
        )
    # Detail, like a door's contrast, scales with the light: where the threshold does too, so does this level.
    plain = FEATURELESS * (min(level, LIT) / LIT if relative and level is not None else 1.0)
    if not dark and viewing.detail is not None and viewing.detail < plain * margin("zone_featureless"):
        warnings.append(
            SceneWarning(
                "zone_featureless",
                f"the door zone shows almost no detail ({viewing.detail:.2f} grey levels per pixel, under "
                f"{plain:.2g}): a plain wall, the sky or a door in flat light gives the detector little to "
                "compare; draw motion.zone round the door's edges, frame and handle, or light the door from the side",
            )
        )
    if viewing.moving is not None and viewing.moving * margin("zone_busy") >= BUSY_SHARE:
        warnings.append(
            SceneWarning(
                "zone_busy",
                f"the door zone moved in {_percent(viewing.moving)} of the frames of the last {BUSY_WINDOW_S / 60:.0f} "
                "min: does it cover a street, a window or a screen? draw motion.zone round the door only, or put "
                "them in motion.masks",
            )
        )
    return warnings


def _percent(share: float) -> str:
    return f"{100 * share:.0f} %"
