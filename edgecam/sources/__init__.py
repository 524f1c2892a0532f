"""Where frames come from: one small protocol and a factory that picks the adapter from ``camera.source``."""

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.models import Frame

URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
"""A source that is a stream URL (``rtsp://``, ``http(s)://``...): RFC 3986 section 3.1's scheme, then ``//``."""


class FrameSource(Protocol):
    """A camera: grey detection frames in order, and a full-resolution still of the latest one on demand."""

    @property
    def fps(self) -> float | None:
        """Native frame rate where known (files, simulated, Pi), else None."""
        ...

    def frames(self) -> Iterator[Frame]:
        """Yield detection frames until the source ends (a file) or is closed; raise CameraError on failure."""
        ...

    def still(self) -> NDArray[np.uint8]:
        """The most recent frame yielded, at full resolution: BGR (h, w, 3) or I420 (h * 3 / 2, w), uint8.

        I420 is planar, full-range YUV 4:2:0 (Y rows, then the U plane, then the V plane, each h / 2 x w / 2), what
        a camera with a YUV420 main stream gives without converting in the frame loop; ``capture.still_bgr``
        converts it.
        """
        ...

    def close(self) -> None:
        """Release the camera; safe to call twice."""
        ...


def check_source(camera: CameraSettings) -> None:
    """Raise CameraError in one line when ``camera.source`` names a file or device that is not there; opens nothing.

    A file must exist, be no folder and be readable; a ``/dev/...`` device must exist; ``picamera2`` must be
    installed. Stream URLs, camera numbers and the Pi camera itself are only known good once opened.
    """
    source = camera.source
    if source == "picamera2":
        from edgecam.sources.picamera import check_installed  # does not import picamera2

        check_installed()
        return
    if source == "simulated" or source.isdigit() or URL.match(source):
        return
    path = Path(source)
    if source.startswith("/dev/"):
        if not path.exists():
            raise CameraError(f"camera.source: cannot open {source!r}: no such device")
        return
    if not path.exists():
        raise CameraError(f"camera.source: cannot open {source!r}: no such file")
    if path.is_dir():
        raise CameraError(f"camera.source: cannot open {source!r}: it is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise CameraError(f"camera.source: cannot open {source!r}: permission denied")


def open_source(camera: CameraSettings, *, realtime: bool) -> FrameSource:
    """Open the source named by ``camera.source``; ``realtime`` paces files and the simulation at their fps."""
    if camera.source == "simulated":
        from edgecam.sources.simulated import SimulatedSource

        return SimulatedSource(camera, realtime=realtime)
    if camera.source == "picamera2":
        from edgecam.sources.picamera import PiCameraSource

        return PiCameraSource(camera)
    from edgecam.sources.opencv import OpenCVSource

    return OpenCVSource(camera, realtime=realtime)
