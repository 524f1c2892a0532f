"""The Raspberry Pi camera through Picamera2: the lores Y plane for detection, the main stream for stills.

This is the only module that imports ``picamera2``, and only inside the factories below: importing it touches
libcamera. The camera is configured once and runs continuously; a still is the main-stream image of the request
behind the latest frame, so taking one never switches the camera's mode.

The configuration is made to fit the board's camera memory (CMA), as ``picamera_plan`` plans it: a YUV420 main
stream, three buffers, and the smallest sensor mode that gives the still its whole field of view. Facts taken from
picamera2 name their line: ``picamera2.py:N`` is ``picamera2/picamera2.py`` of the 0.3.38 wheel, other files of
that wheel likewise.
"""

import concurrent.futures
import errno
import importlib.metadata
import importlib.util
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.models import Frame
from edgecam.sources.picamera_plan import MIB, CameraPlan, plan_camera, read_modes

logger = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")
"""Where the board's camera memory is read: its ``CmaTotal:`` line."""
STOP_WAIT = 2.0
"""Seconds close() waits for picamera2's stop(), and then again for its close(), before giving up on each."""
MIN_VERSION = (0, 3, 20)
"""picamera2 0.3.20 added cancel_all_and_flush() and honours capture_request(wait=seconds): before it a number
blocks forever (v0.3.19 picamera2.py:1320) and a camera that stops delivering cannot be stopped."""

_OPEN_ERRORS = (RuntimeError, OSError, ValueError, IndexError)


def _make_camera(camera_num: int) -> Any:
    """Open Picamera2 camera ``camera_num``: the one place picamera2 is imported (tests replace this)."""
    from picamera2 import Picamera2

    return Picamera2(camera_num)


def _map_stream(request: Any, name: str) -> AbstractContextManager[Any]:
    """The named stream of ``request`` in place, read-only, inside ``with`` (tests replace this).

    picamera2's MappedArray maps the buffer without copying (request.py:53-85); ``make_array`` would copy the
    whole padded buffer first (request.py:169-180).
    """
    from picamera2 import MappedArray

    mapped: AbstractContextManager[Any] = MappedArray(request, name, write=False)
    return mapped


NOT_INSTALLED = (
    "camera.source: 'picamera2' needs the picamera2 package (on Raspberry Pi OS: sudo apt install python3-picamera2)"
)


def check_installed() -> None:
    """Raise CameraError (``NOT_INSTALLED``) when picamera2 cannot be found; imports nothing (``check-config``)."""
    if importlib.util.find_spec("picamera2") is None:
        raise CameraError(NOT_INSTALLED)


def _installed_version() -> str | None:
    """picamera2's version from its package metadata (it has no ``__version__``), None when it has none."""
    try:
        return importlib.metadata.version("picamera2")
    except importlib.metadata.PackageNotFoundError:
        return None


