import json
import logging
from pathlib import Path
from typing import Any

import cv2
import pytest

from edgecam.cli import main
from edgecam.explain import PLOT_HEIGHT, SHEET_FRAMES
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import DOOR_ZONE, render_clip
from tests import videos
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


@pytest.fixture(scope="module")
def quiet_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of the hall with the door shut throughout: no event."""
    path = tmp_path_factory.mktemp("clip") / "quiet.avi"
    assert render_clip(path, SimulatedSettings(first_opening=100.0), 8.0) == []
    return path


def sheet_tiles(sheet: Any) -> list[Any]:
    """The frames across the top of ``replay.png``, left to right."""
    tile_w = sheet.shape[1] // SHEET_FRAMES
    row = sheet[: sheet.shape[0] - PLOT_HEIGHT]
    return [row[:, i * tile_w : (i + 1) * tile_w] for i in range(SHEET_FRAMES)]


def test_the_sheet_of_a_quiet_clip_shows_frames_from_across_it(
    capsys: pytest.CaptureFixture[str], quiet_clip: Path, tmp_path: Path
) -> None:
    assert replay(capsys, str(quiet_clip), "--out", str(tmp_path)) == []
    sheet = cv2.imread(str(tmp_path / "replay.png"))
    assert sheet is not None
    tiles = sheet_tiles(sheet)
    for i, tile in enumerate(tiles):
        black = float((tile.max(axis=2) < 16).mean())
        assert black < 0.2, f"tile {i + 1} of {len(tiles)} is {black:.0%} black"
    for i, tile in enumerate(tiles[1:], 1):
        assert cv2.absdiff(tile, tiles[i - 1]).mean() > 0.5, f"tiles {i} and {i + 1} show the same frame"


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


@pytest.fixture(scope="module")
def ajar_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """A door eased 8 degrees ajar, left so for 6 s (longer than motion.event_gap), shut again; quiet for 8 s first."""
    path = tmp_path_factory.mktemp("clip") / "ajar.avi"
    sim = SimulatedSettings(
        first_opening=8.0, door_period=14.0, door_opening=2.0, door_open=6.0, door_closing=2.0, door_angle=8.0
    )
    return path, render_clip(path, sim, 36.0)


def test_with_a_door_reference_an_event_lasts_while_the_door_stands_ajar(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ajar_clip: tuple[Path, list[tuple[float, float]]],
) -> None:
    clip, openings = ajar_clip
    monkeypatch.setenv("EDGECAM_MOTION__ZONE", json.dumps(DOOR_ZONE))
    without = [m for m in replay(capsys, str(clip)) if m["type"] == "start"]
    assert len(without) == 2 * len(openings), "opening and closing: two events, nothing says the door stayed open"
    assert all("door" not in m for m in without)

    monkeypatch.setenv("EDGECAM_CAMERA__SOURCE", str(clip))
    reference = tmp_path / "door.npz"
    assert main(["calibrate", "--out", str(reference)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("EDGECAM_DOOR__REFERENCE", str(reference))
    messages = replay(capsys, str(clip))
    starts = [m for m in messages if m["type"] == "start"]
    ends = [m for m in messages if m["type"] == "end"]
    assert len(starts) == len(ends) == len(openings)
    for (begin, shut), start, end in zip(openings, starts, ends, strict=True):
        assert begin <= start["t"] < shut
        assert shut <= end["t"] <= shut + 2.5  # event_gap after the door is shut
        assert end["door"] == "closed"
        assert start["door"] in ("open", "closed")


def test_explain_draws_each_event_and_says_why(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    door_clip: tuple[Path, list[tuple[float, float]]],
    tmp_path: Path,
) -> None:
    stale = tmp_path / "explain" / "07-deadbeef.png"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier run")
    with caplog.at_level(logging.INFO, logger="edgecam"):
        messages = replay(capsys, str(door_clip[0]), "--explain", "--out", str(tmp_path))
    starts = [m for m in messages if m["type"] == "start"]
    pictures = sorted((tmp_path / "explain").glob("*.png"))
    assert [p.name for p in pictures] == [f"{i + 1:02d}-{m['event_id'][:8]}.png" for i, m in enumerate(starts)]
    for picture in pictures:
        image = cv2.imread(str(picture))
        assert image is not None
        assert image.shape[1] == 1600
    said = [r.getMessage() for r in caplog.records if r.name == "edgecam.explain"]
    assert len(said) == len(starts)
    assert all("(3 moving frames in a row)" in line and "(2.0 s without movement)" in line for line in said)


# A recording keeps its true time (issue 12, item 3); a damaged stream makes no event (item 6).

RAW_FPS = 30


@pytest.fixture(scope="module")
def raw_door_30fps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """``rpicam-vid --framerate 30 -o door.h264``: the door opens at 4 s; the file says nothing of 30 fps."""
    sim = {"first_opening": 4.0, "door_period": 10.0}
    seconds = 6.0
    frames = videos.door_scene(round(seconds * RAW_FPS), RAW_FPS, **sim)
    path = videos.write_raw_h264(tmp_path_factory.mktemp("raw") / "door.h264", frames, RAW_FPS)
    return path, door_openings(SimulatedSettings(fps=RAW_FPS, **sim), seconds)


def starts_in_time(messages: list[dict[str, Any]], openings: list[tuple[float, float]]) -> None:
    starts = [m["t"] for m in messages if m["type"] == "start"]
    assert len(starts) == len(openings) == 1
    begin = openings[0][0]
    assert begin <= starts[0] <= begin + 0.5, f"the door began to move at {begin} s, the start says {starts[0]} s"


def test_a_raw_recording_is_timed_at_camera_fps(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    raw_door_30fps: tuple[Path, list[tuple[float, float]]],
) -> None:
    monkeypatch.setenv("EDGECAM_CAMERA__FPS", str(RAW_FPS))
    starts_in_time(replay(capsys, str(raw_door_30fps[0])), raw_door_30fps[1])


def test_replay_fps_times_a_raw_recording(
    capsys: pytest.CaptureFixture[str], raw_door_30fps: tuple[Path, list[tuple[float, float]]]
) -> None:
    starts_in_time(replay(capsys, str(raw_door_30fps[0]), "--fps", str(RAW_FPS)), raw_door_30fps[1])


def test_a_raw_recording_without_a_frame_rate_is_one_warning(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    raw_door_30fps: tuple[Path, list[tuple[float, float]]],
) -> None:
    with caplog.at_level(logging.INFO, logger="edgecam"):
        replay(capsys, str(raw_door_30fps[0]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "camera.fps" in warnings[0]
    assert "--fps" in warnings[0]


@pytest.fixture(scope="module")
def still_hall(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 s of a dim, noisy hall with the door shut (nothing happens), raw H.264: whole, and with 2 packets cut short."""
    folder = tmp_path_factory.mktemp("damage")
    frames = list(videos.door_scene(8 * 15, 15, noise=4.0, light_level=0.4))
    return (
        videos.write_raw_h264(folder / "whole.h264", frames, 15),
        videos.write_raw_h264(folder / "damaged.h264", frames, 15, damaged={40, 70}),
    )


