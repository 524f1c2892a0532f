"""Pictures of what the detector did over a replay: the sheet of the whole run, and one picture per event.

``Trace`` keeps a few numbers per frame (the score, the detector's flags, the door's dissimilarity); ``Explainer``
keeps, per event, the frames that started and ended it with the pixels that counted, and draws each event once it
is over, so a long clip costs memory for its numbers only (and a few dozen frames for the sheet).
"""

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import Settings
from edgecam.disk import write_atomically
from edgecam.models import MotionResult
from edgecam.zones import draw_zones

logger = logging.getLogger(__name__)

SHEET_FRAMES = 4
SPREAD = 16
"""``Trace`` keeps between ``SPREAD`` and twice as many evenly spaced frames of the run, for the sheet's tiles."""
SHEET_WIDTH = 1280
PRE_ROLL = 3.0
"""Seconds of score curve drawn before an event's start."""
POST_ROLL = 1.0
"""Seconds of score curve drawn after an event's end."""
EXPLAIN_TILE = 400
"""Width of one frame in an event's picture."""
PLOT_HEIGHT = 260
PAD = 40

BLACK, WHITE = (0, 0, 0), (255, 255, 255)
SCORE, THRESHOLD, EVENT, EVENT_SPAN = (160, 60, 0), (0, 160, 0), (0, 0, 220), (200, 230, 255)
SETTLING, CALIBRATING, DOOR, CHANGED = (225, 225, 225), (245, 225, 200), (170, 0, 170), (0, 0, 255)


@dataclass
class Trace:
    """The run so far: per frame its time, the detector's result and the door's dissimilarity; events; a few frames."""

    times: list[float] = field(default_factory=list)
    results: list[MotionResult] = field(default_factory=list)
    door_levels: list[float | None] = field(default_factory=list)
    events: list[tuple[float, float | None]] = field(default_factory=list)
    """(start, end) times; end None while the event is under way."""
    frames: list[tuple[float, NDArray[np.uint8]]] = field(default_factory=list)
    """The start frames of the first ``SHEET_FRAMES - 1`` events, for the sheet."""
    spread: list[tuple[float, NDArray[np.uint8]]] = field(default_factory=list)
    """Every ``stride``-th frame from the first, for the sheet's tiles no event takes."""
    stride: int = 1

    def add(self, t: float, gray: NDArray[np.uint8], result: MotionResult, door_level: float | None) -> None:
        """Record one frame."""
        self.times.append(t)
        self.results.append(result)
        self.door_levels.append(door_level)
        if result.event == "start" and len(self.frames) < SHEET_FRAMES - 1:
            self.frames.append((t, gray))
        if (len(self.times) - 1) % self.stride == 0:
            self.spread.append((t, gray))
            # A clip's length is unknown until it ends (a raw .h264 has no frame count), so keep every stride-th
            # frame and, at 2 * SPREAD of them, drop every other one and double the stride: however long the
            # clip, at most 2 * SPREAD frames are held, still evenly spaced from the first.
            if len(self.spread) == 2 * SPREAD:
                del self.spread[1::2]
                self.stride *= 2
        if result.event == "start":
            self.events.append((t, None))
        elif result.event == "end" and self.events:
            self.events[-1] = (self.events[-1][0], t)


def _png(image: NDArray[np.uint8]) -> bytes:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} picture as PNG")
    return bytes(png.tobytes())


def _fit(image: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    size = (width, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _caption(image: NDArray[np.uint8], lines: list[str]) -> None:
    """White text on a black band at the top left."""
    width = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] for line in lines)
    cv2.rectangle(image, (0, 0), (width + 12, 8 + 20 * len(lines)), BLACK, -1)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (6, 20 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1, cv2.LINE_AA)


