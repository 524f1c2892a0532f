"""The porch (``camera.simulated.style = "porch"`` or ``"porch-grey"``): a front door seen from high up to its right.

A second scene and camera for the simulator, unlike the hall in every way a detector might have been tuned to: the
camera hangs under the porch roof 2.3 m up, 1.6 m right of and 1.6 m out from the door, and looks down at it
through a wide-angle lens (120 degrees across the diagonal, barrel distortion: straight edges bow outwards, and
the picture darkens strongly towards its corners). Its sensor adds noise in whole rows and in coloured blotches, and
its tone curve lifts the shadows. The door is a dark wooden plank door with a frosted glass pane ("porch") or a
grey door in a grey wall ("porch-grey", little contrast). It is hinged on its right, the side nearer the camera,
and swings in, away from the camera, into a lit hall: as it opens the leaf turns edge-on and the hall shows beside it.

The picture is ray cast (``porch_camera``): every pixel's ray (through the lens) meets the nearest of a few flat,
textured surfaces (wall, floor, roof, the hall inside). The static ones are cast once, supersampled, and the door
leaf every frame over the doorway only. Units are metres: x to the right along the wall, y up, z out of the wall
towards the camera; the doorway is x 0..0.9, y 0..2.05 in the wall z = 0.
"""

import dataclasses
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from edgecam.sources.hall import crossing
from edgecam.sources.people import paint_leaning, paint_on_phone, paint_person, paint_pet
from edgecam.sources.porch_camera import CAMERA_AT, Camera, Field, Image, Surface, Vec, cast, sample
from edgecam.sources.scene import STAND_WALK, Pet, SceneState, Stand

DOOR_W, DOOR_H = 0.9, 2.05
_LEAF_Z = -0.05  # the leaf sits this far into the 0.15 m deep doorway
_WALL_DEPTH = 0.15
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


def _lit(surface: Surface, lamp: Vec, strength: float) -> Surface:
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
X, Y, Z = range(3)  # the axes, as Surface numbers them


def _surfaces(style: str) -> tuple[list[Surface], Image]:
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
        Surface(Z, 0.0, X, left, step, Y, roof_y, -step, wall, hole),
        Surface(X, left, Z, 0.0, step, Y, roof_y, -step, side),
        Surface(Y, 0.0, X, left, step, Z, -_WALL_DEPTH, step, floor),
        Surface(Y, roof_y, X, left, step, Z, -_WALL_DEPTH, step, roof),
        Surface(X, 0.0, Z, 0.0, -step, Y, DOOR_H, -step, jamb),
        Surface(X, DOOR_W, Z, 0.0, -step, Y, DOOR_H, -step, jamb),
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
        Surface(Z, z0 - deep, X, -1.2, i_step, Y, 2.6, -i_step, back),
        Surface(X, -1.2, Z, z0, -i_step, Y, 2.6, -i_step, hall_wall),
        Surface(X, 2.1, Z, z0, -i_step, Y, 2.6, -i_step, hall_wall),
        Surface(Y, 0.0, X, -1.2, i_step, Z, z0, -i_step, hall_floor),
        Surface(Y, 2.6, X, -1.2, i_step, Z, z0, -i_step, hall_roof),
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


def porch_door_zone(width: int, height: int) -> list[tuple[float, float]]:
    """The doorway's outline through the lens, 3 cm outside it, as ``[x, y]`` fractions: the porch's door zone.

    The leaf swings in, behind the wall, so everything the door does is seen through the doorway.
    """
    camera = Camera(width, height)
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
    camera = Camera(width, height)
    surfaces, leaf = _surfaces(style)
    far = np.array((70, 96, 80), np.uint8)  # the garden beyond the porch
    fine, _ = cast(camera.rays(_SUPERSAMPLE), surfaces, far)
    image = np.asarray(cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    _, nearest = cast(camera.rays(), surfaces, far)
    for array in (image, nearest, leaf):
        array.flags.writeable = False
    return image, nearest, leaf


class Porch:
    """Paints the porch at ``width`` x ``height`` through its lens; ``develop`` is its sensor and tone curve."""

    def __init__(self, style: str, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._camera = Camera(width, height)
        self._open_base, nearest, self._leaf = _static(style, width, height)
        self.zone = porch_door_zone(width, height)
        xs = [x for x, _ in self.zone]
        self.right_edge = float(np.mean(sorted(xs)[-len(xs) // 3 :]))
        """The door zone's right border as a fraction of the width (its mean over the right-hand points)."""
        rays = self._camera.rays()
        with np.errstate(invalid="ignore"):
            inner = np.isfinite(nearest) & (np.float32(CAMERA_AT[2]) + nearest * rays[2] < -0.001)  # past the wall
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
            t = np.float32(np.dot(hinge - CAMERA_AT, normal)) / towards
        u = (np.float32(CAMERA_AT[0] - hinge[0]) + t * dx) * np.float32(across[0])
        u += (np.float32(CAMERA_AT[2] - hinge[2]) + t * dz) * np.float32(across[2])
        v = np.float32(CAMERA_AT[1]) + t * dy
        # A pixel spans about this much of the leaf, metres: along v as seen square on, along u foreshortened.
        per_px_v = np.abs(t) * self._ray_length / np.float32(self._camera.focal)
        per_px_u = per_px_v * np.minimum(self._ray_length / (np.abs(towards) + 1e-6), np.float32(50.0))
        inside = np.minimum(np.minimum(u, DOOR_W - u) / per_px_u, np.minimum(v, DOOR_H - v) / per_px_v)
        cover = np.clip(inside + 0.5, 0.0, 1.0) * ((t > 0) & (t < self._nearest))
        rows, cols = self._leaf.shape[:2]
        leaf = sample(self._leaf, (DOOR_W - u) * np.float32(cols / DOOR_W), (DOOR_H - v) * np.float32(rows / DOOR_H))
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
