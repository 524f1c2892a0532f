"""The state directory as this user and this disk find it: whether edgecam can use it, and what is wrong with it.

``check_state_dir`` is what ``run`` and ``check-config`` both check before the outbox opens; ``storage_fault`` says
in a few words, for ``<base>/stats``, why the disk refuses writes under a running agent.
"""

import contextlib
import errno
import os
import pwd
import stat
from pathlib import Path

from edgecam.config import StorageSettings
from edgecam.disk import TMP_SUFFIX
from edgecam.errors import StorageError

FULL_BELOW = 65536
"""Free bytes under which the disk counts as full (the outbox keeps as much headroom under its budget)."""


def check_state_dir(storage: StorageSettings, command: str) -> None:
    """Raise StorageError in one line, naming ``storage.dir`` and the fix, when this user cannot use it.

    A folder that does not exist yet must be one this user can make (the outbox makes it): its nearest existing
    parent writable and enterable. In one that exists, what the outbox writes (the database and its journal
    files, ``stills/`` and each event's folder in it) must be writable by this user, not left by another (root
    running edgecam by hand once). ``command`` is the edgecam command run.
    """
    path = storage.dir
    fix = (
        f"run edgecam as the user that owns it (the service's: sudo -u edgecam edgecam {command}), "
        "or set storage.dir to a folder of yours"
    )
    try:
        path.stat()
    except FileNotFoundError:
        parent = next(p for p in path.parents if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            user = _user_name(os.geteuid())
            raise StorageError(
                f"storage.dir: cannot create {path}: {user}, the user edgecam runs as, may not write to {parent}: "
                f"make it for that user (sudo install -d -o {user} {path}), or set storage.dir to a folder of its own"
            ) from None
        return
    except NotADirectoryError as err:
        raise StorageError(f"storage.dir: cannot create {path}: a part of it is a file, not a folder") from err
    except OSError as err:
        raise StorageError(f"storage.dir: cannot enter {path} ({err.strerror or err}): {fix}") from err
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        fault = storage_fault(storage)
        if fault != "ok":
            raise StorageError(f"storage.dir: cannot write to {path}: {fault}")
        raise StorageError(f"storage.dir: cannot enter {path} ({os.strerror(errno.EACCES)}): {fix}")
    if not_ours := not_writable(storage):
        raise StorageError(f"storage.dir: {not_ours}")


def not_writable(storage: StorageSettings) -> str | None:
    """The first file or folder the outbox writes that this user cannot, whose it is and the fix; else None."""
    db = storage.outbox_path
    paths = [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal")), storage.stills_dir]
    with contextlib.suppress(OSError):  # stills/ unreadable: found below
        paths += [Path(entry.path) for entry in os.scandir(storage.stills_dir) if entry.is_dir(follow_symlinks=False)]
    me = os.geteuid()
    for path in paths:
        try:
            info = path.stat()
        except OSError:  # not there yet: the outbox makes it
            continue
        need = os.R_OK | os.W_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)
        if os.access(path, need):
            continue
        if info.st_uid == me:
            mode = stat.S_IMODE(info.st_mode)
            return f"{path} is not writable by its owner (mode {mode:04o}): chmod -R u+rwX {storage.dir}"
        owner, user = _user_name(info.st_uid), _user_name(me)
        return (
            f"{path} belongs to {owner}, not to {user}, the user edgecam runs as: "
            f"sudo chown -R {user} {storage.dir}, or run edgecam as {owner}"
        )
    return None


def _user_name(uid: int) -> str:
    """The login name of ``uid``, else the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def storage_fault(storage: StorageSettings) -> str:
    """What is wrong with the file system of ``storage.dir``, in a few words for ``<base>/stats``, else "ok"."""
    try:
        info = os.statvfs(storage.dir)
    except OSError as err:
        return (err.strerror or str(err)).lower()
    if info.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if info.f_bavail * info.f_frsize < FULL_BELOW:
        return "disk full"
    probe = storage.dir / f".probe{TMP_SUFFIX}"  # ext4's emergency read-only state shows only on a write
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return (err.strerror or str(err)).lower()
    return "ok"
