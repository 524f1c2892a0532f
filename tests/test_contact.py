import importlib.util
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from edgecam.config import DoorSettings
from edgecam.contact import open_contact
from edgecam.errors import GpioError

PIN = 17


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.close()


def test_no_pin_no_contact(factory: MockFactory) -> None:
    assert open_contact(DoorSettings(), factory) is None


def test_a_switch_to_ground_reads_shut_when_low(factory: MockFactory) -> None:
    contact = open_contact(DoorSettings(contact_pin=PIN), factory)
    assert contact is not None
    pin = factory.pin(PIN)
    assert pin.pull == "up"
    pin.drive_low()
    assert not contact.is_open()
    pin.drive_high()
    assert contact.is_open()


def test_a_switch_to_3v3_reads_shut_when_high(factory: MockFactory) -> None:
    contact = open_contact(DoorSettings(contact_pin=PIN, contact_closed_when="high"), factory)
    assert contact is not None
    pin = factory.pin(PIN)
    assert pin.pull == "down"
    pin.drive_high()
    assert not contact.is_open()
    pin.drive_low()
    assert contact.is_open()


def test_the_bounce_time_is_handed_to_the_pin(factory: MockFactory) -> None:
    open_contact(DoorSettings(contact_pin=PIN, contact_bounce=0.2), factory)
    assert factory.pin(PIN).bounce == pytest.approx(0.2)
    open_contact(DoorSettings(contact_pin=PIN + 1, contact_bounce=0.0), factory)
    assert factory.pin(PIN + 1).bounce is None


def test_a_pin_in_use_is_a_one_line_error_naming_the_setting(factory: MockFactory) -> None:
    first = open_contact(DoorSettings(contact_pin=PIN), factory)
    assert first is not None
    with pytest.raises(GpioError, match=r"^door\.contact_pin: GPIO17 cannot be read: .*in use") as err:
        open_contact(DoorSettings(contact_pin=PIN), factory)
    assert "\n" not in str(err.value)
    first.close()
    first.close()
    assert open_contact(DoorSettings(contact_pin=PIN), factory) is not None  # released: can be opened again


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio is installed: a real pin would open")
def test_no_gpio_library_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "lgpio")  # not installed here, nor on a Pi without python3-lgpio
    with pytest.raises(GpioError, match=r"^door\.contact_pin: GPIO17 cannot be read: .*python3-lgpio") as err:
        open_contact(DoorSettings(contact_pin=PIN))
    assert "\n" not in str(err.value)
