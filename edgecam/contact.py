"""The door contact: a reed switch on a GPIO pin, read through gpiozero (the only gpiozero import)."""

import logging
import warnings
from typing import Any, Protocol

from edgecam.config import DoorSettings
from edgecam.errors import ContactError

logger = logging.getLogger(__name__)


class DoorContact(Protocol):
    """A switch that says whether the door is open."""

    def is_open(self) -> bool:
        """The door is open now (cheap: called on every frame)."""
        ...

    def close(self) -> None:
        """Release the pin; safe to call twice."""
        ...


class GpioContact:
    """A reed switch on a GPIO pin; shut while the magnet on the door is next to it."""

    def __init__(self, device: Any, pin: int) -> None:
        self._device = device
        self._pin = pin
        self._was_open: bool | None = None

    def is_open(self) -> bool:
        """The door is open: the switch is not at its shut level."""
        opened = not self._device.is_active
        if opened != self._was_open:
            logger.info("door contact on GPIO%d: %s", self._pin, "open" if opened else "closed")
            self._was_open = opened
        return opened

    def close(self) -> None:
        """Release the pin."""
        self._device.close()


def open_contact(door: DoorSettings, pin_factory: object | None = None) -> DoorContact | None:
    """The contact on ``door.contact_pin``, or None when none is set; raise ContactError when it cannot be read.

    ``pin_factory`` is gpiozero's (a ``MockFactory`` in tests); None picks the platform's (lgpio on a Pi).
    """
    if door.contact_pin is None:
        return None
    try:
        from gpiozero import BadPinFactory, DigitalInputDevice, GPIOZeroError, PinFactoryFallback
    except ImportError as err:
        raise ContactError(f"door.contact_pin: {door.contact_pin} is set but gpiozero is not installed") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PinFactoryFallback)  # one warning per pin library it tries
            # With the pull-up a shut switch pulls the pin low: "active" means shut in both wirings.
            device = DigitalInputDevice(
                door.contact_pin,
                pull_up=door.contact_closed_when == "low",
                bounce_time=door.contact_bounce or None,
                pin_factory=pin_factory,
            )
    except (BadPinFactory, ImportError) as err:
        raise ContactError(
            f"door.contact_pin: GPIO{door.contact_pin} cannot be read: no GPIO library works here "
            "(on Raspberry Pi OS: sudo apt install python3-lgpio, and a venv with --system-site-packages)"
        ) from err
    except (GPIOZeroError, OSError) as err:
        raise ContactError(f"door.contact_pin: GPIO{door.contact_pin} cannot be read: {err}") from err
    logger.info("door contact on GPIO%d, shut when %s", door.contact_pin, door.contact_closed_when)
    return GpioContact(device, door.contact_pin)
