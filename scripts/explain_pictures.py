"""Draw docs/detection.md's pictures with the real ``edgecam calibrate`` and ``edgecam replay --explain``.

Usage: .venv/bin/python scripts/explain_pictures.py [--out DIR]   (about a minute)

Two simulated scenes are rendered to lossless clips: a hall at an eighth of the light at gain 12 (the benchmark's
``dark-gain12``), and a person waiting 12 s at the shut door between two openings (``person-waiting``). Each gets a
door reference from its own first seconds, then is replayed with ``--explain``; the picture of the dim door's first
event and that of the person's unconfirmed motion are scaled to 1200 pixels wide into ``--out``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.simulated import DOOR_ZONE, render_clip

ROOT = Path(__file__).resolve().parents[1]
SCENES = {
    "explain-dim-door.png": (
        {"seed": 45, "noise": 0.0, "light_level": 0.01, "sensor_gain": 12.0, "shot_noise": 4.0, "read_noise": 0.8},
        "01-*.png",
    ),
    "explain-person-at-door.png": ({"seed": 30, "door_period": 40.0, "person_at_door": 12.0}, "*-unconfirmed.png"),
}
"""Per picture: the scene's ``camera.simulated`` settings, and which of replay's pictures to keep (the first)."""
WIDTH = 1200


def edgecam(*args: str, env: dict[str, str]) -> None:
    """Run an ``edgecam`` command of this checkout; its events go nowhere, its log to stderr."""
    command = [sys.executable, "-m", "edgecam", *args]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    """Render, calibrate, replay and scale each scene's picture."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (simulated, picture) in SCENES.items():
            work = Path(tmp) / Path(name).stem
            clip = work / "clip.mkv"
            work.mkdir()
            render_clip(clip, SimulatedSettings.model_validate({"first_opening": 8.0, **simulated}), 40.0)
            env = {key: value for key, value in os.environ.items() if not key.startswith("EDGECAM_")}
            env |= {
                "EDGECAM_DEVICE_ID": "docs",
                "EDGECAM_MOTION__ZONE": json.dumps(DOOR_ZONE),
                "EDGECAM_CAMERA__SOURCE": str(clip),
                "EDGECAM_STORAGE__DIR": str(work / "state"),
            }
            edgecam("calibrate", "--out", str(work / "door.npz"), env=env)
            env["EDGECAM_DOOR__REFERENCE"] = str(work / "door.npz")
            edgecam("replay", str(clip), "--explain", "--out", str(work / "out"), env=env)
            found = sorted((work / "out" / "explain").glob(picture))
            image = cv2.imread(str(found[0])) if found else None
            if image is None:
                print(f"explain_pictures: replay drew no {picture} for {name}", file=sys.stderr)
                return 1
            size = (WIDTH, round(image.shape[0] * WIDTH / image.shape[1]))
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(args.out / name), scaled, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
