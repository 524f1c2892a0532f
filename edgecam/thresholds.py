"""Each pixel's threshold for the detector: ``motion.threshold``, the light, and the sensor noise it measures.

Pure numpy over arrays, no I/O; the detector (``edgecam.motion``) and the scene warnings (``edgecam.viewing``) share
what a threshold is.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

LIT = 200.0
"""Background grey level from which ``motion.threshold`` applies whole; darker pixels need proportionally less
change, since a door's contrast, like everything in the picture, scales with the light."""
NOISE_K = 4.0
"""A pixel counts as changed only when it differs by more than this many standard deviations of the sensor
noise at its brightness: for Gaussian noise, 6 pixels in 100,000."""
MIN_THRESHOLD = 4
"""Grey levels below which no pixel's threshold goes, however dark and clean the scene (rounding, compression)."""
NOISE_BINS = 8
"""Brightness levels (of 32 grey levels each) at which the sensor noise is estimated: it grows with the signal."""
MAD_TO_SIGMA = 1.4826
"""The median absolute deviation times this is the standard deviation of a normal distribution (1 / the normal's
0.75 quantile; P. J. Rousseeuw and C. Croux, "Alternatives to the Median Absolute Deviation", JASA 88, 1993)."""
Floating = TypeVar("Floating", np.float32, np.float64)
NOISE_SAMPLES = 20
"""Fewest pixels of a brightness level in the door zone for a frame to say anything about its noise."""


def threshold_at(threshold: float, levels: NDArray[Floating], *, relative: bool) -> NDArray[Floating]:
    """``motion.threshold`` at background grey ``levels``, before the noise is taken into account; their dtype.

    ``relative``: less below ``LIT``, in proportion, never under ``MIN_THRESHOLD``; else the same everywhere.
    """
    if not relative:
        return np.full_like(levels, float(threshold))
    return np.maximum(np.minimum(levels, LIT) * (threshold / LIT), float(MIN_THRESHOLD))


_LEVELS = np.arange(256, dtype=np.float64)


class PixelThresholds:
    """The sensor noise per brightness level, learnt from quiet frames, and the threshold per background grey level."""

    def __init__(self, threshold: int, *, relative: bool) -> None:
        """``threshold`` is ``motion.threshold``; ``relative`` as for ``threshold_at``."""
        self._threshold = threshold
        self._base = np.clip(threshold_at(threshold, _LEVELS, relative=relative), MIN_THRESHOLD, 255)
        """``threshold_at`` each grey level, before the noise."""
        self.reset()

    def reset(self) -> None:
        """Forget the noise: the thresholds are ``motion.threshold`` until quiet frames say more."""
        self._levels: NDArray[np.float64] | None = None
        self._sigma = np.full(NOISE_BINS, np.nan)
        self.lut = self._by_level()
        """The threshold for each background grey level (256 entries, uint8), for ``cv2.LUT``."""

    @property
    def noise(self) -> float | None:
        """Standard deviation of the sensor noise, grey levels; None before any.

        The mean over the brightness levels the zone has, each by its share of the zone's pixels.
        """
        known = ~np.isnan(self._sigma)
        if not known.any():
            return None
        weights = self._levels[known] if self._levels is not None else np.ones(int(known.sum()))
        return float(np.average(self._sigma[known], weights=weights + 1e-9))

    def learn(self, difference: NDArray[np.uint8], reference: NDArray[np.uint8], rate: float) -> None:
        """Estimate the noise per brightness level from a quiet frame's sampled ``difference`` from ``reference``.

        Only pixels within their threshold count. For Gaussian noise the mean absolute deviation is
        sigma * sqrt(2 / pi).
        """
        calm = difference <= self.lut.take(reference)
        levels = reference[calm] // (256 // NOISE_BINS)
        counts = np.bincount(levels, minlength=NOISE_BINS)
        sums = np.bincount(levels, weights=difference[calm], minlength=NOISE_BINS)
        self._levels = counts.astype(np.float64)
        enough = counts >= NOISE_SAMPLES
        if not enough.any():
            return
        sigma = sums[enough] / counts[enough] * np.sqrt(np.pi / 2.0)
        current = self._sigma[enough]
        self._sigma[enough] = np.where(np.isnan(current), sigma, current + rate * (sigma - current))
        self.lut = self._by_level()

    def _by_level(self) -> NDArray[np.uint8]:
        """The threshold per background grey level, from ``motion.threshold`` and the noise.

        ``threshold_at`` each level, never under ``NOISE_K`` times the noise at that brightness nor
        ``MIN_THRESHOLD``; levels whose noise is unknown take the nearest known.
        """
        known = np.flatnonzero(~np.isnan(self._sigma))
        if not known.size:
            return np.full(256, np.clip(self._threshold, MIN_THRESHOLD, 255), np.uint8)
        centres = known * (256 // NOISE_BINS) + 256 // NOISE_BINS // 2
        sigma = np.interp(_LEVELS, centres, self._sigma[known])
        thresholds = np.maximum(self._base, np.minimum(NOISE_K * sigma, 255.0))
        return np.asarray(np.rint(thresholds), np.uint8)
