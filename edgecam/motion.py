"""The door-zone motion detector: a running-average background over the grey detection frame, no I/O.

Each frame is compared with a float32 running average of the frames before it, after scaling the background by
the frame's overall brightness gain, so exposure drift is not motion. The changed fraction of the door zone is the
score. Two coarse checks over the whole unmasked frame, on a grid of ``CELL`` x ``CELL`` block means, tell a light
or exposure change from a moving door: if most cells moved by more than ``threshold``, or most cells still differ
by a third of it once the gain is compensated, the frame is a *global change*. It is not motion; the background
restarts from it and then adapts fast for ``settle`` seconds while the camera's exposure settles.

Changed pixels learn at half the rate, so a moving door is seen before it is absorbed; during an event, pixels
that are back to how they were before it take that background again, so a door that shut leaves no ghost.

A pixel's threshold is never under ``NOISE_K`` times the sensor noise at its brightness, measured from quiet
frames; where the door confirms motion (``relative``) it also scales with the light (``threshold_at``).
"""

import logging
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import DoorSettings, MotionSettings
from edgecam.errors import ConfigError
from edgecam.events import EventTracker
from edgecam.models import DoorState, Frame, MotionResult
from edgecam.thresholds import MAD_TO_SIGMA, NOISE_K, PixelThresholds, threshold_at
from edgecam.zones import polygon_mask

logger = logging.getLogger(__name__)

CELL = 8
"""Side in pixels of a cell of the coarse grid behind the gain estimate and the global-change check."""
FAST_RATE = 0.5
"""Background weight of a new frame while calibrating and while settling after a global change; also how fast a
pixel that is back to its look from before an event takes that look again."""
CHANGED_RATE_FACTOR = 0.5
"""Pixels that differ from the background learn at this fraction of ``learning_rate``: a door in motion is not
absorbed before it is seen, and a door left open is still absorbed after a while."""
SHAPE_LEVEL = 1.0 / 3.0
"""Fraction of ``threshold`` by which a gain-compensated cell must differ to count towards a global change. Cells
average 64 pixels, so sensor noise stays far below it."""
DARK = 16.0
"""Background cells darker than this say little about the exposure gain and are left out of its estimate."""
BRIGHT = 250.0
"""Background cells brighter than this hold clipped pixels: also left out of the gain estimate."""
MIN_GAIN_CELLS = 0.1
"""Fraction of the unmasked cells that must be brighter than ``DARK`` to estimate the gain; else it is 1."""
MAX_GAIN = 4.0
"""The gain estimate is clamped to [1 / MAX_GAIN, MAX_GAIN]."""
CAMERA_STEP = 0.04
"""Relative change in the camera's exposure (ExposureTime x AnalogueGain x DigitalGain) or colour gains from one
frame to the next that means its automatic controls are adjusting: the detector settles as after a global change."""
LUX_STEP = 0.2
"""Relative change in the camera's Lux estimate from one frame to the next that means the light changed."""
CONFIRMED_AREA = 0.25
"""Where the door confirms motion, this fraction of ``motion.min_area`` already makes a frame moving: the door's own
look then tells the door from the rest, and a grey door opened 5 degrees in dim light changes about 1 % of its zone."""
NOISE_EVERY = 16
"""Frames between two noise estimates, and two updates of the thresholds, once calibrated; every frame while
calibrating (and the thresholds while settling after a light change)."""
NOISE_RATE = 0.1
"""Weight of a frame's noise estimate in the running one."""
STIRRING = 0.0005
"""Fraction of the door zone that must have changed from the previous frame, by 1.5 times its threshold, for a
moving frame to show movement now: the edges of a door eased 5 degrees ajar change 0.03 to 0.2 % of it a frame,
sensor noise 0.002 %; a ghost the background has not yet unlearnt (a door shut after the background restarted
from it open) nothing. Stills are taken only from such frames."""
CELL_NOISE_JUMP = 2.0
"""Once calibrated, a quiet frame's estimate of the grid cells' noise above this multiple of the running one is a
slow light change, not noise, and is left out."""
CELL_NOISE_FLOOR = 0.5
"""Grey levels under which the cells' running noise estimate says little: any estimate up to ``CELL_NOISE_JUMP``
times this counts."""


