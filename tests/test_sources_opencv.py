import itertools
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources import opencv
from edgecam.sources.opencv import OpenCVSource, Pacer
from edgecam.sources.simulated import render_clip
from tests import videos

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"
needs_clips = pytest.mark.skipif(not CLIPS.is_dir(), reason=f"the recorded clips are not at {CLIPS}")


def open_file(path: Path | str, **camera: Any) -> OpenCVSource:
    return OpenCVSource(CameraSettings(source=str(path), **camera), realtime=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "door.avi"
    render_clip(path, SimulatedSettings(fps=8), 3.0)
    return path


@pytest.mark.clips
@needs_clips
@pytest.mark.parametrize(
    ("name", "count", "native"),
    [("walking-by.h264", 463, (480, 640, 3)), ("alternating-light.h264", 838, (640, 480, 3))],
)
def test_recorded_clips_give_every_frame_at_detection_size(name: str, count: int, native: tuple[int, int, int]) -> None:
    source = open_file(CLIPS / name)
    assert source.fps == 25
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if frame.index == 100:
            assert source.still().shape == native
    source.close()
    assert len(frames) == count
    assert all(f.gray.shape == (240, 320) and f.gray.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(count))
    assert frames[-1].t == pytest.approx((count - 1) / 25)


def test_a_file_ends_when_exhausted_and_keeps_its_timing(clip: Path) -> None:
    source = open_file(clip, detect_width=160, detect_height=120)
    frames = list(source.frames())
    assert source.fps == 8
    assert len(frames) == 24
    assert [f.t for f in frames[:3]] == pytest.approx([0.0, 0.125, 0.25])
    assert frames[0].gray.shape == (120, 160)
    assert source.still().shape == (480, 640, 3)
    source.close()


def test_still_is_a_copy_of_the_latest_frame(clip: Path) -> None:
    source = open_file(clip)
    frames = source.frames()
    next(frames)
    still = source.still()
    kept = still.copy()
    still[:] = 0  # scribbling on a still does not change the source's frame
    assert np.array_equal(source.still(), kept)
    next(frames)
    assert not np.array_equal(source.still(), kept)  # the still follows the latest frame
    source.close()


def test_still_before_any_frame_is_a_camera_error(clip: Path) -> None:
    with pytest.raises(CameraError, match="no frame"):
        open_file(clip).still()


def test_close_ends_the_frames_and_is_idempotent(clip: Path) -> None:
    source = open_file(clip)
    frames = source.frames()
    next(frames)
    source.close()
    source.close()
    assert list(frames) == []


def one_line_error(source: str) -> str:
    with pytest.raises(CameraError) as caught:
        OpenCVSource(CameraSettings(source=source), realtime=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("camera.source: ")
    return message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    assert one_line_error(str(path)) == f"camera.source: cannot open {str(path)!r}: no such file"


def test_a_file_opencv_cannot_decode_is_a_camera_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(bytes(range(256)) * 64)
    assert one_line_error(str(path)) == f"camera.source: cannot open {str(path)!r}: OpenCV cannot decode it"


def test_a_directory_is_not_a_video(tmp_path: Path) -> None:
    assert "directory" in one_line_error(str(tmp_path))


def test_a_missing_device_is_named() -> None:
    assert one_line_error("/dev/video97") == "camera.source: cannot open '/dev/video97': no such device"


class FakeCapture:
    """A cv2.VideoCapture that delivers ``frames`` frames, then fails."""

    def __init__(self, frames: int, opened: bool = True) -> None:
        self.left = frames
        self.opened = opened
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, NDArray[np.uint8] | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        return True, np.full((480, 640, 3), 100, np.uint8)

    def get(self, prop: int) -> float:
        return 30.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        self.released = True


def test_a_live_camera_that_stops_delivering_is_a_camera_error(monkeypatch: pytest.MonkeyPatch) -> None:
    capture = FakeCapture(frames=3)
    monkeypatch.setattr(opencv, "_make_capture", lambda target, api, params: capture)
    source = OpenCVSource(CameraSettings(source="0"), realtime=True)
    frames = source.frames()
    got = list(itertools.islice(frames, 3))
    assert [f.gray.shape for f in got] == [(240, 320)] * 3
    assert got[2].t >= got[0].t >= 0.0
    with pytest.raises(CameraError, match="stopped delivering frames"):
        next(frames)
    source.close()
    assert capture.released


def test_a_stream_url_password_never_shows_in_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opencv, "_make_capture", lambda target, api, params: FakeCapture(0, opened=False))
    message = one_line_error("rtsp://admin:s3cret@192.0.2.7:554/stream1")
    assert "s3cret" not in message
    assert "rtsp://admin:***@192.0.2.7:554/stream1" in message


def test_pacer_sleeps_until_each_frame_is_due_and_never_when_late() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(clock=lambda: now[0], sleep=sleep)
    pacer.wait(0.0)  # the first frame is due at once
    now[0] += 0.01  # work on frame 0
    pacer.wait(0.1)
    now[0] += 0.35  # frame 1 took long: frames 2 and 3 are late
    pacer.wait(0.2)
    pacer.wait(0.3)
    pacer.wait(0.5)  # back on time: due at 100.5, now 100.45
    assert slept == pytest.approx([0.09, 0.05])


# Recorded files keep their true time; damaged frames are skipped (issue 12, items 3 and 6).

VFR_TIMES = [0.0, 0.033, 0.066, 0.1, 0.2, 0.3, 0.5, 0.533, 0.9, 1.0, 1.033, 1.4]
"""A camera that lowers its frame rate in dim light and raises it again: the frame times of the VFR files."""


@pytest.fixture(scope="module")
def raw_30fps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``rpicam-vid --framerate 30 -o door.h264`` writes: raw H.264, no timing, 45 frames."""
    return videos.write_raw_h264(tmp_path_factory.mktemp("raw") / "door.h264", videos.moving_pattern(45), 30)


def timing_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "timestamps" in r.getMessage()]


def test_a_raw_h264_is_timed_at_camera_fps_when_set(raw_30fps: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgecam"):
        source = open_file(raw_30fps, fps=30)
        frames = list(source.frames())
    source.close()
    assert source.fps == 30
    assert len(frames) == 45
    assert [f.t for f in frames] == pytest.approx([i / 30 for i in range(45)])
    said = timing_lines(caplog)
    assert len(said) == 1
    assert "camera.fps" in said[0]


def test_a_raw_h264_without_a_frame_rate_says_so_once(raw_30fps: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgecam"):
        source = open_file(raw_30fps)  # camera.fps left at its default: it is a live camera's request
        frames = list(source.frames())
    source.close()
    assert [f.t for f in frames] == pytest.approx([i / 25 for i in range(45)])  # OpenCV's guess, said aloud
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no timestamps" in warnings[0]
    assert "camera.fps" in warnings[0]
    assert "--fps" in warnings[0]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_variable_frame_rate_file_keeps_its_own_frame_times(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = videos.write_timed(tmp_path / f"dim{suffix}", list(videos.moving_pattern(len(VFR_TIMES))), VFR_TIMES)
    with caplog.at_level(logging.INFO, logger="edgecam"):
        source = open_file(path, fps=30)  # a frame rate set for the live camera does not override timestamps
        frames = list(source.frames())
    source.close()
    assert [f.t for f in frames] == pytest.approx(VFR_TIMES, abs=1e-6)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_file_with_its_own_frame_times_says_once_that_a_set_frame_rate_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = videos.write_timed(tmp_path / "dim.mp4", list(videos.moving_pattern(len(VFR_TIMES))), VFR_TIMES)
    with caplog.at_level(logging.INFO, logger="edgecam"):
        frames = list(open_file(path, fps=10).frames())  # camera.fps = 10, or edgecam replay --fps 10
    assert [f.t for f in frames] == pytest.approx(VFR_TIMES, abs=1e-6)
    said = [r for r in caplog.records if "camera.fps" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.INFO,
            f"{path} carries its own frame times: using them, not camera.fps = 10 (nor edgecam replay --fps)",
        )
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgecam"):
        list(open_file(path).frames())
    assert [r.getMessage() for r in caplog.records if "camera.fps" in r.getMessage()] == []


def test_a_raw_stream_is_known_by_its_content_not_its_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = videos.write_raw_h264(tmp_path / "looks-like.mp4", videos.moving_pattern(10), 30)
    timed = videos.write_timed(tmp_path / "looks-like.h264", list(videos.moving_pattern(len(VFR_TIMES))), VFR_TIMES)
    with caplog.at_level(logging.INFO, logger="edgecam"):
        raw_times = [f.t for f in open_file(raw, fps=30).frames()]
        timed_times = [f.t for f in open_file(timed, fps=30).frames()]
    assert raw_times == pytest.approx([i / 30 for i in range(10)])
    assert timed_times == pytest.approx(VFR_TIMES, abs=1e-6)
    assert len(timing_lines(caplog)) == 1


def test_realtime_pacing_follows_the_frame_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    due: list[float] = []

    class RecordingPacer:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def wait(self, t: float) -> None:
            due.append(t)

    monkeypatch.setattr(opencv, "Pacer", RecordingPacer)
    path = videos.write_timed(tmp_path / "dim.mkv", list(videos.moving_pattern(len(VFR_TIMES))), VFR_TIMES)
    source = OpenCVSource(CameraSettings(source=str(path)), realtime=True)
    frames = list(source.frames())
    source.close()
    assert due == [f.t for f in frames]
    assert due == pytest.approx(VFR_TIMES, abs=1e-6)


DAMAGE_FPS = 15
DAMAGED_PACKETS = {40, 70}


@pytest.fixture(scope="module")
def still_streams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dim, noisy hall with the door shut for 8 s, as raw H.264: undamaged, and with two packets cut short."""
    folder = tmp_path_factory.mktemp("damage")
    frames = list(videos.door_scene(8 * DAMAGE_FPS, DAMAGE_FPS, noise=4.0, light_level=0.4))
    clean = videos.write_raw_h264(folder / "clean.h264", frames, DAMAGE_FPS)
    damaged = videos.write_raw_h264(folder / "damaged.h264", frames, DAMAGE_FPS, damaged=DAMAGED_PACKETS)
    return clean, damaged


def changed(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)) > 25))