def test_a_damaged_stream_of_a_still_scene_makes_no_event(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    still_hall: tuple[Path, Path],
) -> None:
    monkeypatch.setenv("EDGECAM_CAMERA__FPS", "15")
    whole, damaged = still_hall
    assert replay(capsys, str(whole)) == []
    with caplog.at_level(logging.INFO, logger="edgecam"):
        assert replay(capsys, str(damaged)) == []
    said = [r.getMessage() for r in caplog.records if "damaged frames" in r.getMessage()]
    assert said
    assert all(r.levelno == logging.WARNING for r in caplog.records if "damaged frames" in r.getMessage())


def test_a_person_at_the_shut_door_is_explained_but_is_no_event(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    clip = tmp_path / "person.avi"
    sim = SimulatedSettings(first_opening=8.0, door_period=30.0, person_at_door=12.0)
    openings = render_clip(clip, sim, 45.0)
    monkeypatch.setenv("EDGECAM_MOTION__ZONE", json.dumps(DOOR_ZONE))
    monkeypatch.setenv("EDGECAM_CAMERA__SOURCE", str(clip))
    reference = tmp_path / "door.npz"
    assert main(["calibrate", "--out", str(reference)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("EDGECAM_DOOR__REFERENCE", str(reference))
    with caplog.at_level(logging.INFO, logger="edgecam"):
        messages = replay(capsys, str(clip), "--explain", "--out", str(tmp_path / "out"))
    starts = [m["t"] for m in messages if m["type"] == "start"]
    stills = [m["t"] for m in messages if m["type"] == "still"]
    assert len(starts) == len(openings) == 2
    assert all(any(begin <= t <= shut for begin, shut in openings) for t in starts + stills)
    names = sorted(p.name for p in (tmp_path / "out" / "explain").glob("*.png"))
    unconfirmed = [n for n in names if n.endswith("-unconfirmed.png")]
    assert len(names) - len(unconfirmed) == len(openings)  # a picture per event
    assert unconfirmed, "the person's motion, each stretch of it, has a picture too"
    said = [r.getMessage() for r in caplog.records if r.name == "edgecam.explain"]
    assert sum("not confirmed by the door" in line for line in said) == len(unconfirmed)
