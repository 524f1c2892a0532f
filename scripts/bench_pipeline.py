"""What the pipeline costs: per frame, per still, and (``bench_pipeline_live.py``) the running agent, in one table.

Usage: .venv/bin/python scripts/bench_pipeline.py [--quick] [--only frames,stills,live] [--json PATH]
       [--frames N] [--rounds R]

Prints one table (section, figure, median, min, max, unit, x floor, target, met) under a line naming the machine
(CPU model, cores, load average, Python, OpenCV, numpy), and writes it as JSON (default bench-out/pipeline.json):
``{"machine": {...}, "args": {...}, "figures": [...]}``. Targets are printed as met or missed, never failed on;
the exit status is 1 only when a section could not run. ``--quick`` is CI's run: small numbers that keep the
script working (sections 1 and 2 in a few seconds), not figures to quote. Machines are shared and noisy, so each
cost is also given as a ratio to a floor measured in the same round on the same input.

Sections 1 and 2 run in this process on one CPU (pinned, then the affinity is restored for section 3-6's child
processes) with ``cv2.setNumThreads(1)``. Each runs R interleaved rounds (default 7, quick 2): in each round every
contender runs once, in a freshly shuffled order; a figure is the median over rounds with the min and max, and its
ratio the median over rounds of that round's cost over the same round's floor.

1. ``per-frame path``, microseconds per frame, at 320x240 and 640x480 detection sizes, two scenes of the simulated
   source (``camera.source = "simulated"``, rendered once, not paced, and held in memory; a few hundred frames,
   ``--frames``): ``idle``, the hall with its first door opening an hour away, and ``moving door``, a door opening
   every 6 s from 4 s on. The first 3 s of frames (the detector's 2 s ``motion.calibration``) go through every
   contender untimed; the rest are timed, as the total over them divided by their number. Contenders:

   - ``floor``: one ``cv2.absdiff`` against the previous frame, ``cv2.threshold`` at ``motion.threshold`` and
     ``cv2.countNonZero`` over the whole frame, as a reader would write them (each call allocating its result).
   - ``edgecam path``: a real ``agent.Pipeline`` (door watcher, detector, capture policy) over ``LoresReplay``, a
     list-backed source that makes each frame as the Pi source does (``lores_frame``), timed through
     ``Pipeline.steps``: frame conversion, ``MotionDetector.measure``, ``DoorWatcher.update``, ``decide`` and
     ``Capture.on_frame``, whose still callback returns a preallocated I420 still (a still's cost is section 2).
     Default settings, the hall's door zone, and a closed-door reference made by ``edgecam.calibrate.calibrate`` from
     the idle scene's frames. Its note gives the events and stills it made (in one untimed run before the rounds,
     which also pays the one-off costs of a process's first event) and its slowest timed frames (p99, max).
   - ``frame conversion``: that conversion alone, on lores YUV420 buffers (Y rows padded to the Pi's stride) made
     from the rendered grey frames.
   - ``MotionDetector.process``: the detector alone (as the path builds it: door settings, relative thresholds).
   - ``DoorWatcher.update``: the door's state alone, reading every frame (in the path a frame whose door zone did
     not change keeps the last reading).
   - ``picamera2 example MSE``: what picamera2's examples/capture_motion.py does per frame, as shipped: the mean
     of the squared difference of two uint8 lores Y arrays, which wraps around on uint8, against its threshold 7.
   - ``running average``: a textbook detector: ``cv2.accumulateWeighted`` float background (``motion.learning_rate``),
     ``cv2.convertScaleAbs``, ``cv2.absdiff``, ``cv2.threshold`` at ``motion.threshold``, ``cv2.countNonZero``.

   The floor and the two reference detectors read the grey frames as they are; the edgecam path includes the
   frame conversion (its own row). Target: the edgecam path at 320x240, idle and moving door, at most 4x the floor.

2. ``still``, milliseconds per still, at 1280x960 and 2028x1520: a simulated still rendered by the source
   (``SimulatedSource.still``, BGR, the door half open) laid out as the Pi's YUV420 main stream holds it (full-range
   YCbCr 4:2:0, Y rows padded to 64 bytes), two privacy masks, ``capture.jpeg_quality`` (85 by default). Each
   figure is the mean of a few calls per round. The way a Pi still goes today (``capture.encode_still`` on I420):

   - ``floor``: ``np.copy`` of the contiguous I420 still.
   - ``pixels from the source``: ``sources.picamera.i420`` from the padded buffer (what ``PiCameraSource.still``
     does to the main stream's buffer).
   - ``masks into I420``: ``zones.burn_masks_i420``.
   - ``JPEG, simplejpeg``: ``simplejpeg.encode_jpeg_yuv_planes`` straight from the masked I420 planes (what
     picamera2's own JPEG encoder uses).
   - ``sha256``: of that JPEG.
   - ``durable write``: ``disk.write_atomically`` (temporary file, fsync, rename, folder fsync) in a temporary
     folder beside the JSON (on that folder's disk).
   - ``outbox commit``: ``outbox.Outbox.append`` of a still event with its JPEG (it writes the still as above,
     then commits the row), into an outbox in that folder; each a further still of one event.
   - ``capture.develop, I420 shot``: the whole of it as the outbox thread runs it (masks, JPEG, hash).

   Beside it, the way through BGR and ``cv2.imencode``, which the stills of BGR sources (simulated, OpenCV) take:
   ``conversion to BGR`` (``capture.still_bgr``), ``masks on BGR`` (``zones.burn_masks``), ``JPEG, cv2.imencode``
   of the masked BGR still, and ``capture.develop, BGR shot``.

3-6. From ``bench_pipeline_live.live_figures``: latency through a real Mosquitto, memory, CPU, start-up; their
   files go to the JSON's path without its suffix (bench-out/pipeline/ by default). Should they fail, the rows of
   sections 1 and 2 are still printed and saved, the error goes to stderr and the JSON's ``failed``, and the exit
   status is 1.
"""

