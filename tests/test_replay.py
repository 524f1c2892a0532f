import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from edgecam.cli import main
from edgecam.config import SimulatedSettings
from edgecam.sources.simulated import render_clip
from tests.clips import CLIPS, labels, needs_clips


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EDGECAM_DEVICE_ID", "replay-test")


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["replay", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def door_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    path = tmp_path_factory.mktemp("clip") / "door.avi"
    openings = render_clip(path, SimulatedSettings(first_opening=4.0, door_period=10.0), 44.0)
    return path, openings


def test_every_simulated_door_opening_gives_a_start_with_stills(
    capsys: pytest.CaptureFixture[str], door_clip: tuple[Path, list[tuple[float, float]]]
) -> None:
    path, openings = door_clip
    messages = replay(capsys, str(path))
    starts = [m["t"] for m in messages if m["type"] == "start"]
    assert len(openings) == 4
    assert len(starts) == len(openings)
    for (begin, end), t in zip(openings, starts, strict=True):
        assert begin <= t <= end
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    for m in messages:
        assert {"v", "type", "event_id", "device_id", "seq", "time", "score", "t"} <= m.keys()
    stills = [m for m in messages if m["type"] == "still"]
    assert stills
    assert all(m["topic"].startswith("edgecam/replay-test/events/") for m in stills)
    ends = [m for m in messages if m["type"] == "end"]
    assert sum(m["stills"] for m in ends) == len(stills)


def test_replay_out_saves_the_stills_and_a_sheet(
    capsys: pytest.CaptureFixture[str], door_clip: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> None:
    messages = replay(capsys, str(door_clip[0]), "--out", str(tmp_path))
    for m in (m for m in messages if m["type"] == "still"):
        data = (tmp_path / "stills" / m["event_id"] / f"{m['index']}.jpg").read_bytes()
        assert len(data) == m["bytes"]
    sheet = cv2.imread(str(tmp_path / "replay.png"))
    assert sheet is not None
    assert sheet.shape[1] >= 1000


@needs_clips
def test_lights_switched_on_and_off_with_the_door_closed_give_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    messages = replay(capsys, str(CLIPS / "alternating-light.h264"))
    assert [m for m in messages if m["type"] in ("start", "still")] == []


@needs_clips
def test_people_walking_past_an_open_door_give_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_MOTION__ZONE", json.dumps(labels("walking-by")["door_zone_norm"]))
    messages = replay(capsys, str(CLIPS / "walking-by.h264"))
    assert [m for m in messages if m["type"] in ("start", "still")] == []


def test_an_unreadable_clip_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h264"
    garbage.write_bytes(b"not a video at all" * 100)
    for clip in (tmp_path / "missing.h264", garbage):
        assert main(["replay", str(clip)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"edgecam: camera.source: cannot open '{clip}'")
        assert len(err.splitlines()) == 1
