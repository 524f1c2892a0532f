"""The privacy switch and the illuminator's output on gpiozero's mock pins (the door contact's: test_contact.py)."""

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from edgecam.config import DoorSettings, IlluminatorSettings, PrivacySettings
from edgecam.contact import open_contact
from edgecam.errors import GpioError
from edgecam.gpio import open_illuminator_pin, open_privacy_switch

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


def test_no_illuminator_pin_no_output(factory: MockFactory) -> None:
    assert open_illuminator_pin(IlluminatorSettings(), pin_factory=factory) is None


@pytest.mark.parametrize(("on_level", "on_state"), [("high", True), ("low", False)])
def test_the_illuminator_pin_is_driven_off_from_the_start_and_on_at_its_level(
    factory: MockFactory, on_level: str, on_state: bool
) -> None:
    lamp = open_illuminator_pin(
        IlluminatorSettings.model_validate({"pin": PIN, "on_level": on_level}), pin_factory=factory
    )
    assert lamp is not None
    pin = factory.pin(PIN)
    assert pin.function == "output"
    assert pin.state is not on_state, "off until an event needs it"
    assert not lamp.is_on()
    lamp.on()
    assert pin.state is on_state
    assert lamp.is_on()
    lamp.off()
    assert pin.state is not on_state


def test_closing_the_illuminator_switches_it_off_and_frees_the_pin(factory: MockFactory) -> None:
    lamp = open_illuminator_pin(IlluminatorSettings(pin=PIN), pin_factory=factory)
    assert lamp is not None
    pin = factory.pin(PIN)
    lamp.on()
    lamp.close()
    assert pin.function == "input", "released as gpiozero releases a pin: an input again"
    assert [state for _, state in pin.states][-2:] == [True, False], "driven off before it was released"
    assert not lamp.is_on()
    lamp.close()
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN), factory)
    assert switch is not None, "the pin is free again"
    switch.close()


def test_an_illuminator_pin_in_use_is_one_line_naming_illuminator_pin(factory: MockFactory) -> None:
    switch = open_privacy_switch(PrivacySettings(gpio_pin=PIN), factory)
    assert switch is not None
    with pytest.raises(GpioError, match=r"^illuminator\.pin: GPIO22 cannot be driven: .*in use") as err:
        open_illuminator_pin(IlluminatorSettings(pin=PIN), pin_factory=factory)
    assert "\n" not in str(err.value)
    switch.close()


def test_the_simulated_scenes_illuminator_is_a_mock_pin_of_its_own() -> None:
    first = open_illuminator_pin(IlluminatorSettings(pin=PIN), simulated=True)
    second = open_illuminator_pin(IlluminatorSettings(pin=PIN), simulated=True)
    assert first is not None
    assert second is not None, "each on pins of its own: no real GPIO, nothing shared"
    first.on()
    assert first.is_on()
    assert not second.is_on()
    first.close()
    second.close()
