"""The door-zone motion detector: a running-average background over the grey detection frame, no I/O.

The door zone's box is compared at half the detection size, each pixel the mean of 2 x 2: sensor noise down by
half, and a quarter of the work. Each frame is compared with a float32 running average of the frames before it,
after scaling the background by the frame's overall brightness gain, so exposure drift is not motion. The changed
fraction of the door zone is the score. A coarse grid over the whole unmasked frame (``edgecam.light``) gives the
gain and tells a light or exposure change from a moving door: such a frame is a *global change*. It is not motion;
the background restarts from it and then adapts fast for ``settle`` seconds while the camera's exposure settles.

The checks run only where they matter (``measure``): on a frame that changed enough to be moving, on the routine
frames that learn the noise, and a few times per ``settle`` while settling. A still frame, nine in ten, costs one
comparison with the background and one update of it.

Changed pixels learn at half the rate, so a moving door is seen before it is absorbed; during an event, pixels
that are back to how they were before it take that background again, so a door that shut leaves no ghost.

A pixel's threshold is never under ``NOISE_K`` times the sensor noise at its brightness, measured from quiet
frames; where the door confirms motion (``relative``) it also scales with the light (``threshold_at``).
"""

import logging
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import DoorSettings, MotionSettings
from edgecam.errors import ConfigError
from edgecam.events import EventTracker
from edgecam.light import CameraControls, LightCheck
from edgecam.models import DoorState, Frame, MotionResult
from edgecam.thresholds import PixelThresholds
from edgecam.zones import polygon_mask

logger = logging.getLogger(__name__)

FAST_RATE = 0.5
"""Background weight of a new frame while calibrating and while settling after a global change; also how fast a
pixel that is back to its look from before an event takes that look again."""
CHANGED_RATE_FACTOR = 0.5
"""Pixels that differ from the background learn at this fraction of ``learning_rate``: a door in motion is not
absorbed before it is seen, and a door left open is still absorbed after a while."""
GAIN_STEP = 0.002
"""A change of the gain estimate from the last one below this changes no pixel's difference by half a grey level:
the score against the last gain stands."""
CONFIRMED_AREA = 0.25
"""Where the door confirms motion, this fraction of ``motion.min_area`` already makes a frame moving: the door's own
look then tells the door from the rest, and a grey door opened 5 degrees in dim light changes about 1 % of its zone."""
NOISE_EVERY = 64
"""Frames between two noise estimates, and two updates of the thresholds, once calibrated (6 s at 10 fps: the noise
changes with the light, slowly, and after a global change it is learnt again, fast, once the light has settled):
every frame while calibrating, and the thresholds with the grid's checks while settling (``SETTLE_CHECKS``)."""
THRESHOLDS_EVERY = 16
"""Frames between two updates of the thresholds from the background, besides those above: where a person stood, the
background darkened, and a threshold taken from it stays low, and the ghost of the person changed, until then."""
NOISE_RATE = 0.1
"""Weight of a frame's noise estimate in the running one."""
STIRRING = 0.0005
"""Fraction of the door zone that must have changed from the previous frame, by 1.5 times its threshold, for a
moving frame to show movement now: the edges of a door eased 5 degrees ajar change 0.03 to 0.2 % of it a frame,
sensor noise 0.002 %; a ghost the background has not yet unlearnt (a door shut after the background restarted
from it open) nothing. Stills are taken only from such frames."""
SETTLE_CHECKS = 0.3
"""While settling, the grid is checked for a global change, and the thresholds follow the background, every this
share of ``motion.settle``: a light still changing is then seen, and keeps the detector settling, three times or more
before it would end, at any frame rate."""


