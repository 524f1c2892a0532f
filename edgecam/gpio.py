"""GPIO pins through gpiozero (the only gpiozero import): the door contact, the privacy switch, the illuminator.

An input is a gpiozero ``DigitalInputDevice``, read when the agent asks (``is_active``: the pin's level now, from
the pin library, ``lgpio.gpio_read`` on a Pi). The illuminator's pin is a ``DigitalOutputDevice`` that drives the
input of a relay or MOSFET board.
"""

import logging
import warnings
from collections.abc import Callable
from typing import Any, Literal

from edgecam.config import IlluminatorSettings, PrivacySettings
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


def _device(setting: str, pin: int, use: str, make: Callable[[Any], Any]) -> Any:
    """``make(gpiozero)``, a device on ``pin``; its errors as one-line GpioErrors naming ``setting`` (``use``: how)."""
    try:
        import gpiozero
    except ImportError as err:
        raise GpioError(f"{setting}: {pin} is set but gpiozero is not installed") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gpiozero.PinFactoryFallback)  # one warning per pin library it tries
            return make(gpiozero)
    except (gpiozero.BadPinFactory, ImportError) as err:
        raise GpioError(
            f"{setting}: GPIO{pin} cannot be {use}: no GPIO library works here "
            "(on Raspberry Pi OS: sudo apt install python3-lgpio, and a venv with --system-site-packages)"
        ) from err
    except (gpiozero.GPIOZeroError, OSError) as err:
        raise GpioError(f"{setting}: GPIO{pin} cannot be {use}: {err}") from err


def open_switch(
    pin: int, setting: str, on_when: Level, pull: Pull, bounce: float | None = None, pin_factory: object | None = None
) -> GpioSwitch:
    """The switch on GPIO ``pin`` (BCM number), named by ``setting`` in errors; raise GpioError (one line).

    ``pull``: the pin's internal resistor. ``bounce``: seconds handed to gpiozero's ``bounce_time`` (on a Pi lgpio's
    ``gpio_set_debounce_micros``, meant for edge events; ``is_on`` reads the level with ``gpio_read``).
    ``pin_factory`` is gpiozero's (a ``MockFactory`` in tests); None picks the platform's (lgpio on a Pi).
    """
    # gpiozero: with a pull resistor, "active" is the level the switch pulls to (low with the pull-up); a pin
    # without one (pull_up=None) must be told, and is told "active when high" here.
    pull_up = {"up": True, "down": False, "none": None}[pull]
    active_high = pull_up is not True
    device = _device(
        setting,
        pin,
        "read",
        lambda gpiozero: gpiozero.DigitalInputDevice(
            pin,
            pull_up=pull_up,
            active_state=True if pull_up is None else None,
            bounce_time=bounce,
            pin_factory=pin_factory,
        ),
    )
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


class GpioOutput:
    """A switch on an output pin: ``on`` drives the pin to the level it was opened with, ``off`` to the other."""

    def __init__(self, device: Any, pin: int) -> None:
        self._device = device
        self.pin = pin
        """The GPIO's BCM number."""

    def on(self) -> None:
        """Drive the pin to its 'on' level."""
        self._device.on()

    def off(self) -> None:
        """Drive the pin to its 'off' level."""
        self._device.off()

    def is_on(self) -> bool:
        """The pin is driven to its 'on' level now; False once closed."""
        return not self._device.closed and bool(self._device.is_active)

    def close(self) -> None:
        """Drive the pin off, then release it; safe to call twice.

        gpiozero 2.0.1 releases a pin by making it an input again: with lgpio, ``gpio_claim_input`` without a pull
        (``gpiozero/pins/lgpio.py``, ``LGPIOPin.close``), so the board's own input resistor then holds the level.
        """
        if not self._device.closed:
            self._device.off()
        self._device.close()


def open_output(pin: int, setting: str, on_when: Level, pin_factory: object | None = None) -> GpioOutput:
    """The output on GPIO ``pin`` (BCM number), off from the start, named by ``setting`` in errors; raise GpioError.

    ``on_when``: the level that switches on. ``pin_factory`` is gpiozero's (a ``MockFactory`` in tests and for the
    simulated scene); None picks the platform's (lgpio on a Pi).
    """
    device = _device(
        setting,
        pin,
        "driven",
        lambda gpiozero: gpiozero.DigitalOutputDevice(
            pin, active_high=on_when == "high", initial_value=False, pin_factory=pin_factory
        ),
    )
    return GpioOutput(device, pin)


def simulated_pins() -> object:
    """Pins that exist only in this process (gpiozero's ``MockFactory``), for the simulated scene's light."""
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


def open_illuminator_pin(
    illuminator: IlluminatorSettings, *, simulated: bool = False, pin_factory: object | None = None
) -> GpioOutput | None:
    """The output on ``illuminator.pin``, off; None when no pin is set.

    ``simulated``: the camera is the simulated scene, so the pin is a mock one (``simulated_pins``) that the scene
    reads (``SimulatedSource.wire_light``) and no real GPIO is touched. Raises GpioError (one line naming
    ``illuminator.pin``) when the pin cannot be driven.
    """
    if illuminator.pin is None:
        return None
    if pin_factory is None and simulated:
        pin_factory = simulated_pins()
    output = open_output(illuminator.pin, "illuminator.pin", illuminator.on_level, pin_factory)
    logger.info(
        "illuminator on GPIO%d (on when %s)%s",
        illuminator.pin,
        illuminator.on_level,
        ", a mock pin lighting the simulated scene" if simulated else "",
    )
    return output