import argparse
import collections
import gc
import hashlib
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_pipeline_live
sys.path.insert(0, str(ROOT))

from bench_pipeline_live import Figure, live_figures  # noqa: E402

from edgecam.agent import Pipeline  # noqa: E402
from edgecam.calibrate import calibrate  # noqa: E402
from edgecam.capture import Shot, develop, still_bgr  # noqa: E402
from edgecam.config import CameraSettings, CaptureSettings, MotionSettings, Settings, StorageSettings  # noqa: E402
from edgecam.disk import write_atomically  # noqa: E402
from edgecam.door import DoorWatcher  # noqa: E402
from edgecam.door_reference import DoorReference, load_reference  # noqa: E402
from edgecam.models import Event, Frame, Still, Topics  # noqa: E402
from edgecam.motion import MotionDetector  # noqa: E402
from edgecam.outbox import Outbox  # noqa: E402
from edgecam.scene_settings import SimulatedSettings  # noqa: E402
from edgecam.sources import open_source  # noqa: E402
from edgecam.sources.picamera import i420  # noqa: E402
from edgecam.sources.picamera_fake_sensors import stream_bytes  # noqa: E402
from edgecam.sources.simulated import DOOR_ZONE  # noqa: E402
from edgecam.zones import Polygon, burn_masks, burn_masks_i420  # noqa: E402

SECTIONS = ("frames", "stills", "live")
DETECT_SIZES = ((320, 240), (640, 480))
STILL_SIZES = ((1280, 960), (2028, 1520))
SCENES: dict[str, dict[str, float]] = {
    "idle": {"first_opening": 3600.0},
    "moving door": {"first_opening": 4.0, "door_period": 6.0},
}
"""``camera.simulated`` of each scene, over its defaults (10 fps, a door opening for 1 s, open 2 s, closing 1 s)."""
WARM_S = 3.0
"""Scene seconds fed through every per-frame contender untimed: the detector's 2 s calibration and a margin."""
PATH_TARGET = 4.0
"""The edgecam path's most cost per frame at 320x240, in floors (issue 16)."""
PATH_TARGET_ROWS = ("320x240 idle: edgecam path", "320x240 moving door: edgecam path")
MASKS: list[Polygon] = [
    [(0.0, 0.0), (0.22, 0.0), (0.22, 0.3), (0.0, 0.3)],
    [(0.78, 0.62), (1.0, 0.62), (1.0, 1.0), (0.84, 1.0)],
]
"""Two privacy masks for the stills: a window at the top left, a neighbour's doorway at the bottom right."""
MSE_THRESHOLD = 7.0
"""The picamera2 example's motion threshold on its MSE (examples/capture_motion.py:31 at raspberrypi/picamera2
11d8a1f8)."""
DEVICE = "bench"


