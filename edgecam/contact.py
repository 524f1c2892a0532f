"""The door contact: a reed switch on a GPIO pin (read through gpio.py)."""

import logging
from typing import Protocol

from edgecam.config import DoorSettings
from edgecam.gpio import GpioSwitch, open_switch

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

    def __init__(self, switch: GpioSwitch) -> None:
        self._switch = switch
        self._was_open: bool | None = None

    def is_open(self) -> bool:
        """The door is open: the switch is not at its shut level."""
        opened = not self._switch.is_on()
        if opened != self._was_open:
            logger.info("door contact on GPIO%d: %s", self._switch.pin, "open" if opened else "closed")
            self._was_open = opened
        return opened

    def close(self) -> None:
        """Release the pin."""
        self._switch.close()


def open_contact(door: DoorSettings, pin_factory: object | None = None) -> DoorContact | None:
    """The contact on ``door.contact_pin``, or None when none is set; raise GpioError when it cannot be read.

    ``pin_factory`` is gpiozero's (a ``MockFactory`` in tests); None picks the platform's (lgpio on a Pi).
    """
    if door.contact_pin is None:
        return None
    # With the pull-up a shut switch pulls the pin low; with the pull-down (a switch to 3.3 V) high.
    switch = open_switch(
        door.contact_pin,
        "door.contact_pin",
        on_when=door.contact_closed_when,
        pull="up" if door.contact_closed_when == "low" else "down",
        bounce=door.contact_bounce or None,
        pin_factory=pin_factory,
    )
    logger.info("door contact on GPIO%d, shut when %s", door.contact_pin, door.contact_closed_when)
    return GpioContact(switch)
