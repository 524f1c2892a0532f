"""The porch (``camera.simulated.style = "porch"`` or ``"porch-grey"``): a front door seen from high up to its right.

A second scene and camera for the simulator, unlike the hall in every way a detector might have been tuned to: the
camera hangs under the porch roof 2.3 m up, 1.6 m right of and 1.6 m out from the door, and looks down at it
through a wide-angle lens (120 degrees across the diagonal, barrel distortion: straight edges bow outwards, and
the picture darkens strongly towards its corners). Its sensor adds noise in whole rows and in coloured blotches, and
its tone curve lifts the shadows. The door is a dark wooden plank door with a frosted glass pane ("porch") or a
grey door in a grey wall ("porch-grey", little contrast). It is hinged on its right, the side nearer the camera,
and swings in, away from the camera, into a lit hall: as it opens the leaf turns edge-on and the hall shows beside it.

The picture is ray cast: every pixel's ray (through the lens) meets the nearest of a few flat, textured surfaces
(wall, floor, roof, the hall inside). The static ones are cast once, supersampled, and the door leaf every frame
over the doorway only. Units are metres: x to the right along the wall, y up, z out of the wall towards the camera;
the doorway is x 0..0.9, y 0..2.05 in the wall z = 0.
"""

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.sources.hall import crossing
from edgecam.sources.people import paint_leaning, paint_on_phone, paint_person, paint_pet
from edgecam.sources.scene import STAND_WALK, Pet, SceneState, Stand

Vec = NDArray[np.float64]
Image = NDArray[np.uint8]
Field = NDArray[np.float32]

DOOR_W, DOOR_H = 0.9, 2.05
_LEAF_Z = -0.05  # the leaf sits this far into the 0.15 m deep doorway
_WALL_DEPTH = 0.15
_CAMERA = np.array([1.6, 2.3, 1.6])
_LOOK_AT = np.array([0.3, 0.95, 0.0])
_FOCAL = 0.5  # focal length in image widths at the centre of the picture
_K1, _K2 = 0.22, 0.02  # barrel distortion: a ray at distorted radius r leaves at tan = r (1 + K1 r^2 + K2 r^4)
_VIGNETTE = 0.45  # relative illumination falls as 1 / (1 + _VIGNETTE * r^2)^2
_SUPERSAMPLE = 2
_PERSON_M = 1.72  # a person's height, metres
_PET_M = 0.5  # a cat nose to tail, metres
_STAND_AT = (DOOR_W / 2, 0.45)  # on the doormat, (x, z)
_LEAN_AT = (-0.12, 0.25)  # against the wall, a shoulder on the door frame's left; mirrored on the right
_ARRIVE = {"left": (-2.1, 3.0), "right": (2.8, 0.3)}  # from round the porch's corner; along the wall under the camera
_ROW_NOISE, _CHROMA_NOISE = 0.5, 1.0  # grey levels at gain 1 of the row and colour noise
_TONE = 0.78  # the tone curve's gamma: below 1 lifts the shadows
_TEXTURE_SEED = 1414  # the porch is one place: its textures do not change with the scene's seed


@dataclass(frozen=True)
class _Look:
    wall: tuple[int, int, int]
    siding: float
    """How dark the shadow line under each siding board is, fraction."""
    trim: tuple[int, int, int]
    leaf: tuple[int, int, int]
    grain: float
    """Grey levels of the planks' grain."""
    glass: tuple[int, int, int] | None
    hall: tuple[int, int, int]
    hall_floor: tuple[int, int, int]


_LOOKS = {
    # A dark door opening onto a lit cream hall.
    "porch": _Look(
        (128, 150, 132), 0.25, (212, 218, 220), (34, 56, 88), 9.0, (150, 178, 196), (160, 196, 222), (70, 110, 150)
    ),
    # A grey door opening onto a grey hall lit to much the same grey: little changes but the edges.
    "porch-grey": _Look(
        (128, 130, 131), 0.05, (136, 138, 139), (120, 121, 123), 2.0, None, (168, 171, 174), (150, 153, 155)
    ),
}


