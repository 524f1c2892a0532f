"""How the frame loop is doing, for ``<base>/stats``: frame rate, detector time, uptime, the latest door event."""

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgecam.clock import time_synced


class Vitals:
    """How the frame loop is doing, for ``<base>/stats``: frame rate and detector time over the last seconds.

    The frame loop writes, the publisher's worker reads (``payload``): a lock keeps the window whole.
    """

    WINDOW_S = 10.0
    """Seconds of frames the rates are measured over."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._frames: deque[tuple[float, float | None]] = deque()
        self._lock = threading.Lock()
        self.last_event: str | None = None
        """When the latest door event started (ISO 8601 UTC): from the outbox at start, then from the frame loop."""
        self.scene_warnings: tuple[str, ...] = ()
        """Codes of the scene's warnings that hold (``edgecam.viewing``), from the frame loop."""

    def frame(self, detect_s: float | None) -> None:
        """One frame was read; the detector took ``detect_s`` over it (None: detection is off)."""
        now = self._clock()
        with self._lock:
            self._frames.append((now, detect_s))
            while self._frames and self._frames[0][0] < now - self.WINDOW_S:
                self._frames.popleft()

    def payload(self) -> dict[str, Any]:
        """The fields the agent adds to the outbox's report on ``<base>/stats``.

        ``uptime_s``, ``fps`` (None before two frames), ``detect_ms`` (None while detection is off),
        ``time_synced``, ``last_event`` and ``scene_warnings`` (a list of codes, empty when the scene is fine).
        """
        now = self._clock()
        with self._lock:
            frames = [f for f in self._frames if f[0] >= now - self.WINDOW_S]
        span = frames[-1][0] - frames[0][0] if len(frames) > 1 else 0.0
        times = [d for _, d in frames if d is not None]
        return {
            "uptime_s": round(now - self._started),
            "fps": round((len(frames) - 1) / span, 1) if span > 0 else None,
            "detect_ms": round(1000 * sum(times) / len(times), 2) if times else None,
            "time_synced": time_synced(),
            "last_event": self.last_event,
            "scene_warnings": list(self.scene_warnings),
        }
