"""The scene watched from the frame loop: ``viewing``'s warnings, each logged once as it starts and as it clears."""

import logging
import math
from collections import deque
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from edgecam.config import Settings
from edgecam.models import Frame, MotionResult
from edgecam.viewing import BUSY_WINDOW_S, DoorZoneView, Viewing, WarningCode, judge

logger = logging.getLogger(__name__)

ASSESS_EVERY_S = 10.0
"""Seconds of frames between two assessments in the frame loop. One costs about 0.3 to 0.6 ms for a door zone and
0.8 to 1 ms for the whole 320x240 frame on one x86 core; spread over the frames between, 0.006 and 0.011 ms a frame
at 10 fps, against the detector's 0.1 ms (the other frames cost 0.0004 ms)."""

START_S = 30.0
"""Seconds a condition must hold, in every assessment, before the monitor warns of it: a light switched off for a
moment or a cloud is not a scene to warn about."""

CLEAR_S = 30.0
"""Seconds a warned condition must be gone, in every assessment, before the monitor says it cleared."""

CLEARED: dict[WarningCode, str] = {
    "too_dark": "the door zone is no longer too dark",
    "too_noisy": "the picture is no longer too noisy",
    "zone_too_small": "the door zone is no longer too small",
    "zone_overexposed": "the door zone is no longer overexposed",
    "zone_featureless": "the door zone shows detail again",
    "zone_busy": "the door zone is no longer busy",
}


class SceneMonitor:
    """Watches the scene from the frame loop: the warnings that hold, each logged once as it starts and clears.

    ``update`` is cheap on most frames (a few counters); every ``ASSESS_EVERY_S`` seconds of frame time it
    measures two successive quiet frames: no movement, light change or calibration in either, and the door not
    known to be open (the zone would show the hall behind it).
    """

    def __init__(self, settings: Settings, *, relative: bool = False) -> None:
        """Watch ``settings``' door zone; a zone too small is warned of at once. ``relative``: as for ``judge``."""
        self._view = DoorZoneView.for_settings(settings)
        self._threshold = float(settings.motion.threshold)
        self._relative = relative
        self._due = -math.inf
        self._wanted = False
        self._previous: NDArray[np.uint8] | None = None
        self._previous_index = -2
        self._periods: deque[tuple[float, int, int]] = deque()
        """(end time, frames, moving frames) per ``ASSESS_EVERY_S`` period, over ``BUSY_WINDOW_S``."""
        self._first_t: float | None = None
        self._frames = 0
        self._moving = 0
        self._true_since: dict[WarningCode, float] = {}
        self._false_since: dict[WarningCode, float] = {}
        self._static = tuple(judge(self._view.viewing(), self._threshold))
        for warning in self._static:
            logger.warning("scene: %s", warning.message)
        self._held: dict[WarningCode, None] = {w.code: None for w in self._static}
        self.warnings: tuple[WarningCode, ...] = tuple(self._held)
        """The codes of the warnings that hold, in the order they started."""
        self.latest: Viewing | None = None
        """The figures of the latest assessment."""

    def update(self, frame: Frame, result: MotionResult) -> tuple[WarningCode, ...]:
        """Count ``frame`` and what the detector made of it; return the codes of the warnings that hold."""
        self._frames += 1
        self._moving += result.moving
        quiet = not (
            result.moving or result.calibrating or result.global_change or result.settling or result.door == "open"
        )
        if self._first_t is None:
            self._first_t = frame.t
        if frame.t >= self._due:
            self._due = frame.t + ASSESS_EVERY_S
            self._close_period(frame.t)
            self._wanted = True
        if self._wanted:
            if quiet and self._previous is not None and frame.index == self._previous_index + 1:
                self._assess(frame, self._previous)
                self._wanted = False
                self._previous = None
            else:
                self._previous = frame.gray.copy() if quiet else None
                self._previous_index = frame.index
        return self.warnings

    def _close_period(self, t: float) -> None:
        self._periods.append((t, self._frames, self._moving))
        self._frames = self._moving = 0
        while self._periods[0][0] <= t - BUSY_WINDOW_S:
            self._periods.popleft()

    def _moving_share(self, t: float) -> float | None:
        if self._first_t is None or t - self._first_t < BUSY_WINDOW_S:
            return None  # not watched long enough to say
        frames = sum(p[1] for p in self._periods)
        return sum(p[2] for p in self._periods) / frames if frames else None

    def _assess(self, frame: Frame, previous: NDArray[np.uint8]) -> None:
        viewing = replace(self._view.assess(frame.gray, previous), moving=self._moving_share(frame.t))
        self.latest = viewing
        logger.debug("scene: %s", viewing.figures())
        static = {w.code for w in self._static}
        now = {
            w.code: w
            for w in judge(viewing, self._threshold, self._held, relative=self._relative)
            if w.code not in static
        }
        t = frame.t
        for code in CLEARED:
            if code in static:
                continue
            if code in now:
                self._false_since.pop(code, None)
                since = self._true_since.setdefault(code, t)
                if code not in self._held and t - since >= START_S:
                    self._held[code] = None
                    logger.warning("scene: %s", now[code].message)
            else:
                self._true_since.pop(code, None)
                if code in self._held:
                    since = self._false_since.setdefault(code, t)
                    if t - since >= CLEAR_S:
                        del self._held[code]
                        del self._false_since[code]
                        logger.info("scene: %s (%s)", CLEARED[code], viewing.figures())
        self.warnings = tuple(self._held)