class _Camera:
    """The porch camera's geometry: rays out of pixels through the lens, and world points into pixels."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        forward = _LOOK_AT - _CAMERA
        self.forward = forward / np.linalg.norm(forward)
        right = np.cross(self.forward, [0.0, 1.0, 0.0])
        self.right = right / np.linalg.norm(right)
        self.down = np.cross(self.forward, self.right)
        self.focal = _FOCAL * width
        self.cx, self.cy = (width - 1) / 2, (height - 1) / 2

    def rays(self, scale: int = 1) -> tuple[Field, Field, Field]:
        """World directions (x, y, z), unnormalised, of the rays of every pixel, ``scale`` x ``scale`` per pixel."""
        xs = (np.arange(self.width * scale, dtype=np.float32) + 0.5) / scale - 0.5
        ys = (np.arange(self.height * scale, dtype=np.float32) + 0.5) / scale - 0.5
        xd, yd = np.meshgrid((xs - self.cx) / self.focal, (ys - self.cy) / self.focal)
        r2 = xd * xd + yd * yd
        stretch = 1.0 + _K1 * r2 + _K2 * r2 * r2
        xu, yu = xd * stretch, yd * stretch
        f, r, d = (v.astype(np.float32) for v in (self.forward, self.right, self.down))
        return f[0] + xu * r[0] + yu * d[0], f[1] + xu * r[1] + yu * d[1], f[2] + xu * r[2] + yu * d[2]

    def vignette(self) -> Field:
        """Relative illumination of each pixel: 1 in the middle, darker towards the corners."""
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        r2 = ((x - self.cx) ** 2 + (y - self.cy) ** 2) / self.focal**2
        return np.asarray(1.0 / (1.0 + _VIGNETTE * r2) ** 2, np.float32)

    def pixel(self, points: Vec) -> Vec:
        """Image points (x, y) of world points (..., 3) in front of the camera, through the lens."""
        rel = np.asarray(points, np.float64) - _CAMERA
        depth = rel @ self.forward
        xu, yu = rel @ self.right / depth, rel @ self.down / depth
        ru = np.hypot(xu, yu)
        rd = ru.copy()
        for _ in range(20):  # Newton's method on rd (1 + K1 rd^2 + K2 rd^4) = ru
            f = rd * (1 + _K1 * rd**2 + _K2 * rd**4) - ru
            rd -= f / (1 + 3 * _K1 * rd**2 + 5 * _K2 * rd**4)
        shrink = np.divide(rd, ru, out=np.ones_like(ru), where=ru > 0)
        return np.stack([self.cx + self.focal * xu * shrink, self.cy + self.focal * yu * shrink], axis=-1)

    def figure(self, x: float, z: float, metres: float) -> tuple[float, float, float]:
        """Where feet on the floor at (x, z) are in the picture, and how tall ``metres`` is there: (x, y, tall)."""
        feet, top = self.pixel(np.array([[x, 0.0, z], [x, metres, z]]))
        return float(feet[0]), float(feet[1]), float(np.hypot(*(feet - top)))


@dataclass(frozen=True)
class _Surface:
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


def _cast(rays: tuple[Field, Field, Field], surfaces: list[_Surface], far: Image) -> tuple[Image, Field]:
    """The colour and the distance (in ray lengths) of what each ray meets first; ``far`` where it meets nothing."""
    shape = rays[0].shape
    image = np.broadcast_to(np.asarray(far, np.uint8), (*shape, 3)).copy()
    nearest = np.full(shape, np.inf, np.float32)
    for surface in surfaces:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32(surface.at - _CAMERA[surface.axis]) / rays[surface.axis]
        s = (t * rays[surface.s_axis] + np.float32(_CAMERA[surface.s_axis] - surface.s_origin)) / surface.s_step
        u = (t * rays[surface.t_axis] + np.float32(_CAMERA[surface.t_axis] - surface.t_origin)) / surface.t_step
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


def _boards(
    rng: np.random.Generator,
    size: tuple[int, int],
    colour: tuple[int, int, int],
    pitch: int,
    dark: float,
    grain: float,
    vertical: bool,
) -> Image:
    """A texture of boards ``pitch`` px wide with a darker line along one edge of each and a grain along them."""
    rows, cols = size
    streaks = rng.normal(0.0, grain, (rows // 16 + 2, cols + 2) if vertical else (rows + 2, cols // 16 + 2))
    texture = cv2.resize(streaks.astype(np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR)
    across = np.arange(cols if vertical else rows, dtype=np.float32)
    edge = 1.0 - dark * np.clip(1.0 - (across % pitch) / 3.0, 0.0, 1.0)
    edge = edge[None, :] if vertical else edge[:, None]
    shade = np.broadcast_to(edge, (rows, cols))[:, :, None]
    return np.asarray(np.clip((np.array(colour, np.float32) + texture[:, :, None]) * shade, 0, 255), np.uint8)


def _lit(surface: _Surface, lamp: Vec, strength: float) -> _Surface:
    """``surface`` lit by a lamp at ``lamp``: brighter the nearer, 0.65 of its colour far from it."""
    rows, cols = surface.texture.shape[:2]
    t, s = np.mgrid[0 : rows + 7 : 8, 0 : cols + 7 : 8].astype(np.float32)  # light varies slowly: every 8 px
    d2 = np.zeros_like(s)
    for i, p in enumerate(surface.world(s, t)):
        d2 += (p - np.float32(lamp[i])) ** 2
    light = cv2.resize(0.65 + strength / (1.0 + d2 / 0.9), (cols, rows), interpolation=cv2.INTER_LINEAR)
    lit = np.asarray(np.clip(surface.texture * light[:, :, None], 0, 255), np.uint8)
    return dataclasses.replace(surface, texture=lit)


_PORCH_LAMP = np.array([-0.45, 1.95, 0.25])
_HALL_LAMP = np.array([0.45, 2.35, -1.6])
X, Y, Z = range(3)  # the axes, as _Surface numbers them


def _surfaces(style: str) -> tuple[list[_Surface], Image]:
    """The static surfaces of the porch and of the hall inside, lit, and the leaf's texture (300 px a metre)."""
    look = _LOOKS[style]
    rng = np.random.default_rng(_TEXTURE_SEED)
    per_m, step = 150.0, 1.0 / 150.0
    left, right, front, roof_y = -2.2, 5.0, 2.6, 2.7  # the porch: a wall to the left, open ahead and to the right

    size = (round(roof_y * per_m), round((right - left) * per_m))
    wall = _boards(rng, size, look.wall, 18, look.siding, 3.0, vertical=False)
    door_x0, door_y1 = round(-left * per_m), round((roof_y - DOOR_H) * per_m)  # the doorway in texture pixels
    trim = round(0.09 * per_m)
    frame = (door_x0 - trim, door_y1 - trim), (door_x0 + round(DOOR_W * per_m) + trim, wall.shape[0])
    cv2.rectangle(wall, *frame, look.trim, -1)
    plaque = (door_x0 + round(1.25 * per_m), round(1.0 * per_m))
    cv2.rectangle(wall, plaque, (plaque[0] + 30, plaque[1] + 22), (40, 44, 48), -1)
    lamp = (door_x0 - round(0.45 * per_m), round(0.75 * per_m))
    cv2.rectangle(wall, (lamp[0] - 10, lamp[1] - 16), (lamp[0] + 10, lamp[1] + 16), (50, 52, 55), -1)
    cv2.rectangle(wall, (lamp[0] - 6, lamp[1] - 10), (lamp[0] + 6, lamp[1] + 10), (200, 235, 250), -1)
    hole = (door_x0 + 0.5, door_y1 + 0.5, door_x0 + DOOR_W * per_m - 0.5, wall.shape[0] + 1.0)
    side = _boards(rng, (size[0], round(front * per_m)), look.wall, 18, look.siding, 3.0, vertical=False)

    sill = round(_WALL_DEPTH * per_m)  # the floor starts under the door, at the threshold
    floor = _boards(rng, (round(front * per_m) + sill, size[1]), (118, 122, 126), 90, 0.3, 4.0, vertical=True)
    for row in range(sill, floor.shape[0], 90):
        floor[row : row + 3] = np.asarray(floor[row : row + 3] * 0.7, np.uint8)
    mat_x, mat_z = round((0.08 - left) * per_m), sill + round(0.1 * per_m)  # the doormat: 0.74 m by 0.52 m
    cv2.rectangle(floor, (mat_x, mat_z), (mat_x + round(0.74 * per_m), mat_z + round(0.52 * per_m)), (52, 84, 112), -1)
    roof = _boards(rng, floor.shape[:2], (150, 160, 166), 15, 0.2, 3.0, vertical=False)
    jamb = np.full((round(DOOR_H * per_m), round(_WALL_DEPTH * per_m) + 2, 3), look.trim, np.uint8)
    porch = [
        _Surface(Z, 0.0, X, left, step, Y, roof_y, -step, wall, hole),
        _Surface(X, left, Z, 0.0, step, Y, roof_y, -step, side),
        _Surface(Y, 0.0, X, left, step, Z, -_WALL_DEPTH, step, floor),
        _Surface(Y, roof_y, X, left, step, Z, -_WALL_DEPTH, step, roof),
        _Surface(X, 0.0, Z, 0.0, -step, Y, DOOR_H, -step, jamb),
        _Surface(X, DOOR_W, Z, 0.0, -step, Y, DOOR_H, -step, jamb),
    ]

    inside, deep = 100.0, 3.85  # the hall behind the door: 100 px a metre, from the doorway 3.85 m in
    i_step = 1.0 / inside
    hall_wall = _boards(rng, (round(2.6 * inside), round(deep * inside)), look.hall, 1000, 0.0, 2.0, vertical=True)
    back = _boards(rng, (round(2.6 * inside), round(3.3 * inside)), look.hall, 1000, 0.0, 2.0, vertical=True)
    cv2.rectangle(back, (150, 60), (230, 120), (60, 70, 80), -1)  # a picture on the far wall
    hall_floor = _boards(rng, (round(deep * inside), 330), look.hall_floor, 14, 0.25, 4.0, vertical=True)
    hall_roof = np.full_like(hall_floor, [round(0.8 * c) for c in look.hall])
    z0 = -_WALL_DEPTH
    hall = [
        _Surface(Z, z0 - deep, X, -1.2, i_step, Y, 2.6, -i_step, back),
        _Surface(X, -1.2, Z, z0, -i_step, Y, 2.6, -i_step, hall_wall),
        _Surface(X, 2.1, Z, z0, -i_step, Y, 2.6, -i_step, hall_wall),
        _Surface(Y, 0.0, X, -1.2, i_step, Z, z0, -i_step, hall_floor),
        _Surface(Y, 2.6, X, -1.2, i_step, Z, z0, -i_step, hall_roof),
    ]
    surfaces = [_lit(s, _PORCH_LAMP, 0.7) for s in porch] + [_lit(s, _HALL_LAMP, 0.5) for s in hall]

    leaf_m = 300.0
    planks = 6
    pitch = round(DOOR_W * leaf_m / planks)
    leaf = _boards(rng, (round(DOOR_H * leaf_m), planks * pitch), look.leaf, pitch, 0.35, look.grain, vertical=True)
    if look.glass is not None:
        cv2.rectangle(leaf, (45, 150), (leaf.shape[1] - 46, 270), (20, 30, 45), -1)
        cv2.rectangle(leaf, (55, 160), (leaf.shape[1] - 56, 260), look.glass, -1)
    handle = (round(0.1 * leaf_m), round((DOOR_H - 1.0) * leaf_m))
    cv2.rectangle(leaf, (handle[0] - 8, handle[1] - 30), (handle[0] + 8, handle[1] + 30), (40, 120, 160), -1)
    return surfaces, leaf


