import hashlib
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.capture import Capture, Emitted, encode_still, fit_jpeg, still_bgr
from edgecam.config import CaptureSettings
from edgecam.errors import StorageError
from edgecam.models import Frame, MotionResult, Topics

MASK = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]  # the top-left quarter


def white() -> NDArray[np.uint8]:
    return np.full((120, 160, 3), 255, np.uint8)


def make_capture(tmp_path: Path | None, **settings: float) -> Capture:
    ids = iter(["ev-1", "ev-2"])
    return Capture(
        CaptureSettings.model_validate(settings),
        [MASK],
        "front",
        Topics("edgecam/front"),
        tmp_path,
        clock=lambda: datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        new_id=lambda: next(ids),
    )


def feed(capture: Capture, results: list[MotionResult], fps: float = 10.0) -> list[tuple[float, Emitted]]:
    out = []
    for i, result in enumerate(results):
        frame = Frame(i, i / fps, np.zeros((12, 16), np.uint8))
        out += [(frame.t, e) for e in capture.develop(capture.on_frame(frame, result, white))]
    return out


def moving(event: str | None = None) -> MotionResult:
    return MotionResult(score=0.3, moving=True, event=event, in_event=True)  # type: ignore[arg-type]


def quiet(event: str | None = None, in_event: bool = True) -> MotionResult:
    return MotionResult(score=0.0, moving=False, event=event, in_event=in_event)  # type: ignore[arg-type]


def test_an_event_is_start_stills_end_with_stills_spaced_by_interval(tmp_path: Path) -> None:
    results = [quiet(in_event=False), moving("start")] + [moving()] * 20 + [quiet()] * 5 + [quiet("end", False)]
    emitted = feed(make_capture(tmp_path, stills_per_event=3, interval=0.5), results)
    kinds = [(t, e.type) for t, (e, _) in emitted]
    assert kinds == [(0.1, "start"), (0.1, "still"), (0.6, "still"), (1.1, "still"), (2.7, "end")]
    end = emitted[-1][1][0]
    assert end.payload(9)["stills"] == 3
    assert end.payload(9)["duration_s"] == pytest.approx(2.6)
    assert {e.event_id for _, (e, _) in emitted} == {"ev-1"}


def test_no_still_outside_an_event_or_while_the_zone_is_quiet(tmp_path: Path) -> None:
    results = [MotionResult(0.5, True)] * 5 + [moving("start"), quiet(), quiet(), quiet("end", False)]
    results += [MotionResult(0.5, True)] * 5
    emitted = feed(make_capture(tmp_path, stills_per_event=5, interval=0.0), results)
    assert [e.type for _, (e, _) in emitted] == ["start", "still", "end"]


def test_still_is_masked_jpeg_written_atomically_with_its_sha256(tmp_path: Path) -> None:
    emitted = feed(make_capture(tmp_path, stills_per_event=1, jpeg_quality=90), [moving("start")])
    event, still = emitted[1][1]
    assert still is not None
    assert still.path is not None
    data = still.path.read_bytes()
    assert data == still.jpeg
    assert hashlib.sha256(data).hexdigest() == still.sha256
    payload = event.payload(2)
    assert payload["sha256"] == still.sha256
    assert (payload["bytes"], payload["width"], payload["height"]) == (len(data), 160, 120)
    assert payload["topic"] == "edgecam/front/events/ev-1/stills/1"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    assert image[:55, :75].max() < 10  # the privacy mask is burned in
    assert image[65:, 85:].min() > 245
    assert [p.name for p in still.path.parent.iterdir()] == ["1.jpg"]  # no temporary file left


def test_finish_closes_an_open_event_for_a_source_that_ends(tmp_path: Path) -> None:
    capture = make_capture(None, stills_per_event=1)
    emitted = feed(capture, [moving("start"), moving()])
    still = emitted[1][1][1]
    assert still is not None
    assert still.path is None  # replay without --out keeps no file
    ((end, _),) = capture.finish(3.0)
    assert end.type == "end"
    assert end.payload(1)["duration_s"] == 3.0
    assert capture.finish(4.0) == []


def test_an_unwritable_state_dir_skips_the_still_not_the_event(tmp_path: Path) -> None:
    blocker = tmp_path / "stills"
    blocker.write_text("a file where a folder should be")
    emitted = feed(make_capture(blocker, stills_per_event=2), [moving("start"), quiet("end", False)])
    assert [e.type for _, (e, _) in emitted] == ["start", "end"]
    assert emitted[-1][1][0].payload(3)["stills"] == 1, "taken, so counted, though it could not be saved"


