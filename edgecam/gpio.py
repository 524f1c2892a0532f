"""Switches on GPIO pins, read through gpiozero (the only gpiozero import): the door contact and the privacy switch.

Each pin is a gpiozero ``DigitalInputDevice``, read when the agent asks (``is_active``: the pin's level now, from
the pin library, ``lgpio.gpio_read`` on a Pi).
"""

import logging
import warnings
from typing import Any, Literal

from edgecam.config import PrivacySettings
from edgecam.errors import GpioError

logger = logging.getLogger(__name__)

Level = Literal["low", "high"]
Pull = Literal["up", "down", "none"]


class GpioSwitch:
    """A switch on an input pin: on while the pin is at the level it was opened with."""

    def __init__(self, device: Any, pin: int, on_when: Level, active_high: bool) -> None:
        self._device = device
        self.pin = pin
        """The GPIO's BCM number."""
        self._on_high = on_when == "high"
        self._active_high = active_high

    def is_on(self) -> bool:
        """The pin is at the switch's 'on' level now (cheap: one read of the pin, called on every frame)."""
        high = bool(self._device.is_active) == self._active_high
        return high == self._on_high

    def close(self) -> None:
        """Release the pin; safe to call twice (gpiozero's ``close`` is)."""
        self._device.close()


def open_switch(
    pin: int, setting: str, on_when: Level, pull: Pull, bounce: float | None = None, pin_factory: object | None = None
) -> GpioSwitch:
    """The switch on GPIO ``pin`` (BCM number), named by ``setting`` in errors; raise GpioError (one line).

    ``pull``: the pin's internal resistor. ``bounce``: seconds handed to gpiozero's ``bounce_time`` (on a Pi lgpio's
    ``gpio_set_debounce_micros``, meant for edge events; ``is_on`` reads the level with ``gpio_read``).
    ``pin_factory`` is gpiozero's (a ``MockFactory`` in tests); None picks the platform's (lgpio on a Pi).
    """
    try:
        from gpiozero import BadPinFactory, DigitalInputDevice, GPIOZeroError, PinFactoryFallback
    except ImportError as err:
        raise GpioError(f"{setting}: {pin} is set but gpiozero is not installed") from err
    # gpiozero: with a pull resistor, "active" is the level the switch pulls to (low with the pull-up); a pin
    # without one (pull_up=None) must be told, and is told "active when high" here.
    pull_up = {"up": True, "down": False, "none": None}[pull]
    active_high = pull_up is not True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PinFactoryFallback)  # one warning per pin library it tries
            device = DigitalInputDevice(
                pin,
                pull_up=pull_up,
                active_state=True if pull_up is None else None,
                bounce_time=bounce,
                pin_factory=pin_factory,
            )
    except (BadPinFactory, ImportError) as err:
        raise GpioError(
            f"{setting}: GPIO{pin} cannot be read: no GPIO library works here "
            "(on Raspberry Pi OS: sudo apt install python3-lgpio, and a venv with --system-site-packages)"
        ) from err
    except (GPIOZeroError, OSError) as err:
        raise GpioError(f"{setting}: GPIO{pin} cannot be read: {err}") from err
    return GpioSwitch(device, pin, on_when, active_high)


def open_privacy_switch(privacy: PrivacySettings, pin_factory: object | None = None) -> GpioSwitch | None:
    """The switch on ``privacy.gpio_pin``, on while it holds detection off; None when no pin is set.

    Raises GpioError (one line naming ``privacy.gpio_pin``) when the pin cannot be read.
    """
    if privacy.gpio_pin is None:
        return None
    pull = privacy.gpio_pull or ("up" if privacy.gpio_off_when == "low" else "down")
    switch = open_switch(privacy.gpio_pin, "privacy.gpio_pin", privacy.gpio_off_when, pull, pin_factory=pin_factory)
    logger.info(
        "privacy switch on GPIO%d (pull %s): detection held off while it is %s",
        privacy.gpio_pin,
        pull,
        privacy.gpio_off_when,
    )
    return switch
