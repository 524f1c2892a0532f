"""The hall (``camera.simulated.style = "hall"``): a white panelled door seen straight on in a beige hall.

The camera faces the wall at eye level through an ordinary lens. The door fills the middle third; it swings away
from the camera into a darker room. People and a pet are painted where they would stand on the hall floor.
"""

import math

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.sources.people import paint_leaning, paint_on_phone, paint_person, paint_pet
from edgecam.sources.scene import STAND_WALK, Pet, SceneState, Stand, StepOut, Walk

DOOR_ZONE: list[tuple[float, float]] = [(0.38, 0.14), (0.62, 0.14), (0.62, 0.88), (0.38, 0.88)]
"""The door opening as ``[x, y]`` fractions of width and height: set ``motion.zone`` to this for the door."""

_DOOR_X0, _DOOR_Y0, _DOOR_X1, _DOOR_Y1 = 0.38, 0.14, 0.62, 0.88
_ARCHITRAVE = 0.022  # door frame moulding width, fraction of the image width
_HORIZON = 0.45  # eye level, fraction of the image height
_PERSON_HEIGHT = 0.62  # fraction of the image height
_PET_LENGTH = 0.5  # nose to tail, fraction of the door's width
_LEAN_OUT = 0.12  # a leaning person's feet are this far (fraction of their height) out from what they lean on


def crossing(p: float, start: float, middle: float, end: float) -> float:
    """Where something is ``p`` (0..1) of the way from ``start`` to ``end``, passing ``middle`` half way."""
    return start + (middle - start) * 2.0 * p if p < 0.5 else middle + (end - middle) * (2.0 * p - 1.0)


