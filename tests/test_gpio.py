"""The privacy switch on a GPIO pin, on gpiozero's mock pins (the door contact's own tests are in test_contact.py)."""

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from edgecam.config import DoorSettings, PrivacySettings
from edgecam.contact import open_contact
from edgecam.errors import GpioError
from edgecam.gpio import open_privacy_switch

PIN = 22


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.close()


def test_no_pin_no_switch(factory: MockFactory) -> None:
    assert open_privacy_switch(PrivacySettings(), factory) is None


def test_a_switch_to_ground_holds_detection_off_while_closed(factory: MockFactory) -> None:
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN), factory)
    assert switch is not None
    pin = factory.pin(PIN)
    assert pin.pull == "up"
    assert not switch.is_on(), "an open switch (or none wired) lets detection run"
    pin.drive_low()
    assert switch.is_on()
    pin.drive_high()
    assert not switch.is_on()


def test_a_switch_to_3v3_holds_detection_off_while_high(factory: MockFactory) -> None:
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN, gpio_off_when="high"), factory)
    assert switch is not None
    pin = factory.pin(PIN)
    assert pin.pull == "down"
    assert not switch.is_on()
    pin.drive_high()
    assert switch.is_on()


def test_a_switch_that_fails_closed_a_cut_wire_holds_detection_off(factory: MockFactory) -> None:
    # Off when high with the pull-up: the switch to ground must be closed for detection to run.
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN, gpio_off_when="high", gpio_pull="up"), factory)
    assert switch is not None
    pin = factory.pin(PIN)
    assert pin.pull == "up"
    assert switch.is_on(), "nothing pulls the pin low: detection held off"
    pin.drive_low()
    assert not switch.is_on()


def test_a_driven_input_needs_no_pull(factory: MockFactory) -> None:
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN, gpio_off_when="low", gpio_pull="none"), factory)
    assert switch is not None
    pin = factory.pin(PIN)
    assert pin.pull == "floating"
    pin.drive_high()
    assert not switch.is_on()
    pin.drive_low()
    assert switch.is_on()


def test_a_pin_in_use_is_one_line_naming_privacy_gpio_pin(factory: MockFactory) -> None:
    contact = open_contact(DoorSettings(contact_pin=PIN), factory)
    assert contact is not None
    with pytest.raises(GpioError, match=r"^privacy\.gpio_pin: GPIO22 cannot be read: .*in use") as err:
        open_privacy_switch(PrivacySettings(gpio_pin=PIN), factory)
    assert "\n" not in str(err.value)
    contact.close()
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN), factory)
    assert switch is not None
    switch.close()
    switch.close()
