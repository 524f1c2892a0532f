"""Where frames come from: one small protocol and a factory that picks the adapter from ``camera.source``."""

from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.models import Frame


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
        """A BGR still (height x width x 3, uint8) of the most recent frame yielded, at full resolution."""
        ...

    def close(self) -> None:
        """Release the camera; safe to call twice."""
        ...


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
