"""When to take stills and how: masks burned in, JPEG encoded, events assembled."""

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.clock import boot_id, time_synced
from edgecam.config import CaptureSettings
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.models import Event, EventType, Frame, MotionResult, Still, Topics, utc_now
from edgecam.zones import Polygon, burn_masks

logger = logging.getLogger(__name__)

TakeStill = Callable[[], NDArray[np.uint8]]
Emitted = tuple[Event, Still | None]


def encode_still(image: NDArray[np.uint8], masks: Sequence[Polygon], quality: int, event_id: str, index: int) -> Still:
    """Burn the privacy masks into ``image``, encode it as JPEG and hash it."""
    masked = burn_masks(image, masks)
    ok, buf = cv2.imencode(".jpg", masked, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StorageError(f"capture: OpenCV could not encode a {image.shape} still as JPEG")
    jpeg = buf.tobytes()
    height, width = masked.shape[:2]
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
    ) -> None:
        """Stills go to ``stills_dir`` when given (replay); the agent's outbox writes them instead."""
        self._settings = settings
        self._masks = masks
        self._device_id = device_id
        self._topics = topics
        self._stills_dir = stills_dir
        self._clock = clock
        self._new_id = new_id
        self._synced = synced
        self._open: _Open | None = None
        self._held: list[tuple[float, float, Still]] = []
        """Stills of motion the door has not confirmed yet, with their frame time and score: in memory only."""
        self._held_id: str | None = None

    @property
    def in_event(self) -> bool:
        """An event has started and not yet ended."""
        return self._open is not None

    def on_frame(self, frame: Frame, result: MotionResult, take_still: TakeStill) -> list[Emitted]:
        """Return the events (with their stills) this frame produces, in publishing order.

        While motion waits for the door's confirmation (``result.pending``), stills are taken into memory; the
        start commits them, and motion the door never confirmed drops them unwritten: no byte of a still leaves
        memory unless the door moved.
        """
        out: list[Emitted] = []
        if result.pending and self._open is None:
            self._hold(frame, result, take_still)
            return out
        if result.event == "start" and self._open is None:
            event_id = self._held_id or self._new_id()
            self._open = _Open(event_id, self._clock(), frame.t, result.score)
            out.append((self._event(self._open, "start", result.score, **_door(result)), None))
            for t, score, still in self._held:
                emitted = self._commit(self._open, still, score, t)
                if emitted is not None:
                    out.append(emitted)
        elif self._held:
            logger.debug("capture: %d stills dropped unwritten: the door did not move", len(self._held))
        self._held, self._held_id = [], None
        ev = self._open
        if ev is None:
            return out
        ev.peak = max(ev.peak, result.score)
        if (
            result.moving
            and (result.stirring or ev.stills == 0)
            and ev.stills < self._settings.stills_per_event
            and frame.t - ev.last_still_t >= self._settings.interval
        ):
            taken = self._take(ev.event_id, ev.stills + 1, take_still)
            emitted = self._commit(ev, taken, result.score, frame.t) if taken is not None else None
            if emitted is not None:
                out.append(emitted)
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
        still = self._take(self._held_id, len(self._held) + 1, take_still)
        if still is not None:
            self._held.append((frame.t, result.score, still))

    def finish(self, t: float, result: MotionResult | None = None) -> list[Emitted]:
        """End the event under way, if any (the source ended or the agent is stopping)."""
        self._held, self._held_id = [], None
        ev = self._open
        if ev is None:
            return []
        self._open = None
        duration = round(max(0.0, t - ev.start_t), 3)
        extra = _door(result) if result else {}
        return [(self._event(ev, "end", ev.peak, duration_s=duration, stills=ev.stills, **extra), None)]

    def _take(self, event_id: str, index: int, take_still: TakeStill) -> Still | None:
        """Take, mask and encode a still, in memory; None (logged) when the camera or the encoder fails."""
        try:
            return encode_still(take_still(), self._masks, self._settings.jpeg_quality, event_id, index)
        except (OSError, StorageError) as err:
            logger.error("capture: still %d of event %s not taken: %s", index, event_id, err)
            return None

    def _commit(self, ev: _Open, still: Still, score: float, t: float) -> Emitted | None:
        """The still's event; with ``stills_dir`` (replay) the still is written there first."""
        index = ev.stills + 1
        still = replace(still, index=index)
        try:
            if self._stills_dir is not None:
                path = self._stills_dir / ev.event_id / f"{index}.jpg"
                write_atomically(path, still.jpeg)
                still = replace(still, path=path)
        except OSError as err:
            logger.error("capture: still %d of event %s not saved: %s", index, ev.event_id, err)
            return None
        ev.stills = index
        ev.last_still_t = t
        event = self._event(
            ev,
            "still",
            score,
            index=index,
            sha256=still.sha256,
            bytes=len(still.jpeg),
            width=still.width,
            height=still.height,
            topic=self._topics.still(ev.event_id, index),
        )
        return event, still

    def _event(self, ev: _Open, kind: EventType, score: float, **extra: object) -> Event:
        return Event(kind, ev.event_id, self._device_id, self._clock(), score, extra, self._synced(), boot_id())
