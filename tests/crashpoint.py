"""Run ``edgecam`` and SIGKILL it at a chosen point of the write or send path, as a power cut would.

Usage: ``python -m tests.crashpoint POINT N edgecam-args...``: the N-th time (1-based) the process reaches POINT
it kills itself. Points:

- ``before-rename``: a still is written to its temporary file and fsynced, not yet renamed;
- ``after-rename``: a still is in place under its final name, its outbox row not yet committed;
- ``after-commit``: an outbox row is committed, the publisher not yet told;
- ``before-puback``: the broker has acknowledged rows (PUBACK arrived), the outbox not yet marked them delivered.
"""

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edgecam.disk
import edgecam.outbox
from edgecam import cli

POINTS = ("before-rename", "after-rename", "after-commit", "before-puback")


def _die() -> None:
    sys.stderr.write(f"crashpoint: killed at {sys.argv[1]}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _counted(n: int) -> Callable[[], bool]:
    seen = 0

    def reached() -> bool:
        nonlocal seen
        seen += 1
        return seen >= n

    return reached


def install(point: str, n: int) -> None:
    """Patch the process so that it dies the ``n``-th time it reaches ``point``."""
    reached = _counted(n)
    if point == "before-rename":
        real_replace = Path.replace

        def replace(self: Path, target: Any) -> Path:
            if self.name.endswith(".jpg.tmp") and reached():
                _die()
            return real_replace(self, target)

        Path.replace = replace  # type: ignore[method-assign,assignment]
    elif point == "after-rename":
        real_write = edgecam.disk.write_atomically

        def write(path: Path, data: bytes) -> None:
            real_write(path, data)
            if reached():
                _die()

        setattr(edgecam.outbox, "write_atomically", write)  # noqa: B010 (the name the outbox calls)
    elif point == "after-commit":
        real_append = edgecam.outbox.Outbox.append

        def append(self: edgecam.outbox.Outbox, *args: Any, **kwargs: Any) -> int:
            seq = real_append(self, *args, **kwargs)
            if reached():
                _die()
            return seq

        edgecam.outbox.Outbox.append = append  # type: ignore[method-assign]
    elif point == "before-puback":
        real_delivered = edgecam.outbox.Outbox.delivered

        def delivered(self: edgecam.outbox.Outbox, seqs: Any) -> None:
            batch = list(seqs)
            if batch and reached():
                _die()
            real_delivered(self, batch)

        edgecam.outbox.Outbox.delivered = delivered  # type: ignore[method-assign]
    else:
        raise SystemExit(f"crashpoint: unknown point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    sys.exit(cli.main(sys.argv[3:]))
