"""The base of every settings section (``config``, ``scene_settings``): unknown keys are errors."""

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def systemd_credential(name: str) -> Path | None:
    """The file of the systemd credential ``name`` (``LoadCredential=``, in ``$CREDENTIALS_DIRECTORY``), if any."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(credentials) / name if credentials else None
    return path if path is not None and path.is_file() else None
