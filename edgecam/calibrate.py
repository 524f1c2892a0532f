"""``edgecam calibrate``: learn what the closed door looks like from a few seconds of a quiet scene."""

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.capture import still_bgr
from edgecam.config import Settings
from edgecam.contact import DoorContact
from edgecam.disk import write_atomically
from edgecam.door import DoorWatcher
from edgecam.door_reference import DoorReference
from edgecam.errors import CameraError, EdgecamError, StorageError
from edgecam.motion import MotionDetector
from edgecam.sources import FrameSource
from edgecam.viewing import DoorZoneView, SceneWarning, judge
from edgecam.zones import burn_masks, draw_zones

logger = logging.getLogger(__name__)

PICTURE_WIDTH = 1280
"""Widest the PNG of the reference gets."""


@dataclass(frozen=True)
class Calibration:
    """A reference saved, and what it was made from."""

    reference: DoorReference
    path: Path
    picture: Path
    """The PNG showing the zone and the masks over the scene."""
    seconds: float
    detail: float
    """Root-mean-square gradient of the zone in the reference, grey levels per pixel."""
    warnings: tuple[SceneWarning, ...] = ()
    """What about the scene keeps the detector from working well (``edgecam.viewing``); each is logged too."""


def calibrate(
    settings: Settings, source: FrameSource, path: Path, contact: DoorContact | None = None, skip: float = 0.0
) -> Calibration:
    """Watch ``source`` until the detector has calibrated, then learn ``door.calibrate_seconds`` of quiet scene.

    Frames before ``skip`` seconds (of a recording) are passed over. Writes the reference to ``path`` and a PNG
    beside it. Raises EdgecamError, without writing anything, when the door zone moved, the light changed or the
    contact said open meanwhile, or the zone shows too little detail. Logs a warning for each thing about the
    scene that keeps the detector from working well (too dark, too noisy, ...), and saves the reference all the same.
    """
    cam = settings.camera
    detector = MotionDetector(settings.motion, cam.detect_width, cam.detect_height)
    frames: list[NDArray[np.uint8]] = []
    first_t = last_t = 0.0
    still: NDArray[np.uint8] | None = None
    for frame in source.frames():
        if frame.t < skip:
            continue
        result = detector.process(frame)
        if result.calibrating:
            continue  # the background, and a live camera's exposure, settle first
        problem = None
        if result.global_change:
            problem = "the light changed"
        elif result.moving:
            problem = f"something moved in the door zone (score {result.score:.2f})"
        elif contact is not None and contact.is_open():
            problem = "the door contact says the door is open"
        if problem is not None:
            raise EdgecamError(
                f"calibrate: {problem} at t={frame.t:.1f} s; keep the door shut and the doorway clear, then run "
                "'edgecam calibrate' again"
            )
        if not frames:
            first_t = frame.t
        frames.append(frame.gray.copy())
        last_t = frame.t
        if last_t - first_t >= settings.door.calibrate_seconds:
            still = still_bgr(source.still())
            break
    if still is None:
        raise CameraError(
            f"calibrate: the camera's frames ended before {settings.door.calibrate_seconds:g} s of quiet scene "
            "(door.calibrate_seconds) after the detector's calibration (motion.calibration)"
        )
    reference = DoorReference.learn(frames, settings.motion.masks)
    watcher = DoorWatcher.for_settings(reference, settings)  # refuses a reference with too little detail
    picture = path.with_suffix(".png")
    try:
        write_atomically(path, reference.to_bytes())
        write_atomically(picture, _picture(settings, still))
    except OSError as err:
        raise StorageError(f"calibrate: cannot save the reference: {err}") from err
    seconds = last_t - first_t
    logger.info("calibrate: learnt the closed door from %d frames over %.1f s", len(frames), seconds)
    viewing = DoorZoneView.for_settings(settings).assess_stretch(frames)
    # The reference made here lets the door confirm motion, and the detector scale its threshold with the light.
    warnings = tuple(judge(viewing, settings.motion.threshold, relative=settings.door.confirm))
    for warning in warnings:
        logger.warning("calibrate: %s", warning.message)
    return Calibration(reference, path, picture, seconds, watcher.reference_detail, warnings)


def _picture(settings: Settings, still: NDArray[np.uint8]) -> bytes:
    """The scene as the camera sees it at full size, masks burned in, zone and masks drawn, as PNG."""
    image = burn_masks(still, settings.motion.masks)
    height, width = image.shape[:2]
    if width > PICTURE_WIDTH:
        size = (PICTURE_WIDTH, round(height * PICTURE_WIDTH / width))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    ok, png = cv2.imencode(".png", draw_zones(image, settings.motion.zone, settings.motion.masks))
    if not ok:
        raise EdgecamError("calibrate: OpenCV could not encode the PNG of the reference")
    return bytes(png.tobytes())
