"""What the agent accepts from the network, each against an explicit schema: commands and confirmations.

``<base>/set/<name>`` commands and ``<base>/ack`` confirmations; everything else is refused: logged (a few times
per kind, with a count) and ignored.
"""

import json
import logging
import re
from dataclasses import dataclass
from typing import Literal

from edgecam.config import DEVICE_ID_PATTERN

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64
"""Largest command payload read; longer ones are refused unread."""
_SCHEMA: dict[str, re.Pattern[bytes]] = {
    "detect": re.compile(rb"ON|OFF"),
}
"""Command name -> the whole payload it accepts. ``detect``: ``OFF`` pauses door events and stills, ``ON`` resumes."""
MAX_ACK_BYTES = 65536
"""Largest confirmation read on ``<base>/ack``."""
_EVENT_ID = re.compile(DEVICE_ID_PATTERN)


def sparingly(count: int) -> bool:
    """Whether the ``count``-th of a repeated complaint is worth a log line: the 1st, 10th, 100th, every 1000th."""
    return count in (1, 10, 100) or count % 1000 == 0


@dataclass(frozen=True)
class Command:
    """One accepted command."""

    name: Literal["detect"]
    value: str


class Commands:
    """Parses inbound messages; counts and logs what it refuses, without letting a flood fill the log."""

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

    def parse_ack(self, payload: bytes) -> list[str] | None:
        """The event ids of a consumer's confirmation (a JSON list of them), or None (refused and logged)."""
        ids = None
        if len(payload) <= MAX_ACK_BYTES:
            try:
                ids = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                ids = None
        if isinstance(ids, list) and all(isinstance(i, str) and _EVENT_ID.match(i) for i in ids):
            return ids
        self._refuse("ack", f"ack: {len(payload)} bytes that are not a JSON list of event ids")
        return None

    def _refuse(self, kind: str, detail: str) -> None:
        seen = self.refused[kind] = self.refused.get(kind, 0) + 1
        if sparingly(seen):
            logger.warning("commands: ignored %d %s message(s), the latest: %s", seen, kind, detail)
