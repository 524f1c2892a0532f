"""USB cameras, network streams and recorded files through ``cv2.VideoCapture``."""

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.credentials import camera_url
from edgecam.errors import CameraError
from edgecam.models import Frame
from edgecam.redact import redact
from edgecam.sources import URL, check_source
from edgecam.sources.damage import DamageCheck

logger = logging.getLogger(__name__)

UNDECODABLE_RUN = 25
"""Failed reads in a row after which a file has ended; fewer are frames the decoder could not decode."""
FALLBACK_FPS = 25.0
"""Frame rate assumed for a file whose container does not say (raw H.264 has no timing)."""
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")
"""Box types an MP4/MOV file may begin with (ISO/IEC 14496-12 section 4.2): its first bytes are a box size."""


class Pacer:
    """Sleeps until each frame's due time, so a recording plays at its own speed."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._origin: float | None = None

    def wait(self, t: float) -> None:
        """Sleep until ``t`` seconds after the origin (set by the first call); never sleep when running late."""
        now = self._clock()
        if self._origin is None:
            self._origin = now - t
        delay = self._origin + t - now
        if delay > 0:
            self._sleep(delay)


def detection_gray(bgr: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """The detection image of a BGR frame: grey, downscaled to ``width`` x ``height`` with area averaging."""
    return downscale(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8), width, height)


def downscale(gray: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """``gray`` at ``width`` x ``height`` with area averaging (itself when it has that size)."""
    if gray.shape != (height, width):
        gray = np.asarray(cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return gray


def elementary_stream(path: Path) -> bool:
    """Whether ``path`` holds a raw H.264 or H.265 byte stream, which carries no timestamps.

    Recognised by content, as FFmpeg's probe does: optional zero bytes, a start code ``00 00 01`` and a NAL unit
    header whose forbidden_zero_bit is 0 (ITU-T H.264 annex B and section 7.3.1; H.265 likewise). MPEG program
    streams (``00 00 01 BA``) and MPEG video (``00 00 01 B3``) have that bit set; an MP4 whose first box is
    256-383 bytes long starts alike, so its box type is checked too.
    """
    with path.open("rb") as file:
        head = file.read(64)
    zeros = len(head) - len(head.lstrip(b"\0"))
    if zeros < 2 or len(head) < zeros + 2 or head[zeros] != 1 or head[4:8] in _ISO_BOXES:
        return False
    return head[zeros + 1] & 0x80 == 0


_CV4_LOG_LEVEL_ERROR = 2
"""OpenCV 4's ``cv::utils::logging::LOG_LEVEL_ERROR`` (silent 0, fatal 1, error 2)."""


def _make_capture(target: str | int, api: int, params: list[int]) -> Any:
    """Open a ``cv2.VideoCapture``: the one place captures are made (tests replace it)."""
    # FFmpeg and OpenCV print their own warnings to stderr; we report failures ourselves, in one line.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    opencv_logging = getattr(getattr(cv2, "utils", None), "logging", None)  # OpenCV 5; 4.x has cv2.setLogLevel
    if opencv_logging is not None:
        opencv_logging.setLogLevel(opencv_logging.LOG_LEVEL_ERROR)
    else:
        cv2.setLogLevel(_CV4_LOG_LEVEL_ERROR)  # type: ignore[attr-defined]
    return cv2.VideoCapture(target, api, params)


