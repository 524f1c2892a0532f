"""The base of every settings section (``config``, ``scene_settings``): unknown keys are errors."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
