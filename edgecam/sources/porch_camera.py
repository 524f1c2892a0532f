"""The porch scene's camera (a wide lens under the porch roof) and the flat, textured surfaces its rays meet.

Units are metres, as in ``porch``: x to the right along the wall, y up, z out of the wall towards the camera.
"""

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

Vec = NDArray[np.float64]
Image = NDArray[np.uint8]
Field = NDArray[np.float32]

CAMERA_AT = np.array([1.6, 2.3, 1.6])
LOOK_AT = np.array([0.3, 0.95, 0.0])
FOCAL = 0.5  # focal length in image widths at the centre of the picture
K1, K2 = 0.22, 0.02  # barrel distortion: a ray at distorted radius r leaves at tan = r (1 + K1 r^2 + K2 r^4)
VIGNETTE = 0.45  # relative illumination falls as 1 / (1 + VIGNETTE * r^2)^2


class Camera:
    """The porch camera's geometry: rays out of pixels through the lens, and world points into pixels."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        forward = LOOK_AT - CAMERA_AT
        self.forward = forward / np.linalg.norm(forward)
        right = np.cross(self.forward, [0.0, 1.0, 0.0])
        self.right = right / np.linalg.norm(right)
        self.down = np.cross(self.forward, self.right)
        self.focal = FOCAL * width
        self.cx, self.cy = (width - 1) / 2, (height - 1) / 2

    def rays(self, scale: int = 1) -> tuple[Field, Field, Field]:
        """World directions (x, y, z), unnormalised, of the rays of every pixel, ``scale`` x ``scale`` per pixel."""
        xs = (np.arange(self.width * scale, dtype=np.float32) + 0.5) / scale - 0.5
        ys = (np.arange(self.height * scale, dtype=np.float32) + 0.5) / scale - 0.5
        xd, yd = np.meshgrid((xs - self.cx) / self.focal, (ys - self.cy) / self.focal)
        r2 = xd * xd + yd * yd
        stretch = 1.0 + K1 * r2 + K2 * r2 * r2
        xu, yu = xd * stretch, yd * stretch
        f, r, d = (v.astype(np.float32) for v in (self.forward, self.right, self.down))
        return f[0] + xu * r[0] + yu * d[0], f[1] + xu * r[1] + yu * d[1], f[2] + xu * r[2] + yu * d[2]

    def vignette(self) -> Field:
        """Relative illumination of each pixel: 1 in the middle, darker towards the corners."""
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        r2 = ((x - self.cx) ** 2 + (y - self.cy) ** 2) / self.focal**2
        return np.asarray(1.0 / (1.0 + VIGNETTE * r2) ** 2, np.float32)

    def pixel(self, points: Vec) -> Vec:
        """Image points (x, y) of world points (..., 3) in front of the camera, through the lens."""
        rel = np.asarray(points, np.float64) - CAMERA_AT
        depth = rel @ self.forward
        xu, yu = rel @ self.right / depth, rel @ self.down / depth
        ru = np.hypot(xu, yu)
        rd = ru.copy()
        for _ in range(20):  # Newton's method on rd (1 + K1 rd^2 + K2 rd^4) = ru
            f = rd * (1 + K1 * rd**2 + K2 * rd**4) - ru
            rd -= f / (1 + 3 * K1 * rd**2 + 5 * K2 * rd**4)
        shrink = np.divide(rd, ru, out=np.ones_like(ru), where=ru > 0)
        return np.stack([self.cx + self.focal * xu * shrink, self.cy + self.focal * yu * shrink], axis=-1)

    def figure(self, x: float, z: float, metres: float) -> tuple[float, float, float]:
        """Where feet on the floor at (x, z) are in the picture, and how tall ``metres`` is there: (x, y, tall)."""
        feet, top = self.pixel(np.array([[x, 0.0, z], [x, metres, z]]))
        return float(feet[0]), float(feet[1]), float(np.hypot(*(feet - top)))


@dataclass(frozen=True)
class Surface:
    """A textured rectangle in the plane ``axis`` = ``at``; its texture's columns and rows run along two other axes.

    Texture pixel (s, t) is at world coordinate ``s_origin + s * s_step`` on ``s_axis``, ``t_origin + t * t_step``
    on ``t_axis`` and ``at`` on ``axis`` (0 x, 1 y, 2 z).
    """

    axis: int
    at: float
    s_axis: int
    s_origin: float
    s_step: float
    t_axis: int
    t_origin: float
    t_step: float
    texture: Image
    hole: tuple[float, float, float, float] | None = None
    """A rectangle (s0, t0, s1, t1) of the texture that is not there: the doorway in the wall."""

    def world(self, s: Field, t: Field) -> list[Field]:
        """World coordinates (x, y, z) of texture points."""
        point: list[Field] = [np.zeros_like(s)] * 3
        point[self.axis] = np.full_like(s, self.at)
        point[self.s_axis] = self.s_origin + s * np.float32(self.s_step)
        point[self.t_axis] = self.t_origin + t * np.float32(self.t_step)
        return point


def cast(rays: tuple[Field, Field, Field], surfaces: list[Surface], far: Image) -> tuple[Image, Field]:
    """The colour and the distance (in ray lengths) of what each ray meets first; ``far`` where it meets nothing."""
    shape = rays[0].shape
    image = np.broadcast_to(np.asarray(far, np.uint8), (*shape, 3)).copy()
    nearest = np.full(shape, np.inf, np.float32)
    for surface in surfaces:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32(surface.at - CAMERA_AT[surface.axis]) / rays[surface.axis]
        s = (t * rays[surface.s_axis] + np.float32(CAMERA_AT[surface.s_axis] - surface.s_origin)) / surface.s_step
        u = (t * rays[surface.t_axis] + np.float32(CAMERA_AT[surface.t_axis] - surface.t_origin)) / surface.t_step
        rows, cols = surface.texture.shape[:2]
        # A pixel of overlap at the edges, so that no ray slips through where two surfaces meet.
        hit = (t > 0) & (t < nearest) & (s >= -1) & (s <= cols) & (u >= -1) & (u <= rows)
        if surface.hole is not None:
            s0, t0, s1, t1 = surface.hole
            hit &= ~((s > s0) & (s < s1) & (u > t0) & (u < t1))
        sampled = cv2.remap(
            surface.texture,
            s.astype(np.float32),
            u.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.copyTo(sampled, hit.view(np.uint8), image)
        nearest[hit] = t[hit]
    return image, nearest


def sample(texture: Image, s: NDArray[np.floating[Any]], t: NDArray[np.floating[Any]]) -> Field:
    """Colours (N x 3, float) of ``texture`` at the N points (s, t), bilinear, edges repeated."""
    count = len(s)
    width = 1024  # OpenCV's remap takes maps of at most 32767 a side: fold the points into rows
    pad = -count % width
    maps = [np.pad(m.astype(np.float32), (0, pad)).reshape(-1, width) for m in (s, t)]
    out = cv2.remap(texture, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out.reshape(-1, 3)[:count], np.float32)