class MotionDetector:
    """Score each frame's door zone against a running-average background and turn the scores into events."""

    def __init__(
        self,
        settings: MotionSettings,
        width: int,
        height: int,
        door: DoorSettings | None = None,
        *,
        relative: bool = False,
    ) -> None:
        """Prepare for ``width`` x ``height`` grey frames; raise ConfigError when no pixel of the zone counts.

        ``relative``: thresholds scale with brightness below ``LIT``, so a dim door is seen, and ``CONFIRMED_AREA``
        of ``motion.min_area`` makes a frame moving, so a low-contrast door barely ajar is; the agent asks for it
        only where the door confirms motion (a reference or a contact), since a dim scene's shadows and
        reflections then pass too.
        """
        self._settings = settings
        self._relative = relative
        self._pixels = PixelThresholds(settings.threshold, relative=relative)
        self._events = EventTracker(settings, door or DoorSettings())
        self._width = width
        self._height = height
        self._kernel = 2 * settings.blur + 1

        masked = polygon_mask(settings.masks, width, height)
        near_mask = masked
        if settings.masks and self._kernel > 1:
            # A blurred pixel carries its neighbours' values: pixels next to a mask must not count either.
            near_mask = cv2.dilate(masked.astype(np.uint8), np.ones((self._kernel, self._kernel), np.uint8)) > 0
        counted = polygon_mask([settings.zone], width, height) & ~near_mask
        self._zone_pixels = int(np.count_nonzero(counted))
        if self._zone_pixels == 0:
            raise ConfigError("motion.zone: no pixel of the door zone is left outside motion.masks")

        # Per-pixel work happens only inside the bounding box of the counted zone pixels.
        rows = np.flatnonzero(counted.any(axis=1))
        cols = np.flatnonzero(counted.any(axis=0))
        self._box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        zone = counted[self._box]
        self._zone = np.where(zone, np.uint8(255), np.uint8(0))
        box_shape = zone.shape
        self._background = np.zeros(box_shape, np.float32)
        self._blurred = np.zeros(box_shape, np.uint8)
        self._reference = np.zeros(box_shape, np.uint8)
        self._changed = np.zeros(box_shape, np.uint8)
        self._scratch = np.zeros(box_shape, np.uint8)
        self._back = np.zeros(box_shape, np.uint8)
        self._clipped = np.zeros(box_shape, np.bool_)
        self._before = np.zeros(box_shape, np.float32)
        self._thresholds = np.zeros(box_shape, np.uint8)
        self._stirred = np.zeros(box_shape, np.uint8)
        self._stir_thresholds = np.zeros(box_shape, np.uint8)
        self._previous = np.zeros(box_shape, np.uint8)
        sampled = np.zeros(box_shape, np.bool_)
        sampled[::2, ::2] = zone[::2, ::2]  # a quarter of the zone's pixels serve the noise estimate
        self._sampled = np.flatnonzero(sampled)

        self._grid = (max(1, width // CELL), max(1, height // CELL))
        unmasked = cv2.resize((~masked).astype(np.float32), self._grid, interpolation=cv2.INTER_AREA)
        self._cells = np.flatnonzero(unmasked.ravel() > 0.999)  # grid cells with no masked pixel at all
        self._small = np.zeros((self._grid[1], self._grid[0]), np.uint8)
        self._small_background = np.zeros(self._small.shape, np.float32)
        logger.debug(
            "motion: door zone %d pixels in box %s, %d of %d grid cells unmasked",
            self._zone_pixels,
            self._box,
            self._cells.size,
            self._small.size,
        )
        self.reset()

    def reset(self) -> None:
        """Forget the background and any event: the next frame starts a new calibration."""
        self._start: float | None = None
        self._settle_until = float("-inf")
        self._was_moving = False
        self._events.reset()
        self._have_before = False
        self._camera: tuple[float, ...] | None = None
        self._frames = 0
        self._cell_noise = 0.0
        self._cell_levels: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        """Per grid cell: the levels a move and a change of shape must pass, from the threshold and the noise."""
        self._pixels.reset()

    @property
    def noise(self) -> float | None:
        """Standard deviation of the sensor noise in the door zone, grey levels after the blur; None before any."""
        return self._pixels.noise

    def process(
        self,
        frame: Frame,
        door: DoorState | None = None,
        contact_open: bool | None = None,
        left_closed: bool | None = None,
    ) -> MotionResult:
        """Compare ``frame`` with the background, learn from it, and say whether an event starts or ends.

        ``door`` is the door state where there is a reference of the closed door, ``left_closed`` whether this
        frame no longer looks like it, ``contact_open`` the door contact where there is one; they shape when
        events start and end (``EventTracker``).
        """
        gray = frame.gray
        if gray.shape != (self._height, self._width):
            raise ValueError(
                f"frame {frame.index} is {gray.shape[1::-1]} pixels; the detector expects {self._width}x{self._height}"
            )
        s = self._settings
        t = frame.t
        cv2.resize(gray, self._grid, dst=self._small, interpolation=cv2.INTER_AREA)
        box = gray[self._box]
        current = box
        if self._kernel > 1:
            cv2.blur(box, (self._kernel, self._kernel), dst=self._blurred)
            current = self._blurred

        if self._start is None:
            self._start = t
            np.copyto(self._background, current)
            np.copyto(self._small_background, self._small)
            np.copyto(self._previous, current)
            event = self._events.update(t, False, door, contact_open, left_closed, light_changing=False)
            return MotionResult(
                0.0,
                False,
                s.calibration > 0,
                event=event,
                in_event=self._events.in_event,
                door=door,
                why=self._why(event),
            )
        calibrating = t - self._start < s.calibration

        small = self._small.ravel()[self._cells].astype(np.float32)
        small_background = self._small_background.ravel()[self._cells]
        gain = self._gain(small, small_background)
        if self._camera_adjusting(frame.metadata):
            self._settle_until = max(self._settle_until, t + s.settle)
        settling = t < self._settle_until
        global_change = self._global_fraction(small, small_background, gain, settling) >= s.global_change

        # Saturating uint8 arithmetic throughout: |frame - gain * background| never wraps around.
        cv2.convertScaleAbs(self._background, dst=self._reference, alpha=gain)
        if gain * 255.0 < 255.0 - s.threshold:
            self._allow_unclipping(current)
        cv2.absdiff(current, self._reference, dst=self._scratch)
        self._frames += 1
        quiet: tuple[NDArray[np.uint8], NDArray[np.uint8]] | None = None
        due = self._frames % NOISE_EVERY == 0
        if calibrating or settling or global_change or due:
            # The thresholds follow the background and the noise, both slow: every few frames is enough.
            cv2.LUT(self._reference, self._pixels.lut, dst=self._thresholds)
            if not global_change and (calibrating or due):
                quiet = (self._scratch.take(self._sampled), self._reference.take(self._sampled))
        cv2.compare(self._scratch, self._thresholds, cv2.CMP_GT, dst=self._changed)
        if self._events.in_event and self._have_before:
            self._forget_ghosts(current, gain)
        cv2.bitwise_and(self._changed, self._zone, dst=self._scratch)
        score = int(cv2.countNonZero(self._scratch)) / self._zone_pixels

        # While the light changes the door's look confirms nothing (EventTracker): then min_area applies whole.
        min_area = s.min_area * (CONFIRMED_AREA if self._relative and not settling else 1.0)
        moving = not calibrating and not global_change and score >= min_area
        stirring = moving and self._stirring(current)
        np.copyto(self._previous, current)
        rate = FAST_RATE if calibrating or settling else NOISE_RATE
        if quiet is not None and score < s.min_area and not self._events.in_event:
            self._pixels.learn(quiet[0], quiet[1], rate)
        # The cells' own noise, as a standard deviation from their median deviation: while calibrating from every
        # frame (a noisy sensor's rows and colours can make each one look like a light change until it is known).
        if small.size and (calibrating or (quiet is not None and score < s.min_area and not self._events.in_event)):
            cells = float(np.median(np.abs(small - gain * small_background))) * MAD_TO_SIGMA
            # A lamp brightening slowly moves the cells too, far more than noise: that is not noise.
            if calibrating or cells <= CELL_NOISE_JUMP * max(self._cell_noise, CELL_NOISE_FLOOR):
                self._cell_noise += rate * (cells - self._cell_noise)
        if moving and not self._was_moving and not self._events.in_event:
            np.copyto(self._before, self._background)  # the scene before this (possible) event began
            self._have_before = True
        self._was_moving = moving
        if global_change:
            np.copyto(self._background, current)
            np.copyto(self._small_background, self._small)
            self._settle_until = t + s.settle
            self._have_before = False
        else:
            self._learn(current, fast=calibrating or settling)

        event = self._events.update(
            t, moving, door, contact_open, left_closed, light_changing=global_change or settling
        )
        return MotionResult(
            score=score,
            moving=moving,
            calibrating=calibrating,
            global_change=global_change,
            settling=settling,
            event=event,
            in_event=self._events.in_event,
            door=door,
            why=self._why(event),
            pending=self._events.pending,
            stirring=stirring,
        )

    def _stirring(self, current: NDArray[np.uint8]) -> bool:
        """Whether ``STIRRING`` of the zone changed from the previous frame by 1.5 times its threshold.

        The difference of two frames carries the noise of both, 1.4 times one frame's against the background.
        """
        cv2.absdiff(current, self._previous, dst=self._stirred)
        cv2.add(self._thresholds, self._thresholds // 2, dst=self._stir_thresholds)
        cv2.compare(self._stirred, self._stir_thresholds, cv2.CMP_GT, dst=self._stirred)
        cv2.bitwise_and(self._stirred, self._zone, dst=self._stirred)
        return int(cv2.countNonZero(self._stirred)) >= STIRRING * self._zone_pixels

    def _why(self, event: str | None) -> str | None:
        return self._events.why if event else None

    def changed_mask(self) -> NDArray[np.uint8]:
        """The door-zone pixels the last frame's score counted (255), full frame size: for explaining, not per frame."""
        full = np.zeros((self._height, self._width), np.uint8)
        cv2.bitwise_and(self._changed, self._zone, dst=full[self._box])
        return full

    def _camera_adjusting(self, metadata: Mapping[str, Any]) -> bool:
        """Whether the camera's metadata says its exposure, colour gains or light level just changed.

        Only the Pi's camera has such metadata; files and the simulated scene have none, and then this is False.
        """
        try:
            exposure = float(metadata["ExposureTime"]) * float(metadata.get("AnalogueGain", 1.0))
            exposure *= float(metadata.get("DigitalGain", 1.0))
            red, blue = (float(g) for g in metadata.get("ColourGains", (1.0, 1.0)))
            lux = float(metadata.get("Lux", 0.0))
        except (KeyError, TypeError, ValueError):
            return False
        now = (exposure, red, blue, lux)
        before, self._camera = self._camera, now
        if before is None:
            return False
        steps = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(now, before, strict=True)]
        return max(steps[:3]) > CAMERA_STEP or steps[3] > LUX_STEP

    def _allow_unclipping(self, current: NDArray[np.uint8]) -> None:
        """Let pixels clipped at 255 in the background be as bright as they like in the frame.

        Their true brightness is unknown, so when the exposure drops, a frame value at least as bright as the gain
        predicts from 255 is consistent with them, not a change.
        """
        np.greater_equal(self._background, 254.5, out=self._clipped)
        cv2.max(self._reference, current, dst=self._scratch)
        cv2.copyTo(self._scratch, self._clipped.view(np.uint8), self._reference)

    def _gain(self, small: NDArray[np.float32], background: NDArray[np.float32]) -> float:
        """The frame's brightness relative to the background: the median ratio of cells neither dark nor clipped."""
        usable = (background > DARK) & (background < BRIGHT)
        count = int(np.count_nonzero(usable))
        if count == 0 or count < MIN_GAIN_CELLS * small.size:
            return 1.0
        ratios = small[usable] / background[usable]
        median = float(np.partition(ratios, count // 2)[count // 2])
        return min(max(median, 1.0 / MAX_GAIN), MAX_GAIN)

    def _global_fraction(
        self, small: NDArray[np.float32], background: NDArray[np.float32], gain: float, settling: bool
    ) -> float:
        """Fraction of unmasked cells that moved (raw) or changed shape (gain-compensated): the larger.

        While settling after a global change, a smaller raw move counts: the exposure is still on its way.
        """
        if small.size == 0:
            return 0.0
        if self._cell_levels is None or settling or self._frames % NOISE_EVERY == 0:
            level = threshold_at(self._settings.threshold, background, relative=self._relative)
            floor = NOISE_K * self._cell_noise  # a noisy sensor's row and colour noise move whole cells too
            self._cell_levels = (np.maximum(level, floor), np.maximum(level * SHAPE_LEVEL, floor))
        whole, shape = self._cell_levels
        moved = int(np.count_nonzero(np.abs(small - background) > (shape if settling else whole)))
        predicted = gain * background
        residual = np.abs(small - predicted)
        residual[(background >= BRIGHT) & (small > predicted)] = 0.0  # clipped: brighter than predicted is fine
        reshaped = int(np.count_nonzero(residual > shape))
        return max(moved, reshaped) / int(small.size)

    def _forget_ghosts(self, current: NDArray[np.uint8], gain: float) -> None:
        """Give pixels that are back to how they were before the event (a door shut again) that background.

        They still count in this frame, since getting back is motion, but leave no fading ghost of the open door
        behind that would keep the event going for seconds after the door closed.
        """
        cv2.convertScaleAbs(self._before, dst=self._reference, alpha=gain)
        cv2.absdiff(current, self._reference, dst=self._scratch)
        cv2.compare(self._scratch, self._thresholds, cv2.CMP_LE, dst=self._back)
        cv2.accumulateWeighted(current, self._background, FAST_RATE, mask=self._back)

    def _learn(self, current: NDArray[np.uint8], *, fast: bool) -> None:
        """Blend the frame into the backgrounds; changed pixels learn slower unless settling."""
        rate = FAST_RATE if fast else self._settings.learning_rate
        cv2.accumulateWeighted(self._small, self._small_background, rate)
        if fast:
            cv2.accumulateWeighted(current, self._background, rate)
            return
        slow = rate * CHANGED_RATE_FACTOR
        # Everything at the slow rate, then the unchanged pixels again so that in all they learn at ``rate``.
        cv2.accumulateWeighted(current, self._background, slow)
        cv2.bitwise_not(self._changed, dst=self._scratch)
        cv2.accumulateWeighted(current, self._background, 1.0 - (1.0 - rate) / (1.0 - slow), mask=self._scratch)