def test_damaged_frames_are_skipped_with_a_line_saying_how_many(
    still_streams: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    clean_path, damaged_path = still_streams
    clean = {f.index: f for f in open_file(clean_path, fps=DAMAGE_FPS).frames()}
    with caplog.at_level(logging.INFO, logger="edgecam"):
        source = open_file(damaged_path, fps=DAMAGE_FPS)
        kept = list(source.frames())
    source.close()
    skipped = len(clean) - len(kept)
    assert skipped > 0
    assert {min(DAMAGED_PACKETS)} <= set(clean) - {f.index for f in kept}  # the first smeared frame is gone
    for frame in kept:  # what is left is the picture, not the decoder's smear
        assert frame.t == pytest.approx(frame.index / DAMAGE_FPS)
        assert changed(frame.gray, clean[frame.index].gray) < 0.002, frame.index
    lines = [r.getMessage() for r in caplog.records if "damaged frames" in r.getMessage()]
    assert 1 <= len(lines) <= 2
    assert sum(int(n) for line in lines for n in re.findall(r"skipped (\d+) damaged frames", line)) == skipped


def test_an_undamaged_stream_loses_no_frame(still_streams: tuple[Path, Path], tmp_path: Path) -> None:
    assert len(list(open_file(still_streams[0], fps=DAMAGE_FPS).frames())) == 8 * DAMAGE_FPS
    moving = videos.door_scene(6 * DAMAGE_FPS, DAMAGE_FPS, first_opening=1.0, door_period=5.0)
    path = videos.write_raw_h264(tmp_path / "door.h264", moving, DAMAGE_FPS)
    assert len(list(open_file(path, fps=DAMAGE_FPS).frames())) == 6 * DAMAGE_FPS


def test_a_packet_the_decoder_cannot_decode_at_all_does_not_end_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = list(videos.door_scene(6 * DAMAGE_FPS, DAMAGE_FPS, noise=4.0, light_level=0.4))
    packets = videos.encode_h264(frames, DAMAGE_FPS, keyframe_every=2 * DAMAGE_FPS)
    rng = random.Random(3)
    broken = 2 * DAMAGE_FPS + 5  # a P frame: everything from byte 5 on (past its NAL header) is random bytes
    packets[broken] = packets[broken][:5] + rng.randbytes(4096)
    path = tmp_path / "garbage.h264"
    path.write_bytes(b"".join(packets))
    with caplog.at_level(logging.INFO, logger="edgecam"):
        kept = list(open_file(path, fps=DAMAGE_FPS).frames())
    assert kept[-1].index == len(frames) - 1, "the frames after the bad packet are read to the end"
    assert kept[-1].t == pytest.approx(kept[-1].index / DAMAGE_FPS)
    lines = [r.getMessage() for r in caplog.records if "could not decode" in r.getMessage()]
    assert len(lines) == 1, lines
