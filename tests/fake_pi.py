"""The fake Picamera2 behind edgecam's Pi camera adapter, for tests of the source, the agent and calibrate."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgecam.sources import picamera
from edgecam.sources.picamera_fake import FakeClock, FakePicamera2
from edgecam.sources.picamera_fake_request import MappedArray


def install_fake_picamera(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., FakePicamera2]:
    """Put a fake Picamera2 behind the adapter's factories; returns ``install(**options)`` to make the next one.

    ``cma`` writes a /proc/meminfo with that CmaTotal and gives the fake that much CMA; without it meminfo has no
    CmaTotal line. ``realtime=True`` runs the fake on time.monotonic; by default it runs on a FakeClock, so tests
    of timing take no real time. Other options go to ``FakePicamera2``. The source opens the last fake installed,
    or a default one; picamera2 counts as installed (it is not, off a Pi).
    """
    made: list[FakePicamera2] = []
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:         426068 kB\n")
    monkeypatch.setattr(picamera, "MEMINFO", meminfo)
    monkeypatch.setattr(picamera, "_map_stream", MappedArray)
    monkeypatch.setattr(picamera, "check_installed", lambda: None)

    def install(*, cma: int | None = None, realtime: bool = False, **options: Any) -> FakePicamera2:
        if cma is not None:
            meminfo.write_text(f"MemTotal:         426068 kB\nCmaTotal:        {cma // 1024} kB\n")
            options["cma_bytes"] = cma
        if not realtime:
            clock = FakeClock()
            options = {"clock": clock, "sleep": clock.sleep, **options}
        camera = FakePicamera2(**options)
        made.append(camera)
        return camera

    def make_camera(camera_num: int) -> FakePicamera2:
        return made[-1] if made else install()

    monkeypatch.setattr(picamera, "_make_camera", make_camera)
    return install
