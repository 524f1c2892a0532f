"""Secrets from files: mode checks, reading, and the camera password put into the URL that is opened."""

import os
import re
import stat
from pathlib import Path
from urllib.parse import quote

from edgecam.config import CameraSettings
from edgecam.errors import ConfigError

_URL = re.compile(r"^([a-z][a-z0-9+.-]*://)([^/?#]*)(.*)$", re.IGNORECASE | re.DOTALL)
"""Scheme, authority and the rest of a URL (RFC 3986 section 3)."""


def check_private(key: str, path: Path) -> None:
    """Refuse a secret file that group or others may read, naming the file and the fix.

    systemd's credentials are trusted as they are: it makes them readable by the service's user alone, with an
    access control list that ``stat`` shows in the group bits.
    """
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and path.parent == Path(credentials):
        return
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror or err}") from err
    if mode & 0o077:
        raise ConfigError(
            f"{key}: {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"fix: chmod 600 {path} (owned by the user edgecam runs as)"
        )


def read_secret(key: str, path: Path) -> str:
    """The text of the secret file ``path`` (setting ``key``), final newline stripped; raise ConfigError."""
    check_private(key, path)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from err


def camera_url(camera: CameraSettings) -> str:
    """``camera.source`` as it is opened, with the camera password (if any) after the user name.

    The password comes from ``camera.password_file`` or the systemd credential ``camera-password`` and is
    percent-encoded (RFC 3986 section 3.2.1). Never log what this returns.

    Raise ConfigError when the password has no place in the source: not a URL, no user name, or a password already.
    """
    path = camera.secret_file()
    if path is None:
        return camera.source
    key = "camera.password_file"
    match = _URL.match(camera.source)
    if match is None:
        raise ConfigError(f"{key}: camera.source {camera.shown!r} is not a URL, so a password has no place in it")
    scheme, authority, rest = match.groups()
    user, at, host = authority.rpartition("@")
    if not at or not user:
        raise ConfigError(f"{key}: camera.source {camera.shown!r} names no user: write it as {scheme}USER@{authority}")
    if ":" in user:
        raise ConfigError(f"{key}: camera.source {camera.shown!r} has a password already: remove it from the source")
    return f"{scheme}{user}:{quote(read_secret(key, path), safe='')}@{host}{rest}"