def cma_total() -> int | None:
    """The board's CMA in bytes, from the ``CmaTotal:`` line of ``MEMINFO``; None when there is none."""
    try:
        text = MEMINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    match = re.search(r"^CmaTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def i420(yuv: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """A contiguous I420 copy (height * 3 / 2, width) of picamera2's YUV420 array (height * 3 / 2, stride).

    picamera2 shapes YUV420 as Y rows of ``stride`` bytes followed by U and V rows of ``stride / 2``
    (request.py:328-333; its JPEG encoder slices the planes the same way, encoders/jpeg_encoder.py:45-51). The
    padding is cut while copying, so this is the one copy out of the camera's buffer.
    """
    stride = yuv.shape[1]
    size = width * height
    out = np.empty(size * 3 // 2, np.uint8)
    if stride == width:
        out[:] = yuv.reshape(-1)[: size * 3 // 2]
        return out.reshape(height * 3 // 2, width)
    out[:size].reshape(height, width)[:] = yuv[:height, :width]
    flat = yuv.reshape(-1)
    half, rows, quarter = stride // 2, height // 2, size // 4
    for plane in range(2):
        start = height * stride + plane * rows * half
        chroma = flat[start : start + rows * half].reshape(rows, half)[:, : width // 2]
        out[size + plane * quarter : size + (plane + 1) * quarter].reshape(rows, width // 2)[:] = chroma
    return out.reshape(height * 3 // 2, width)


class PiCameraSource:
    """A Raspberry Pi camera: detection frames from the lores YUV420 stream, I420 stills from the main stream."""

    def __init__(self, camera: CameraSettings) -> None:
        self._detect_size = (camera.detect_width, camera.detect_height)
        self._timeout = camera.frame_timeout
        self._fps = camera.fps
        self._held: Any = None  # the request behind the latest frame, kept until the next one for still()
        self._index = 0
        self._main_size = (0, 0)
        self._lores_size = (0, 0)
        self._plan: CameraPlan | None = None
        self._cma: int | None = None
        try:
            self._camera: Any = _make_camera(0)
        except ImportError as err:
            raise CameraError(NOT_INSTALLED) from err
        except IndexError as err:  # picamera2 before 0.3.37 indexes an empty camera list (v0.3.36 :344)
            raise CameraError(
                "camera.source: cannot open the Pi camera: no camera found; check its ribbon cable and "
                "'rpicam-hello --list-cameras'"
            ) from err
        except _OPEN_ERRORS as err:
            raise CameraError(f"camera.source: cannot open the Pi camera: {_with_cause(err)}") from err
        try:
            self._check_version()
            self._start(camera)
        except CameraError:
            self.close()
            raise
        except _OPEN_ERRORS as err:
            self.close()
            raise CameraError(f"camera.source: cannot start the Pi camera: {self._start_error(err)}") from err
        self._opened_at = time.monotonic()

    def _check_version(self) -> None:
        if hasattr(self._camera, "cancel_all_and_flush"):
            return
        version = _installed_version() or "(version unknown)"
        raise CameraError(
            f"camera.source: picamera2 {version} is too old: edgecam needs 0.3.20 or later, which can stop a camera "
            "that stopped delivering frames; upgrade it: sudo apt update && sudo apt install python3-picamera2"
        )

    def _start(self, settings: CameraSettings) -> None:
        """Configure main, lores and raw once and start; log what libcamera configured."""
        camera = self._camera
        modes = read_modes(camera)
        native = (int(camera.sensor_resolution[0]), int(camera.sensor_resolution[1]))
        self._cma = cma_total()
        plan = self._plan = plan_camera(settings, modes, native, self._cma)
        frame_us = round(1_000_000 / settings.fps)
        extra: dict[str, Any] = {}
        if plan.mode is not None:
            # An exact mode size scores 0 in picamera2's mode choice (picamera2.py:1084-1100), so this mode is used.
            extra["sensor"] = {"output_size": plan.mode.size, "bit_depth": plan.mode.bit_depth}
            extra["raw"] = {"format": plan.mode.format, "size": plan.mode.size}
        # The preview configuration is the one for a camera that runs all the time: full-range sYCC, so the Y plane
        # spans 0-255, and light noise reduction, keeping the ISP's work per frame small. YUV420 main: 1.5 bytes a
        # pixel against RGB888's 3, and what a JPEG encoder takes without converting.
        config = camera.create_preview_configuration(
            main={"size": plan.still, "format": "YUV420"},
            lores={"size": plan.detect, "format": "YUV420"},
            buffer_count=plan.buffers,
            controls={"FrameDurationLimits": (frame_us, frame_us)},
            **extra,
        )
        camera.configure(config)
        actual = camera.camera_configuration()
        camera.start()
        main, lores = actual["main"], actual["lores"]
        self._main_size = (int(main["size"][0]), int(main["size"][1]))
        self._lores_size = (int(lores["size"][0]), int(lores["size"][1]))
        self._log_started(actual, plan, settings.fps)
        if plan.upscaled and plan.mode is not None:
            logger.warning(
                "Pi camera: stills of %dx%d are scaled up from the sensor mode %dx%d, the largest whose buffers fit "
                "the camera memory or the sensor has; a smaller camera.still_width/still_height loses no detail",
                *plan.still,
                *plan.mode.size,
            )

    def _log_started(self, actual: dict[str, Any], plan: CameraPlan, fps: float) -> None:
        main, lores, raw = actual["main"], actual["lores"], actual.get("raw")
        sensor = actual.get("sensor") or {}
        streams = [s for s in (main, lores, raw) if s is not None]
        held = sum(int(actual["buffer_count"]) * int(s.get("framesize", 0)) for s in streams)
        mode = sensor.get("output_size")
        logger.info(
            "Pi camera running: stills %dx%d %s (stride %s, %s), detection %dx%d, sensor mode %s %s-bit, "
            "raw stream %s, %d buffers, %.1f MiB of camera memory (CMA %s), %.3g fps",
            *self._main_size,
            main.get("format"),
            main.get("stride"),
            "chosen for this board" if plan.chosen else "camera.still_width/still_height",
            *self._lores_size,
            f"{mode[0]}x{mode[1]}" if mode else "?",
            sensor.get("bit_depth", "?"),
            f"{raw['size'][0]}x{raw['size'][1]} {raw['format']}" if raw else "off",
            int(actual["buffer_count"]),
            (held or plan.cma_bytes) / MIB,
            f"{self._cma / MIB:.0f} MiB" if self._cma else "unknown",
            fps,
        )

    def _start_error(self, err: BaseException) -> str:
        """One line for a failed start; when the camera memory ran out, what it asked for and what to change."""
        text = _with_cause(err)
        out_of_memory = (isinstance(err, OSError) and err.errno == errno.ENOMEM) or "Cannot allocate memory" in text
        plan, cma = self._plan, self._cma
        if not out_of_memory or plan is None:
            return text
        change = (
            "set a smaller camera.still_width/still_height, or unset both to fit the board"
            if not plan.chosen
            else f"the smallest still for this board does not fit either: lower camera.detect_width/detect_height "
            f"({plan.detect[0]}x{plan.detect[1]}) or camera.fps, or give the camera more CMA (docs/raspberry-pi.md)"
        )
        return (
            f"{text}: its buffers (about {plan.cma_bytes / MIB:.0f} MiB for stills of {plan.still[0]}x{plan.still[1]}) "
            f"do not fit the camera memory (CMA {f'{cma / MIB:.0f} MiB' if cma else 'unknown'}); {change}"
        )

    @property
    def fps(self) -> float:
        """The frame rate asked of the camera."""
        return self._fps

    def frames(self) -> Iterator[Frame]:
        """Yield frames until closed; raise CameraError (one line) when the camera stops delivering or fails."""
        while (camera := self._camera) is not None:
            self._release_held()
            try:
                request = camera.capture_request(wait=self._timeout)
            except concurrent.futures.TimeoutError as err:  # job.py:84; the builtin one only from Python 3.11
                raise CameraError(
                    f"camera.source: the Pi camera gave no frame for {self._timeout:g} s "
                    "(camera.frame_timeout); is the ribbon cable seated?"
                ) from err
            except concurrent.futures.CancelledError:
                return  # close() cancelled the wait (cancel_all_and_flush, job.py:86-93)
            except RuntimeError as err:
                if self._camera is None:  # closed meanwhile
                    return
                raise CameraError(f"camera.source: the Pi camera failed: {_first_line(err)}") from err
            self._held = request
            try:
                gray = self._y_plane(request)
                metadata = request.get_metadata()
            except (RuntimeError, OSError) as err:  # OSError: syncing the buffer (dmaallocator.py:126)
                raise CameraError(f"camera.source: cannot read a Pi camera frame: {_first_line(err)}") from err
            index, self._index = self._index, self._index + 1
            if index == 0:
                self._check_frame_rate(metadata)
            yield Frame(index, time.monotonic() - self._opened_at, gray, metadata)

    def _check_frame_rate(self, metadata: dict[str, Any]) -> None:
        """Warn when the sensor mode is slower than ``camera.fps``: libcamera gives the mode's fastest instead.

        ``FrameDuration`` (µs) is in every frame's metadata from the Raspberry Pi IPA (ipa_base.cpp reportMetadata).
        """
        duration = metadata.get("FrameDuration")
        if not isinstance(duration, int | float) or duration <= 1_000_000 / self._fps * 1.05:
            return
        mode = self._plan.mode.size if self._plan is not None and self._plan.mode is not None else None
        logger.warning(
            "Pi camera: %.3g fps, not camera.fps = %.3g: the sensor mode%s is no faster; set a smaller "
            "camera.still_width/still_height or a lower camera.fps",
            1_000_000 / duration,
            self._fps,
            f" {mode[0]}x{mode[1]}" if mode else "",
        )

    def _y_plane(self, request: Any) -> NDArray[np.uint8]:
        """The detection image: the lores Y plane (padding cut off) at the detection size, copied out once."""
        width, height = self._lores_size
        with _map_stream(request, "lores") as mapped:
            y = mapped.array[:height, :width]
            if (width, height) != self._detect_size:
                return np.asarray(cv2.resize(y, self._detect_size, interpolation=cv2.INTER_AREA), np.uint8)
            return np.array(y, dtype=np.uint8)

    def still(self) -> NDArray[np.uint8]:
        """The main-stream image of the most recent frame yielded: I420 (h * 3 / 2, w), full-range YCbCr.

        Copied once out of the camera's buffer, no mode switch. Raises CameraError before the first frame.
        """
        if self._held is None:
            raise CameraError("camera: no frame has been read yet, so there is no still")
        try:
            with _map_stream(self._held, "main") as mapped:
                return i420(mapped.array, *self._main_size)
        except (RuntimeError, OSError) as err:
            raise CameraError(f"camera.source: cannot read the Pi camera's still: {_first_line(err)}") from err

    def close(self) -> None:
        """Release the latest request, cancel waiting captures, stop and close the camera; safe to call twice.

        Returns within about 2 x ``STOP_WAIT`` seconds even when the camera hangs. Raises CameraError when closing
        fails.
        """
        camera, self._camera = self._camera, None
        if camera is None:
            return
        failures = []
        try:
            self._release_held()
        except RuntimeError as err:
            failures.append(f"releasing the last frame: {_first_line(err)}")
        cancel: Callable[[], None] | None = getattr(camera, "cancel_all_and_flush", None)
        if cancel is not None:
            # A capture that timed out stays queued (job.py:78-84) and stop() would queue behind it forever
            # (picamera2.py:1424, :1479-1485); cancelling the queue lets it through (picamera2's wait_cancel_test).
            cancel()
        for name in ("stop", "close"):
            done, error = _bounded(getattr(camera, name), STOP_WAIT)
            if not done:
                logger.warning("Pi camera: %s() did not return within %g s; going on without it", name, STOP_WAIT)
            elif error is not None:
                failures.append(f"{name}: {_first_line(error)}")
        logger.info("Pi camera closed after %d frames", self._index)
        if failures:
            raise CameraError(f"camera.source: cannot stop the Pi camera: {'; '.join(failures)}")

    def _release_held(self) -> None:
        request, self._held = self._held, None
        if request is not None:
            request.release()


def _bounded(call: Callable[[], object], seconds: float) -> tuple[bool, BaseException | None]:
    """Run ``call`` in a daemon thread for at most ``seconds``: (whether it returned, what it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except Exception as err:  # noqa: BLE001  # handed back to the caller's thread, which reports it
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="picamera2-close", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False, None
    return True, outcome[0]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _with_cause(err: BaseException) -> str:
    """The error's first line, and its cause's: picamera2 wraps a busy camera's error (picamera2.py:370-372)."""
    text = _first_line(err)
    cause = err.__cause__
    if cause is None:
        return text
    hint = "; is another program using the camera?" if "busy" in str(cause).lower() else ""
    return f"{text} ({_first_line(cause)}){hint}"
