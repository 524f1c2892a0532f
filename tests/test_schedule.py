"""privacy.schedule: the window syntax, days, midnight, and the days the clocks change (a fake clock: instants)."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edgecam.schedule import Schedule, parse_window, time_zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(text: str) -> float:
    """The instant ``text`` (ISO, UTC): what the fake clock says."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def covered(schedule: Schedule, *instants: str) -> list[bool]:
    return [schedule.covers(utc(t)) for t in instants]


def test_a_window_crossing_midnight_covers_the_evening_and_the_next_morning() -> None:
    night = Schedule([parse_window("22:00-07:00")], ZoneInfo("UTC"))
    assert covered(night, "2026-06-10T21:59:59", "2026-06-10T22:00", "2026-06-11T06:59:59", "2026-06-11T07:00") == [
        False,
        True,
        True,
        False,
    ]
    assert not night.covers(utc("2026-06-11T12:00"))


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    evenings = Schedule([parse_window("mon-fri 17:30-08:00")], ZoneInfo("UTC"))  # 2026-06-12 is a Friday
    assert evenings.covers(utc("2026-06-12T18:00")), "Friday evening"
    assert evenings.covers(utc("2026-06-13T07:59")), "Saturday morning: Friday's window"
    assert not evenings.covers(utc("2026-06-13T18:00")), "Saturday evening"
    assert not evenings.covers(utc("2026-06-15T07:00")), "Monday morning: would be Sunday's window"
    assert evenings.covers(utc("2026-06-15T17:30")), "Monday evening"


