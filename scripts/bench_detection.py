"""Detection quality and door state on labelled scenes, and what detection costs per 320x240 frame on one core.

Usage: .venv/bin/python scripts/bench_detection.py [--scenes FILE] [--only NAME ...] [--json PATH] [--frames N]

Each scene of scripts/bench_detection_scenes.toml is rendered by the simulated source, whose script also gives
the ground truth (when the door moves, and how far it is open), and each recorded clip in ../shared/clips with its
NAME.json labels is read from its file. Each gets a door reference from the real ``edgecam calibrate`` path (a
scene from its own start with the door kept shut, a clip from a quiet stretch of itself), then runs through the real
``edgecam replay`` path with default settings and the scene's door zone. Per scene and in total it reports: door
openings found, latency in frames from the first frame the door moves to the ``start``, false ``start``s per
hour, stills taken while the door was not moving or open, and the door state's flips (against two per opening) and
seconds wrong (open from 5 degrees, closed at 0, allowing a second after each change).

The cost part times ``MotionDetector.process`` and ``DoorWatcher.update`` alone over decoded 320x240 frames (the
clips when present, else the simulated scene), pinned to one CPU with OpenCV on one thread."""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.calibrate import calibrate
from edgecam.config import CameraSettings, DoorSettings, MotionSettings, Settings
from edgecam.door import DoorWatcher
from edgecam.door_reference import DoorReference
from edgecam.models import Frame
from edgecam.motion import MotionDetector
from edgecam.replay import replay
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources import open_source
from edgecam.sources.opencv import detection_gray
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import DOOR_ZONE, SceneRenderer

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "clips"
W, H = 320, 240
WARMUP = 50
TARGETS = {
    "recall": 1.0,
    "false_starts_per_hour": 1.0,
    "stills_outside": 0,
    "median_latency_frames": 2.0,
    "door_wrong_fraction": 0.01,
    "per_frame_cost_ratio": 4.0,
}
"""``per_frame_cost_ratio``: the per-frame path's mean cost over the floor's, the performance budget (issue 16: at
most 4 times one absdiff + threshold + countNonZero pass at 320x240, door state included)."""
ROUNDS = 5
"""Interleaved rounds of the cost cases: the machine's load moves them together, and the ratios hold."""
FLOOR = "floor: absdiff + threshold + countNonZero"
PATH = "per-frame path: door state + detector, zone"
OPEN_DEGREES = 5.0
"""Truth for the door state: open from this angle on, closed at 0; in between either answer is right."""
DOOR_LAG = 1.0
"""Seconds after the truth changes in which the reported door state may still be the old one."""
CLIP_CALIBRATION = {"alternating-light": (29.0, 2.0), "walking-by": (1.3, 2.5)}
"""Per recorded clip: where a quiet, lit stretch to calibrate the door from starts, and how long it is (s)."""


@dataclass
class Scene:
    """One labelled scene: how to replay it and when the door moves."""

    name: str
    what: str
    settings: Settings
    clip: str
    seconds: float
    fps: float
    doors: list[tuple[float, float]]
    """(first frame time the door moves, time it is shut again) for each opening."""
    door_truth: Callable[[float], str | None]
    """``open``, ``closed`` or None (either is right) at a time: the truth for the door state."""