def plot(
    settings: Settings, trace: Trace, t0: float, t1: float, width: int, title: str, *, details: bool
) -> NDArray[np.uint8]:
    """The score from ``t0`` to ``t1`` with the threshold and the events, as a picture ``width`` pixels wide.

    With ``details`` also the detector's states (grey: light change or settling, blue: calibrating), the moving
    frames (red ticks) and the door's dissimilarity (purple, 0..1 on its own scale, dashed at ``door.open_level``).
    """
    image = np.full((PLOT_HEIGHT, width, 3), 255, np.uint8)
    lo, hi = bisect.bisect_left(trace.times, t0), bisect.bisect_right(trace.times, t1)
    times, results = trace.times[lo:hi], trace.results[lo:hi]
    span = max(t1 - t0, 1e-6)
    top, bottom = PAD, PLOT_HEIGHT - PAD
    peak = max([r.score for r in results] + [settings.motion.min_area * 2, 0.01])

    def x(t: float) -> int:
        return PAD + int((width - 2 * PAD) * (min(max(t, t0), t1) - t0) / span)

    def y(value: float, scale: float) -> int:
        return bottom - int((bottom - top) * value / scale)

    if details:
        for i, (t, r) in enumerate(zip(times, results, strict=True)):
            shade = CALIBRATING if r.calibrating else SETTLING if (r.global_change or r.settling) else None
            if shade is not None:
                right = x(times[i + 1]) if i + 1 < len(times) else x(t) + 1
                cv2.rectangle(image, (x(t), top), (right, bottom), shade, -1)
    for start, end in trace.events:
        if start <= t1 and (end is None or end >= t0):
            cv2.rectangle(image, (x(start), top), (x(end if end is not None else t1), bottom), EVENT_SPAN, -1)
            cv2.line(image, (x(start), top), (x(start), bottom), EVENT, 2)
            if end is not None:
                cv2.line(image, (x(end), top), (x(end), bottom), EVENT, 1)
    if details:
        for t, r in zip(times, results, strict=True):
            if r.moving:
                cv2.line(image, (x(t), bottom - 6), (x(t), bottom), CHANGED, 1)
        levels = [(t, v) for t, v in zip(times, trace.door_levels[lo:hi], strict=True) if v is not None]
        if levels:
            cv2.polylines(image, [np.array([[x(t), y(v, 1.0)] for t, v in levels], np.int32)], False, DOOR, 1)
            level = y(settings.door.open_level, 1.0)
            for left in range(PAD, width - PAD, 12):
                cv2.line(image, (left, level), (min(left + 6, width - PAD), level), DOOR, 1)
    if times:
        points = np.array([[x(t), y(r.score, peak)] for t, r in zip(times, results, strict=True)], np.int32)
        cv2.polylines(image, [points], False, SCORE, 1)
    threshold = y(settings.motion.min_area, peak)
    cv2.line(image, (PAD, threshold), (width - PAD, threshold), THRESHOLD, 1)
    cv2.rectangle(image, (PAD, top), (width - PAD, bottom), BLACK, 1)
    cv2.putText(image, title, (PAD, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BLACK, 1, cv2.LINE_AA)
    for t in (t0, t1):
        cv2.putText(image, f"{t:.1f} s", (x(t) - 20, PLOT_HEIGHT - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, BLACK, 1)
    return image


def sheet_frames(trace: Trace) -> list[tuple[float, NDArray[np.uint8], str]]:
    """The sheet's frames in time order as (clip time in s, detection image, caption).

    The start frames of the first ``SHEET_FRAMES - 1`` events, and in the tiles left the frames nearest to the
    starts of as many equal parts of the run (the first of them the run's first frame), so a run with few or no
    events still shows its scene across its length. Fewer only when the run has fewer frames.
    """
    if not trace.times:
        return []
    chosen = [(t, gray, "event start") for t, gray in trace.frames[: SHEET_FRAMES - 1]]
    spare = [(t, gray) for t, gray in trace.spread if all(t != event_t for event_t, _, _ in chosen)]
    parts = SHEET_FRAMES - len(chosen)
    first, span = trace.times[0], trace.times[-1] - trace.times[0]
    for part in range(min(parts, len(spare))):
        gaps = [abs(t - (first + span * part / parts)) for t, _ in spare]
        t, gray = spare.pop(gaps.index(min(gaps)))
        chosen.append((t, gray, ""))
    return sorted(chosen, key=lambda frame: frame[0])


def render_sheet(settings: Settings, trace: Trace) -> NDArray[np.uint8]:
    """The whole run: a few frames with the door zone (green) and masks (red), the score over time with events."""
    tile_w = SHEET_WIDTH // SHEET_FRAMES
    row = np.zeros((tile_w * 3 // 4, SHEET_WIDTH, 3), np.uint8)
    tiles = []
    for t, gray, label in sheet_frames(trace):
        tile = _fit(draw_zones(gray, settings.motion.zone, settings.motion.masks), tile_w)
        _caption(tile, [f"t={t:.1f}s {label}".rstrip()])
        tiles.append(tile)
    if tiles:
        row = np.zeros((max(tile.shape[0] for tile in tiles), SHEET_WIDTH, 3), np.uint8)
    for i, tile in enumerate(tiles):
        row[: tile.shape[0], i * tile_w : i * tile_w + tile.shape[1]] = tile
    end = trace.times[-1] if trace.times else 1.0
    title = (
        f"door-zone score, threshold green, events red: {len(trace.events)}; {end:.1f} s "
        "(replay --explain draws each event)"
    )
    return np.vstack([row, plot(settings, trace, 0.0, max(end, 1e-6), SHEET_WIDTH, title, details=False)])


def save_sheet(settings: Settings, trace: Trace, path: Path) -> None:
    """Write the sheet of the whole run as PNG."""
    write_atomically(path, _png(render_sheet(settings, trace)))


@dataclass(frozen=True, eq=False)
class Shot:
    """One frame kept for an event's picture: the detection image and the zone pixels that counted."""

    t: float
    gray: NDArray[np.uint8]
    changed: NDArray[np.uint8]
    score: float
    moving: bool


@dataclass
class _Event:
    number: int
    event_id: str
    start: float
    started_by: str
    shots: list[tuple[str, Shot]]
    last_moving: Shot | None = None
    end: float = 0.0
    ended_by: str = ""
    confirmed: bool = True
    """False for motion the door never confirmed: no event came of it."""


class Explainer:
    """Draws ``<out>/explain/NN-<event>.png`` per event: the frames that started and ended it, and its score curve.

    Motion that waited for the door's confirmation and never got it (a person at the shut door) gets a picture
    too, ``NN-unconfirmed.png``, so a user sees why nothing fired. The pictures of an earlier run in that folder
    are removed first.
    """

    def __init__(self, settings: Settings, trace: Trace, out_dir: Path, fps: float) -> None:
        self._settings = settings
        self._trace = trace
        self._dir = out_dir / "explain"
        for old in self._dir.glob("[0-9]*-*.png"):  # an earlier run's events
            old.unlink()
        self._recent: deque[Shot] = deque(maxlen=max(2, round(PRE_ROLL * fps) + 1))
        self._open: _Event | None = None
        self._pending: _Event | None = None
        self._ended: list[_Event] = []
        self._count = 0
        self.written: list[Path] = []

    def add(
        self, t: float, gray: NDArray[np.uint8], changed: NDArray[np.uint8], result: MotionResult, event_id: str
    ) -> None:
        """One frame (after ``trace.add``): keep what explains events, draw those over for ``POST_ROLL`` s."""
        shot = Shot(t, gray, changed, result.score, result.moving)
        self._recent.append(shot)
        self._watch_pending(shot, result)
        if result.event == "start":
            self._count += 1
            recent = list(self._recent)
            first = len(recent) - 1
            while first > 0 and recent[first - 1].moving:
                first -= 1
            if first == len(recent) - 1 and first > 0:
                first -= 1  # no streak of moving frames (the contact started it): show the frame before
            label = "first moving frame" if recent[first].moving else "frame before"
            self._open = _Event(self._count, event_id, t, result.why or "", [(label, recent[first]), ("start", shot)])
        ev = self._open
        if ev is not None and result.moving:
            ev.last_moving = shot
        if ev is not None and result.event == "end":
            ev.end, ev.ended_by = t, result.why or ""
            ev.shots += [("last movement", ev.last_moving or shot), ("end", shot)]
            self._ended.append(ev)
            self._open = None
        for done in [e for e in self._ended if t >= e.end + POST_ROLL]:
            self._write(done)

    def _watch_pending(self, shot: Shot, result: MotionResult) -> None:
        """Follow motion waiting for the door; keep it as an unconfirmed motion if the wait ends without a start."""
        waiting = self._pending
        if result.pending and result.moving and waiting is None:
            why = "motion in the door zone, waiting for the door to confirm it"
            self._pending = _Event(0, "unconfirmed", shot.t, why, [("first moving frame", shot)], confirmed=False)
        elif waiting is not None and result.pending:
            if result.moving:
                waiting.last_moving = shot
        elif waiting is not None:
            self._pending = None
            if result.event != "start":
                self._give_up(waiting, shot)

    def _give_up(self, waiting: _Event, shot: Shot) -> None:
        self._count += 1
        waiting.number, waiting.end = self._count, shot.t
        waiting.ended_by = (
            f"the door never left its closed look within door.confirm_window "
            f"({self._settings.door.confirm_window:g} s): no event, no still kept"
        )
        waiting.shots += [("last movement", waiting.last_moving or shot), ("no confirmation", shot)]
        self._ended.append(waiting)

    def close(self) -> None:
        """Draw the events still waiting for their post-roll, and motion still waiting for the door."""
        if self._pending is not None and self._recent:
            self._give_up(self._pending, self._recent[-1])
            self._pending = None
        for done in list(self._ended):
            self._write(done)

    def _write(self, ev: _Event) -> None:
        self._ended.remove(ev)
        path = self._dir / f"{ev.number:02d}-{ev.event_id[:8] if ev.confirmed else ev.event_id}.png"
        write_atomically(path, _png(self.render(ev)))
        self.written.append(path)
        if not ev.confirmed:
            logger.info("explain: motion at %.1f s, not confirmed by the door: %s", ev.start, path)
            return
        logger.info(
            "explain: event %d started at %.1f s (%s), ended at %.1f s (%s): %s",
            ev.number,
            ev.start,
            ev.started_by,
            ev.end,
            ev.ended_by,
            path,
        )

    def render(self, ev: _Event) -> NDArray[np.uint8]:
        """The event's picture: four frames with the counted pixels in red, then the score curve around it."""
        motion = self._settings.motion
        tiles = []
        for label, shot in ev.shots:
            image = draw_zones(shot.gray, motion.zone, motion.masks)
            image[shot.changed > 0] = CHANGED
            tile = _fit(image, EXPLAIN_TILE)
            _caption(tile, [label, f"t={shot.t:.2f}s score {shot.score:.3f}"])
            tiles.append(tile)
        height = max(tile.shape[0] for tile in tiles)
        row = np.zeros((height, EXPLAIN_TILE * len(tiles), 3), np.uint8)
        for i, tile in enumerate(tiles):
            row[: tile.shape[0], i * EXPLAIN_TILE : (i + 1) * EXPLAIN_TILE] = tile
        times = self._trace.times
        t0, t1 = max(ev.start - PRE_ROLL, times[0]), min(ev.end + POST_ROLL, times[-1])
        title = f"event {ev.number}" if ev.confirmed else f"motion not confirmed by the door ({ev.number})"
        curve = plot(self._settings, self._trace, t0, t1, row.shape[1], title, details=True)
        legend = (
            f"blue: door-zone score, green: motion.min_area {motion.min_area:g}, red ticks: moving frames, "
            "grey: light change or settling, light blue: calibrating"
        )
        if any(level is not None for level in self._trace.door_levels):
            legend += ", purple: door dissimilarity (dashed: door.open_level)"
        begun, ended = ("start", "end") if ev.confirmed else ("motion", "given up")
        lines = [
            (f"{begun} at {ev.start:.2f} s: {ev.started_by}", 0.6),
            (f"{ended} at {ev.end:.2f} s: {ev.ended_by}", 0.6),
        ]
        header = np.full((80, row.shape[1], 3), 255, np.uint8)
        for i, (text, scale) in enumerate([*lines, (legend, 0.45)]):
            cv2.putText(header, text, (8, 22 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, 1, cv2.LINE_AA)
        return np.vstack([header, row, curve])
