"""Light and exposure for the detector: the frame's brightness gain and global changes, on a coarse grid, no I/O.

The whole unmasked frame is averaged into a grid of ``CELL`` x ``CELL`` cells, and each frame's grid compared with a
running average of it. The *gain* is the frame's brightness relative to that background: the median ratio of the
cells neither too dark to say nor clipped white. A frame is a *global change* (a light or exposure change, not
motion) where most cells moved by more than ``motion.threshold``, or most cells still differ by a third of it once
the gain is compensated (an uneven change: a lamp in one corner, infrared). The grid gets its own noise floor, from
its cells' median deviation in quiet frames: a dim camera's row and colour noise otherwise moves whole cells.

The camera's own metadata (exposure, colour gains, Lux) tells of its automatic controls adjusting
(``CameraControls``).

OpenCV's element-wise functions throughout: on a grid's thousand cells they cost a third of numpy's.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import MotionSettings
from edgecam.models import Frame
from edgecam.thresholds import MAD_TO_SIGMA, NOISE_K, threshold_at

CELL = 8
"""Side in pixels of a cell of the coarse grid behind the gain estimate and the global-change check."""
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
BIG = 1e9
"""Larger than any change of grey level: no cap."""
GRID_EVERY = 4
"""Frames between two updates of the grid's background where no check needed the grid: it follows a slow drift of
the light nearly as closely as from every frame (a ramp of 1 % a frame stays 11 % behind, not 9 %)."""
CELL_NOISE_JUMP = 2.0
"""Once calibrated, a quiet frame's estimate of the grid cells' noise above this multiple of the running one is a
slow light change, not noise, and is left out."""
CELL_NOISE_FLOOR = 0.5
"""Grey levels under which the cells' running noise estimate says little: any estimate up to ``CELL_NOISE_JUMP``
times this counts."""
CAMERA_STEP = 0.04
"""Relative change in the camera's exposure (ExposureTime x AnalogueGain x DigitalGain) or colour gains from one
frame to the next that means its automatic controls are adjusting: the detector settles as after a global change."""
LUX_STEP = 0.2
"""Relative change in the camera's Lux estimate from one frame to the next that means the light changed."""


class _CellLevels(NamedTuple):
    whole: NDArray[np.float32]
    """Per grid cell, the move that counts towards a global change."""
    shape: NDArray[np.float32]
    """Per grid cell, the change of shape (gain-compensated) that counts, and the move while settling."""
    left_out: NDArray[np.float32]
    """Per grid cell, NaN where it is dark or clipped and tells nothing of the gain, else 0."""
    usable: int
    """How many cells tell the gain; none when too few do."""
    brighter: NDArray[np.float32]
    """Where a cell's gain-compensated change is capped from above: 0 where it was clipped white in the background
    (brighter than predicted does not count there: its true brightness is unknown), else ``BIG``."""