def test_a_still_the_light_was_not_ready_for_is_taken_at_its_first_ready_frame_moving_or_not() -> None:
    capture = make_capture(None, stills_per_event=3, interval=0.5)
    # The door swings while the illuminator's light settles (not ready), then stands still: a quiet frame takes the
    # still owed; the next ones wait for movement again.
    results = [moving("start")] + [moving()] * 4 + [quiet()] * 10 + [moving()] * 6 + [quiet("end", False)]
    ready = [False] * 7 + [True] * 15
    out = []
    for i, (result, still_ready) in enumerate(zip(results, ready, strict=True)):
        frame = Frame(i, i / 10, np.zeros((12, 16), np.uint8))
        out += [(frame.t, e.type) for e, _ in capture.develop(capture.on_frame(frame, result, white, still_ready))]
    assert out == [(0.0, "start"), (0.7, "still"), (1.5, "still"), (2.0, "still"), (2.1, "end")]
    pending = MotionResult(0.3, True, pending=True)
    held = make_capture(None, stills_per_event=3)
    assert held.on_frame(Frame(0, 0.0, np.zeros((12, 16), np.uint8)), pending, white, still_ready=False) == []
    started = held.on_frame(Frame(1, 0.1, np.zeros((12, 16), np.uint8)), moving("start"), white, still_ready=False)
    assert [e.type for e, _ in started] == ["start"], "no still held in the dark before the light was on"


def test_events_say_whether_the_clock_was_synchronised_and_which_boot_they_are_from() -> None:
    synced = iter([False, True, True])
    capture = Capture(CaptureSettings(), [], "front", Topics("edgecam/front"), None, synced=lambda: next(synced, True))
    results = [moving("start"), quiet(), quiet("end", False)]
    events = [e.payload(1) for _, (e, _) in feed(capture, results)]
    assert [e["time_synced"] for e in events] == [False, True, True]
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
        assert {e["boot_id"] for e in events} == {fh.read().strip()}


# Re-encoding a still to fit the broker's Maximum Packet Size (issue 12).


