"""When to take stills and how: events assembled in the frame loop, masks burned in and JPEG encoded after.

The frame loop only grabs a still's pixels (a ``Shot``); ``develop`` masks, encodes and hashes it, in the agent's
outbox thread (``store.OutboxWriter``), so no frame waits for an encoder or a disk.
"""

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray

from edgecam.clock import boot_id, time_synced
from edgecam.config import CaptureSettings
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.models import Event, EventType, Frame, MotionResult, Still, Topics, utc_now
from edgecam.zones import Polygon, burn_masks, burn_masks_i420

logger = logging.getLogger(__name__)

TakeStill = Callable[[], NDArray[np.uint8]]


@dataclass(frozen=True)
class Shot:
    """A still's pixels as the camera gave them (``FrameSource.still``: BGR or I420), not yet masked nor encoded."""

    image: NDArray[np.uint8]


Captured = tuple[Event, Shot | None]
"""What the frame loop captures: an event, and for a still event its pixels."""
Emitted = tuple[Event, Still | None]
"""What the outbox stores: an event, and for a still event its masked JPEG."""


def still_bgr(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A still from ``FrameSource.still`` as BGR (h, w, 3): full-range I420 (h * 3 / 2, w) is converted.

    The Pi's streams are full-range sYCC (picamera2's default colour space), so the planes are read as JPEG's
    YCbCr; OpenCV's ``COLOR_YUV2BGR_I420`` assumes studio range (16-235) and would stretch the contrast.
    """
    if image.ndim == 3:
        return image
    height = image.shape[0] * 2 // 3
    width = image.shape[1]
    chroma = image[height:].reshape(2, height // 2, width // 2)
    cb, cr = (cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in chroma)
    ycrcb = cv2.merge([image[:height], cr, cb])
    return np.asarray(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR), np.uint8)


def encode_still(image: NDArray[np.uint8], masks: Sequence[Polygon], quality: int, event_id: str, index: int) -> Still:
    """Burn the privacy masks into ``image`` (BGR or I420), encode it as JPEG and hash it; raise StorageError.

    I420 goes to the JPEG encoder as its planes, as picamera2 encodes a YUV420 stream (picamera2 0.3.38
    request.py:239-246, ``simplejpeg.encode_jpeg_yuv_planes``): JPEG is YCbCr 4:2:0 itself, so nothing is converted
    to BGR and back, which took more than the encoding.
    """
    if image.ndim == 3:
        masked = burn_masks(image, masks)
        ok, buf = cv2.imencode(".jpg", masked, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise StorageError(f"capture: OpenCV could not encode a {image.shape} still as JPEG")
        jpeg = buf.tobytes()
        height, width = masked.shape[:2]
    else:
        try:
            planes = burn_masks_i420(image, masks)
            height, width = planes.shape[0] * 2 // 3, planes.shape[1]
            chroma = planes[height:].reshape(2, height // 2, width // 2)
            jpeg = simplejpeg.encode_jpeg_yuv_planes(planes[:height], chroma[0], chroma[1], quality=quality)
        except ValueError as err:  # an odd size; simplejpeg refuses planes it cannot take with ValueError too
            raise StorageError(f"capture: {err}") from err
    return Still(event_id, index, jpeg, hashlib.sha256(jpeg).hexdigest(), width, height)


REFIT_QUALITIES = (85, 70, 55, 40)
"""JPEG qualities tried, highest first (those at or above the still's own quality are skipped), at each size."""
MIN_REFIT_WIDTH = 160
"""Narrowest still a re-encode may make; below it the still is too large for the broker and is dropped."""


def fit_jpeg(jpeg: bytes, max_bytes: int, quality: int) -> tuple[bytes, int, int] | None:
    """Re-encode a JPEG so that it takes at most ``max_bytes``: lower quality first, then smaller.

    ``quality`` is the quality the still was taken at (``capture.jpeg_quality``). Returns (JPEG, width, height),
    or None when it cannot be read or would have to be narrower than ``MIN_REFIT_WIDTH`` pixels. The masks are
    already burned into ``jpeg``. The same input gives the same bytes (libjpeg is deterministic), so a still
    sent again arrives with the same ``sha256``.
    """
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    qualities = [q for q in REFIT_QUALITIES if q < quality] or [min(REFIT_QUALITIES)]
    height, width = image.shape[:2]
    scale = 1.0
    while round(width * scale) >= MIN_REFIT_WIDTH:
        size = (round(width * scale), max(1, round(height * scale)))
        resized = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        smallest = len(jpeg)
        for q in qualities:
            ok, buf = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                return None
            if buf.size <= max_bytes:
                return buf.tobytes(), size[0], size[1]
            smallest = min(smallest, int(buf.size))
        # Bytes go roughly with the area: shrink both sides by the square root of what is still too much.
        scale *= min(0.9, max(0.5, 0.95 * (max_bytes / smallest) ** 0.5))
    return None


@dataclass
class _Open:
    """The event under way."""

    event_id: str
    started: datetime
    start_t: float
    peak: float
    stills: int = 0
    last_still_t: float = float("-inf")
    owed: bool = False
    """A frame wanted a still while none could be taken (``still_ready``): the next frame that can takes it."""


def develop(captured: Captured, masks: Sequence[Polygon], quality: int) -> Emitted:
    """Mask, encode and hash a still event's shot; its event gains sha256, bytes, width and height.

    Other events pass through. Raises StorageError when the encoder fails. Reads nothing that the frame loop
    changes, so the outbox thread calls it.
    """
    event, shot = captured
    if shot is None:
        return event, None
    index = event.extra["index"]
    assert isinstance(index, int)
    still = encode_still(shot.image, masks, quality, event.event_id, index)
    size = {"sha256": still.sha256, "bytes": len(still.jpeg), "width": still.width, "height": still.height}
    return replace(event, extra={"index": index, **size, **event.extra}), still


def _door(result: MotionResult) -> dict[str, str]:
    return {"door": result.door} if result.door else {}


class Capture:
    """Turns the detector's results into start, still and end events, taking stills only while the door moves."""

    def __init__(
        self,
        settings: CaptureSettings,
        masks: Sequence[Polygon],
        device_id: str,
        topics: Topics,
        stills_dir: Path | None,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        synced: Callable[[], bool] = time_synced,
        room: Callable[[], bool] = lambda: True,
    ) -> None:
        """Stills go to ``stills_dir`` when given (replay); the agent's outbox writes them instead.

        ``room`` says whether one more shot may be taken now (the outbox thread keeps up); without room a still is
        skipped, never an event.
        """
        self._settings = settings
        self._masks = masks
        self._device_id = device_id
        self._topics = topics
        self._stills_dir = stills_dir
        self._clock = clock
        self._new_id = new_id
        self._synced = synced
        self._room = room
        self._open: _Open | None = None
        self._held: list[tuple[float, float, Shot]] = []
        """Shots of motion the door has not confirmed yet, with their frame time and score: in memory only."""
        self._held_id: str | None = None

    @property
    def in_event(self) -> bool:
        """An event has started and not yet ended."""
        return self._open is not None

    def on_frame(
        self, frame: Frame, result: MotionResult, take_still: TakeStill, still_ready: bool = True
    ) -> list[Captured]:
        """Return the events (still events with their shots) this frame produces, in publishing order.

        While motion waits for the door's confirmation (``result.pending``), shots are held in memory; the start
        commits them, and motion the door never confirmed drops them: no byte of a still leaves memory unless the
        door moved. ``still_ready`` False: no still now (the illuminator's light is not on or not settled yet,
        ``Illuminator.still_ready``); the event's first frame after that can take one does, moving or not (the
        door has often stopped by the time the light has settled).
        """
        out: list[Captured] = []
        if result.pending and self._open is None:
            if still_ready:
                self._hold(frame, result, take_still)
            return out
        if result.event == "start" and self._open is None:
            event_id = self._held_id or self._new_id()
            self._open = _Open(event_id, self._clock(), frame.t, result.score)
            out.append((self._event(self._open, "start", result.score, **_door(result)), None))
            out += [self._commit(self._open, held, score, t) for t, score, held in self._held]
        elif self._held:
            logger.debug("capture: %d stills dropped unencoded: the door did not move", len(self._held))
        self._held, self._held_id = [], None
        ev = self._open
        if ev is None:
            return out
        ev.peak = max(ev.peak, result.score)
        if (
            (ev.owed or (result.moving and (result.stirring or ev.stills == 0)))
            and ev.stills < self._settings.stills_per_event
            and frame.t - ev.last_still_t >= self._settings.interval
        ):
            ev.owed = not still_ready
            shot = self._take(ev.event_id, ev.stills + 1, take_still) if still_ready else None
            if shot is not None:
                out.append(self._commit(ev, shot, result.score, frame.t))
        if result.event == "end":
            out.append(self.finish(frame.t, result)[0])
        return out

    def _hold(self, frame: Frame, result: MotionResult, take_still: TakeStill) -> None:
        last = self._held[-1][0] if self._held else float("-inf")
        if (
            not (result.moving and (result.stirring or not self._held))
            or len(self._held) >= self._settings.stills_per_event
            or frame.t - last < self._settings.interval
        ):
            return
        self._held_id = self._held_id or self._new_id()
        shot = self._take(self._held_id, len(self._held) + 1, take_still)
        if shot is not None:
            self._held.append((frame.t, result.score, shot))

    def finish(self, t: float, result: MotionResult | None = None) -> list[Captured]:
        """End the event under way, if any (the source ended or the agent is stopping)."""
        self._held, self._held_id = [], None
        ev = self._open
        if ev is None:
            return []
        self._open = None
        duration = round(max(0.0, t - ev.start_t), 3)
        extra = _door(result) if result else {}
        return [(self._event(ev, "end", ev.peak, duration_s=duration, stills=ev.stills, **extra), None)]

    def _take(self, event_id: str, index: int, take_still: TakeStill) -> Shot | None:
        """The still's pixels, copied out of the camera; None (logged) without room or when the camera fails."""
        if not self._room():
            logger.warning(
                "capture: still %d of event %s skipped: the stills before it are still encoding", index, event_id
            )
            return None
        try:
            return Shot(take_still())
        except OSError as err:
            logger.error("capture: still %d of event %s not taken: %s", index, event_id, err)
            return None

    def _commit(self, ev: _Open, shot: Shot, score: float, t: float) -> Captured:
        """The still event of ``shot``, counted in the event."""
        ev.stills += 1
        ev.last_still_t = t
        topic = self._topics.still(ev.event_id, ev.stills)
        return self._event(ev, "still", score, index=ev.stills, topic=topic), shot

    def develop(self, captured: list[Captured]) -> list[Emitted]:
        """``develop`` each of ``captured`` in the frame loop (replay, tests); with ``stills_dir`` stills are written.

        A still that cannot be encoded or written is logged and left out; the event's end still counts it.
        """
        out: list[Emitted] = []
        for item in captured:
            event, still = item[0], None
            try:
                event, still = develop(item, self._masks, self._settings.jpeg_quality)
                if still is not None and self._stills_dir is not None:
                    path = self._stills_dir / event.event_id / f"{still.index}.jpg"
                    write_atomically(path, still.jpeg)
                    still = replace(still, path=path)
            except (OSError, StorageError) as err:
                logger.error(
                    "capture: still %s of event %s not saved: %s", event.extra.get("index"), event.event_id, err
                )
                continue
            out.append((event, still))
        return out

    def _event(self, ev: _Open, kind: EventType, score: float, **extra: object) -> Event:
        return Event(kind, ev.event_id, self._device_id, self._clock(), score, extra, self._synced(), boot_id())