@dataclass(frozen=True)
class Clip:
    """Pre-rendered frames of one scene at one detection size, with the lores buffers the Pi would hold for them."""

    size: tuple[int, int]
    scene: str
    fps: float
    frames: list[Frame]
    """The simulated source's frames (grey, detection size, scene time)."""
    lores: list[NDArray[np.uint8]]
    """Each frame's grey as a lores YUV420 buffer (h * 3 / 2, stride), chroma neutral."""

    @property
    def label(self) -> str:
        """``320x240 idle``."""
        return f"{self.size[0]}x{self.size[1]} {self.scene}"

    @property
    def warm(self) -> int:
        """Frames fed untimed first."""
        return round(WARM_S * self.fps)

    @property
    def timed(self) -> int:
        """Frames timed."""
        return len(self.frames) - self.warm


def lores_buffer(gray: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``gray`` as the Y plane of a lores YUV420 buffer (h * 3 / 2, stride), as picamera2 shapes a mapped YUV420
    stream (picamera2 0.3.38 request.py:328-333); the stride of ``picamera_fake_sensors.stream_bytes``."""
    height, width = gray.shape
    stride, _ = stream_bytes("YUV420", (width, height))
    buffer = np.full((height * 3 // 2, stride), 128, np.uint8)
    buffer[:height, :width] = gray
    return buffer


def lores_frame(lores: NDArray[np.uint8], index: int, t: float, width: int, height: int) -> Frame:
    """The Pi source's frame conversion at the detection size (``PiCameraSource._y_plane`` and ``frames`` in
    edgecam/sources/picamera.py): the lores Y plane, padding cut off, copied out once, in a ``Frame``.

    The scene's time stands for the Pi's ``time.monotonic()`` reading, and there is no camera metadata (the
    simulated source has none either).
    """
    return Frame(index, t, np.array(lores[:height, :width], dtype=np.uint8))


class LoresReplay:
    """A ``FrameSource`` over a clip's lores buffers, each frame made as the Pi source makes it (``lores_frame``).

    ``still()`` returns the same preallocated still every time: what a still costs is section 2's.
    """

    def __init__(self, clip: Clip, still: NDArray[np.uint8]) -> None:
        self._clip = clip
        self._still = still

    @property
    def fps(self) -> float:
        """The scene's frame rate."""
        return self._clip.fps

    def frames(self) -> Iterator[Frame]:
        """The clip's frames, converted one by one from their lores buffers."""
        width, height = self._clip.size
        for frame, lores in zip(self._clip.frames, self._clip.lores, strict=True):
            yield lores_frame(lores, frame.index, frame.t, width, height)

    def still(self) -> NDArray[np.uint8]:
        """The preallocated still."""
        return self._still

    def close(self) -> None:
        """Nothing to release."""


def rendered_clip(size: tuple[int, int], scene: str, count: int) -> Clip:
    """``count`` frames of ``scene`` from the simulated source at detection size ``size``, not paced."""
    sim = SimulatedSettings.model_validate(SCENES[scene])
    camera = CameraSettings(source="simulated", detect_width=size[0], detect_height=size[1], simulated=sim)
    source = open_source(camera, realtime=False)
    try:
        frames = list(itertools.islice(source.frames(), count))
    finally:
        source.close()
    return Clip(size, scene, sim.fps, frames, [lores_buffer(f.gray) for f in frames])


def path_settings(size: tuple[int, int], state_dir: Path) -> Settings:
    """Default settings at detection size ``size``, the hall's door zone, the state directory ``state_dir``."""
    camera = CameraSettings(source="simulated", detect_width=size[0], detect_height=size[1])
    return Settings(
        device_id=DEVICE,
        camera=camera,
        motion=MotionSettings(zone=list(DOOR_ZONE)),
        storage=StorageSettings(dir=state_dir),
    )


def door_reference(settings: Settings, idle: Clip, still: NDArray[np.uint8]) -> DoorReference:
    """The closed door's reference, made by ``edgecam calibrate``'s own code from the idle scene's frames."""
    path = settings.door_reference_path
    calibrate(settings, LoresReplay(idle, still), path)
    return load_reference(path)


