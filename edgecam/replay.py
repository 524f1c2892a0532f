"""``edgecam replay``: the agent's detector and capture policy over a recorded clip, printing what it would publish."""

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecam.agent import Pipeline
from edgecam.config import Settings
from edgecam.door import open_watcher
from edgecam.explain import Explainer, Trace, save_sheet
from edgecam.sources import open_source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replayed:
    """What a replay produced."""

    messages: int
    """Event messages emitted."""
    trace: Trace
    explained: list[Path]
    """The pictures ``explain`` drew, one per event."""


def replay(
    settings: Settings,
    clip: str,
    out_dir: Path | None = None,
    emit: Callable[[str], None] = print,
    progress: bool = False,
    explain: bool = False,
    fps: float | None = None,
) -> Replayed:
    """Run the pipeline over ``clip`` as fast as it decodes and emit one JSON line per message.

    A door reference is used only when ``door.reference`` names one: a clip is rarely from the camera whose
    reference sits in the state directory. ``out_dir`` receives the stills and the sheet, and with ``explain``
    one picture per event. ``fps`` is the frame rate of a clip without timestamps (a raw .h264), in place of
    ``camera.fps``; a clip with timestamps keeps its own times.
    """
    camera = settings.camera.model_copy(update={"source": clip, **({"fps": fps} if fps is not None else {})})
    door = open_watcher(settings, settings.door.reference)
    source = open_source(camera, realtime=False)
    trace = Trace()
    explainer = Explainer(settings, trace, out_dir, source.fps or 25.0) if explain and out_dir else None
    seq = 0
    shown = time.monotonic()
    try:
        pipeline = Pipeline(settings, source, out_dir / "stills" if out_dir else None, door)
        for step in pipeline.steps():
            t = step.frame.t
            trace.add(t, step.frame.gray, step.result, step.door_level)
            for event, _still in pipeline.capture.develop(step.emitted):
                seq += 1
                emit(json.dumps({**event.payload(seq), "t": round(t, 3)}, separators=(",", ":")))
            if explainer is not None:
                event_id = next((e.event_id for e, _ in step.emitted if e.type == "start"), "")
                explainer.add(t, step.frame.gray, pipeline.detector.changed_mask(), step.result, event_id)
            if progress and time.monotonic() - shown > 0.2:
                shown = time.monotonic()
                sys.stderr.write(f"\rreplay: frame {step.frame.index + 1}  t={t:7.1f} s  events {len(trace.events)}")
    finally:
        source.close()
        if progress:
            sys.stderr.write("\n")
    if explainer is not None:
        explainer.close()
    if out_dir is not None:
        save_sheet(settings, trace, out_dir / "replay.png")
        logger.info("replay: sheet saved to %s", out_dir / "replay.png")
    return Replayed(seq, trace, explainer.written if explainer else [])