def _sample(texture: Image, s: NDArray[np.floating[Any]], t: NDArray[np.floating[Any]]) -> Field:
    """Colours (N x 3, float) of ``texture`` at the N points (s, t), bilinear, edges repeated."""
    count = len(s)
    width = 1024  # OpenCV's remap takes maps of at most 32767 a side: fold the points into rows
    pad = -count % width
    maps = [np.pad(m.astype(np.float32), (0, pad)).reshape(-1, width) for m in (s, t)]
    out = cv2.remap(texture, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out.reshape(-1, 3)[:count], np.float32)


def porch_door_zone(width: int, height: int) -> list[tuple[float, float]]:
    """The doorway's outline through the lens, 3 cm outside it, as ``[x, y]`` fractions: the porch's door zone.

    The leaf swings in, behind the wall, so everything the door does is seen through the doorway.
    """
    camera = _Camera(width, height)
    margin = 0.03
    x0, x1, y1 = -margin, DOOR_W + margin, DOOR_H + margin
    edge = np.linspace(0.0, 1.0, 5)[:-1]
    outline = [(x0 + (x1 - x0) * p, y1) for p in edge]
    outline += [(x1, y1 - y1 * p) for p in edge]
    outline += [(x1 - (x1 - x0) * p, 0.0) for p in edge]
    outline += [(x0, y1 * p) for p in edge]
    points = camera.pixel(np.array([[x, y, 0.0] for x, y in outline]))
    return [(round(float(x) / width, 3), round(float(y) / height, 3)) for x, y in points]