class Hall:
    """Paints the hall at ``width`` x ``height``: the static parts once, the door and figures each frame."""

    zone = DOOR_ZONE
    right_edge = _DOOR_X1
    """The door zone's right border as a fraction of the width: the shadow's and side light's edge are inside it."""

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        self.width = width
        self.height = height
        self._scale = height / 480.0
        self._base = self._paint_base(rng)

    def paint(self, state: SceneState, t: float) -> NDArray[np.uint8]:
        """The hall at ``t`` seconds in ``state``, lit evenly at the lit scene's exposure."""
        image = self._base.copy()
        self._paint_door(image, state.door_angle)
        for walk, how_far, phase in state.walkers:
            self._paint_walker(image, walk, how_far, phase)
        for step_out, progress in state.stepping:
            self._paint_step_out(image, step_out, progress)
        for stand, how_far, phase in state.standing:
            self._paint_stand(image, stand, how_far, phase, t)
        for pet, across, phase in state.pets:
            self._paint_pet(image, pet, across, phase)
        return image

    def _px(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.width), round(y * self.height)

    def _paint_base(self, rng: np.random.Generator) -> NDArray[np.uint8]:
        """The static parts: wall, floor, door frame and the room behind the door."""
        w, h = self.width, self.height
        blotches = rng.normal(0.0, 4.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
        texture = cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)
        texture += rng.normal(0.0, 2.0, (h, w)).astype(np.float32)
        image: NDArray[np.uint8] = np.empty((h, w, 3), np.uint8)
        channel = np.empty((h, w), np.float32)  # a channel at a time: no float copy of the whole picture
        for c, wall in enumerate(np.array((168, 182, 194), np.float32)):
            np.add(texture, wall, out=channel)
            image[:, :, c] = np.clip(channel, 0, 255, out=channel)  # the cast truncates, as astype does

        floor_top = self._px(0.0, _DOOR_Y1)[1]
        image[floor_top:] = (62, 98, 132)
        for y in np.linspace(floor_top, h, 6)[1:-1]:
            cv2.line(image, (0, int(y)), (w, int(y)), (50, 80, 110), max(1, round(self._scale)))
        cv2.rectangle(image, (0, floor_top - round(0.02 * h)), (w, floor_top), (222, 226, 229), -1)

        a = _ARCHITRAVE
        cv2.rectangle(
            image, self._px(_DOOR_X0 - a, _DOOR_Y0 - a), self._px(_DOOR_X1 + a, _DOOR_Y1), (226, 229, 231), -1
        )
        cv2.rectangle(image, self._px(_DOOR_X0, _DOOR_Y0), self._px(_DOOR_X1, _DOOR_Y1), (52, 48, 46), -1)
        room_floor = 0.62
        cv2.rectangle(image, self._px(_DOOR_X0, room_floor), self._px(_DOOR_X1, _DOOR_Y1), (38, 52, 66), -1)
        cv2.rectangle(image, self._px(0.47, 0.27), self._px(0.57, 0.47), (178, 192, 200), -1)
        cv2.rectangle(image, self._px(0.52, 0.50), self._px(0.60, 0.70), (30, 34, 90), -1)
        return image

    def _project(self, u: NDArray[np.float64], v: NDArray[np.float64], angle: float) -> NDArray[np.int32]:
        """Image points (fixed point, 4 fraction bits) of door-leaf points (u across, v down) opened ``angle``."""
        a = math.radians(angle)
        x0, y0 = _DOOR_X0 * self.width, _DOOR_Y0 * self.height
        leaf_w, leaf_h = (_DOOR_X1 - _DOOR_X0) * self.width, (_DOOR_Y1 - _DOOR_Y0) * self.height
        cx, cy = (_DOOR_X0 + _DOOR_X1) / 2 * self.width, _HORIZON * self.height
        depth = u * leaf_w * math.sin(a)
        s = 3.0 * leaf_w / (3.0 * leaf_w + depth)
        x = cx + (x0 + u * leaf_w * math.cos(a) - cx) * s
        y = cy + (y0 + v * leaf_h - cy) * s
        return np.rint(np.stack([x, y], axis=-1) * 16).astype(np.int32)

    def _paint_door(self, image: NDArray[np.uint8], angle: float) -> None:
        """The door leaf hinged on the left, swung ``angle`` degrees away from the camera, shaded as it turns."""
        shade = 0.55 + 0.45 * math.cos(math.radians(angle))
        leaf = tuple(round(c * shade) for c in (220, 223, 225))
        panel = tuple(round(c * shade) for c in (196, 200, 203))
        corners = np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0])
        cv2.fillConvexPoly(image, self._project(*corners, angle), leaf, cv2.LINE_AA, shift=4)
        for top, bottom in ((0.07, 0.44), (0.54, 0.93)):
            u = np.array([0.16, 0.84, 0.84, 0.16])
            v = np.array([top, top, bottom, bottom])
            cv2.fillConvexPoly(image, self._project(u, v, angle), panel, cv2.LINE_AA, shift=4)
        handle = self._project(np.array([0.9]), np.array([0.5]), angle)[0]
        radius = max(2, round(0.012 * self.height * shade)) * 16
        cv2.circle(image, (int(handle[0]), int(handle[1])), radius, (70, 70, 72), -1, cv2.LINE_AA, shift=4)

    def _tall(self, scale: float = 1.0) -> float:
        return _PERSON_HEIGHT * self.height * scale

    def _paint_walker(self, image: NDArray[np.uint8], walk: Walk, how_far: float, phase: float) -> None:
        """A passer-by that never reaches the door frame."""
        half = 0.17 * _PERSON_HEIGHT * self.height
        if walk.side == "left":
            turn = (_DOOR_X0 - 2 * _ARCHITRAVE) * self.width - half
            x = -half + (turn + half) * how_far
        else:
            turn = (_DOOR_X1 + 2 * _ARCHITRAVE) * self.width + half
            x = self.width + half - (self.width + half - turn) * how_far
        paint_person(image, x, 0.97 * self.height, self._tall(), phase, walk.colour)

    def _paint_stand(self, image: NDArray[np.uint8], stand: Stand, how_far: float, phase: float, t: float) -> None:
        """A person in front of the closed door: walking up to their place there, then in their pose."""
        centre = (_DOOR_X0 + _DOOR_X1) / 2 * self.width
        edge = -0.2 * self.width if stand.side == "left" else 1.2 * self.width
        feet = 0.93 * self.height
        standing_for = t - stand.start - STAND_WALK
        if stand.pose == "stand":  # shifting their weight from side to side
            sway = 0.012 * self.width * math.sin(2.0 * math.pi * standing_for / 5.0) if how_far >= 1.0 else 0.0
            x = edge + (centre - edge) * how_far + sway
            paint_person(image, x, feet, self._tall(), phase, stand.colour)
            return
        towards = 1.0 if stand.side == "left" else -1.0  # a leaner leans on the frame on the side they came from
        frame = (_DOOR_X0 if stand.side == "left" else _DOOR_X1) * self.width
        spot = centre if stand.pose == "phone" else frame - towards * _LEAN_OUT * self._tall()
        if how_far < 1.0:
            paint_person(image, edge + (spot - edge) * how_far, feet, self._tall(), phase, stand.colour)
        elif stand.pose == "phone":
            paint_on_phone(image, spot, feet, self._tall(), stand.colour, standing_for, towards)
        else:
            paint_leaning(image, spot, feet, self._tall(), stand.colour, standing_for, towards)

    def _paint_step_out(self, image: NDArray[np.uint8], step: StepOut, progress: float) -> None:
        """Out of the room towards the camera (growing) for the first 40 %, then sideways out of the picture."""
        centre = (_DOOR_X0 + _DOOR_X1) / 2 * self.width
        phase = 2.0 * math.pi * 4.0 * progress
        if progress < 0.4:
            p = progress / 0.4
            feet = (0.72 + 0.25 * p) * self.height
            paint_person(image, centre, feet, self._tall(0.6 + 0.4 * p), phase, step.colour)
            return
        p = (progress - 0.4) / 0.6
        edge = -0.2 * self.width if step.side == "left" else 1.2 * self.width
        paint_person(image, centre + (edge - centre) * p, 0.97 * self.height, self._tall(), phase, step.colour)

    def _paint_pet(self, image: NDArray[np.uint8], pet: Pet, across: float, phase: float) -> None:
        """A cat walking along the threshold, in front of the bottom of the door."""
        length = _PET_LENGTH * (_DOOR_X1 - _DOOR_X0) * self.width
        start, end = -length, self.width + length
        if pet.side == "right":
            start, end, length = end, start, -length
        x = crossing(across, start, (_DOOR_X0 + _DOOR_X1) / 2 * self.width, end)
        paint_pet(image, x, (_DOOR_Y1 + 0.015) * self.height, length, phase, pet.colour)
