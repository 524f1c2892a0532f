"""``edgecam replay``: the agent's detector and capture policy over a recorded clip, printing what it would publish."""

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.agent import Pipeline
from edgecam.capture import write_atomically
from edgecam.config import Settings
from edgecam.sources import open_source
from edgecam.zones import to_pixels

logger = logging.getLogger(__name__)

SHEET_FRAMES = 4
SHEET_WIDTH = 1280


@dataclass
class Trace:
    """What the sheet shows: the score over time, the events and a few frames."""

    times: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    events: list[tuple[float, float | None]] = field(default_factory=list)
    frames: list[tuple[float, NDArray[np.uint8]]] = field(default_factory=list)


def replay(
    settings: Settings,
    clip: str,
    out_dir: Path | None = None,
    emit: Callable[[str], None] = print,
    progress: bool = False,
) -> int:
    """Run the pipeline over ``clip`` as fast as it decodes; emit one JSON line per message; return the count."""
    camera = settings.camera.model_copy(update={"source": clip})
    source = open_source(camera, realtime=False)
    trace = Trace()
    seq = 0
    shown = time.monotonic()
    try:
        pipeline = Pipeline(settings, source, out_dir / "stills" if out_dir else None)
        for step in pipeline.steps():
            t = step.frame.t
            trace.times.append(t)
            trace.scores.append(step.result.score)
            if step.result.event == "start" or not trace.frames:
                trace.frames.append((t, step.frame.gray))
            if step.result.event == "start":
                trace.events.append((t, None))
            elif step.result.event == "end" and trace.events:
                trace.events[-1] = (trace.events[-1][0], t)
            for event, _still in step.emitted:
                seq += 1
                emit(json.dumps({**event.payload(seq), "t": round(t, 3)}, separators=(",", ":")))
            if progress and time.monotonic() - shown > 0.2:
                shown = time.monotonic()
                sys.stderr.write(f"\rreplay: frame {step.frame.index + 1}  t={t:7.1f} s  events {len(trace.events)}")
    finally:
        source.close()
        if progress:
            sys.stderr.write("\n")
    if out_dir is not None:
        sheet = render_sheet(settings, trace)
        ok, png = cv2.imencode(".png", sheet)
        if ok:
            write_atomically(out_dir / "replay.png", png.tobytes())
        logger.info("replay: sheet saved to %s", out_dir / "replay.png")
    return seq


def _draw_zones(gray: NDArray[np.uint8], settings: Settings) -> NDArray[np.uint8]:
    image = np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), np.uint8)
    height, width = gray.shape
    masks = [to_pixels(m, width, height) for m in settings.motion.masks]
    if masks:
        shade = image.copy()
        cv2.fillPoly(shade, masks, (0, 0, 160))
        image = np.asarray(cv2.addWeighted(shade, 0.6, image, 0.4, 0), np.uint8)
    cv2.polylines(image, [to_pixels(settings.motion.zone, width, height)], True, (0, 220, 0), 2)
    return image


def render_sheet(settings: Settings, trace: Trace) -> NDArray[np.uint8]:
    """A PNG-ready sheet: frames with the door zone (green) and masks (red), the score over time with events."""
    picks = trace.frames[:SHEET_FRAMES]
    tile_w = SHEET_WIDTH // SHEET_FRAMES
    tiles = []
    for t, gray in picks:
        tile = _draw_zones(gray, settings)
        size = (tile_w, tile_w * gray.shape[0] // gray.shape[1])
        tile = np.asarray(cv2.resize(tile, size, interpolation=cv2.INTER_AREA), np.uint8)
        cv2.putText(tile, f"t={t:.1f}s", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        tiles.append(tile)
    tile_h = max((tile.shape[0] for tile in tiles), default=tile_w * 3 // 4)
    row = np.zeros((tile_h, SHEET_WIDTH, 3), np.uint8)
    for i, tile in enumerate(tiles):
        row[: tile.shape[0], i * tile_w : i * tile_w + tile.shape[1]] = tile

    plot_h, pad = 260, 40
    plot = np.full((plot_h, SHEET_WIDTH, 3), 255, np.uint8)
    end_t = max(trace.times[-1] if trace.times else 1.0, 1e-6)
    peak = max([*trace.scores, settings.motion.min_area * 2, 0.01])

    def x(t: float) -> int:
        return pad + int((SHEET_WIDTH - 2 * pad) * t / end_t)

    def y(score: float) -> int:
        return plot_h - pad - int((plot_h - 2 * pad) * score / peak)

    for start, end in trace.events:
        cv2.rectangle(plot, (x(start), pad), (x(end if end is not None else end_t), plot_h - pad), (200, 230, 255), -1)
        cv2.line(plot, (x(start), pad), (x(start), plot_h - pad), (0, 0, 220), 2)
    if trace.times:
        points = np.array([[x(t), y(s)] for t, s in zip(trace.times, trace.scores, strict=True)], np.int32)
        cv2.polylines(plot, [points], False, (160, 60, 0), 1)
    cv2.line(plot, (pad, y(settings.motion.min_area)), (SHEET_WIDTH - pad, y(settings.motion.min_area)), (0, 160, 0), 1)
    cv2.rectangle(plot, (pad, pad), (SHEET_WIDTH - pad, plot_h - pad), (0, 0, 0), 1)
    label = f"door-zone score (peak {peak:.2f}), threshold green, events red: {len(trace.events)}; {end_t:.1f} s"
    cv2.putText(plot, label, (pad, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    return np.vstack([row, plot])
