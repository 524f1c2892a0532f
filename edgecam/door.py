"""Door state: the door zone compared with a calibrated picture of the closed door, in a way light does not move.

The comparison is the correlation of the two pictures' brightness gradients over the door zone and a margin round
it, at half size after a small blur, with the privacy masks and their surroundings left out. A change of
light or exposure scales the gradients but hardly turns them, so the correlation of a closed door stays near 1
whether the hall light is on, off or infrared; a door that swings moves its edges, panels and handle, and it falls.
The *dissimilarity* is 1 minus that correlation, clipped to 0..1: about 0.5 once a door is 5 degrees ajar,
wherever its edges fall on the pixels and the zone's border (``ZONE_MARGIN``). It is
taken band by band, with the sensor noise taken out (``DoorWatcher``), so that a person in front of the shut door
and a dim, noisy picture do not read open.
"""

import itertools
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import DoorSettings, Settings
from edgecam.door_reference import DoorReference, load_reference
from edgecam.errors import ConfigError
from edgecam.models import DoorState, Frame
from edgecam.zones import Polygon, polygon_mask

logger = logging.getLogger(__name__)

SOBEL = 0.125
"""A 3 x 3 Sobel gradient is 8 times the step in grey levels per pixel: gradients are scaled by this."""
ZONE_MARGIN = 1
"""Pixels round the zone compared with it: a zone drawn to the door's opening would cut the leaf's edge in half, and
which half depended on where the edge fell on the pixels (a door 5 degrees ajar read from 0.05 to 0.46 as the scene
moved by a pixel). More takes in the door's frame, which a door moving leaves as it was."""
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
"""A band reading under this has kept its closed look (a closed door read under 0.05 in every light and noise of
the benchmark, a door 5 degrees ajar 0.12 to 0.6 in each band, measured before the zone's margin and ``pyrDown``;
the benchmark's door figures held after): then the door is closed behind whatever changed the other bands. Where
every band has changed, the whole zone's reading is the door's."""
BAND_SHARE = 0.35
"""A band that changed less than this share of the bands' median has kept its closed look too: a door ajar moves
every band (its least changed band reads 0.44 to 0.8 of the median in the benchmark, the low end a porch door whose
bottom band is mostly floor), while a person in front of the door with a light coming on beside it left one band
at 0.19 of the median."""
NOISE_EVERY = 64
"""The gradient noise is re-estimated every this many frames."""
NOISE_RATE = 0.1
"""Weight of a new noise estimate in the running one."""
NOISE_JUMP = 2.0
"""A frame's noise estimate above this multiple of the running one is movement, not noise, and is left out."""
NOISE_FLOOR = 0.05
"""Gradient energy per pixel under which the running noise estimate says little (a black frame gives 0): any new
estimate up to ``NOISE_JUMP`` times this counts. A lit scene's noise is about 0.03, a dim one at high gain 0.25."""


Gradients = NDArray[np.float32]
"""Horizontal and vertical brightness gradients side by side, each row ``[gx..., gy...]``, grey levels per pixel (of
the half-size zone). One array, so that a band's energy or product is one dot product."""


def _gradients(half: NDArray[np.uint8], keep: NDArray[np.float32], out: Gradients | None = None) -> Gradients:
    """The brightness gradients of ``half`` (``cv2.pyrDown`` of the zone's box), times ``keep``, into ``out``.

    ``keep`` holds 0, or 1/8 for a Sobel's 8, side by side. ``cv2.pyrDown`` blurs with a 5 x 5 Gaussian (sigma
    about 1 pixel) and keeps every other pixel: sensor noise and a pixel of shake away, and the same reading
    wherever an edge falls on the pixels, at a quarter of the work. The gradients are the 3 x 3 Sobel operator's
    (``cv2.spatialGradient``, both at once).
    """
    g = np.empty(keep.shape, np.float32) if out is None else out
    return np.multiply(cv2.hconcat(cv2.spatialGradient(half)), keep, out=g)


def _half_size(image: NDArray[np.generic]) -> tuple[int, int]:
    """The size ``cv2.pyrDown`` makes of ``image``: (width, height), each half rounded up."""
    return (image.shape[1] + 1) // 2, (image.shape[0] + 1) // 2