class Floor:
    """One pass over the whole frame: absdiff against the previous frame, threshold, count."""

    def __init__(self, first: Frame, threshold: int) -> None:
        self._previous = first.gray
        self._threshold = threshold

    def __call__(self, frame: Frame) -> int:
        diff = cv2.absdiff(frame.gray, self._previous)
        changed = cv2.threshold(diff, self._threshold, 255, cv2.THRESH_BINARY)[1]
        self._previous = frame.gray
        return int(cv2.countNonZero(changed))


class Picamera2Mse:
    """picamera2's examples/capture_motion.py per frame, as shipped (raspberrypi/picamera2 11d8a1f8, lines 25-31).

    It takes the lores buffer's first w * h bytes as the Y array and sees motion where the mean of the squared
    difference from the previous frame's exceeds 7. Both arrays are uint8, so the difference and its square are
    taken modulo 256: a pixel 1 darker differs by 255, squared 1; one 16 darker by 240, squared 0.
    """

    def __init__(self, first: Frame) -> None:
        self._previous = first.gray

    def __call__(self, frame: Frame) -> bool:
        wrapped = frame.gray - self._previous  # uint8: wraps around, as in the example
        mse = float((wrapped * wrapped).mean())
        self._previous = frame.gray
        return mse > MSE_THRESHOLD


class RunningAverage:
    """A textbook running-average detector over the whole frame: float background, absolute difference, count."""

    def __init__(self, first: Frame, motion: MotionSettings) -> None:
        self._background = first.gray.astype(np.float32)
        self._rate = motion.learning_rate
        self._threshold = motion.threshold
        self._min_changed = motion.min_area * first.gray.size

    def __call__(self, frame: Frame) -> bool:
        background = cv2.convertScaleAbs(self._background)
        diff = cv2.absdiff(frame.gray, background)
        changed = cv2.threshold(diff, self._threshold, 255, cv2.THRESH_BINARY)[1]
        moving = bool(cv2.countNonZero(changed) >= self._min_changed)
        cv2.accumulateWeighted(frame.gray, self._background, self._rate)
        return moving


def per_frame_us(step: Callable[[Frame], object], clip: Clip) -> float:
    """Microseconds per timed frame of ``step`` over ``clip`` (its warm-up frames untimed first)."""
    frames = clip.frames
    for frame in frames[: clip.warm]:
        step(frame)
    began = time.perf_counter_ns()
    for frame in frames[clip.warm :]:
        step(frame)
    return (time.perf_counter_ns() - began) / 1e3 / clip.timed


@dataclass
class PathRun:
    """What one run of the edgecam path over a clip made, and its per-frame costs."""

    frame_ns: list[int] = field(default_factory=list)
    starts: int = 0
    stills: int = 0
    open_frames: int = 0


def run_path(
    settings: Settings, reference: DoorReference, clip: Clip, still: NDArray[np.uint8], count: bool = False
) -> PathRun:
    """A real ``Pipeline`` over ``LoresReplay(clip)``, its warm-up frames untimed, then each step timed.

    ``count``: also count the events, stills and open-door frames of the timed steps (a little work of its own).
    """
    pipeline = Pipeline(settings, LoresReplay(clip, still), None, DoorWatcher.for_settings(reference, settings))
    steps = pipeline.steps()
    collections.deque(itertools.islice(steps, clip.warm), maxlen=0)
    run = PathRun()
    last = time.perf_counter_ns()
    for step in steps:
        now = time.perf_counter_ns()
        run.frame_ns.append(now - last)
        last = now
        if count:
            run.starts += step.result.event == "start"
            run.stills += sum(event.type == "still" for event, _ in step.emitted)
            run.open_frames += step.result.door == "open"
    return run


def frame_contenders(
    clip: Clip, settings: Settings, reference: DoorReference, still: NDArray[np.uint8], runs: list[PathRun]
) -> dict[str, Callable[[], float]]:
    """Each contender of ``clip`` as one fresh run returning microseconds per frame; the path's runs go to ``runs``."""
    first = clip.frames[0]
    motion = settings.motion
    width, height = clip.size

    def path() -> float:
        run = run_path(settings, reference, clip, still)
        runs.append(run)
        return sum(run.frame_ns[: clip.timed]) / 1e3 / clip.timed  # the last step may be the source's end

    def conversion(frame: Frame) -> Frame:
        return lores_frame(clip.lores[frame.index], frame.index, frame.t, width, height)

    def detector() -> float:
        return per_frame_us(MotionDetector(motion, width, height, settings.door, relative=True).process, clip)

    return {
        "floor": lambda: per_frame_us(Floor(first, motion.threshold), clip),
        "edgecam path": path,
        "frame conversion": lambda: per_frame_us(conversion, clip),
        "MotionDetector.process": detector,
        "DoorWatcher.update": lambda: per_frame_us(DoorWatcher.for_settings(reference, settings).update, clip),
        "picamera2 example MSE": lambda: per_frame_us(Picamera2Mse(first), clip),
        "running average": lambda: per_frame_us(RunningAverage(first, motion), clip),
    }


