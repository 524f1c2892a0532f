"""Door state: the door zone compared with a calibrated picture of the closed door, in a way light does not move.

The comparison is the correlation of the two pictures' brightness gradients over the door zone, after a small
Gaussian blur against sensor noise, with the privacy masks and their surroundings left out. A change of light or
exposure scales the gradients but hardly turns them, so the correlation of a closed door stays near 1 whether the
hall light is on, off or infrared; a door that swings moves its edges, panels and handle, and it falls.
The *dissimilarity* is 1 minus that correlation, clipped to 0..1: about 0.3 once a door is 5 degrees ajar. It is
taken band by band, with the sensor noise taken out (``DoorWatcher``), so that a person in front of the shut door
and a dim, noisy picture do not read open.
"""

import io
import itertools
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import DoorSettings, Settings
from edgecam.errors import ConfigError
from edgecam.models import DoorState, Frame, iso_ms
from edgecam.zones import Polygon, polygon_mask

logger = logging.getLogger(__name__)

REFERENCE_VERSION = 1
SIGMA = 0.75
"""Gaussian blur, in pixels of the half-size zone, before taking gradients: noise and a pixel of shake away."""
MASK_MARGIN = 8
"""Pixels round a privacy mask left out: the black mask burned into the reference would show there as an edge."""
MIN_DETAIL = 0.5
"""Root-mean-square gradient over the zone, grey levels per pixel, below which a reference says too little to
compare with (made in the dark, or of a plain wall)."""
MIN_FRAME_DETAIL = 0.2
"""Fraction of the reference's detail below which a frame says too little (the light is off and the picture
black): it leaves the door's state as it was."""
CLOSE_FACTOR = 0.7
"""Hysteresis: open at ``door.open_level``, closed again only below this fraction of it."""
HOLD = 0.3
"""Seconds a new reading must last before the state follows it."""
BANDS = 4
"""Horizontal bands of the zone compared one by one."""
CLIPPED = 250.0
"""Grey level from which a pixel is taken as clipped white: its edges are unknown, and it is left out."""
CLIPPED_SHARE = 0.01
"""Share of the zone's box clipped white from which clipped pixels are left out; fewer are noise on a white door."""
BAND_KEPT = 0.1
"""A band reading under this has kept its closed look (a closed door reads under 0.05 in every light and noise of
the benchmark, a door 5 degrees ajar 0.12 to 0.6 in each band): then the door is closed behind whatever changed the
other bands. Where every band has changed, the whole zone's reading is the door's."""
BAND_SHARE = 0.35
"""A band that changed less than this share of the bands' median has kept its closed look too: a door ajar moves
every band (its least changed band reads 0.44 to 0.8 of the median in the benchmark, the low end a porch door whose
bottom band is mostly floor), while a person in front of the door with a light coming on beside it left one band
at 0.19 of the median."""
NOISE_EVERY = 16
"""The gradient noise is re-estimated every this many frames."""
NOISE_RATE = 0.1
"""Weight of a new noise estimate in the running one."""
NOISE_JUMP = 2.0
"""A frame's noise estimate above this multiple of the running one is movement, not noise, and is left out."""
NOISE_FLOOR = 0.05
"""Gradient energy per pixel under which the running noise estimate says little (a black frame gives 0): any new
estimate up to ``NOISE_JUMP`` times this counts. A lit scene's noise is about 0.03, a dim one at high gain 0.25."""


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


def _half(image: NDArray[np.uint8] | NDArray[np.float32]) -> NDArray[np.float32]:
    """``image`` at half its size (area average) as float32: a quarter of the work, and no less robust."""
    return np.asarray(cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), np.float32)