def _photo(width: int, height: int) -> bytes:
    """A JPEG with detail all over (a gradient with noise), like a camera's still."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = ((x * 255 // width)[..., None] + (y * 255 // height)[..., None] // 2 + np.array([0, 40, 80])) % 256
    image = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def test_fit_jpeg_lowers_the_quality_first_and_keeps_the_size_when_that_is_enough() -> None:
    jpeg = _photo(640, 480)
    fitted = fit_jpeg(jpeg, int(len(jpeg) * 0.8), 85)
    assert fitted is not None
    out, width, height = fitted
    assert len(out) <= len(jpeg) * 0.8
    assert (width, height) == (640, 480) == jpeg_size_of(out)


def test_fit_jpeg_makes_the_still_smaller_when_quality_alone_is_not_enough() -> None:
    jpeg = _photo(1280, 960)
    fitted = fit_jpeg(jpeg, len(jpeg) // 10, 85)
    assert fitted is not None
    out, width, height = fitted
    assert len(out) <= len(jpeg) // 10
    assert jpeg_size_of(out) == (width, height)
    assert width < 1280
    assert abs(width / height - 4 / 3) < 0.01


def test_fit_jpeg_gives_the_same_bytes_for_the_same_still() -> None:
    jpeg = _photo(640, 480)
    assert fit_jpeg(jpeg, len(jpeg) // 3, 85) == fit_jpeg(jpeg, len(jpeg) // 3, 85)


def test_fit_jpeg_gives_up_on_a_limit_no_still_fits_and_on_bytes_that_are_not_a_jpeg() -> None:
    assert fit_jpeg(_photo(640, 480), 200, 85) is None
    assert fit_jpeg(b"not a jpeg", 100_000, 85) is None


def jpeg_size_of(jpeg: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.shape[1], image.shape[0]


def pending() -> MotionResult:
    return MotionResult(score=0.3, moving=True, pending=True)


def test_stills_of_motion_the_door_confirms_are_kept_from_its_first_moving_frame(tmp_path: Path) -> None:
    results = [pending()] * 6 + [moving("start")] + [moving()] * 5 + [quiet("end", False)]
    emitted = feed(make_capture(tmp_path, stills_per_event=3, interval=0.5), results)
    kinds = [(t, e.type, e.payload(0).get("index")) for t, (e, _) in emitted]
    # Held from 0.0 and 0.5 s, committed after the start at 0.6 s, and the third taken at 1.0 s.
    assert kinds == [(0.6, "start", None), (0.6, "still", 1), (0.6, "still", 2), (1.0, "still", 3), (1.2, "end", None)]
    assert sorted(p.name for p in (tmp_path / "ev-1").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert {e.event_id for _, (e, _) in emitted} == {"ev-1"}


def test_stills_of_motion_the_door_never_confirms_are_never_written(tmp_path: Path) -> None:
    results = [pending()] * 10 + [quiet(in_event=False)] * 3 + [pending()] * 2 + [moving("start")]
    capture = make_capture(tmp_path, stills_per_event=3, interval=0.5)
    emitted = feed(capture, results)
    assert list(tmp_path.iterdir()) == [tmp_path / "ev-2"]  # nothing of the unconfirmed motion reached the disk
    assert [e.type for _, (e, _) in emitted] == ["start", "still"]  # held at 1.3 s, committed at the start
    assert {e.event_id for _, (e, _) in emitted} == {"ev-2"}


def test_after_the_first_still_only_frames_that_move_now_get_one(tmp_path: Path) -> None:
    # The door confirmed, but barely moves from frame to frame (a grey door eased ajar), then stands: a ghost.
    start = MotionResult(score=0.3, moving=True, event="start", in_event=True, stirring=False)
    still_frame = MotionResult(score=0.3, moving=True, in_event=True, stirring=False)
    results = [start] + [still_frame] * 20 + [moving()] + [quiet("end", False)]
    emitted = feed(make_capture(tmp_path, stills_per_event=3, interval=0.5), results)
    assert [(t, e.type) for t, (e, _) in emitted] == [(0.0, "start"), (0.0, "still"), (2.1, "still"), (2.2, "end")]


def test_a_full_range_i420_still_keeps_its_colours_and_contrast() -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[:, :8] = (30, 120, 220)
    bgr[:, 8:] = (200, 60, 10)
    bgr[:4] = 0  # black and white stay black and white: no studio-range stretch
    bgr[4:8] = 255
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)  # full range, as the Pi's sYCC streams
    planes = [ycrcb[:, :, 0].reshape(-1), ycrcb[::2, ::2, 2].reshape(-1), ycrcb[::2, ::2, 1].reshape(-1)]
    i420 = np.concatenate(planes).reshape(24, 16).astype(np.uint8)
    away_from_edges = np.ix_([0, 1, 2, 5, 6, 10, 11, 12, 13, 14, 15], [0, 1, 2, 3, 12, 13, 14, 15])
    error = np.abs(still_bgr(i420).astype(int) - bgr)[away_from_edges]
    assert error.max() <= 2
    assert still_bgr(bgr) is bgr


def test_an_i420_still_is_encoded_from_its_planes_with_its_colours_and_the_mask_black() -> None:
    bgr = np.zeros((64, 96, 3), np.uint8)
    bgr[:, :48] = (30, 120, 220)
    bgr[:, 48:] = (200, 60, 10)
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)  # full range, as the Pi's sYCC streams
    planes = [ycrcb[:, :, 0].reshape(-1), ycrcb[::2, ::2, 2].reshape(-1), ycrcb[::2, ::2, 1].reshape(-1)]
    i420 = np.concatenate(planes).reshape(96, 96).astype(np.uint8)
    mask = [(0.0, 0.0), (0.3, 0.0), (0.3, 0.5), (0.0, 0.5)]  # over the left colour's top
    still = encode_still(i420, [mask], 95, "ev-1", 1)
    assert (still.width, still.height) == (96, 64)
    assert still.sha256 == hashlib.sha256(still.jpeg).hexdigest()
    decoded = cv2.imdecode(np.frombuffer(still.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == bgr.shape
    assert decoded[:28, :24].max() < 12  # black, colour and all, under the mask
    assert np.abs(decoded[40:, 4:40].astype(int) - bgr[40:, 4:40]).max() <= 8
    assert np.abs(decoded[4:60, 56:92].astype(int) - bgr[4:60, 56:92]).max() <= 8


def test_an_i420_still_of_an_odd_size_is_refused_in_one_line() -> None:
    with pytest.raises(StorageError, match=r"capture: an I420 still .* 95x96"):
        encode_still(np.zeros((96, 95), np.uint8), [], 85, "ev-1", 1)