class Measure(NamedTuple):
    """One frame against the background, before the event logic (``MotionDetector.measure``)."""

    t: float
    """The frame's time, seconds."""
    score: float
    """Changed fraction of the door zone (0..1)."""
    moving: bool
    calibrating: bool = False
    global_change: bool = False
    settling: bool = False
    stirring: bool = False
    """As in ``MotionResult``."""
    settled: bool = False
    """The first frame after the illuminator's light settled: the door may have moved unread while it did."""

    @property
    def zone_changed(self) -> bool:
        """Something in the door zone changed, not with the light: the door's look may have changed too.

        What tells the door's reading when to look (``DoorWatcher.update``). A frame that is a global change says
        nothing of the door; while the light settles, only a moving frame does; once it has, the door is read.
        """
        return self.moving or self.settled or (self.score > 0.0 and not (self.global_change or self.settling))


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
        half_size = (width // 2, height // 2)
        # A half-size pixel counts where all four of its pixels are in the zone and none is masked.
        counted_full = polygon_mask([settings.zone], width, height) & ~masked
        counted = cv2.resize(counted_full.astype(np.float32), half_size, interpolation=cv2.INTER_AREA) > 0.999
        if settings.masks and self._kernel > 1:
            # A blurred pixel carries its neighbours' values: pixels next to a mask must not count either.
            touched = cv2.resize(masked.astype(np.float32), half_size, interpolation=cv2.INTER_AREA) > 0.0
            near_mask = cv2.dilate(touched.astype(np.uint8), np.ones((self._kernel, self._kernel), np.uint8)) > 0
            counted &= ~near_mask
        self._zone_pixels = int(np.count_nonzero(counted))
        if self._zone_pixels == 0:
            raise ConfigError("motion.zone: no pixel of the door zone is left outside motion.masks")

        # Per-pixel work happens only inside the bounding box of the counted zone pixels.
        rows = np.flatnonzero(counted.any(axis=1))
        cols = np.flatnonzero(counted.any(axis=0))
        self._box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        self._full_box = tuple(slice(2 * b.start, 2 * b.stop) for b in self._box)
        zone = counted[self._box]
        self._box_size = (zone.shape[1], zone.shape[0])
        self._outside = np.where(zone, np.uint8(0), np.uint8(255))
        """Raises the thresholds of the box's pixels outside the zone to 255, which no difference passes."""
        box_shape = zone.shape
        self._background = np.zeros(box_shape, np.float32)
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

        self._light = LightCheck(settings, masked, width, height, relative=relative)
        logger.debug(
            "motion: door zone %d half-size pixels in box %s, %d grid cells unmasked",
            self._zone_pixels,
            self._box,
            self._light.cells,
        )
        self.reset()

    def reset(self) -> None:
        """Forget the background and any event: the next frame starts a new calibration."""
        self._start: float | None = None
        self._settle_until = float("-inf")
        self._was_moving = False
        self._events.reset()
        self._have_before = False
        self._camera = CameraControls()
        self._frames = 0
        self._checked_at = float("-inf")
        """When the grid was last checked for a global change."""
        self._levels_due = True
        """The grid's levels are to be worked out again at its next check (after a global change)."""
        self._relearn = False
        self._switched = False
        self._switch_settling = False
        """The light settling now is one the illuminator switched: the door is read again once it has settled."""
        self._light.reset()
        self._pixels.reset()

    def light_switched(self) -> None:
        """The light was switched on purpose after the last frame (``edgecam.illuminator``): the next is no motion.

        That frame is taken as a global change: the background restarts from it and adapts fast for
        ``motion.settle`` seconds, as after one the grid saw, so that neither switching makes motion or starts an
        event; an event under way goes on.
        """
        self._switched = True

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
        """``measure`` the frame, then ``decide`` on it with the door's readings of the same frame."""
        return self.decide(self.measure(frame), door, contact_open, left_closed)

    def measure(self, frame: Frame) -> Measure:
        """Compare ``frame`` with the background and learn from it; raise ValueError for a frame of another size.

        Whether the door zone changed (``Measure.zone_changed``) tells the door's reading whether it has anything
        new to read (``DoorWatcher.update``) before ``decide`` takes both.
        """
        gray = frame.gray
        if gray.shape != (self._height, self._width):
            raise ValueError(
                f"frame {frame.index} is {gray.shape[1::-1]} pixels; the detector expects {self._width}x{self._height}"
            )
        s = self._settings
        t = frame.t
        # The zone's box at half size, each pixel the mean of 2 x 2: noise down by half, a quarter of the work.
        current = np.asarray(cv2.resize(gray[self._full_box], self._box_size, interpolation=cv2.INTER_AREA), np.uint8)
        if self._kernel > 1:
            current = np.asarray(cv2.blur(current, (self._kernel, self._kernel)), np.uint8)

        if self._start is None:
            self._start = t
            np.copyto(self._background, current)
            self._light.start(frame, self._frames)
            np.copyto(self._reference, current)
            self._follow_thresholds()
            self._previous = current
            return Measure(t, 0.0, moving=False, calibrating=s.calibration > 0)
        calibrating = t - self._start < s.calibration
        if self._camera.adjusting(frame.metadata):
            self._settle_until = max(self._settle_until, t + s.settle)
            self._relearn = True
        settling = t < self._settle_until
        # While the light changes the door's look confirms nothing (EventTracker): then min_area applies whole.
        min_area = s.min_area * (CONFIRMED_AREA if self._relative and not settling else 1.0)
        self._frames += 1
        # The noise is learnt again, fast, on the first frame after the light settles: a camera's gain changes with it.
        relearn = self._relearn and not settling
        due = relearn or self._frames % NOISE_EVERY == 0
        routine = calibrating or due
        # The thresholds follow the background and the noise: every few frames is enough, and while the background
        # learns fast (calibrating, settling after a global change) every few frames is still enough.
        recheck = settling and t - self._checked_at >= s.settle * SETTLE_CHECKS
        refresh = self._levels_due or routine or recheck
        # The grid's checks (the gain, a global change) matter to a frame that changed enough to be moving, to the
        # routine frames that learn the noise, and every few frames while settling, where a light still changing
        # keeps the detector settling: any other frame is compared with the last gain.
        gain = self._light.gain
        global_change = False
        checked = False
        score = 0.0
        check = routine or refresh or self._switched
        if not check:
            score = self._compare(current, gain, follow=self._frames % THRESHOLDS_EVERY == 0)
            if score < min_area and not self._events.in_event:
                return self._quiet(frame, current, score, settling)
            check = score >= min_area
        if check:
            self._checked_at = t
            checked = True
            global_change = self._light.check(frame, settling=settling, fresh=routine) or self._switched
            self._switch_settling |= self._switched
            self._switched = False
            self._levels_due = False
            before, gain = gain, self._light.gain
            # A global change is no motion whatever the score: the frame's score against the last gain stands, and
            # the thresholds follow the background it restarts from at the next frame's check.
            if not global_change and (refresh or abs(gain - before) > GAIN_STEP):
                score = self._compare(current, gain, follow=refresh)
        quiet: tuple[NDArray[np.uint8], NDArray[np.uint8]] | None = None
        if (calibrating or due) and not global_change:
            quiet = (self._scratch.take(self._sampled), self._reference.take(self._sampled))
        in_event = self._events.in_event
        if in_event and self._have_before:
            self._forget_ghosts(current, gain)

        moving = not calibrating and not global_change and score >= min_area
        stirring = moving and self._stirring(current)
        self._previous = current
        if checked and (quiet is not None or calibrating):
            self._learn_noise(quiet, score, calibrating, settling or relearn)
            self._relearn = False
        if moving and not self._was_moving and not in_event:
            np.copyto(self._before, self._background)  # the scene before this (possible) event began
            self._have_before = True
        self._was_moving = moving
        if global_change:
            np.copyto(self._background, current)
            self._light.restart(self._frames)
            self._levels_due = True
            self._relearn = True
            self._settle_until = t + s.settle
            self._have_before = False
        else:
            self._learn(frame, current, fast=calibrating or settling, checked=checked, changed=score > 0.0)
        settled = relearn and not global_change and self._switch_settling
        self._switch_settling &= not settled
        return Measure(t, score, moving, calibrating, global_change, settling, stirring, settled)

    def _quiet(self, frame: Frame, current: NDArray[np.uint8], score: float, settling: bool) -> Measure:
        """What ``measure`` comes to for a frame that is not moving, outside an event, between routine frames."""
        self._previous = current
        self._was_moving = False
        self._learn(frame, current, fast=settling, checked=False, changed=score > 0.0)
        return Measure(frame.t, score, False, settling=settling)

    def _compare(self, current: NDArray[np.uint8], gain: float, *, follow: bool = False) -> float:
        """The changed fraction of the zone in ``current`` against the background scaled by ``gain``.

        ``follow``: the thresholds follow the background first (``THRESHOLDS_EVERY``).
        """
        # Saturating uint8 arithmetic throughout: |frame - gain * background| never wraps around.
        cv2.convertScaleAbs(self._background, dst=self._reference, alpha=gain)
        if follow:
            self._follow_thresholds()
        if gain * 255.0 < 255.0 - self._settings.threshold:
            self._allow_unclipping(current)
        cv2.absdiff(current, self._reference, dst=self._scratch)
        cv2.compare(self._scratch, self._thresholds, cv2.CMP_GT, dst=self._changed)
        return int(cv2.countNonZero(self._changed)) / self._zone_pixels

    def _follow_thresholds(self) -> None:
        """Each pixel's threshold from its level in ``_reference`` (background times gain); 255 outside the zone.

        And 1.5 times it for ``_stirring``.
        """
        cv2.LUT(self._reference, self._pixels.lut, dst=self._thresholds)
        cv2.bitwise_or(self._thresholds, self._outside, dst=self._thresholds)
        cv2.add(self._thresholds, self._thresholds // 2, dst=self._stir_thresholds)

    def decide(
        self,
        measure: Measure,
        door: DoorState | None = None,
        contact_open: bool | None = None,
        left_closed: bool | None = None,
    ) -> MotionResult:
        """Say whether an event starts or ends, from this frame's ``measure`` and the door's readings.

        ``door`` is the door state where there is a reference of the closed door, ``left_closed`` whether this
        frame no longer looks like it, ``contact_open`` the door contact where there is one; they shape when
        events start and end (``EventTracker``).
        """
        events = self._events
        t, score, moving, calibrating, global_change, settling, stirring, _ = measure
        event = events.update(t, moving, door, contact_open, left_closed, light_changing=global_change or settling)
        why = events.why if event else None
        return MotionResult(
            score,
            moving,
            calibrating,
            global_change,
            settling,
            event,
            events.in_event,
            door,
            why,
            events.pending,
            stirring,
        )

    def _learn_noise(
        self, quiet: tuple[NDArray[np.uint8], NDArray[np.uint8]] | None, score: float, calibrating: bool, fast: bool
    ) -> None:
        """Learn the pixels' noise from a quiet frame's samples, and the grid cells' own noise.

        The cells' noise is a standard deviation from their median deviation: while calibrating from every frame
        (a noisy sensor's rows and colours can make each one look like a light change until it is known).
        """
        rate = FAST_RATE if calibrating or fast else NOISE_RATE
        # While calibrating the scene is taken as quiet whatever the score: noise over ``motion.threshold`` (a dim
        # sensor at high gain) makes a score of its own until it is known. Pixels over their threshold never count.
        still = calibrating or (score < self._settings.min_area and not self._events.in_event)
        if quiet is not None and still:
            self._pixels.learn(quiet[0], quiet[1], rate)
        if calibrating or (quiet is not None and still):
            self._light.learn_noise(rate, calibrating=calibrating)

    def _stirring(self, current: NDArray[np.uint8]) -> bool:
        """Whether ``STIRRING`` of the zone changed from the previous frame by 1.5 times its threshold.

        The difference of two frames carries the noise of both, 1.4 times one frame's against the background.
        """
        cv2.absdiff(current, self._previous, dst=self._stirred)
        cv2.compare(self._stirred, self._stir_thresholds, cv2.CMP_GT, dst=self._stirred)
        return int(cv2.countNonZero(self._stirred)) >= STIRRING * self._zone_pixels

    def changed_mask(self) -> NDArray[np.uint8]:
        """The door-zone pixels the last frame's score counted (255), full frame size: for explaining, not per frame."""
        half = np.zeros((self._height // 2, self._width // 2), np.uint8)
        half[self._box] = self._changed
        return np.asarray(cv2.resize(half, (self._width, self._height), interpolation=cv2.INTER_NEAREST), np.uint8)

    def _allow_unclipping(self, current: NDArray[np.uint8]) -> None:
        """Let pixels clipped at 255 in the background be as bright as they like in the frame.

        Their true brightness is unknown, so when the exposure drops, a frame value at least as bright as the gain
        predicts from 255 is consistent with them, not a change.
        """
        np.greater_equal(self._background, 254.5, out=self._clipped)
        cv2.max(self._reference, current, dst=self._scratch)
        cv2.copyTo(self._scratch, self._clipped.view(np.uint8), self._reference)

    def _forget_ghosts(self, current: NDArray[np.uint8], gain: float) -> None:
        """Give pixels that are back to how they were before the event (a door shut again) that background.

        They still count in this frame, since getting back is motion, but leave no fading ghost of the open door
        behind that would keep the event going for seconds after the door closed.
        """
        cv2.convertScaleAbs(self._before, dst=self._reference, alpha=gain)
        cv2.absdiff(current, self._reference, dst=self._scratch)
        cv2.compare(self._scratch, self._thresholds, cv2.CMP_LE, dst=self._back)
        cv2.accumulateWeighted(current, self._background, FAST_RATE, mask=self._back)

    def _learn(self, frame: Frame, current: NDArray[np.uint8], *, fast: bool, checked: bool, changed: bool) -> None:
        """Blend the frame into the backgrounds; changed pixels learn slower unless settling.

        ``checked``: the light check made the grid of this frame (``LightCheck.learn``). ``changed``: the last
        comparison found changed pixels (``_changed``).
        """
        rate = FAST_RATE if fast else self._settings.learning_rate
        self._light.learn(frame, self._frames, rate, checked=checked)
        if fast or not changed:
            cv2.accumulateWeighted(current, self._background, rate)
            return
        slow = rate * CHANGED_RATE_FACTOR
        # Everything at the slow rate, then the unchanged pixels again so that in all they learn at ``rate``.
        cv2.accumulateWeighted(current, self._background, slow)
        cv2.bitwise_not(self._changed, dst=self._scratch)
        cv2.accumulateWeighted(current, self._background, 1.0 - (1.0 - rate) / (1.0 - slow), mask=self._scratch)