NOTES = {
    "floor": "absdiff + threshold + countNonZero, whole frame",
    "frame conversion": "lores YUV420 Y plane copied out into a Frame, as PiCameraSource.frames",
    "MotionDetector.process": "detector alone, relative thresholds as in the path",
    "DoorWatcher.update": "door state alone, reading every frame",
    "picamera2 example MSE": "uint8 squared difference (wraps), mean > 7",
    "running average": "accumulateWeighted + convertScaleAbs + absdiff + threshold + countNonZero",
}


def interleaved(
    cases: dict[str, dict[str, Callable[[], float]]], rounds: int, rng: random.Random
) -> dict[str, dict[str, list[float]]]:
    """Per group and case, one cost per round: each round runs every group's cases once, in a shuffled order."""
    costs: dict[str, dict[str, list[float]]] = {group: {name: [] for name in named} for group, named in cases.items()}
    gc.collect()
    gc.freeze()  # the frames and settings made so far: a collection need not walk them again
    try:
        for _ in range(rounds):
            for group, named in cases.items():
                order = list(named)
                rng.shuffle(order)
                for name in order:
                    gc.collect()
                    costs[group][name].append(named[name]())
    finally:
        gc.unfreeze()
    return costs


def figure(
    section: str,
    name: str,
    unit: str,
    costs: list[float],
    floors: list[float],
    target: str | None = None,
    met: bool | None = None,
    note: str = "",
) -> Figure:
    """A row from one cost per round and the same rounds' floors."""
    ratio = statistics.median(c / f for c, f in zip(costs, floors, strict=True))
    return Figure(section, name, unit, statistics.median(costs), min(costs), max(costs), ratio, target, met, note)