class LightCheck:
    """The grid of one camera's frames: its background, the gain and whether a frame is a global change."""

    def __init__(
        self, settings: MotionSettings, masked: NDArray[np.bool_], width: int, height: int, *, relative: bool
    ) -> None:
        """Prepare the grid of ``width`` x ``height`` frames whose ``masked`` pixels (privacy masks) say nothing.

        ``relative``: the cells' levels scale with their brightness (``threshold_at``), as the detector's do.
        """
        self._global_change = settings.global_change
        self._grid = (max(1, width // CELL), max(1, height // CELL))
        # Exact halvings are more than twice as fast as one resize by 8 (OpenCV's fast path for area averages by 2).
        steps = [self._grid]
        while steps[0][0] * 2 < width and (steps[0][0] * 2, steps[0][1] * 2) != (width, height):
            steps.insert(0, (steps[0][0] * 2, steps[0][1] * 2))
        if (steps[0][0] * 2, steps[0][1] * 2) != (width, height):
            steps = [self._grid]  # not a power of 2: one resize
        self._steps = [np.zeros((h, w), np.uint8) for w, h in steps]
        """The grid, and the sizes between where halvings lead to it, as resized into."""
        self._small = self._steps[-1]
        unmasked = cv2.resize((~masked).astype(np.float32), self._grid, interpolation=cv2.INTER_AREA)
        self._cells = np.flatnonzero(unmasked.ravel() > 0.999)  # grid cells with no masked pixel at all
        self.cells = int(self._cells.size)
        """How many grid cells have no masked pixel: those that count."""
        self._all_cells = self.cells == self._small.size
        self._no_cells = np.zeros(self.cells, np.float32)
        self._thresholds = threshold_at(settings.threshold, np.arange(256, dtype=np.float64), relative=relative)
        """``threshold_at`` each grey level of a cell's background."""
        self._background = np.zeros(self._small.shape, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the background, its levels and the cells' noise."""
        self.gain = 1.0
        """The gain of the last frame checked."""
        self._levels: _CellLevels | None = None
        self._noise = 0.0
        self._learnt = 0
        self._now: NDArray[np.float32] | None = None

    def start(self, frame: Frame, index: int) -> None:
        """Take the grid of ``frame``, frame ``index`` of the detector, as the background."""
        np.copyto(self._background, self._grid_of(frame))
        self._learnt = index

    def check(self, frame: Frame, *, settling: bool, fresh: bool) -> bool:
        """Whether ``frame`` is a global change; ``gain`` becomes its gain.

        ``settling``: after a global change, a smaller raw move counts (the exposure is still on its way).
        ``fresh``: work the cells' levels out again from the background (they follow it slowly).
        """
        small = self._grid_of(frame)
        if self._all_cells:
            now, background = small.ravel().astype(np.float32), self._background.ravel()
        else:
            now, background = small.ravel()[self._cells].astype(np.float32), self._background.ravel()[self._cells]
        self._now = now
        if self._levels is None or fresh:
            self._levels = self._levels_of(background)
        self.gain = self._gain(now, background, self._levels)
        return self._global_fraction(now, background, self._levels, settling) >= self._global_change

    def restart(self, index: int) -> None:
        """After a global change at frame ``index``: the frame last checked is the background, its levels new."""
        np.copyto(self._background, self._small)
        self._learnt = index
        self._levels = None

    def learn(self, frame: Frame, index: int, rate: float, *, checked: bool) -> None:
        """Blend frame ``index`` into the background at ``rate``, every ``GRID_EVERY`` frames or where ``checked``.

        It learns as much as from every frame since it last learnt, each like this one.
        """
        if not checked and index % GRID_EVERY:
            return
        if not checked:
            self._grid_of(frame)
        frames = index - self._learnt
        self._learnt = index
        cv2.accumulateWeighted(self._small, self._background, 1.0 - (1.0 - rate) ** frames)

    def learn_noise(self, rate: float, *, calibrating: bool) -> None:
        """Learn the cells' noise from the frame last checked, a quiet one.

        A standard deviation from the cells' median deviation; while calibrating from every frame (a noisy sensor's
        rows and colours can make each cell look like a light change until it is known).
        """
        if self._now is None or not self._now.size:
            return
        background = self._background.ravel() if self._all_cells else self._background.ravel()[self._cells]
        deviations = np.sort(np.abs(self._now - self.gain * background))
        deviation = float(deviations[deviations.size // 2]) * MAD_TO_SIGMA
        # A lamp brightening slowly moves the cells too, far more than noise: that is not noise.
        if calibrating or deviation <= CELL_NOISE_JUMP * max(self._noise, CELL_NOISE_FLOOR):
            self._noise += rate * (deviation - self._noise)

    def _grid_of(self, frame: Frame) -> NDArray[np.uint8]:
        small = frame.gray
        for step in self._steps:
            cv2.resize(small, step.shape[::-1], dst=step, interpolation=cv2.INTER_AREA)
            small = step
        return small

    def _levels_of(self, background: NDArray[np.float32]) -> _CellLevels:
        """What each grid cell must pass, from the threshold and the noise, and which cells tell the gain."""
        floor = NOISE_K * self._noise  # a noisy sensor's row and colour noise move whole cells too
        grey = np.asarray(cv2.convertScaleAbs(background), np.uint8).ravel()
        whole = np.maximum(self._thresholds, floor).astype(np.float32).take(grey)
        shape = np.maximum(self._thresholds * SHAPE_LEVEL, floor).astype(np.float32).take(grey)
        usable = cv2.inRange(background, DARK, BRIGHT)
        count = int(cv2.countNonZero(usable))
        # NaN leaves a cell out of the gain's median (np.sort puts NaN last); 0 counts it.
        left_out = np.full(background.shape, np.nan, np.float32)
        if count >= MIN_GAIN_CELLS * background.size:
            cv2.copyTo(self._no_cells, usable, left_out)
        else:
            count = 0
        # A clipped cell brighter than predicted is fine: its true brightness is unknown.
        brighter = np.asarray(cv2.threshold(background, BRIGHT, BIG, cv2.THRESH_BINARY_INV)[1], np.float32)
        return _CellLevels(whole, shape, left_out, count, brighter)

    @staticmethod
    def _gain(now: NDArray[np.float32], background: NDArray[np.float32], levels: _CellLevels) -> float:
        """The median ratio of the cells neither dark nor clipped in the background, as ``levels`` last saw it."""
        if not levels.usable:
            return 1.0
        ratios = cv2.add(cv2.divide(now, background), levels.left_out).ravel()
        # Sorted, not np.partition: on ratios nearly all alike (a still scene) its selection takes 5 times as long.
        median = float(np.sort(ratios)[levels.usable // 2])
        return min(max(median, 1.0 / MAX_GAIN), MAX_GAIN)

    def _global_fraction(
        self, now: NDArray[np.float32], background: NDArray[np.float32], levels: _CellLevels, settling: bool
    ) -> float:
        """Fraction of unmasked cells that moved (raw) or changed shape (gain-compensated): the larger."""
        if now.size == 0:
            return 0.0
        change = cv2.absdiff(now, background)
        moved = cv2.countNonZero(cv2.compare(change, levels.shape if settling else levels.whole, cv2.CMP_GT))
        residual = cv2.min(cv2.scaleAdd(background, -self.gain, now), levels.brighter)
        change = cv2.absdiff(residual, self._no_cells)
        reshaped = cv2.countNonZero(cv2.compare(change, levels.shape, cv2.CMP_GT))
        return max(moved, reshaped) / int(now.size)


class CameraControls:
    """The camera's automatic exposure, colour gains and light estimate, from frame to frame."""

    def __init__(self) -> None:
        self._last: tuple[float, ...] | None = None

    def adjusting(self, metadata: Mapping[str, Any]) -> bool:
        """Whether the camera's metadata says its exposure, colour gains or light level just changed.

        Only the Pi's camera has such metadata; files and the simulated scene have none, and then this is False.
        """
        if not metadata:
            return False
        try:
            exposure = float(metadata["ExposureTime"]) * float(metadata.get("AnalogueGain", 1.0))
            exposure *= float(metadata.get("DigitalGain", 1.0))
            red, blue = (float(g) for g in metadata.get("ColourGains", (1.0, 1.0)))
            lux = float(metadata.get("Lux", 0.0))
        except (KeyError, TypeError, ValueError):
            return False
        now = (exposure, red, blue, lux)
        before, self._last = self._last, now
        if before is None:
            return False
        steps = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(now, before, strict=True)]
        return max(steps[:3]) > CAMERA_STEP or steps[3] > LUX_STEP