def _dot(a: Gradients, b: Gradients, rows: slice = slice(None)) -> float:
    """The sum of the products of two pictures' gradients over ``rows``; of a picture's with its own, its energy."""
    return float(np.vdot(a[rows], b[rows]))


def _unclipped(gray: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """255 where neither a pixel of ``gray`` nor its neighbours are clipped white, else 0."""
    below = np.where(gray < CLIPPED, np.uint8(255), np.uint8(0))
    return np.asarray(cv2.erode(below, np.ones((3, 3), np.uint8)), np.uint8)


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
        side = 2 * ZONE_MARGIN + 1
        around = cv2.dilate(polygon_mask([zone], width, height).astype(np.uint8), np.ones((side, side), np.uint8))
        counted = (around > 0) & ~near
        if not counted.any():
            raise ConfigError("door.reference: no pixel of motion.zone is left outside motion.masks to compare")
        rows = np.flatnonzero(counted.any(axis=1))
        cols = np.flatnonzero(counted.any(axis=0))
        self._box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        closed = reference.gray[self._box]
        kept = (counted[self._box] & (_unclipped(closed) > 0)).astype(np.float32)
        half = cv2.resize(kept, _half_size(kept), interpolation=cv2.INTER_AREA) > 0.999
        self._keep = np.where(np.hstack((half, half)), np.float32(SOBEL), np.float32(0.0))
        """1 for the half-size pixels compared: in and round the zone, away from the masks, not clipped in the
        reference."""
        self._ref = _gradients(np.asarray(cv2.pyrDown(closed), np.uint8), self._keep)
        self._g = np.empty_like(self._ref)
        """The latest frame's gradients."""
        energy = _dot(self._ref, self._ref)
        self._pixels = np.count_nonzero(self._keep) / 2.0
        self.reference_detail = math.sqrt(energy / max(1.0, self._pixels))
        """Root-mean-square gradient of the reference over the zone: how much there is to compare."""
        if self.reference_detail < MIN_DETAIL:
            raise ConfigError(
                f"door.reference: the door zone in it shows too little detail ({self.reference_detail:.1f} < "
                f"{MIN_DETAIL:g} grey levels per pixel): calibrate with the light on, or widen motion.zone"
            )
        edges = np.linspace(0, self._keep.shape[0], BANDS + 1).round().astype(int)
        bands: list[tuple[slice, float, float]] = []
        for top, bottom in itertools.pairwise(edges):
            band = slice(int(top), int(bottom))
            pixels = np.count_nonzero(self._keep[band]) / 2.0
            band_energy = _dot(self._ref, self._ref, band)
            if pixels > 0 and band_energy >= MIN_DETAIL**2 * pixels:  # a plain band says nothing either way
                bands.append((band, pixels, band_energy))
        if not bands:
            bands.append((slice(None), self._pixels, energy))
        self._bands = bands
        self._ref_energy = energy
        self._noise: float | None = None
        self._previous: tuple[int, Gradients] | None = None
        self._reads = 0
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

    def _learn_noise(self, g: Gradients, index: int) -> None:
        """Estimate the gradient energy per pixel that sensor noise adds, from frame ``index`` and the one before.

        The difference of two frames' gradients is noise twice over where nothing moved; its squared magnitude
        is 2 sigma^2 times a chi-square with 2 degrees of freedom, whose median is 2 ln 2. The median over the
        zone ignores what moves, and a frame far above the estimate (a door swinging) does not count. Every
        ``NOISE_EVERY`` frames once known; from every pair of successive frames read before.
        """
        due = self._noise is None or index % NOISE_EVERY == 0
        previous, self._previous = self._previous, None
        if self._noise is None or (index + 1) % NOISE_EVERY == 0:
            self._previous = (index, g.copy())
        if previous is None or previous[0] != index - 1 or not due:
            return
        d = g - previous[1]
        width = d.shape[1] // 2
        change = (np.square(d[:, :width]) + np.square(d[:, width:]))[self._keep[:, :width] > 0]
        noise = float(np.partition(change, change.size // 2)[change.size // 2]) / (2.0 * math.log(2.0))
        if self._noise is None:
            self._noise = noise
        elif noise <= NOISE_JUMP * max(self._noise, NOISE_FLOOR):
            self._noise += NOISE_RATE * (noise - self._noise)

    def dissimilarity(self, gray: NDArray[np.uint8]) -> float | None:
        """How unlike the closed door the zone of ``gray`` is (0 same, 1 unrelated); None if it shows too little.

        Each call counts as the frame after the one before, for the noise estimate.
        """
        self._reads += 1
        return self._read(gray, self._reads)

    def _read(self, gray: NDArray[np.uint8], index: int) -> float | None:
        """The dissimilarity of the door zone in ``gray``, frame ``index`` of the source.

        The reading of the band most like the reference: each band's gradient correlation with the reference,
        with the sensor noise's share of the frame's energy taken out. Where the whole zone reads below the
        closing level, so does its best band (Cauchy-Schwarz: were every band's correlation below c, so would
        the zone's be), and the zone's reading stands for it at a quarter of the work.
        """
        zone_box = gray[self._box]
        half = np.asarray(cv2.pyrDown(zone_box), np.uint8)
        g = _gradients(half, self._keep, self._g)
        self._learn_noise(g, index)
        noise = self._noise or 0.0
        ref, bands = self._ref, self._bands
        whole = (slice(None), self._pixels, self._ref_energy)
        # A blur leaves a clipped patch of any size near white: where the blurred zone is darker, none is clipped.
        if cv2.minMaxLoc(half)[1] >= CLIPPED - 10 and self._clipped(zone_box):
            # Clipped white in this frame: its edges there are unknown, so neither picture's count.
            unclipped = cv2.resize(_unclipped(zone_box), _half_size(zone_box), interpolation=cv2.INTER_AREA) == 255
            keep = np.where(np.hstack((unclipped, unclipped)), self._keep, np.float32(0.0))
            seen = (keep > 0).astype(np.float32)
            g = g * seen
            ref = ref * seen
            bands = [(band[0], np.count_nonzero(keep[band[0]]) / 2.0, _dot(ref, ref, band[0])) for band in bands]
            whole = (slice(None), np.count_nonzero(keep) / 2.0, _dot(ref, ref))
            if whole[2] < MIN_FRAME_DETAIL**2 * self._ref_energy:
                return None
        zone = self._band_reading(g, ref, *whole, noise)
        if zone is None:
            return None
        if zone < self._open_level * CLOSE_FACTOR:
            return max(0.0, zone)
        readings = [self._band_reading(g, ref, *band, noise) for band in bands]
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
    def _clipped(zone_box: NDArray[np.uint8]) -> bool:
        """Whether more than ``CLIPPED_SHARE`` of the zone's box is clipped white."""
        clipped = cv2.countNonZero(cv2.threshold(zone_box, CLIPPED - 0.5, 255, cv2.THRESH_BINARY)[1])
        return bool(clipped > CLIPPED_SHARE * zone_box.size)

    @staticmethod
    def _band_reading(
        g: Gradients, ref: Gradients, rows: slice, pixels: float, ref_energy: float, noise: float
    ) -> float | None:
        """1 minus the gradient correlation over ``rows``, the noise's energy taken out of the frame's."""
        energy = _dot(g, g, rows)
        signal = energy - noise * pixels
        if ref_energy <= 0.0 or signal < MIN_FRAME_DETAIL**2 * ref_energy:
            return None
        product = _dot(g, ref, rows)
        return 1.0 - product / math.sqrt(signal * ref_energy)

    def update(self, frame: Frame, changed: bool = True) -> DoorState | None:
        """Read ``frame`` and return the door's state: a new reading counts once it has lasted ``HOLD`` seconds.

        ``changed``: whether anything in the door zone changed (``Measure.zone_changed``). Where nothing did, the
        reading of the frame before stands; the zone is read afresh anyway while a new reading waits to last,
        before the state and the noise are known, and on two frames in a row every ``NOISE_EVERY``.
        """
        index = frame.index
        if not (
            changed
            or self._pending is not None
            or self.state is None
            or self._noise is None
            or (index + 1) % NOISE_EVERY < 2
        ):
            return self.state  # the reading of the frame before stands, and it left nothing pending
        self.last = value = self._read(frame.gray, index)
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