@functools.lru_cache(maxsize=4)
def _static(style: str, width: int, height: int) -> tuple[Image, Field, Image]:
    """The porch without its door leaf (supersampled), the distance along each pixel's ray, and the leaf texture."""
    camera = _Camera(width, height)
    surfaces, leaf = _surfaces(style)
    far = np.array((70, 96, 80), np.uint8)  # the garden beyond the porch
    fine, _ = _cast(camera.rays(_SUPERSAMPLE), surfaces, far)
    image = np.asarray(cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    _, nearest = _cast(camera.rays(), surfaces, far)
    for array in (image, nearest, leaf):
        array.flags.writeable = False
    return image, nearest, leaf


class Porch:
    """Paints the porch at ``width`` x ``height`` through its lens; ``develop`` is its sensor and tone curve."""

    def __init__(self, style: str, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._camera = _Camera(width, height)
        self._open_base, nearest, self._leaf = _static(style, width, height)
        self.zone = porch_door_zone(width, height)
        xs = [x for x, _ in self.zone]
        self.right_edge = float(np.mean(sorted(xs)[-len(xs) // 3 :]))
        """The door zone's right border as a fraction of the width (its mean over the right-hand points)."""
        rays = self._camera.rays()
        with np.errstate(invalid="ignore"):
            inner = np.isfinite(nearest) & (np.float32(_CAMERA[2]) + nearest * rays[2] < -0.001)  # past the wall
        self._inner = np.flatnonzero(inner)  # the doorway's pixels: the only ones where the leaf can show
        self._rays = tuple(r.ravel()[self._inner] for r in rays)
        self._ray_length = np.sqrt(sum(r * r for r in self._rays))
        self._nearest = nearest.ravel()[self._inner]
        self._closed = self._open_base.copy()
        self._paint_leaf(self._closed, 0.0)
        self._vignette = cv2.merge([self._camera.vignette()] * 3)
        self._tone = np.asarray(np.clip(255.0 * (np.arange(256) / 255.0) ** _TONE + 0.5, 0, 255), np.uint8)

    def paint(self, state: SceneState, t: float) -> Image:
        """The porch at ``t`` seconds in ``state``, before the lens's vignetting and the sensor."""
        image = self._closed.copy() if state.door_angle == 0.0 else self._open_base.copy()
        if state.door_angle != 0.0:
            self._paint_leaf(image, state.door_angle)
        for stand, how_far, phase in state.standing:
            self._paint_stand(image, stand, how_far, phase, t)
        for pet, across, phase in state.pets:
            self._paint_pet(image, pet, across, phase)
        return image

    def _paint_leaf(self, image: Image, angle: float) -> None:
        """The leaf swung ``angle`` degrees in about its right edge, where nearer than the rest; edges smoothed."""
        if not len(self._inner):
            return
        a = math.radians(angle)
        across = np.array([-math.cos(a), 0.0, -math.sin(a)])  # from the hinge to the leaf's free edge
        normal = np.array([-math.sin(a), 0.0, math.cos(a)])
        hinge = np.array([DOOR_W, 0.0, _LEAF_Z])
        dx, dy, dz = self._rays
        towards = dx * np.float32(normal[0]) + dz * np.float32(normal[2])
        with np.errstate(divide="ignore"):
            t = np.float32(np.dot(hinge - _CAMERA, normal)) / towards
        u = (np.float32(_CAMERA[0] - hinge[0]) + t * dx) * np.float32(across[0])
        u += (np.float32(_CAMERA[2] - hinge[2]) + t * dz) * np.float32(across[2])
        v = np.float32(_CAMERA[1]) + t * dy
        # A pixel spans about this much of the leaf, metres: along v as seen square on, along u foreshortened.
        per_px_v = np.abs(t) * self._ray_length / np.float32(self._camera.focal)
        per_px_u = per_px_v * np.minimum(self._ray_length / (np.abs(towards) + 1e-6), np.float32(50.0))
        inside = np.minimum(np.minimum(u, DOOR_W - u) / per_px_u, np.minimum(v, DOOR_H - v) / per_px_v)
        cover = np.clip(inside + 0.5, 0.0, 1.0) * ((t > 0) & (t < self._nearest))
        rows, cols = self._leaf.shape[:2]
        leaf = _sample(self._leaf, (DOOR_W - u) * np.float32(cols / DOOR_W), (DOOR_H - v) * np.float32(rows / DOOR_H))
        flat = image.reshape(-1, 3)
        region = flat[self._inner].astype(np.float32)
        shade = np.float32(0.6 + 0.4 * math.cos(a))
        blended = region + (leaf * shade - region) * cover[:, None]
        flat[self._inner] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    def lens(self, image: Image) -> Image:
        """The wide-angle lens's vignetting: the corners get far less light than the middle."""
        return np.asarray(cv2.multiply(image, self._vignette, dtype=cv2.CV_8U), np.uint8)

    def develop(self, image: Image, rng: np.random.Generator, gain: float) -> Image:
        """The sensor's row noise and colour blotches at analogue ``gain``, then the lifted tone curve."""
        columns = self.width // 4 + 1
        blotches = rng.standard_normal((self.height // 4 + 1, columns, 3), dtype=np.float32)
        blotches -= blotches.mean(axis=2, keepdims=True)  # colour only: the channels' mean (brightness) stays
        blotches *= np.float32(_CHROMA_NOISE * gain / math.sqrt(2.0 / 3.0))  # less the mean, sqrt(2/3) was left
        # Up to full height, add a level per row, then up to full width: the rows' levels stay whole rows.
        noise = np.asarray(cv2.resize(blotches, (columns, self.height), interpolation=cv2.INTER_LINEAR), np.float32)
        noise += rng.standard_normal((self.height, 1, 1), dtype=np.float32) * np.float32(_ROW_NOISE * gain)
        noise = np.asarray(cv2.resize(noise, (self.width, self.height), interpolation=cv2.INTER_LINEAR), np.float32)
        return np.asarray(cv2.LUT(cv2.add(image, noise, dtype=cv2.CV_8U), self._tone), np.uint8)

    def _paint_stand(self, image: Image, stand: Stand, how_far: float, phase: float, t: float) -> None:
        """A person at the door: walking up to it, then standing on the doormat, leaning on the frame or phoning."""
        towards = 1.0 if stand.side == "left" else -1.0  # a leaner leans on the frame on the side they came from
        spot = _STAND_AT
        if stand.pose == "lean":
            spot = _LEAN_AT if stand.side == "left" else (DOOR_W - _LEAN_AT[0], _LEAN_AT[1])
        edge = _ARRIVE[stand.side]
        x = edge[0] + (spot[0] - edge[0]) * how_far
        z = edge[1] + (spot[1] - edge[1]) * how_far
        px, feet, tall = self._camera.figure(x, z, _PERSON_M)
        tall /= 0.975  # the figures' heads reach 0.975 of their "tall"
        standing_for = t - stand.start - STAND_WALK
        if how_far < 1.0:
            paint_person(image, px, feet, tall, phase, stand.colour)
        elif stand.pose == "stand":
            sway = 0.04 * tall * math.sin(2.0 * math.pi * standing_for / 5.0)
            paint_person(image, px + sway, feet, tall, 0.0, stand.colour)
        elif stand.pose == "phone":
            paint_on_phone(image, px, feet, tall, stand.colour, standing_for, towards)
        else:
            paint_leaning(image, px, feet, tall, stand.colour, standing_for, towards)

    def _paint_pet(self, image: Image, pet: Pet, across: float, phase: float) -> None:
        """A cat along the front of the doorway, passing the middle of the door half way."""
        path = [-2.0, DOOR_W / 2, 2.8]
        if pet.side == "right":
            path.reverse()
        x = crossing(across, *path)
        back, nose = self._camera.pixel(np.array([[x - _PET_M / 2, 0.0, 0.12], [x + _PET_M / 2, 0.0, 0.12]]))
        middle = (back + nose) / 2
        length = float(np.hypot(*(nose - back)))
        paint_pet(
            image, float(middle[0]), float(middle[1]), length if path[-1] > path[0] else -length, phase, pet.colour
        )