def frame_figures(frames: int, rounds: int, work: Path, rng: random.Random) -> list[Figure]:
    """Section 1: the per-frame path and its contenders, per detection size and scene."""
    still = np.zeros((1520 * 3 // 2, 2028), np.uint8)  # what Capture.on_frame's still callback returns
    cases: dict[str, dict[str, Callable[[], float]]] = {}
    runs: dict[str, list[PathRun]] = {}
    clips: dict[str, Clip] = {}
    dry: dict[str, PathRun] = {}
    for size in DETECT_SIZES:
        settings = path_settings(size, work / f"state-{size[0]}x{size[1]}")
        idle = rendered_clip(size, "idle", frames)
        reference = door_reference(settings, idle, still)
        for scene in SCENES:
            clip = idle if scene == "idle" else rendered_clip(size, scene, frames)
            runs[clip.label] = []
            clips[clip.label] = clip
            # Once untimed: what the path makes of the clip, and the one-off costs of a process's first event paid.
            dry[clip.label] = run_path(settings, reference, clip, still, count=True)
            cases[clip.label] = frame_contenders(clip, settings, reference, still, runs[clip.label])
    costs = interleaved(cases, rounds, rng)
    out = []
    for label, named in costs.items():
        floors = named["floor"]
        for name, series in named.items():
            row = f"{label}: {name}"
            target, met = None, None
            note = NOTES.get(name, "")
            if row in PATH_TARGET_ROWS:
                target = f"<= {PATH_TARGET:g}x floor"
                met = statistics.median(c / f for c, f in zip(series, floors, strict=True)) <= PATH_TARGET
            if name == "edgecam path":
                note = path_note(dry[label], runs[label], clips[label])
            out.append(figure("per-frame path", row, "us", series, floors, target, met, note))
    return out


def path_note(run: PathRun, runs: list[PathRun], clip: Clip) -> str:
    """What the path made of the clip in ``run`` and its slowest frames over the timed ``runs``."""
    frame_us = np.asarray([ns for r in runs for ns in r.frame_ns[: clip.timed]], np.float64) / 1e3
    return (
        f"Pipeline.steps, {clip.timed} frames a round: {run.starts} events, {run.stills} stills, door open in "
        f"{run.open_frames} frames; p99 frame {np.percentile(frame_us, 99):.0f} us, max {frame_us.max():.0f} us"
    )


def rendered_still(width: int, height: int) -> NDArray[np.uint8]:
    """A still of the simulated source at ``width`` x ``height``, half a second into a door opening (BGR)."""
    sim = SimulatedSettings(width=width, height=height, first_opening=0.5)
    source = open_source(CameraSettings(source="simulated", simulated=sim), realtime=False)
    try:
        for frame in source.frames():
            if frame.t >= 1.0:
                break
        return source.still()
    finally:
        source.close()


def main_stream_buffer(bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``bgr`` as the Pi's YUV420 main stream holds it: full-range YCbCr 4:2:0, shaped (h * 3 / 2, stride).

    Y rows of ``stride`` bytes, then U and V rows of ``stride / 2`` (picamera2 0.3.38 request.py:328-333); the stride
    of ``picamera_fake_sensors.stream_bytes`` (Y rows padded to 64 bytes, as picamera2 aligns YUV420).
    """
    height, width = bgr.shape[:2]
    stride, framesize = stream_bytes("YUV420", (width, height))
    buffer = np.zeros(framesize, np.uint8)
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    buffer[: height * stride].reshape(height, stride)[:, :width] = ycrcb[:, :, 0]
    half, rows = stride // 2, height // 2
    for plane, channel in enumerate((2, 1)):  # U (Cb), then V (Cr)
        chroma = cv2.resize(ycrcb[:, :, channel], (width // 2, rows), interpolation=cv2.INTER_AREA)
        start = height * stride + plane * rows * half
        buffer[start : start + rows * half].reshape(rows, half)[:, : width // 2] = chroma
    return buffer.reshape(height * 3 // 2, stride)


def i420_planes(image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """The Y, U and V planes of a contiguous I420 image (h * 3 / 2, w), as views."""
    height, width = image.shape[0] * 2 // 3, image.shape[1]
    chroma = image[height:].reshape(2, height // 2, width // 2)
    return image[:height], chroma[0], chroma[1]


def still_event(event_id: str, index: int, jpeg: bytes, width: int, height: int) -> tuple[Event, Still]:
    """A still event with its still, as ``capture.develop`` makes them and the outbox thread appends them."""
    digest = hashlib.sha256(jpeg).hexdigest()
    topic = Topics(f"edgecam/{DEVICE}").still(event_id, index)
    extra = {"index": index, "sha256": digest, "bytes": len(jpeg), "width": width, "height": height, "topic": topic}
    event = Event("still", event_id, DEVICE, datetime.now(UTC), 0.4, extra)
    return event, Still(event_id, index, jpeg, digest, width, height)


def still_cases(
    bgr: NDArray[np.uint8], work: Path, quality: int, reps: int, notes: dict[str, str]
) -> tuple[dict[str, Callable[[], float]], Callable[[], None]]:
    """Each step of a still of ``bgr`` as one run of ``reps`` calls returning milliseconds per call; and a closer."""
    height, width = bgr.shape[:2]
    buffer = main_stream_buffer(bgr)
    image = i420(buffer, width, height)
    converted = still_bgr(image)
    error = float(np.mean(cv2.absdiff(converted, bgr)))
    if error > 4.0:
        raise AssertionError(f"the I420 still is {error:.1f} grey levels off its BGR: the buffer's layout is wrong")
    y, u, v = i420_planes(burn_masks_i420(image, MASKS))
    jpeg = bytes(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality))
    masked = burn_masks(converted, MASKS)
    ok, encoded = cv2.imencode(".jpg", masked, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise AssertionError("OpenCV cannot encode JPEG")
    outbox = Outbox(StorageSettings(dir=work / "state"))
    event_id = uuid.uuid4().hex
    indices = itertools.count(1)

    def append() -> None:
        outbox.append(*still_event(event_id, next(indices), jpeg, width, height))

    append()  # the database and the event's folder exist from here on, as for an event's later stills
    writes = work / "write"
    write_atomically(writes / "still.jpg", jpeg)  # the folder too
    shot = still_event(event_id, 1, jpeg, width, height)[0]
    steps: dict[str, Callable[[], object]] = {
        "floor": lambda: np.copy(image),
        "pixels from the source": lambda: i420(buffer, width, height),
        "masks into I420": lambda: burn_masks_i420(image, MASKS),
        "JPEG, simplejpeg": lambda: simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality),
        "sha256": lambda: hashlib.sha256(jpeg).hexdigest(),
        "durable write": lambda: write_atomically(writes / "still.jpg", jpeg),
        "outbox commit": append,
        "capture.develop, I420 shot": lambda: develop((shot, Shot(image)), MASKS, quality),
        "conversion to BGR": lambda: still_bgr(image),
        "masks on BGR": lambda: burn_masks(converted, MASKS),
        "JPEG, cv2.imencode": lambda: cv2.imencode(".jpg", masked, [cv2.IMWRITE_JPEG_QUALITY, quality]),
        "capture.develop, BGR shot": lambda: develop((shot, Shot(converted)), MASKS, quality),
    }
    stride = buffer.shape[1]
    notes.update(
        {
            "floor": "np.copy of the I420 still",
            "pixels from the source": f"picamera.i420 from a YUV420 buffer of stride {stride}"
            + (" (no padding: one copy)" if stride == width else ""),
            "masks into I420": f"zones.burn_masks_i420, {len(MASKS)} polygons (a copy, the fills, the chroma)",
            "JPEG, simplejpeg": f"encode_jpeg_yuv_planes from the masked I420 planes, quality {quality}: "
            f"{len(jpeg) / 1024:.0f} KiB",
            "sha256": "hashlib.sha256 of the JPEG",
            "durable write": "disk.write_atomically: temp file, fsync, rename, folder fsync",
            "outbox commit": "Outbox.append of a still event: the still's durable write, then the row's commit",
            "capture.develop, I420 shot": "the whole of it on the Pi's I420 still, as the outbox thread runs it",
            "conversion to BGR": "capture.still_bgr, I420 to BGR: the way to cv2.imencode",
            "masks on BGR": f"zones.burn_masks, {len(MASKS)} polygons (a copy and the fills)",
            "JPEG, cv2.imencode": f"masked BGR, quality {quality}: {encoded.size / 1024:.0f} KiB",
            "capture.develop, BGR shot": "the whole of it on a BGR still (simulated and OpenCV sources)",
        }
    )

    def timed(step: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            began = time.perf_counter_ns()
            for _ in range(reps):
                step()
            return (time.perf_counter_ns() - began) / 1e6 / reps

        return run

    return {name: timed(step) for name, step in steps.items()}, outbox.close


def still_figures(rounds: int, reps: int, work: Path, rng: random.Random) -> list[Figure]:
    """Section 2: a still's steps, per still size."""
    quality = CaptureSettings().jpeg_quality
    cases: dict[str, dict[str, Callable[[], float]]] = {}
    notes: dict[str, dict[str, str]] = {}
    closers = []
    try:
        for width, height in STILL_SIZES:
            label = f"{width}x{height}"
            notes[label] = {}
            cases[label], close = still_cases(rendered_still(width, height), work / label, quality, reps, notes[label])
            closers.append(close)
        costs = interleaved(cases, rounds, rng)
    finally:
        for close in closers:
            close()
    out = []
    for label, named in costs.items():
        floors = named["floor"]
        for name, series in named.items():
            out.append(figure("still", f"{label}: {name}", "ms", series, floors, note=notes[label].get(name, "")))
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``model name``, or ``Model`` on a Raspberry Pi)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.machine()


def machine(pinned: int | None) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "pinned_cpu": pinned,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "simplejpeg": simplejpeg.__version__,
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine."""
    load = " ".join(f"{x:.2f}" for x in info["load_average"])
    pinned = f", sections 1-2 pinned to CPU {info['pinned_cpu']}" if info["pinned_cpu"] is not None else ""
    return (
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_allowed']} allowed){pinned}, load average "
        f"{load}; Python {info['python']}, OpenCV {info['opencv']}, numpy {info['numpy']}"
    )


def shown(value: float) -> str:
    """A figure with three or so significant digits; ``-`` for none."""
    if math.isnan(value):
        return "-"
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_table(figures: Sequence[Figure]) -> None:
    """The one table, notes under it."""
    width = max([len("figure"), *(len(f.name) for f in figures)])
    head = (
        f"{'section':<15} {'figure':<{width}} {'median':>8} {'min':>8} {'max':>8} {'unit':<12} {'x floor':>7} "
        f"{'target':<14} met"
    )
    print(head)
    print("-" * len(head))
    for f in figures:
        ratio = "" if f.ratio is None else shown(f.ratio)
        met = "" if f.met is None else "met" if f.met else "MISSED"
        print(
            f"{f.section:<15} {f.name:<{width}} {shown(f.median):>8} {shown(f.low):>8} {shown(f.high):>8} "
            f"{f.unit:<12} {ratio:>7} {f.target or '':<14} {met}"
        )
    print("\nnotes:")
    rows: dict[tuple[str, str], list[str]] = {}
    for f in figures:
        if f.note:
            rows.setdefault((f.name.split(": ", 1)[-1], f.note), []).append(f.name)
    for (part, note), names in rows.items():
        print(f"  {part if len(names) > 1 else names[0]}: {note}")


def jsonable(value: Any) -> Any:
    """``value`` with NaN as None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def parse_sections(text: str) -> list[str]:
    """``frames,stills`` -> the sections, checked."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: choose from {','.join(SECTIONS)}")
    return names


def in_process_sections(args: argparse.Namespace, rounds: int, work: Path) -> tuple[list[Figure], int | None]:
    """Sections 1 and 2 on one CPU with OpenCV on one thread; the affinity and thread count restored after."""
    allowed = os.sched_getaffinity(0)
    threads = cv2.getNumThreads()
    pinned = min(allowed)
    rng = random.Random(16)
    figures: list[Figure] = []
    os.sched_setaffinity(0, {pinned})
    cv2.setNumThreads(1)
    try:
        if "frames" in args.only:
            began = time.monotonic()
            figures += frame_figures(args.frames, rounds, work / "frames", rng)
            print(f"section 1 (per-frame path) took {time.monotonic() - began:.1f} s", flush=True)
        if "stills" in args.only:
            began = time.monotonic()
            reps = 1 if args.quick else 3
            figures += still_figures(rounds, reps, work / "stills", rng)
            print(f"section 2 (still) took {time.monotonic() - began:.1f} s", flush=True)
    finally:
        cv2.setNumThreads(threads)
        os.sched_setaffinity(0, allowed)
    return figures, pinned


def main() -> int:
    """Run the sections asked for, print the table, write the JSON; 1 when a section could not run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers, for CI: keeps the script working")
    parser.add_argument(
        "--only", type=parse_sections, default=list(SECTIONS), help="sections, comma-separated: frames,stills,live"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench-out" / "pipeline.json", help="where the JSON goes")
    parser.add_argument("--frames", type=int, help="frames rendered per scene and size (default 300, quick 100)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of sections 1-2 (default 7, quick 2)")
    args = parser.parse_args()
    args.frames = args.frames or (100 if args.quick else 300)
    rounds = args.rounds or (2 if args.quick else 7)
    if args.frames < 80:
        parser.error("--frames: at least 80 (3 s untimed, and 5 s of the idle scene to calibrate the door from)")
    if rounds < 1:
        parser.error("--rounds: at least 1")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    # Sections 3-6 leave their logs, settings and state beside the JSON: bench-out/pipeline/ by default.
    live_out = args.json.with_suffix("") if args.json.suffix else args.json.with_name(f"{args.json.name}.d")
    before = machine(None)
    print(machine_line(before), flush=True)
    figures: list[Figure] = []
    failed: list[str] = []
    pinned = None
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=args.json.parent) as tmp:
        if "frames" in args.only or "stills" in args.only:
            in_process, pinned = in_process_sections(args, rounds, Path(tmp))
            figures += in_process
    if "live" in args.only:
        try:
            figures += live_figures(args.quick, live_out)
        except Exception:  # noqa: BLE001  # the rows measured so far are printed and saved all the same
            failed.append(f"live: {traceback.format_exc()}")
            traceback.print_exc()

    print()
    print_table(figures)
    info = {**machine(pinned), "load_average_before": before["load_average"]}
    print(f"\n{machine_line(info)} (after the run)")
    report = {
        "machine": info,
        "args": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rounds": rounds},
        "figures": [asdict(f) for f in figures],
        "failed": failed,
    }
    args.json.write_text(json.dumps(jsonable(report), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    if failed:
        print(f"failed: {', '.join(f.split(':', 1)[0] for f in failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
