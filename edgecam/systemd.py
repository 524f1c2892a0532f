"""sd_notify for a Type=notify unit: READY, WATCHDOG, STATUS and STOPPING, a no-op outside systemd."""

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from edgecam.redact import redact

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd over $NOTIFY_SOCKET, rate-limiting watchdog pings to half the interval."""

    def __init__(self, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@' and addressed with a leading NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self._ping_every = int(usec) / 2e6 if watched else None
        self._clock = clock
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        """The process runs under systemd with a notify socket."""
        return bool(self._address)

    def ready(self, status: str = "") -> None:
        """Tell systemd that start-up has finished; ``status`` as in ``status``."""
        self._send("READY=1" + (f"\nSTATUS={redact(status)}" if status else ""))

    def status(self, text: str) -> None:
        """Show ``text`` in ``systemctl status`` (every local user may read it: URL credentials are hidden)."""
        self._send(f"STATUS={redact(text)}")

    def watchdog(self) -> None:
        """Ping the watchdog (called from the frame loop; sends at most every half interval)."""
        if self._ping_every is None:
            return
        now = self._clock()
        if now - self._last_ping >= self._ping_every:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd that shutdown has begun."""
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            logger.warning("systemd: cannot notify %s: %s", self._address.lstrip("\0"), err)
