"""The closed door's reference picture, as ``edgecam calibrate`` learns and saves it and ``door.py`` reads it."""

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgecam.errors import ConfigError
from edgecam.models import iso_ms
from edgecam.zones import Polygon, polygon_mask

REFERENCE_VERSION = 1


def _polygons(polygons: Sequence[Sequence[Sequence[float]]]) -> tuple[Polygon, ...]:
    return tuple(tuple((float(x), float(y)) for x, y in polygon) for polygon in polygons)


@dataclass(frozen=True, eq=False)
class DoorReference:
    """What the closed door looks like: the mean detection frame of a quiet scene, privacy masks burned in."""

    gray: NDArray[np.uint8]
    masks: tuple[Polygon, ...]
    """The privacy masks burned in when it was made: their pixels say nothing."""
    frames: int
    """How many frames were averaged."""
    created: str
    """When it was made, ISO 8601 UTC."""

    @classmethod
    def learn(cls, frames: Sequence[NDArray[np.uint8]], masks: Sequence[Polygon]) -> "DoorReference":
        """The mean of ``frames`` with ``masks`` burned in."""
        mean = np.mean(np.stack(frames), axis=0)
        gray = np.asarray(np.rint(mean), np.uint8)
        height, width = gray.shape
        gray[polygon_mask(masks, width, height)] = 0
        return cls(gray, _polygons(masks), len(frames), iso_ms(datetime.now(UTC)))

    def to_bytes(self) -> bytes:
        """The reference as an ``.npz`` file."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            version=np.int64(REFERENCE_VERSION),
            gray=self.gray,
            masks=np.str_(json.dumps([list(map(list, m)) for m in self.masks])),
            frames=np.int64(self.frames),
            created=np.str_(self.created),
        )
        return buf.getvalue()


def load_reference(path: Path) -> DoorReference:
    """Read a reference saved by ``edgecam calibrate``; raise ConfigError naming ``door.reference``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            if version != REFERENCE_VERSION:
                raise ConfigError(
                    f"door.reference: {path} is version {version}, this edgecam reads {REFERENCE_VERSION}: "
                    "run 'edgecam calibrate' again"
                )
            gray = np.asarray(data["gray"], np.uint8)
            masks = _polygons(json.loads(str(data["masks"])))
            reference = DoorReference(gray, masks, int(data["frames"]), str(data["created"]))
    except OSError as err:
        raise ConfigError(f"door.reference: cannot read {path}: {err.strerror or err}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"door.reference: {path} is not a door reference from 'edgecam calibrate': {err}") from err
    if gray.ndim != 2:
        raise ConfigError(f"door.reference: {path} is not a door reference from 'edgecam calibrate'")
    return reference
