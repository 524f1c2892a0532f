"""Files that survive a power cut: written to a temporary name, fsynced, renamed, their directory fsynced."""

import errno
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"
"""A file ending so, starting with a dot, is a write a crash interrupted: safe to delete on start."""
FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errnos of a full disk (or a used-up quota)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the whole file or none (temp, fsync, rename)."""
    new_dir = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    if new_dir:
        fsync_dir(path.parent.parent)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise
    tmp.replace(path)
    fsync_dir(path.parent)


def is_full(err: OSError) -> bool:
    """The error says the disk (or the quota) is full."""
    return err.errno in FULL
