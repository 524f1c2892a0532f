"""Inbound commands: only ``set/detect`` ON or OFF is accepted; everything else is refused, logged sparingly."""

import logging

import pytest

from edgecam.commands import MAX_COMMAND_BYTES, Command, Commands


@pytest.mark.parametrize("payload", [b"ON", b"OFF", b" OFF\n"])
def test_detect_on_or_off_is_accepted(payload: bytes) -> None:
    assert Commands().parse("detect", payload) == Command("detect", payload.strip().decode())


@pytest.mark.parametrize(
    ("name", "payload", "kind"),
    [
        ("reboot", b"now", "unknown"),
        ("detect/x", b"ON", "unknown"),
        ("", b"ON", "unknown"),
        ("detect", b"on", "bad payload"),
        ("detect", b'{"state": "ON"}', "bad payload"),
        ("detect", b"ON\x00", "bad payload"),
        ("detect", b"O" * (MAX_COMMAND_BYTES + 1), "too big"),
    ],
)
def test_anything_else_is_refused_and_counted(name: str, payload: bytes, kind: str) -> None:
    commands = Commands()
    assert commands.parse(name, payload) is None
    assert commands.refused == {kind: 1}


def test_a_flood_of_bad_commands_logs_a_handful_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.commands")
    commands = Commands()
    for i in range(5000):
        commands.parse(f"cmd{i}", b"x")
        commands.parse("detect", b"maybe")
    assert commands.refused == {"unknown": 5000, "bad payload": 5000}
    assert len(caplog.records) == 2 * 8  # 1, 10, 100, 1000, 2000, 3000, 4000, 5000 of each kind
    assert "ignored 5000 unknown message(s), the latest: set/'cmd4999' is not a command" in caplog.text
