"""The illuminator: a light switched on in the dark for an event's stills only, and off again at once; no I/O.

Whether the scene is dark is judged from frames the light did not light: the camera's ``Lux`` estimate where the
frame's metadata has one (picamera2 gives it where libcamera's ``rpi.lux`` algorithm runs), else the mean grey
level of the detection frame, every ``JUDGE_EVERY`` seconds while the light is off, averaged. In the dark the light
goes on at an event's start and off once the event has ``capture.stills_per_event`` stills, after ``max_on``
seconds, or when the event ends, whichever comes first: never outside an event. A still waits until the camera's
exposure has adapted to the light (``settle``); in the dark none is taken before the light is on, not even of
motion awaiting the door's confirmation (it would show nothing, and would use up the event's stills).

Why at the start, not at the first moving frame of motion the door has not confirmed yet: a light switched for
motion the door never confirms (a person waiting in front of the shut door, a cat) lights someone for nothing,
and a light change makes the detector settle, when motion starts an event without the door's confirmation
(``EventTracker``): the light would start the very event it was switched on for. The pipeline tells the detector of
each switch (``MotionDetector.light_switched``) so that neither makes motion.
"""

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import cv2

from edgecam.config import IlluminatorSettings
from edgecam.models import Frame

logger = logging.getLogger(__name__)

JUDGE_EVERY = 0.5
"""Seconds between two looks at how dark the scene is: it changes slowly, and a look costs a pass over the frame."""
JUDGE_RATE = 0.3
"""Weight of each look in the running estimate, so that a person passing in front of the camera changes little."""


class Lamp(Protocol):
    """The light's switch: a GPIO output (``edgecam.gpio.GpioOutput``)."""

    def on(self) -> None:
        """Switch the light on."""
        ...

    def off(self) -> None:
        """Switch the light off."""
        ...


def light_level(frame: Frame) -> tuple[str, float]:
    """How light the scene of ``frame`` is: ("lux", the camera's estimate) or ("grey", the mean grey level).

    Lux where the frame's metadata has it (picamera2's ``get_metadata``), else the detection frame's mean grey
    level, 0-255.
    """
    lux = _number(frame.metadata, "Lux")
    if lux is not None:
        return "lux", lux
    return "grey", float(cv2.mean(frame.gray)[0])


def _number(metadata: Mapping[str, Any], key: str) -> float | None:
    value = metadata.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Illuminator:
    """When the light is on, and whether a still may be taken now; called by the pipeline on every frame.

    ``still_ready`` comes before the capture policy sees the frame, ``after_capture`` after it. ``after_capture``
    and ``off`` switch the lamp and say whether they did, so that the detector is told.
    """

    def __init__(self, settings: IlluminatorSettings, lamp: Lamp, stills_per_event: int) -> None:
        self._settings = settings
        self._lamp = lamp
        self._stills_per_event = stills_per_event
        self._on_at: float | None = None
        """When the light went on, while it is on."""
        self._judge_at = float("-inf")
        """When the scene may next be judged: never from a lit frame, nor before the exposure recovers from one."""
        self._level: tuple[str, float] | None = None
        """The running estimate of ``light_level`` from frames the light did not light."""
        self._stills = 0
        """Stills of the event under way."""
        self._lit_event = False
        """The light has been on during the event under way (it goes on once an event)."""

    @property
    def dark(self) -> bool:
        """The scene is dark by the last frames the light did not light; False before any was judged."""
        return self._darkness() is not None

    def _darkness(self) -> tuple[str, float] | None:
        """The running ``light_level`` where it says dark, else None."""
        if self._level is None:
            return None
        kind, level = self._level
        return (
            self._level if level < (self._settings.dark_lux if kind == "lux" else self._settings.dark_level) else None
        )

    def still_ready(self, frame: Frame) -> bool:
        """Whether a still may be taken at ``frame``: not while the light settles, nor in the dark before it is on.

        Judges the scene's darkness from ``frame`` when it is due and the light is off.
        """
        if self._on_at is not None:
            return frame.t - self._on_at >= self._settings.settle
        if frame.t >= self._judge_at:
            self._judge(frame)
        return self._lit_event or not (self.dark and self._stills_per_event > 0)

    def after_capture(self, t: float, stills: int, in_event: bool) -> bool:
        """Follow the event after the capture policy has seen the frame at ``t``; return whether the light switched.

        ``stills``: how many stills that frame gave the event (its start commits those held before it); ``in_event``:
        an event is under way after it. On at an event's start in the dark while it lacks stills; off once it has
        all, after ``max_on`` seconds, or at its end.
        """
        if not in_event:
            self._stills, self._lit_event = 0, False
            return self.off("the event ended", t)
        self._stills += stills
        if self._on_at is not None:
            if self._stills >= self._stills_per_event:
                return self.off("the event's last still is taken", t)
            if t - self._on_at >= self._settings.max_on:
                return self.off("illuminator.max_on", t)
            return False
        darkness = self._darkness()
        if self._lit_event or darkness is None or self._stills >= self._stills_per_event:
            return False
        self._lamp.on()
        self._on_at, self._lit_event = t, True
        kind, level = darkness
        logger.info("illuminator: on for the event's stills (the scene is dark: %s %.1f)", kind, level)
        return True

    def off(self, why: str, t: float | None = None) -> bool:
        """Switch the light off if it is on, at frame time ``t`` where known (``why``, for the log).

        Returns whether it was on. With ``t`` the scene is next judged once the exposure has recovered from the
        light; without, at the next frame.
        """
        on_at, self._on_at = self._on_at, None
        if on_at is None:
            return False
        self._lamp.off()
        if t is None:
            logger.info("illuminator: off: %s", why)
            return True
        logger.info("illuminator: off after %.1f s: %s", t - on_at, why)
        self._judge_at = t + self._settings.settle
        return True

    def _judge(self, frame: Frame) -> None:
        kind, level = light_level(frame)
        if self._level is not None and self._level[0] == kind:
            level = self._level[1] + JUDGE_RATE * (level - self._level[1])
        self._level = (kind, level)
        self._judge_at = frame.t + JUDGE_EVERY