@dataclass
class Outcome:
    """What replay made of one scene, scored against its truth."""

    openings: int = 0
    found: int = 0
    latencies: list[int] = field(default_factory=list)
    starts: int = 0
    false_starts: int = 0
    stills: int = 0
    stills_outside: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    door_flips: int = 0
    door_flips_expected: int = 0
    door_wrong_s: float = 0.0
    door_unknown_s: float = 0.0

    def add(self, other: "Outcome") -> None:
        """Accumulate another scene's counts into this total."""
        for name in (
            "openings",
            "found",
            "starts",
            "false_starts",
            "stills",
            "stills_outside",
            "seconds",
            "wall_s",
            "door_flips",
            "door_flips_expected",
            "door_wrong_s",
            "door_unknown_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.extend(other.latencies)

    def row(self) -> dict[str, Any]:
        """The figures as a JSON-ready row."""
        return {
            "openings": self.openings,
            "found": self.found,
            "recall": self.found / self.openings if self.openings else None,
            "median_latency_frames": statistics.median(self.latencies) if self.latencies else None,
            "max_latency_frames": max(self.latencies) if self.latencies else None,
            "starts": self.starts,
            "false_starts": self.false_starts,
            "false_starts_per_hour": self.false_starts * 3600.0 / self.seconds if self.seconds else 0.0,
            "stills": self.stills,
            "stills_outside": self.stills_outside,
            "seconds": round(self.seconds, 1),
            "wall_s": round(self.wall_s, 2),
            "door_flips": self.door_flips,
            "door_flips_expected": self.door_flips_expected,
            "door_wrong_s": round(self.door_wrong_s, 1),
            "door_unknown_s": round(self.door_unknown_s, 1),
        }


def with_reference(settings: Settings, camera: CameraSettings, path: Path, skip: float, seconds: float) -> Settings:
    """``settings`` with ``door.reference`` learnt by the real ``edgecam calibrate`` path from ``camera``."""
    door = settings.door.model_copy(update={"reference": path, "calibrate_seconds": seconds})
    source = open_source(camera, realtime=False)
    try:
        calibrate(settings.model_copy(update={"camera": camera, "door": door}), source, path, skip=skip)
    finally:
        source.close()
    return settings.model_copy(update={"door": door})


def simulated_scenes(path: Path, references: Path) -> list[Scene]:
    """The rendered scenes of ``path``, with the first frame each door moves in as truth.

    Each scene's door reference is calibrated from the same scene with the door not opening for an hour: in the
    light, exposure and infrared state the scene starts in.
    """
    scenes = []
    for spec in tomllib.loads(path.read_text(encoding="utf-8"))["scenes"]:
        seconds = float(spec["seconds"])
        sim = SimulatedSettings(**spec.get("simulated", {}), duration=seconds)
        settings = Settings(
            device_id="bench",
            camera=CameraSettings(source="simulated", simulated=sim),
            motion=MotionSettings.model_validate({"zone": DOOR_ZONE, **spec.get("motion", {})}),
        )
        quiet = CameraSettings(source="simulated", simulated=sim.model_copy(update={"first_opening": 3600.0}))
        settings = with_reference(
            settings, quiet, references / f"{spec['name']}.npz", 0.0, DoorSettings().calibrate_seconds
        )
        renderer = SceneRenderer(sim, 8, 8)  # only its script is used: when the door moves
        doors = []
        for start, end in door_openings(sim, seconds):
            index = math.floor(start * sim.fps)
            while renderer.state(index / sim.fps).door_angle <= 0.0:
                index += 1
            doors.append((index / sim.fps, end))

        def truth(t: float, renderer: SceneRenderer = renderer) -> str | None:
            angle = renderer.state(t).door_angle
            return "closed" if angle == 0.0 else "open" if angle >= OPEN_DEGREES else None

        scenes.append(Scene(spec["name"], spec["what"], settings, "simulated", seconds, sim.fps, doors, truth))
    return scenes


def clip_scenes(folder: Path, references: Path) -> list[Scene]:
    """The recorded clips with labels in ``folder``; none when it is absent.

    The door reference of each is calibrated from a quiet, lit stretch of the clip itself (``CLIP_CALIBRATION``);
    the door is then closed, as calibrated, wherever the labels have no door movement.
    """
    scenes = []
    for label_file in sorted(folder.glob("*.json")):
        labels = json.loads(label_file.read_text(encoding="utf-8"))
        fps = float(labels.get("fps_assumed", 25))
        doors = [(d["start"] / fps, (d["end"] + 1) / fps) for d in labels.get("door_moves", [])]
        clip = str(folder / labels["clip"])
        settings = Settings(device_id="bench", motion=MotionSettings(zone=[tuple(p) for p in labels["door_zone_norm"]]))
        if label_file.stem in CLIP_CALIBRATION:
            skip, seconds = CLIP_CALIBRATION[label_file.stem]
            camera = settings.camera.model_copy(update={"source": clip})
            settings = with_reference(settings, camera, references / f"{label_file.stem}.npz", skip, seconds)

        def truth(t: float, moves: bool = bool(doors)) -> str | None:
            return None if moves else "closed"

        content = labels.get("content", "")
        scenes.append(
            Scene(f"clip:{label_file.stem}", content, settings, clip, labels["frames"] / fps, fps, doors, truth)
        )
    return scenes


def score_door(scene: Scene, times: list[float], states: list[str | None], outcome: Outcome) -> None:
    """Door state against the truth: flips, and seconds wrong or unknown (allowing ``DOOR_LAG`` after changes)."""
    if scene.settings.door.reference is None:
        return
    frame = 1.0 / scene.fps
    truths = [scene.door_truth(t) for t in times]
    changed_at = -math.inf
    known = [s for s in states if s is not None]
    outcome.door_flips = sum(a != b for a, b in zip(known, known[1:], strict=False))
    outcome.door_flips_expected = 2 * len(scene.doors) if scene.clip == "simulated" else 0
    for i, (t, state, truth) in enumerate(zip(times, states, truths, strict=True)):
        if i and truth != truths[i - 1]:
            changed_at = t
        if t - changed_at < DOOR_LAG or truth is None:
            continue
        if state is None:
            outcome.door_unknown_s += frame
        elif state != truth:
            outcome.door_wrong_s += frame


def run_scene(scene: Scene) -> Outcome:
    """Replay the scene and score what it emitted against its truth."""
    lines: list[str] = []
    began = time.perf_counter()
    trace = replay(scene.settings, scene.clip, emit=lines.append).trace
    outcome = Outcome(openings=len(scene.doors), seconds=scene.seconds, wall_s=time.perf_counter() - began)
    score_door(scene, trace.times, [r.door for r in trace.results], outcome)
    half_frame = 0.5 / scene.fps

    def door_at(t: float) -> int | None:
        for i, (start, end) in enumerate(scene.doors):
            if start - half_frame <= t <= end:
                return i
        return None

    first_start: dict[int, float] = {}
    for line in lines:
        message = json.loads(line)
        t = float(message["t"])
        door = door_at(t)
        if message["type"] == "start":
            outcome.starts += 1
            if door is None:
                outcome.false_starts += 1
            else:
                first_start.setdefault(door, t)
        elif message["type"] == "still":
            outcome.stills += 1
            outcome.stills_outside += door is None
    outcome.found = len(first_start)
    outcome.latencies = [round((t - scene.doors[i][0]) * scene.fps) for i, t in sorted(first_start.items())]
    return outcome


def time_per_frame(process: Callable[[Frame], object], frames: list[NDArray[np.uint8]], count: int) -> dict[str, float]:
    """Mean, median and 99th percentile ms of ``process`` over ``count`` frames after a warm-up."""
    batch = [Frame(i, i / 25.0, frames[i % len(frames)]) for i in range(count + WARMUP)]
    for frame in batch[:WARMUP]:
        process(frame)
    costs = []
    for frame in batch[WARMUP:]:
        begin = time.perf_counter_ns()
        process(frame)
        costs.append(time.perf_counter_ns() - begin)
    ms = np.asarray(costs, np.float64) / 1e6
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


def measure_cost(frames: list[NDArray[np.uint8]], count: int) -> dict[str, dict[str, float]]:
    """Mean ms per frame of each case (what a core pays), the median of ``ROUNDS`` interleaved rounds, and its ratio
    to the floor's."""
    whole = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    reference = DoorReference.learn(frames[-25:], [])

    def floor() -> Callable[[Frame], object]:
        previous = [frames[0]]

        def one_pass(frame: Frame) -> object:
            changed = cv2.threshold(cv2.absdiff(frame.gray, previous[0]), 25, 255, cv2.THRESH_BINARY)[1]
            previous[0] = frame.gray
            return cv2.countNonZero(changed)

        return one_pass

    def path() -> Callable[[Frame], object]:
        door = DoorWatcher(reference, DoorSettings(), DOOR_ZONE, [], W, H)
        detector = MotionDetector(MotionSettings(zone=DOOR_ZONE), W, H, relative=True)

        def one_frame(frame: Frame) -> object:
            measure = detector.measure(frame)
            state = door.update(frame, measure.zone_changed)
            return detector.decide(measure, state, None, door.left_closed)

        return one_frame

    cases: dict[str, Callable[[], Callable[[Frame], object]]] = {
        FLOOR: floor,
        "detector, whole frame": lambda: MotionDetector(MotionSettings(zone=whole), W, H).process,
        "detector, door zone": lambda: MotionDetector(MotionSettings(zone=DOOR_ZONE), W, H).process,
        "door state, door zone": lambda: DoorWatcher(reference, DoorSettings(), DOOR_ZONE, [], W, H).update,
        PATH: path,
    }
    means: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, make in cases.items():
            means[name].append(time_per_frame(make(), frames, max(100, count // ROUNDS))["mean_ms"])
    floor_ms = statistics.median(means[FLOOR])
    return {
        name: {
            "mean_ms": statistics.median(ms),
            "min_ms": min(ms),
            "max_ms": max(ms),
            "ratio": statistics.median(ms) / floor_ms,
        }
        for name, ms in means.items()
    }


def cost_frames(scenes: list[Scene]) -> tuple[str, list[NDArray[np.uint8]]]:
    """Decoded 320x240 grey frames: the recorded clips when there, else 60 s of the first simulated scene."""
    frames: list[NDArray[np.uint8]] = []
    for scene in scenes:
        if scene.clip == "simulated":
            continue
        capture = cv2.VideoCapture(scene.clip)
        ok, bgr = capture.read()
        while ok:
            frames.append(detection_gray(np.asarray(bgr, np.uint8), W, H))
            ok, bgr = capture.read()
        capture.release()
    if frames:
        return "recorded clips", frames
    sim = next(s for s in scenes if s.clip == "simulated").settings.camera.simulated
    renderer = SceneRenderer(sim, sim.width, sim.height)
    return "simulated scene", [detection_gray(renderer.render(i)[0], W, H) for i in range(round(60 * sim.fps))]


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    """The per-scene table and the total."""
    head = f"{'scene':<24} {'found':>7} {'lat med':>7} {'lat max':>7} {'starts':>6} {'false':>5} {'false/h':>7}"
    head += f" {'stills':>6} {'outside':>7} {'door flips':>10} {'wrong s':>7} {'min':>5}"
    print(head)
    for name, r in rows.items():
        if name == "total":
            print("-" * len(head))
        lat = "-" if r["median_latency_frames"] is None else f"{r['median_latency_frames']:g}"
        worst = "-" if r["max_latency_frames"] is None else str(r["max_latency_frames"])
        flips = f"{r['door_flips']}/{r['door_flips_expected']}"
        print(
            f"{name:<24} {r['found']:>3}/{r['openings']:<3} {lat:>7} {worst:>7} {r['starts']:>6} "
            f"{r['false_starts']:>5} {r['false_starts_per_hour']:>7.1f} {r['stills']:>6} {r['stills_outside']:>7} "
            f"{flips:>10} {r['door_wrong_s']:>7.1f} {r['seconds'] / 60:>5.1f}"
        )


def main() -> int:
    """Run the scenes, print the tables, write the JSON; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=ROOT / "scripts" / "bench_detection_scenes.toml")
    parser.add_argument("--clips", type=Path, default=CLIPS, help="labelled recordings (default ../shared/clips)")
    parser.add_argument("--only", nargs="*", help="run only these scenes (names as printed)")
    parser.add_argument("--frames", type=int, default=5000, help="frames timed per cost case (default 5000)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-out" / "bench_detection.json")
    args = parser.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    references = args.json.parent / "references"
    scenes = simulated_scenes(args.scenes, references)
    if args.clips.is_dir():
        scenes += clip_scenes(args.clips, references)
    else:
        print(f"note: {args.clips} is absent, so the recorded clips are left out")
    if args.only:
        scenes = [s for s in scenes if s.name in args.only]
    print(f"python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}, pinned to CPU {cpu}")

    rows: dict[str, dict[str, Any]] = {}
    total = Outcome()
    for scene in scenes:
        outcome = run_scene(scene)
        total.add(outcome)
        rows[scene.name] = {"what": scene.what, **outcome.row()}
    rows["total"] = total.row()
    print_table(rows)

    source, frames = cost_frames(scenes)
    cost = measure_cost(frames, args.frames)
    print(f"\ncost per {W}x{H} frame, one core, {args.frames} frames of the {source} in {ROUNDS} interleaved rounds:")
    for name, c in cost.items():
        print(
            f"  {name:<46} mean {c['mean_ms']:.3f} ms (rounds {c['min_ms']:.3f}-{c['max_ms']:.3f})"
            f"  {c['ratio']:5.1f} x the floor"
        )

    t = rows["total"]
    missed = [
        name
        for name, bad in (
            ("recall", t["recall"] is not None and t["recall"] < TARGETS["recall"]),
            ("false starts per hour", t["false_starts_per_hour"] > TARGETS["false_starts_per_hour"]),
            ("stills outside door movement", t["stills_outside"] > TARGETS["stills_outside"]),
            ("median latency", (t["median_latency_frames"] or 0) > TARGETS["median_latency_frames"]),
            ("per-frame cost", cost[PATH]["ratio"] > TARGETS["per_frame_cost_ratio"]),
            ("door state flips", t["door_flips"] != t["door_flips_expected"]),
            ("door state wrong", t["door_wrong_s"] > TARGETS["door_wrong_fraction"] * t["seconds"]),
        )
        if bad
    ]
    print("targets: " + ("all met" if not missed else "missed: " + ", ".join(missed)))
    report = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "targets": TARGETS,
        "scenes": rows,
        "cost": {"frames": source, "size": [W, H], **cost},
        "missed": missed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
