"""What holds detection off: the switch (set/detect), the schedule and the GPIO switch; and their settings."""

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgecam.cli import main
from edgecam.config import PrivacySettings
from edgecam.errors import ConfigError
from edgecam.privacy import Decision, Privacy, decide, open_schedule

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)


class FakeSchedule:
    """A schedule the test moves in and out of a window, counting how often it is asked."""

    def __init__(self) -> None:
        self.window = False
        self.asked = 0

    def __call__(self, now: float) -> bool:
        self.asked += 1
        return self.window


def test_every_holder_that_applies_is_named_in_order() -> None:
    assert decide(switch_on=True, scheduled=False, gpio_off=False) == Decision(True, ())
    assert decide(switch_on=False, scheduled=True, gpio_off=True) == Decision(False, ("switch", "schedule", "gpio"))
    assert decide(switch_on=True, scheduled=True, gpio_off=False) == Decision(False, ("schedule",))
    assert decide(switch_on=True, scheduled=False, gpio_off=True) == Decision(False, ("gpio",))
    assert decide(switch_on=False, scheduled=False, gpio_off=True) == Decision(False, ("switch", "gpio"))


def test_the_schedule_wins_over_the_switch_which_is_remembered() -> None:
    schedule = FakeSchedule()
    privacy = Privacy(switch_on=True, scheduled=schedule)
    assert privacy.update(NOON) == Decision(True, ())
    schedule.window = True
    assert privacy.update(NOON + 1) == Decision(False, ("schedule",))
    privacy.switch_on = True  # ON sent while the schedule holds detection off: nothing changes
    assert privacy.update(NOON + 2) is None
    privacy.switch_on = False
    assert privacy.update(NOON + 3) == Decision(False, ("switch", "schedule"))
    privacy.switch_on = True
    assert privacy.update(NOON + 4) == Decision(False, ("schedule",))
    schedule.window = False  # the window ends: the switch says ON, so detection is back on
    assert privacy.update(NOON + 5) == Decision(True, ())


def test_a_switch_left_off_keeps_detection_off_after_the_window() -> None:
    schedule = FakeSchedule()
    schedule.window = True
    privacy = Privacy(switch_on=False, scheduled=schedule)
    assert privacy.update(NOON) == Decision(False, ("switch", "schedule"))
    schedule.window = False
    assert privacy.update(NOON + 1) == Decision(False, ("switch",))


def test_the_gpio_switch_holds_detection_off_whatever_the_others_say() -> None:
    privacy = Privacy(switch_on=True)
    assert privacy.update(NOON, gpio_off=True) == Decision(False, ("gpio",))
    assert privacy.update(NOON, gpio_off=True) is None
    assert privacy.update(NOON, gpio_off=False) == Decision(True, ())


def test_the_schedule_is_asked_at_most_once_a_second() -> None:
    schedule = FakeSchedule()
    privacy = Privacy(switch_on=True, scheduled=schedule)
    for frame in range(10):  # ten frames within one second
        privacy.update(NOON + frame * 0.099)
    assert schedule.asked == 1
    schedule.window = True
    assert privacy.update(NOON + 0.999) is None, "not asked again within the second"
    assert privacy.update(NOON + 1.0) == Decision(False, ("schedule",))
    assert schedule.asked == 2
    assert privacy.update(NOON - 3600.0) is None, "a clock set back is a new second: asked again"
    assert schedule.asked == 3


def test_one_line_on_each_change_saying_what_holds_detection_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.privacy")
    schedule = FakeSchedule()
    privacy = Privacy(switch_on=True, scheduled=schedule)
    privacy.update(NOON)
    assert caplog.messages == [], "on from the start: nothing to say"
    schedule.window = True
    for t in (1.0, 1.5, 2.0):
        privacy.update(NOON + t)
    privacy.switch_on = False
    privacy.update(NOON + 3, gpio_off=True)
    schedule.window = False
    privacy.switch_on = True
    privacy.update(NOON + 4, gpio_off=False)
    assert caplog.messages == [
        "privacy: detection off, held off by the schedule (privacy.schedule)",
        "privacy: detection stays off, held off by the switch (set/detect OFF), the schedule (privacy.schedule), "
        "the GPIO switch (privacy.gpio_pin)",
        "privacy: detection back on",
    ]


def test_no_schedule_set_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "not/a zone")
    assert open_schedule(PrivacySettings()) is None, "the time zone matters only with a schedule"


def test_the_schedule_runs_in_the_named_time_zone() -> None:
    schedule = open_schedule(PrivacySettings(schedule=["09:00-10:00"], timezone="America/New_York"))
    assert schedule is not None
    assert schedule.covers(datetime(2026, 6, 10, 13, 30, tzinfo=UTC).timestamp())  # 09:30 EDT


def test_a_system_time_zone_that_cannot_be_read_is_one_line_naming_privacy_timezone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    with pytest.raises(ConfigError, match=r"^privacy\.timezone: unset, and TZ='CET-1CEST.*' is not an IANA") as err:
        open_schedule(PrivacySettings(schedule=["22:00-07:00"]))
    assert "\n" not in str(err.value)


def test_check_config_and_run_refuse_a_bad_window_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_PRIVACY__SCHEDULE", '["22:00-07:00", "mon-fry 17:30-08:00"]')
    for command in ("check-config", "run"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            "edgecam: privacy.schedule[1]: 'mon-fry 17:30-08:00' is not allowed: 'fry' is not a day; write "
        )
        assert "HH:MM-HH:MM" in err
        assert len(err.strip().splitlines()) == 1


def test_check_config_refuses_an_unknown_time_zone_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_PRIVACY__TIMEZONE", "Europe/Berln")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgecam: privacy.timezone: 'Europe/Berln' is not allowed: ")
    assert len(err.strip().splitlines()) == 1


def test_check_config_shows_the_privacy_settings_and_checks_the_system_time_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text(
        f'[storage]\ndir = "{tmp_path / "state"}"\n'
        '[privacy]\nschedule = ["mon-fri 17:30-08:00", "sat,sun 00:00-24:00"]\ngpio_pin = 22\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert '[privacy]\nschedule = ["mon-fri 17:30-08:00", "sat,sun 00:00-24:00"]' in out
    assert "gpio_pin = 22" in out
    assert 'gpio_off_when = "low"' in out
    monkeypatch.setenv("TZ", "Mars/Olympus_Mons")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "edgecam: privacy.timezone: unset, and TZ='Mars/Olympus_Mons' is not an IANA time zone name: "
        'set privacy.timezone, e.g. "Europe/Berlin"\n'
    )


def test_the_privacy_switch_and_the_door_contact_cannot_share_a_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_DOOR__CONTACT_PIN", "17")
    monkeypatch.setenv("EDGECAM_PRIVACY__GPIO_PIN", "17")
    for command in ("check-config", "run"):
        assert main([command]) == 2
        assert capsys.readouterr().err == (
            "edgecam: privacy.gpio_pin: GPIO17 is door.contact_pin too: give the privacy switch a pin of its own\n"
        )