class OpenCVSource:
    """A ``/dev/videoN`` or index camera, an ``rtsp://`` or ``http(s)://`` stream, or a video file."""

    def __init__(self, camera: CameraSettings, *, realtime: bool) -> None:
        source = camera.source
        self._label = redact(source)
        self._detect_size = (camera.detect_width, camera.detect_height)
        self._closed = threading.Event()
        self._lock = threading.Lock()  # cv2 must not release a capture while another thread reads it
        self._index = 0
        """Frames decoded so far, damaged ones included."""
        self._undecodable = 0
        """Frames of a file the decoder could not decode at all."""
        self._t = 0.0
        """Time of the latest frame decoded, s."""
        self._last: NDArray[np.uint8] | None = None
        self._set_fps = camera.fps if "fps" in camera.model_fields_set else None
        """camera.fps when the user set it: the frame rate of a file without timestamps."""
        self._by_rate = False
        """True for a file timed by its frame rate (it has no timestamps), False for one timed by them."""
        self._first_ms = 0.0
        self._read_ms = 0.0
        """The container's timestamp of the frame just read, ms (0 when it has none)."""

        check_source(camera)
        target: str | int = source
        params: list[int] = []
        if source.isdigit():
            target, api, self._is_file = int(source), cv2.CAP_ANY, False
        elif source.startswith("/dev/"):
            api, self._is_file = cv2.CAP_V4L2, False
        elif URL.match(source):
            target = camera_url(camera)  # with camera.password_file's password: never shown
            timeout_ms = round(camera.frame_timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            api, self._is_file = cv2.CAP_FFMPEG, False
        else:
            api, self._is_file = cv2.CAP_FFMPEG, True

        try:
            self._capture = _make_capture(target, api, params)
            opened = bool(self._capture.isOpened())
        except cv2.error as err:
            raise CameraError(f"camera.source: cannot open {self._label!r}: {_cv_message(err)}") from err
        if not opened:
            raise CameraError(f"camera.source: cannot open {self._label!r}: {self._why_not_opened()}")
        if not self._is_file:
            self._capture.set(cv2.CAP_PROP_FPS, camera.fps)  # a request; cameras that cannot, ignore it

        self._opened_at = time.monotonic()
        first = None
        try:
            first = self._read()  # fail now, naming the source, rather than at the first frame
            self._first_ms = self._read_ms
        finally:
            if first is None:
                self._capture.release()
        self._first = first
        if first is None:
            what = "OpenCV cannot decode a frame of it" if self._is_file else "it gives no frames"
            raise CameraError(f"camera.source: cannot open {self._label!r}: {what}")

        reported = float(self._capture.get(cv2.CAP_PROP_FPS))
        sane = math.isfinite(reported) and 0 < reported <= 1000
        self._fps = reported if sane else (FALLBACK_FPS if self._is_file else None)
        if self._is_file and elementary_stream(Path(source)):
            self._time_by_rate("a raw H.264/H.265 stream, with no timestamps")
        self._pacer = Pacer(sleep=self._closed.wait) if realtime and self._is_file else None
        # Only a coded stream (a file, a network stream) has a decoder that conceals lost packets.
        self._damage = DamageCheck(self._label) if self._is_file or URL.match(source) else None
        height, width = first.shape[:2]
        logger.info(
            "opened %s: %dx%d at %s fps (%s)",
            self._label,
            width,
            height,
            "unknown" if self._fps is None else f"{self._fps:g}",
            "file" if self._is_file else "live",
        )

    @property
    def fps(self) -> float | None:
        """The file's (nominal) frame rate, or what a live camera reports (None if it reports nothing sensible)."""
        return self._fps

    def frames(self) -> Iterator[Frame]:
        """Yield frames until a file ends or the source is closed; a live source that fails raises CameraError."""
        while not self._closed.is_set():
            bgr: NDArray[np.uint8] | None
            if self._first is not None:
                bgr, self._first = self._first, None
            else:
                bgr = self._read()
                if bgr is None and self._is_file:
                    bgr = self._read_past_undecodable()
            if bgr is None:
                if self._closed.is_set():
                    return
                if self._damage is not None:
                    self._damage.report(self._t)
                if self._is_file:
                    lost = f" ({self._undecodable} could not be decoded)" if self._undecodable else ""
                    logger.info("%s ended after %d frames%s", self._label, self._index, lost)
                    return
                raise CameraError(f"camera.source: {self._label!r} stopped delivering frames")
            t = self._file_time() if self._is_file else time.monotonic() - self._opened_at
            index, self._index, self._t = self._index, self._index + 1, t
            gray = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
            small = downscale(gray, *self._detect_size)
            if self._damage is not None and self._damage.damaged(gray, small, t):
                continue
            if self._pacer is not None:
                self._pacer.wait(t)
                if self._closed.is_set():
                    return
            self._last = bgr
            yield Frame(index, t, small)

    def _read_past_undecodable(self) -> NDArray[np.uint8] | None:
        """After a failed read of a file: the next frame the decoder gives, or None at the end of the file.

        A packet the decoder cannot make a frame of (a corrupted slice) fails one read and the next frames decode
        again; the end of the file fails every read. Each frame lost counts in the frame number and, for a file
        timed by its frame rate, in the time.
        """
        for lost in range(1, UNDECODABLE_RUN + 1):
            bgr = self._read()
            if bgr is None:
                continue
            self._index += lost
            if self._by_rate and self._fps:
                self._t += lost / self._fps
            if not self._undecodable:  # the rest are counted in the line at the end
                logger.warning(
                    "%s: %d frames the decoder could not decode at t=%.2f s (corrupted packets); going on with the "
                    "next frame it can",
                    self._label,
                    lost,
                    self._t,
                )
            self._undecodable += lost
            return bgr
        return None

    def _file_time(self) -> float:
        """The time of the frame just read from a file: its timestamp from the first frame's, else by frame rate."""
        if self._index == 0:
            return 0.0
        if not self._by_rate:
            t = (self._read_ms - self._first_ms) / 1000.0
            if t > self._t:
                if self._set_fps is not None and self._index == 1:
                    logger.info(
                        "%s carries its own frame times: using them, not camera.fps = %g (nor edgecam replay --fps)",
                        self._label,
                        self._set_fps,
                    )
                return t
            self._time_by_rate("a file whose frames carry no timestamps")
        assert self._fps is not None  # files always have one
        return self._t + 1.0 / self._fps

    def _time_by_rate(self, what: str) -> None:
        """Time this file's frames by a frame rate from now on, saying once which and where it comes from."""
        self._by_rate = True
        if self._set_fps is not None:
            self._fps = self._set_fps
            logger.info("%s is %s: timing its frames at camera.fps = %g", self._label, what, self._fps)
        else:
            logger.warning(
                "%s is %s: assuming %g fps; if it was recorded at another rate, set camera.fps "
                "(or edgecam replay --fps)",
                self._label,
                what,
                self._fps,
            )

    def still(self) -> NDArray[np.uint8]:
        """A copy of the most recent frame yielded, at the size the source delivers."""
        if self._last is None:
            raise CameraError("camera: no frame has been read yet, so there is no still")
        return self._last.copy()

    def close(self) -> None:
        """Release the capture; safe to call twice."""
        self._closed.set()
        with self._lock:
            self._capture.release()
        if self._damage is not None:
            self._damage.report(self._t)

    def _read(self) -> NDArray[np.uint8] | None:
        with self._lock:
            if self._closed.is_set():
                return None
            try:
                ok, bgr = self._capture.read()
                self._read_ms = float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) if ok and self._is_file else 0.0
            except cv2.error as err:
                raise CameraError(f"camera.source: reading {self._label!r} failed: {_cv_message(err)}") from err
        if not ok or bgr is None:
            return None
        return np.asarray(bgr, dtype=np.uint8)

    def _why_not_opened(self) -> str:
        if self._is_file:
            return "OpenCV cannot decode it"
        if URL.match(self._label):
            return "no video stream there (unreachable, refused, wrong path or credentials?)"
        return "the camera did not open (in use, no permission, or not a video capture device?)"


def _cv_message(err: Exception) -> str:
    """The last non-empty line of an OpenCV error, which says what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