def _gradients(half: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Horizontal and vertical brightness gradients of ``half``, grey levels per pixel, after the blur."""
    blurred = cv2.GaussianBlur(half, (0, 0), SIGMA)
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return np.asarray(gx, np.float32), np.asarray(gy, np.float32)


def _energy(gx: NDArray[np.float32], gy: NDArray[np.float32]) -> float:
    return float(np.vdot(gx, gx) + np.vdot(gy, gy))


def _unclipped(half: NDArray[np.float32]) -> NDArray[np.float32]:
    """1 where neither a pixel of ``half`` nor its neighbours are clipped white, else 0."""
    return np.asarray(cv2.erode((half < CLIPPED).astype(np.float32), np.ones((3, 3), np.uint8)), np.float32)


class DoorWatcher:
    """Says, frame by frame, whether the door is open or closed, from its reference.

    The zone is cut into ``BANDS`` horizontal bands and compared band by band; the door's reading is the band most
    like the closed door. A door swings about its vertical hinges, so every band of the leaf leaves its closed
    look together; a person, a pet or a shadow in front of the closed door leaves at least one band as it was.
    The sensor noise in the gradients is estimated from successive frames and taken out of each band's energy, so
    a dim, noisy closed door still reads near 0.
    """

    def __init__(
        self,
        reference: DoorReference,
        settings: DoorSettings,
        zone: Polygon,
        masks: Sequence[Polygon],
        width: int,
        height: int,
    ) -> None:
        """Prepare the comparison; raise ConfigError when the reference cannot serve this camera and zone."""
        if reference.gray.shape != (height, width):
            made = "x".join(map(str, reference.gray.shape[::-1]))
            raise ConfigError(
                f"door.reference: made at {made} pixels, but camera.detect_width x detect_height is "
                f"{width}x{height}: run 'edgecam calibrate' again"
            )
        self._open_level = settings.open_level
        hidden = polygon_mask([*masks, *reference.masks], width, height).astype(np.uint8)
        near = cv2.dilate(hidden, np.ones((2 * MASK_MARGIN + 1,) * 2, np.uint8)) > 0
        counted = polygon_mask([zone], width, height) & ~near
        if not counted.any():
            raise ConfigError("door.reference: no pixel of motion.zone is left outside motion.masks to compare")
        rows = np.flatnonzero(counted.any(axis=1))
        cols = np.flatnonzero(counted.any(axis=0))
        self._box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        weights = (_half(counted[self._box].astype(np.float32)) > 0.999).astype(np.float32)
        self._weights = weights * _unclipped(_half(reference.gray[self._box]))
        self._ref_x, self._ref_y = self._weighted_gradients(_half(reference.gray[self._box]))
        ref_energy = self._ref_x * self._ref_x + self._ref_y * self._ref_y
        energy = float(ref_energy.sum())
        self.reference_detail = math.sqrt(energy / max(1.0, float(self._weights.sum())))
        """Root-mean-square gradient of the reference over the zone: how much there is to compare."""
        if self.reference_detail < MIN_DETAIL:
            raise ConfigError(
                f"door.reference: the door zone in it shows too little detail ({self.reference_detail:.1f} < "
                f"{MIN_DETAIL:g} grey levels per pixel): calibrate with the light on, or widen motion.zone"
            )
        edges = np.linspace(0, self._weights.shape[0], BANDS + 1).round().astype(int)
        bands = []
        for top, bottom in itertools.pairwise(edges):
            pixels = float(self._weights[top:bottom].sum())
            band_energy = float(ref_energy[top:bottom].sum())
            if pixels > 0 and band_energy >= MIN_DETAIL**2 * pixels:  # a plain band says nothing either way
                bands.append((slice(int(top), int(bottom)), pixels, band_energy))
        if not bands:
            bands.append((slice(0, self._weights.shape[0]), float(self._weights.sum()), energy))
        self._bands = bands
        self._pixels = float(self._weights.sum())
        self._ref_energy = energy
        self._noise: float | None = None
        self._frames = 0
        self._previous: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        self.state: DoorState | None = None
        """The door's state, or None until the readings have settled on one."""
        self.last: float | None = None
        """The last frame's dissimilarity, or None when it showed too little detail to say."""
        self._pending: DoorState | None = None
        self._pending_since = 0.0

    @classmethod
    def for_settings(cls, reference: DoorReference, settings: Settings) -> "DoorWatcher":
        """The watcher for the door zone, masks and detection size of ``settings``."""
        cam = settings.camera
        motion = settings.motion
        return cls(reference, settings.door, motion.zone, motion.masks, cam.detect_width, cam.detect_height)

    @property
    def left_closed(self) -> bool:
        """The last frame no longer looks like the closed door: dissimilarity at the closing level or above.

        It is what confirms that camera motion in the zone is the door moving (``EventTracker``).
        """
        return self.last is not None and self.last >= self._open_level * CLOSE_FACTOR

    def _weighted_gradients(self, half: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        gx, gy = _gradients(half)
        gx *= self._weights
        gy *= self._weights
        return gx, gy

    def _learn_noise(self, gx: NDArray[np.float32], gy: NDArray[np.float32]) -> None:
        """Estimate the gradient energy per pixel that sensor noise adds, from this frame and the one before.

        The difference of two frames' gradients is noise twice over where nothing moved; its squared magnitude
        is 2 sigma^2 times a chi-square with 2 degrees of freedom, whose median is 2 ln 2. The median over the
        zone ignores what moves, and a frame far above the estimate (a door swinging) does not count.
        """
        self._frames += 1
        due = self._noise is None or self._frames % NOISE_EVERY == 0
        previous, self._previous = self._previous, None
        if self._noise is None or (self._frames + 1) % NOISE_EVERY == 0:
            self._previous = (gx.copy(), gy.copy())
        if previous is None or not due:
            return
        dx = gx - previous[0]
        dy = gy - previous[1]
        change = (dx * dx + dy * dy)[self._weights > 0]
        noise = float(np.partition(change, change.size // 2)[change.size // 2]) / (2.0 * math.log(2.0))
        if self._noise is None:
            self._noise = noise
        elif noise <= NOISE_JUMP * max(self._noise, NOISE_FLOOR):
            self._noise += NOISE_RATE * (noise - self._noise)

    def dissimilarity(self, gray: NDArray[np.uint8]) -> float | None:
        """How unlike the closed door the zone of ``gray`` is (0 same, 1 unrelated); None if it shows too little.

        The reading of the band most like the reference: each band's gradient correlation with the reference,
        with the sensor noise's share of the frame's energy taken out. Where the whole zone reads below the
        closing level, so does its best band (Cauchy-Schwarz: were every band's correlation below c, so would
        the zone's be), and the zone's reading stands for it at a quarter of the work.
        """
        half = _half(gray[self._box])
        gx, gy = self._weighted_gradients(half)
        self._learn_noise(gx, gy)
        noise = self._noise or 0.0
        rx, ry, bands = self._ref_x, self._ref_y, self._bands
        whole = (slice(None), self._pixels, self._ref_energy)
        if float(half.max()) >= CLIPPED and np.count_nonzero(half >= CLIPPED) > CLIPPED_SHARE * half.size:
            # Clipped white in this frame: its edges there are unknown, so neither picture's count.
            kept = _unclipped(half)
            gx *= kept
            gy *= kept
            rx, ry = rx * kept, ry * kept
            weights = self._weights * kept
            bands = [(rows, float(weights[rows].sum()), _energy(rx[rows], ry[rows])) for rows, _, _ in bands]
            whole = (slice(None), float(weights.sum()), _energy(rx, ry))
            if whole[2] < MIN_FRAME_DETAIL**2 * self._ref_energy:
                return None
        zone = self._band_reading(gx, gy, rx, ry, *whole, noise)
        if zone is None:
            return None
        if zone < self._open_level * CLOSE_FACTOR:
            return max(0.0, zone)
        readings = [self._band_reading(gx, gy, rx, ry, *band, noise) for band in bands]
        known = [r for r in readings if r is not None]
        if not known:
            return None
        most_alike, typical = min(known), statistics.median(known)
        # A band still as the closed door, or changed far less than the others, means something in front of the
        # door changed them (a side light on the way touches every band a little); else the door moved.
        if most_alike < BAND_KEPT or most_alike < BAND_SHARE * typical:
            return max(0.0, most_alike)
        return min(1.0, zone)

    @staticmethod
    def _band_reading(
        gx: NDArray[np.float32],
        gy: NDArray[np.float32],
        rx: NDArray[np.float32],
        ry: NDArray[np.float32],
        rows: slice,
        pixels: float,
        ref_energy: float,
        noise: float,
    ) -> float | None:
        bx, by = gx[rows], gy[rows]
        signal = _energy(bx, by) - noise * pixels
        if ref_energy <= 0.0 or signal < MIN_FRAME_DETAIL**2 * ref_energy:
            return None
        product = float(np.vdot(bx, rx[rows]) + np.vdot(by, ry[rows]))
        return 1.0 - product / math.sqrt(signal * ref_energy)

    def update(self, frame: Frame) -> DoorState | None:
        """Read ``frame`` and return the door's state: a new reading counts once it has lasted ``HOLD`` seconds."""
        self.last = value = self.dissimilarity(frame.gray)
        reading: DoorState | None = None
        if value is not None and value >= self._open_level:
            reading = "open"
        elif value is not None and value < self._open_level * CLOSE_FACTOR:
            reading = "closed"
        if reading is None or reading == self.state:
            self._pending = None
        elif reading != self._pending:
            self._pending, self._pending_since = reading, frame.t
        elif frame.t - self._pending_since >= HOLD:
            self.state, self._pending = reading, None
        return self.state


def open_watcher(settings: Settings, path: Path | None) -> DoorWatcher | None:
    """The watcher for the reference at ``path``; None for no path, or no file at the default path.

    A ``door.reference`` that is set must exist; raise ConfigError when it, or the file found, cannot serve.
    """
    if path is None:
        return None
    if settings.door.reference is None and not path.exists():
        logger.info(
            "door: no reference of the closed door at %s, so no door state ('edgecam calibrate' makes one)", path
        )
        return None
    reference = load_reference(path)
    watcher = DoorWatcher.for_settings(reference, settings)
    logger.info(
        "door: state from the reference in %s, made %s from %d frames", path, reference.created, reference.frames
    )
    return watcher
