"""Whether detection is on: the switch (``<base>/set/detect``), the schedule and the GPIO switch decide together.

Detection runs only while none of them holds it off. The switch is a wish that is remembered: ON sent while the
schedule or the GPIO switch holds detection off changes nothing now, and detection comes back on when they let go.
Pure: the caller reads the clock, the pin and the commands; this module decides and logs each change.
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from edgecam.config import PrivacySettings
from edgecam.errors import ConfigError
from edgecam.schedule import Schedule, time_zone

logger = logging.getLogger(__name__)

HOLDERS = ("switch", "schedule", "gpio")
"""What can hold detection off, in the order ``held_off_by`` lists them (``<base>/privacy``)."""
_SAID = {
    "switch": "the switch (set/detect OFF)",
    "schedule": "the schedule (privacy.schedule)",
    "gpio": "the GPIO switch (privacy.gpio_pin)",
}


@dataclass(frozen=True)
class Decision:
    """Whether detection is on, and what holds it off (any of ``HOLDERS``, in that order; empty while on)."""

    detect: bool
    held_off_by: tuple[str, ...]


def decide(switch_on: bool, scheduled: bool, gpio_off: bool) -> Decision:
    """Detection is on only while the switch is ON, no schedule window covers now and the GPIO switch is not on."""
    held = tuple(name for name, off in zip(HOLDERS, (not switch_on, scheduled, gpio_off), strict=True) if off)
    return Decision(not held, held)


class Privacy:
    """The decision over time: asks the schedule at most once a (wall-clock) second and logs each change.

    ``switch_on`` is the switch's remembered wish; ``scheduled(now)`` says whether a window covers the instant
    ``now`` (``Schedule.covers``), None without a schedule.
    """

    def __init__(self, switch_on: bool, scheduled: Callable[[float], bool] | None = None) -> None:
        self.switch_on = switch_on
        self._scheduled = scheduled
        self._in_window = False
        self._second: int | None = None
        self.decision: Decision | None = None
        """The latest decision; None before the first ``update``."""

    def update(self, now: float, gpio_off: bool = False) -> Decision | None:
        """The decision at ``now`` (POSIX seconds) if it differs from the last one (the first call: always), else None.

        ``gpio_off``: the GPIO switch holds detection off now. Cheap enough for every frame.
        """
        second = math.floor(now)
        if self._scheduled is not None and second != self._second:  # a clock set back is a new second too
            self._second = second
            self._in_window = self._scheduled(now)
        decision = decide(self.switch_on, self._in_window, gpio_off)
        previous, self.decision = self.decision, decision
        if decision == previous:
            return None
        was_on = previous is None or previous.detect
        if not decision.detect:
            held = ", ".join(_SAID[h] for h in decision.held_off_by)
            logger.info("privacy: detection %s, held off by %s", "off" if was_on else "stays off", held)
        elif previous is not None:
            logger.info("privacy: detection back on")
        return decision


def open_schedule(privacy: PrivacySettings) -> Schedule | None:
    """The schedule of ``privacy.schedule`` in ``privacy.timezone`` (else the system's); None without windows.

    Raises ConfigError (one line naming ``privacy.timezone``) when the system's zone is unset or unknown to the zone
    database; the windows and a named zone were checked with the settings.
    """
    if not privacy.schedule:
        return None
    try:
        zone = time_zone(privacy.timezone)
    except ValueError as err:
        if privacy.timezone is not None:
            raise ConfigError(f"privacy.timezone: {err}") from err
        raise ConfigError(f'privacy.timezone: unset, and {err}: set privacy.timezone, e.g. "Europe/Berlin"') from err
    return Schedule.parse(privacy.schedule, zone)
