"""The Raspberry Pi camera through Picamera2: the lores Y plane for detection, the main stream for stills.

This is the only module that imports ``picamera2``, and only inside ``_make_camera``: importing it touches
libcamera. The camera is configured once and runs continuously; a still is the main-stream image of the request
behind the latest frame, so taking one never switches the camera's mode.
"""

import logging
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.models import Frame

logger = logging.getLogger(__name__)

_OPEN_ERRORS = (RuntimeError, OSError, ValueError, IndexError)


def _make_camera(camera_num: int) -> Any:
    """Open Picamera2 camera ``camera_num``: the one place picamera2 is imported (tests replace this)."""
    from picamera2 import Picamera2

    return Picamera2(camera_num)


def _even(value: int) -> int:
    # picamera2 refuses odd stream sizes.
    return value - value % 2


class PiCameraSource:
    """A Raspberry Pi camera: detection frames from the lores YUV420 stream, stills from the main RGB stream."""

    def __init__(self, camera: CameraSettings) -> None:
        self._detect_size = (camera.detect_width, camera.detect_height)
        self._timeout = camera.frame_timeout
        self._fps = camera.fps
        self._held: Any = None  # the request behind the latest frame, kept until the next one for still()
        self._index = 0
        try:
            self._camera: Any = _make_camera(0)
        except ImportError as err:
            raise CameraError(
                "camera.source: 'picamera2' needs the picamera2 package "
                "(on Raspberry Pi OS: sudo apt install python3-picamera2)"
            ) from err
        except _OPEN_ERRORS as err:
            raise CameraError(f"camera.source: cannot open the Pi camera: {_first_line(err)}") from err
        try:
            self._lores_size = self._start(camera)
        except _OPEN_ERRORS as err:
            self.close()
            raise CameraError(f"camera.source: cannot start the Pi camera: {_first_line(err)}") from err
        self._opened_at = time.monotonic()
        logger.info(
            "Pi camera running: stills %dx%d, detection %dx%d, %.3g fps",
            _even(camera.still_width),
            _even(camera.still_height),
            *self._lores_size,
            camera.fps,
        )

    def _start(self, camera: CameraSettings) -> tuple[int, int]:
        """Configure main and lores once and start; return the lores size the camera settled on."""
        frame_us = round(1_000_000 / camera.fps)
        # The preview configuration is the one meant for a camera that runs all the time: 4 buffers (video's 6 are
        # for an encoder's latency, and at still size each costs ~9 MB of CMA), full-range sYCC so the Y plane
        # spans 0-255, and light noise reduction that keeps the ISP's work per frame small.
        config = self._camera.create_preview_configuration(
            main={"size": (_even(camera.still_width), _even(camera.still_height)), "format": "RGB888"},
            lores={"size": (_even(camera.detect_width), _even(camera.detect_height)), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        self._camera.configure(config)
        width, height = self._camera.stream_configuration("lores")["size"]
        self._camera.start()
        return int(width), int(height)

    @property
    def fps(self) -> float:
        """The frame rate asked of the camera."""
        return self._fps

    def frames(self) -> Iterator[Frame]:
        """Yield frames until closed; raise CameraError when the camera stops delivering."""
        while (camera := self._camera) is not None:
            self._release_held()
            try:
                request = camera.capture_request(wait=self._timeout)
            except TimeoutError as err:
                raise CameraError(
                    f"camera.source: the Pi camera gave no frame for {self._timeout:g} s "
                    "(camera.frame_timeout); is the ribbon cable seated?"
                ) from err
            except RuntimeError as err:
                if self._camera is None:  # closed meanwhile
                    return
                raise CameraError(f"camera.source: the Pi camera failed: {_first_line(err)}") from err
            self._held = request
            try:
                gray = self._y_plane(request.make_array("lores"))
                metadata = request.get_metadata()
            except RuntimeError as err:
                raise CameraError(f"camera.source: cannot read a Pi camera frame: {_first_line(err)}") from err
            index, self._index = self._index, self._index + 1
            yield Frame(index, time.monotonic() - self._opened_at, gray, metadata)

    def _y_plane(self, yuv: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The detection image from a YUV420 array (rows of ``stride`` bytes): the Y plane, padding cut off."""
        width, height = self._lores_size
        gray = yuv[:height, :width]
        if (width, height) != self._detect_size:
            gray = np.asarray(cv2.resize(gray, self._detect_size, interpolation=cv2.INTER_AREA), np.uint8)
        return np.ascontiguousarray(gray, dtype=np.uint8)

    def still(self) -> NDArray[np.uint8]:
        """The main-stream image (BGR, still size) of the most recent frame yielded; no mode switch."""
        if self._held is None:
            raise CameraError("camera: no frame has been read yet, so there is no still")
        try:
            # RGB888 is B, G, R in memory: OpenCV's BGR. make_array copies, so the buffer can go back.
            return np.asarray(self._held.make_array("main"), dtype=np.uint8)
        except RuntimeError as err:
            raise CameraError(f"camera.source: cannot read the Pi camera's still: {_first_line(err)}") from err

    def close(self) -> None:
        """Release the latest request, stop and close the camera; safe to call twice."""
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            try:
                self._release_held()
                camera.stop()
            finally:
                camera.close()
        except RuntimeError as err:
            raise CameraError(f"camera.source: cannot stop the Pi camera: {_first_line(err)}") from err
        logger.info("Pi camera closed after %d frames", self._index)

    def _release_held(self) -> None:
        request, self._held = self._held, None
        if request is not None:
            request.release()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
