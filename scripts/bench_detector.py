"""What the motion detector costs per 320x240 frame on one core.

Usage: .venv/bin/python scripts/bench_detector.py [--frames N] [--json PATH] [--synthetic]

Frames come from the recorded clips in ../shared/clips when they are there (grey, INTER_AREA to 320x240, 25 fps,
cycled to N frames), else from a synthetic door scene. They are decoded before timing, so only
MotionDetector.process is measured. The process is pinned to one CPU and OpenCV to one thread.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import MotionSettings
from edgecam.models import Frame
from edgecam.motion import MotionDetector

W, H = 320, 240
FPS = 25.0
CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "clips"
WARMUP = 50
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def clip_frames(names: list[str]) -> list[NDArray[np.uint8]]:
    frames: list[NDArray[np.uint8]] = []
    for name in names:
        capture = cv2.VideoCapture(str(CLIPS / f"{name}.h264"))
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (W, H), interpolation=cv2.INTER_AREA)
                frames.append(np.asarray(grey, dtype=np.uint8))
        finally:
            capture.release()
    return frames


def synthetic_frames(count: int) -> list[NDArray[np.uint8]]:
    """A textured hall whose door leaf swings open and shut every 8 s, with sensor noise."""
    rng = np.random.default_rng(1)
    hall = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), 4)
    hall = 60 + 140 * (hall - hall.min()) / (hall.max() - hall.min())
    x0, y0, x1, y1 = 110, 30, 210, 235
    frames = []
    for index in range(count):
        t = (index / FPS) % 8.0
        opening = min(1.0, max(0.0, t - 4.0)) - min(1.0, max(0.0, t - 6.0))  # 0 shut .. 1 open
        image = hall.copy()
        image[y0:y1, x0:x1] = 40.0
        width = round((x1 - x0) * (1.0 - 0.9 * opening))
        image[y0:y1, x0 : x0 + width] = 185.0
        image += rng.normal(0.0, 3.0, image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def measure(settings: MotionSettings, frames: list[NDArray[np.uint8]], count: int) -> dict[str, Any]:
    detector = MotionDetector(settings, W, H)
    batch = [Frame(i, i / FPS, frames[i % len(frames)]) for i in range(count + WARMUP)]
    for frame in batch[:WARMUP]:
        detector.process(frame)
    costs = []
    events = 0
    clock = time.perf_counter_ns
    for frame in batch[WARMUP:]:
        begin = clock()
        result = detector.process(frame)
        costs.append(clock() - begin)
        events += result.event == "start"
    ms = np.asarray(costs, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    return {
        "frames": count,
        "starts": events,
        "mean_ms": mean,
        "median_ms": float(statistics.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "fps": 1000.0 / mean,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=5000, help="frames timed per case (default 5000)")
    parser.add_argument("--json", type=Path, default=Path("bench-out/bench_detector.json"), help="where to write")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic scene even if clips are there")
    args = parser.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    threads = {
        "cv2_num_threads": cv2.getNumThreads(),
        "cv2_optimized": cv2.useOptimized(),
        "pinned_cpu": cpu,
        **{var: os.environ.get(var) for var in THREAD_VARS},
    }

    use_clips = not args.synthetic and (CLIPS / "walking-by.h264").is_file()
    if use_clips:
        source = "clips: alternating-light + walking-by"
        frames = clip_frames(["alternating-light", "walking-by"])
        door_zone = json.loads((CLIPS / "walking-by.json").read_text())["door_zone_norm"]
    else:
        source = "synthetic door scene"
        frames = synthetic_frames(8 * int(FPS) * 4)
        door_zone = [[0.34, 0.12], [0.66, 0.12], [0.66, 0.98], [0.34, 0.98]]
    whole_with_mask = MotionSettings(masks=[[[0.0, 0.0], [0.2, 0.0], [0.2, 0.3], [0.0, 0.3]]])
    cases = {
        "whole frame (defaults)": MotionSettings(),
        "whole frame, one mask": whole_with_mask,
        "door zone only": MotionSettings(zone=door_zone),
    }

    print(f"python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}")
    print(f"{platform.processor() or platform.machine()}; pinned to CPU {cpu}; threads: {threads}")
    print(f"frames: {source}, {len(frames)} distinct, {args.frames} timed per case after {WARMUP} warm-up")
    results = {}
    print(f"{'case':<24} {'mean ms':>8} {'median':>8} {'p99':>8} {'max':>8} {'fps':>8} {'starts':>7}")
    for name, settings in cases.items():
        r = measure(settings, frames, args.frames)
        results[name] = r
        print(
            f"{name:<24} {r['mean_ms']:8.3f} {r['median_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.3f} "
            f"{r['fps']:8.0f} {r['starts']:7d}"
        )

    report = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "threads": threads,
        "source": source,
        "frame_size": [W, H],
        "cases": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
