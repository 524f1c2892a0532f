"""Detection quality on labelled scenes, and what the detector costs per 320x240 frame on one core.

Usage: .venv/bin/python scripts/bench_detection.py [--scenes FILE] [--only NAME ...] [--json PATH] [--frames N]

Each scene of scripts/bench_detection_scenes.toml is rendered by the simulated source, whose script also gives
the ground truth (when the door moves), and each recorded clip in ../shared/clips with its NAME.json labels is
read from its file. Both run through the real ``edgecam replay`` path with default motion settings and the scene's
door zone. Per scene and in total it reports: door openings found, latency in frames from the first frame the door
moves to the ``start``, false ``start``s per hour, and stills taken while the door was not moving or open.

The cost part times ``MotionDetector.process`` alone over decoded 320x240 frames (the clips when present, else
the simulated scene), pinned to one CPU with OpenCV on one thread.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings, MotionSettings, Settings, SimulatedSettings
from edgecam.models import Frame
from edgecam.motion import MotionDetector
from edgecam.replay import replay
from edgecam.sources.opencv import detection_gray
from edgecam.sources.simulated import DOOR_ZONE, SceneRenderer, door_openings

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "clips"
W, H = 320, 240
WARMUP = 50
TARGETS = {"recall": 1.0, "false_starts_per_hour": 1.0, "stills_outside": 0, "median_latency_frames": 3.0}


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

    def add(self, other: "Outcome") -> None:
        """Accumulate another scene's counts into this total."""
        for name in ("openings", "found", "starts", "false_starts", "stills", "stills_outside", "seconds", "wall_s"):
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
        }


def simulated_scenes(path: Path) -> list[Scene]:
    """The rendered scenes of ``path``, with the first frame each door moves in as truth."""
    scenes = []
    for spec in tomllib.loads(path.read_text(encoding="utf-8"))["scenes"]:
        seconds = float(spec["seconds"])
        sim = SimulatedSettings(**spec.get("simulated", {}), duration=seconds)
        settings = Settings(
            device_id="bench",
            camera=CameraSettings(source="simulated", simulated=sim),
            motion=MotionSettings(zone=DOOR_ZONE, **spec.get("motion", {})),
        )
        renderer = SceneRenderer(sim, 8, 8)  # only its script is used: when the door moves
        doors = []
        for start, end in door_openings(sim, seconds):
            index = math.floor(start * sim.fps)
            while renderer.state(index / sim.fps).door_angle <= 0.0:
                index += 1
            doors.append((index / sim.fps, end))
        scenes.append(Scene(spec["name"], spec["what"], settings, "simulated", seconds, sim.fps, doors))
    return scenes


def clip_scenes(folder: Path) -> list[Scene]:
    """The recorded clips with labels in ``folder``; none when it is absent."""
    scenes = []
    for label_file in sorted(folder.glob("*.json")):
        labels = json.loads(label_file.read_text(encoding="utf-8"))
        fps = float(labels.get("fps_assumed", 25))
        doors = [(d["start"] / fps, (d["end"] + 1) / fps) for d in labels.get("door_moves", [])]
        settings = Settings(device_id="bench", motion=MotionSettings(zone=[tuple(p) for p in labels["door_zone_norm"]]))
        content = labels.get("content", "")
        scenes.append(
            Scene(
                f"clip:{label_file.stem}",
                content,
                settings,
                str(folder / labels["clip"]),
                labels["frames"] / fps,
                fps,
                doors,
            )
        )
    return scenes


def run_scene(scene: Scene) -> Outcome:
    """Replay the scene and score what it emitted against its truth."""
    lines: list[str] = []
    began = time.perf_counter()
    replay(scene.settings, scene.clip, emit=lines.append)
    outcome = Outcome(openings=len(scene.doors), seconds=scene.seconds, wall_s=time.perf_counter() - began)
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


def time_detector(frames: list[NDArray[np.uint8]], zone: list[tuple[float, float]], count: int) -> dict[str, float]:
    """Mean, median and 99th percentile ms of ``MotionDetector.process`` over ``count`` frames after a warm-up."""
    detector = MotionDetector(MotionSettings(zone=zone), W, H)
    batch = [Frame(i, i / 25.0, frames[i % len(frames)]) for i in range(count + WARMUP)]
    for frame in batch[:WARMUP]:
        detector.process(frame)
    costs = []
    for frame in batch[WARMUP:]:
        begin = time.perf_counter_ns()
        detector.process(frame)
        costs.append(time.perf_counter_ns() - begin)
    ms = np.asarray(costs, np.float64) / 1e6
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


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
    print(head + f" {'stills':>6} {'outside':>7} {'min':>5}")
    for name, r in rows.items():
        if name == "total":
            print("-" * (len(head) + 22))
        lat = "-" if r["median_latency_frames"] is None else f"{r['median_latency_frames']:g}"
        worst = "-" if r["max_latency_frames"] is None else str(r["max_latency_frames"])
        print(
            f"{name:<24} {r['found']:>3}/{r['openings']:<3} {lat:>7} {worst:>7} {r['starts']:>6} "
            f"{r['false_starts']:>5} {r['false_starts_per_hour']:>7.1f} {r['stills']:>6} {r['stills_outside']:>7} "
            f"{r['seconds'] / 60:>5.1f}"
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
    scenes = simulated_scenes(args.scenes)
    if args.clips.is_dir():
        scenes += clip_scenes(args.clips)
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
    cost = {
        "whole frame": time_detector(frames, [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], args.frames),
        "door zone": time_detector(frames, DOOR_ZONE, args.frames),
    }
    print(f"\ndetector cost per {W}x{H} frame, one core, {args.frames} frames of the {source}:")
    for name, c in cost.items():
        print(f"  {name:<12} mean {c['mean_ms']:.3f} ms  median {c['median_ms']:.3f}  p99 {c['p99_ms']:.3f}")

    t = rows["total"]
    missed = [
        name
        for name, bad in (
            ("recall", t["recall"] is not None and t["recall"] < TARGETS["recall"]),
            ("false starts per hour", t["false_starts_per_hour"] > TARGETS["false_starts_per_hour"]),
            ("stills outside door movement", t["stills_outside"] > TARGETS["stills_outside"]),
            ("median latency", (t["median_latency_frames"] or 0) > TARGETS["median_latency_frames"]),
            ("detector cost", cost["whole frame"]["mean_ms"] >= 0.3),
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
