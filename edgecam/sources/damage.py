"""Frames a video decoder patched up after lost or corrupted packets, noticed so they make no events.

When packets of an H.264 stream are lost (Wi-Fi under RTSP) or corrupted (a bad sector of the card), FFmpeg's
decoder conceals the macroblocks it could not decode: in a still, noisy scene (a dim hall at high gain, where the
encoder codes most macroblocks intra) it fills them from the row above, so from the damaged macroblock on, whole
16-pixel macroblock rows become vertical stripes (libavcodec/error_resilience.c, ``guess_dc``/``v_block_filter``).
Later frames are predicted from that picture and keep the damage until the next keyframe. OpenCV says nothing of
decoder errors (the frame arrives like any other), so the damage is recognised in the picture:

- a frame is *smeared* when at least ``SMEARED_ROWS`` macroblock rows lost their vertical texture (mean grey-level
  step between rows below ``FLAT``) while the last whole frame had some there (``TEXTURED``) and the rows still
  have horizontal texture (stripes, not a black, white or evenly lit surface). An object, a light switched off or
  a shadow changes both directions alike and never along whole macroblock rows.
- frames after a smeared one are skipped until the picture matches the last whole frame again (the keyframe
  repaired it), for at most ``HOLD`` seconds, so a damaged stream can hide the scene only briefly.
"""

import logging

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

MACROBLOCK = 16
"""Pixels on a side of an H.264 macroblock (ITU-T H.264 section 3.84)."""
FLAT = 0.1
"""Mean grey-level step between rows at or below which a macroblock row has no vertical texture."""
TEXTURED = 0.5
"""Mean grey-level step between rows the same macroblock row had in the last whole frame; real sensors have noise."""
SMEARED_ROWS = 2
"""Smeared macroblock rows that make a frame damaged."""
WHOLE_LEVEL = 25
"""Grey-level difference from the last whole frame (detection image) that counts as still damaged."""
WHOLE_FRACTION = 0.002
"""Fraction of the detection image allowed to differ by ``WHOLE_LEVEL`` when the picture is whole again."""
HOLD = 4.0
"""Seconds of frames after a smeared one that may be skipped while they still differ from the last whole frame."""
REPORT_EVERY = 60.0
"""Seconds between lines about damaged frames; the frames skipped in between are counted in the next line."""


def row_texture(gray: NDArray[np.uint8]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per macroblock row of ``gray`` (full size): mean absolute grey-level step down and across, in grey levels.

    Sampled on 2 row pairs of each 16-row band (rows 6-7 and 14-15 of it), an eighth of the image.
    """
    rows = gray.shape[0] // MACROBLOCK * MACROBLOCK
    upper, lower = gray[6:rows:8], gray[7:rows:8]
    down = cv2.reduce(cv2.absdiff(upper, lower), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
    across = cv2.reduce(cv2.absdiff(upper[:, 1:], upper[:, :-1]), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
    samples = 2.0 * gray.shape[1]
    return (
        np.asarray(down, np.float64).reshape(-1, 2).sum(axis=1) / samples,
        np.asarray(across, np.float64).reshape(-1, 2).sum(axis=1) / samples,
    )


class DamageCheck:
    """Tells which decoded frames to skip as damaged, and says so in a line at most every ``REPORT_EVERY`` s."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._whole_down: NDArray[np.float64] | None = None
        self._whole_small: NDArray[np.uint8] | None = None
        self._since: float | None = None
        """Time of the first frame of the damage being skipped now, None while the picture is whole."""
        self._first_t = 0.0
        self._last_t = 0.0
        self._unreported = 0
        self._unreported_runs = 0
        self._reported_at: float | None = None
        self.skipped = 0
        """Damaged frames skipped so far."""

    def damaged(self, gray: NDArray[np.uint8], small: NDArray[np.uint8], t: float) -> bool:
        """Whether to skip the frame at ``t`` s: ``gray`` full size, ``small`` its detection image."""
        down, across = row_texture(gray)
        if self._since is None:
            if self._whole_down is not None and self._smeared(down, across, self._whole_down):
                self._since = t
                self._unreported_runs += 1
                if self._unreported == 0:
                    self._first_t = t
                return self._skip(t)
        else:
            whole = self._whole_again(small)
            if not whole and t - self._since < HOLD:
                return self._skip(t)
            if not whole:
                logger.warning(
                    "%s: the picture is not whole %g s after the damaged frame at t=%.2f s (keyframes further "
                    "apart, or the scene changed meanwhile); taking the frames as they come",
                    self._label,
                    HOLD,
                    self._since,
                )
            self._since = None
            if self._reported_at is None or t - self._reported_at >= REPORT_EVERY:
                self.report(t)
        self._whole_down, self._whole_small = down, small
        return False

    def report(self, t: float) -> None:
        """Log the damaged frames skipped since the last line, if any (call once more when the source ends)."""
        if self._unreported == 0:
            return
        logger.warning(
            "%s: skipped %d damaged frames (t=%.2f-%.2f s, %d times): the decoder smeared whole macroblock rows "
            "over lost or corrupted packets (a weak Wi-Fi link or a failing card)",
            self._label,
            self._unreported,
            self._first_t,
            self._last_t,
            self._unreported_runs,
        )
        self._unreported = self._unreported_runs = 0
        self._reported_at = t

    def _skip(self, t: float) -> bool:
        self.skipped += 1
        self._unreported += 1
        self._last_t = t
        return True

    def _whole_again(self, small: NDArray[np.uint8]) -> bool:
        if self._whole_small is None or small.shape != self._whole_small.shape:
            return True
        differs = np.asarray(cv2.absdiff(small, self._whole_small)) > WHOLE_LEVEL
        return int(np.count_nonzero(differs)) <= WHOLE_FRACTION * small.size

    @staticmethod
    def _smeared(down: NDArray[np.float64], across: NDArray[np.float64], whole_down: NDArray[np.float64]) -> bool:
        if down.shape != whole_down.shape:
            return False
        smeared = (down <= FLAT) & (whole_down >= TEXTURED) & (across >= FLAT) & (across > 3 * down)
        return int(np.count_nonzero(smeared)) >= SMEARED_ROWS
