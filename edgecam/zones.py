"""Door zone and privacy mask polygons: from normalised ``[x, y]`` fractions to pixel masks."""

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

Point = tuple[float, float]
Polygon = Sequence[Point]


def to_pixels(polygon: Polygon, width: int, height: int) -> NDArray[np.int32]:
    """Scale a polygon of ``[x, y]`` fractions to integer pixel vertices for a ``width`` x ``height`` image."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    pts = np.rint(pts * (width - 1, height - 1))
    return pts.astype(np.int32)


def fill(image: NDArray[np.uint8], polygons: Sequence[Polygon], colour: int | tuple[int, int, int]) -> None:
    """Fill each of ``polygons`` in ``image`` with ``colour``, in place; where they overlap too.

    One ``cv2.fillPoly`` call per polygon: given several at once it fills by the even-odd rule, so that where two
    polygons overlap (two privacy masks drawn over one window) it leaves the overlap unfilled, as a hole.
    """
    height, width = image.shape[:2]
    for polygon in polygons:
        cv2.fillPoly(image, [to_pixels(polygon, width, height)], colour)


def polygon_mask(polygons: Sequence[Polygon], width: int, height: int) -> NDArray[np.bool_]:
    """Return a ``height`` x ``width`` boolean mask that is true inside any of ``polygons``."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    fill(canvas, polygons, 255)
    return canvas.astype(bool)


def burn_masks(image: NDArray[np.uint8], masks: Sequence[Polygon]) -> NDArray[np.uint8]:
    """Return a copy of ``image`` (grey or colour) with every privacy mask filled black."""
    out = image.copy()
    fill(out, masks, (0, 0, 0) if out.ndim == 3 else 0)
    return out


def burn_masks_i420(image: NDArray[np.uint8], masks: Sequence[Polygon]) -> NDArray[np.uint8]:
    """Return a copy of a full-range I420 ``image`` (h * 3 / 2, w) with every privacy mask filled black.

    Black in full-range YCbCr is Y 0 with Cb and Cr at 128: Y is filled as ``burn_masks`` fills a BGR image, and
    the chroma of every 2 x 2 block that any masked pixel touches is set neutral, so no colour is left of what
    a mask covers, not even along its edge. Raises ValueError for an odd width or height (I420 has none).
    """
    height, width = image.shape[0] * 2 // 3, image.shape[1]
    if height * 3 // 2 != image.shape[0] or height % 2 or width % 2:
        raise ValueError(f"an I420 still is h * 3 / 2 rows of w, both even; got {image.shape[1]}x{image.shape[0]}")
    out = image.copy()
    if not masks:
        return out
    fill(out[:height], masks, 0)
    masked = np.zeros((height, width), np.uint8)
    fill(masked, masks, 255)
    touched = cv2.resize(masked, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    neutral = np.full(touched.shape, 128, np.uint8)
    for plane in out[height:].reshape(2, height // 2, width // 2):
        cv2.copyTo(neutral, touched, plane)
    return out


def draw_zones(image: NDArray[np.uint8], zone: Polygon, masks: Sequence[Polygon]) -> NDArray[np.uint8]:
    """A BGR copy of ``image`` (grey or colour) with the masks shaded red and the door zone outlined green."""
    out = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy(), np.uint8)
    height, width = out.shape[:2]
    if masks:
        shade = out.copy()
        fill(shade, masks, (0, 0, 160))
        out = np.asarray(cv2.addWeighted(shade, 0.6, out, 0.4, 0), np.uint8)
    cv2.polylines(out, [to_pixels(zone, width, height)], True, (0, 220, 0), max(2, width // 320))
    return out
