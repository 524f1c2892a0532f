"""What the agent accepts from the network: ``<base>/set/<name>`` messages, each against an explicit schema.

Everything else is refused: logged (at most a few times per reason, with a count) and ignored.
"""

import logging
import re
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64
"""Largest command payload read; longer ones are refused unread."""
_SCHEMA: dict[str, re.Pattern[bytes]] = {
    "detect": re.compile(rb"ON|OFF"),
}
"""Command name -> the whole payload it accepts. ``detect``: ``OFF`` pauses door events and stills, ``ON`` resumes."""


@dataclass(frozen=True)
class Command:
    """One accepted command."""

    name: Literal["detect"]
    value: str


class Commands:
    """Parses inbound commands; counts and logs what it refuses, without letting a flood fill the log."""

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        """Refusals so far by kind: unknown, too big, bad payload."""

    def parse(self, name: str, payload: bytes) -> Command | None:
        """The command in ``<base>/set/<name>`` with ``payload``, or None (refused and logged)."""
        schema = _SCHEMA.get(name)
        if schema is None:
            self._refuse("unknown", f"set/{name[:40]!r} is not a command (known: {', '.join(_SCHEMA)})")
        elif len(payload) > MAX_COMMAND_BYTES:
            self._refuse("too big", f"set/{name}: payload over {MAX_COMMAND_BYTES} bytes")
        elif not schema.fullmatch(payload.strip()):
            self._refuse("bad payload", f"set/{name}: payload {payload[:20]!r} is not {schema.pattern.decode()}")
        else:
            return Command("detect", payload.strip().decode())
        return None

    def _refuse(self, kind: str, detail: str) -> None:
        seen = self.refused[kind] = self.refused.get(kind, 0) + 1
        if seen in (1, 10, 100) or seen % 1000 == 0:
            logger.warning("commands: ignored %d %s message(s), the latest: %s", seen, kind, detail)