def test_days_as_lists_and_ranges_and_the_whole_day() -> None:
    weekend = Schedule([parse_window("sat,sun 00:00-24:00")], ZoneInfo("UTC"))
    assert covered(weekend, "2026-06-12T23:59:59", "2026-06-13T00:00", "2026-06-14T23:59:59", "2026-06-15T00:00") == [
        False,
        True,
        True,
        False,
    ]
    long_weekend = parse_window("Fri-Mon 10:00-11:00")  # a range may wrap past Sunday; case does not matter
    assert long_weekend.days == frozenset({4, 5, 6, 0})
    assert parse_window("mon,wed-thu,sun 7:05 - 9:00").days == frozenset({0, 2, 3, 6})
    assert parse_window("07:05-09:00").days == frozenset(range(7))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("mon-fry 17:30-08:00", "'fry' is not a day"),
        ("25:00-07:00", "'25:00' is not a time"),
        ("22:00-07:60", "'07:60' is not a time"),
        ("24:00-07:00", "a window cannot start at 24:00"),
        ("22:00", "is not a window"),
        ("22:00-22:00", "starts and ends at 22:00"),
        ("weekdays 08:00-17:00", "'weekdays' is not a day"),
        ("", "is not a window"),
    ],
)
def test_a_bad_window_says_why_and_the_syntax_allowed(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM") as err:
        parse_window(text)
    assert why in str(err.value)
    assert '"mon-fri 17:30-08:00"' in str(err.value), "an example"
    assert "\n" not in str(err.value)


# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).


def test_spring_forward_a_start_in_the_skipped_hour_starts_when_the_clock_jumps() -> None:
    early = Schedule([parse_window("02:30-06:00")], BERLIN)
    assert covered(early, "2026-03-29T00:59:59", "2026-03-29T01:00", "2026-03-29T03:59:59", "2026-03-29T04:00") == [
        False,
        True,  # 03:00 CEST: past 02:30, which the clock skipped
        True,
        False,  # 06:00 CEST
    ]


def test_spring_forward_an_end_in_the_skipped_hour_ends_when_the_clock_jumps() -> None:
    night = Schedule([parse_window("22:00-02:30")], BERLIN)
    assert covered(night, "2026-03-28T20:59:59", "2026-03-28T21:00", "2026-03-29T00:59:59", "2026-03-29T01:00") == [
        False,
        True,  # 22:00 CET
        True,  # 01:59:59 CET
        False,  # 03:00 CEST: the clock jumped past 02:30
    ]


def test_spring_forward_a_window_wholly_in_the_skipped_hour_does_not_happen_that_day() -> None:
    skipped = Schedule([parse_window("02:10-02:50")], BERLIN)
    assert covered(skipped, "2026-03-29T00:59:59", "2026-03-29T01:00", "2026-03-29T01:30") == [False, False, False]
    assert skipped.covers(utc("2026-03-30T00:30")), "the next day it does (02:30 CEST)"


def test_spring_forward_the_whole_day_is_23_hours() -> None:
    sunday = Schedule([parse_window("sun 00:00-24:00")], BERLIN)
    assert covered(sunday, "2026-03-28T22:59:59", "2026-03-28T23:00", "2026-03-29T21:59:59", "2026-03-29T22:00") == [
        False,
        True,
        True,
        False,
    ]


def test_fall_back_an_end_in_the_repeated_hour_ends_the_first_time_the_clock_reads_it() -> None:
    night = Schedule([parse_window("22:00-02:30")], BERLIN)
    assert covered(night, "2026-10-25T00:29:59", "2026-10-25T00:30", "2026-10-25T01:15", "2026-10-25T01:45") == [
        True,  # 02:29:59 CEST
        False,  # 02:30 CEST, the first 02:30
        False,  # 02:15 CET: the clock reads the hour again, the window does not come back
        False,  # 02:45 CET
    ]


def test_fall_back_a_start_in_the_repeated_hour_starts_the_first_time_the_clock_reads_it() -> None:
    early = Schedule([parse_window("02:30-06:00")], BERLIN)
    assert covered(early, "2026-10-25T00:29:59", "2026-10-25T00:30", "2026-10-25T01:15", "2026-10-25T04:59:59") == [
        False,
        True,  # 02:30 CEST
        True,  # 02:15 CET: still inside, the second time round
        True,  # 05:59:59 CET
    ]
    assert not early.covers(utc("2026-10-25T05:00")), "06:00 CET"


def test_fall_back_the_whole_day_is_25_hours() -> None:
    sunday = Schedule([parse_window("sun 00:00-24:00")], BERLIN)
    assert covered(sunday, "2026-10-24T21:59:59", "2026-10-24T22:00", "2026-10-25T22:59:59", "2026-10-25T23:00") == [
        False,
        True,
        True,
        False,
    ]


# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).


def test_new_york_spring_forward() -> None:
    early = Schedule([parse_window("02:30-04:00")], NEW_YORK)
    assert covered(early, "2026-03-08T06:59:59", "2026-03-08T07:00", "2026-03-08T07:59:59", "2026-03-08T08:00") == [
        False,
        True,  # 03:00 EDT
        True,
        False,  # 04:00 EDT
    ]
    night = Schedule([parse_window("sat 23:00-02:15")], NEW_YORK)
    assert covered(night, "2026-03-08T04:00", "2026-03-08T06:59:59", "2026-03-08T07:00") == [True, True, False]


def test_new_york_fall_back() -> None:
    night = Schedule([parse_window("23:00-01:30")], NEW_YORK)
    assert covered(night, "2026-11-01T05:29:59", "2026-11-01T05:30", "2026-11-01T06:15", "2026-11-01T06:45") == [
        True,  # 01:29:59 EDT
        False,  # 01:30 EDT, the first
        False,  # 01:15 EST: not again
        False,  # 01:45 EST
    ]
    early = Schedule([parse_window("01:30-03:00")], NEW_YORK)
    assert covered(early, "2026-11-01T05:29:59", "2026-11-01T05:30", "2026-11-01T06:15", "2026-11-01T07:59:59") == [
        False,
        True,  # 01:30 EDT
        True,  # 01:15 EST, the second time round
        True,  # 02:59:59 EST
    ]
    assert not early.covers(utc("2026-11-01T08:00")), "03:00 EST"


def test_several_windows_any_covers() -> None:
    home = Schedule([parse_window("mon-fri 17:30-08:00"), parse_window("sat,sun 00:00-24:00")], ZoneInfo("UTC"))
    assert home.covers(utc("2026-06-13T12:00")), "Saturday noon"
    assert home.covers(utc("2026-06-13T07:00")), "Saturday 07:00: Friday's evening window and Saturday's day"
    assert not home.covers(utc("2026-06-15T07:00")), "Monday 07:00: Sunday's day ended at midnight"
    assert not home.covers(utc("2026-06-15T12:00")), "Monday noon"


def test_the_time_zone_is_the_named_one_else_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    assert time_zone("America/New_York") == NEW_YORK
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert time_zone(None) == BERLIN
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    with pytest.raises(ValueError, match=r"TZ=.* is not an IANA time zone name"):
        time_zone(None)
    monkeypatch.delenv("TZ")
    assert time_zone(None).utcoffset(datetime(2026, 6, 1)) is not None  # /etc/localtime, else UTC
    with pytest.raises(ValueError, match=r"'Europe/Berln' is not an IANA time zone name"):
        time_zone("Europe/Berln")
    with pytest.raises(ValueError, match="not an IANA time zone name"):
        time_zone(str(Path("/etc/passwd")))
