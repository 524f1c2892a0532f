"""People and a pet for the simulated door scene: flat figures painted where and as large as a scene says.

The scene (``hall.py``, ``porch.py``) works out where a figure's feet are in the picture and how tall it is there;
these functions only draw. Sizes are fractions of ``tall``, the figure's height in pixels from the soles to the top
of the head (less a little hair).
"""

import math

import cv2
import numpy as np
from numpy.typing import NDArray

Colour = tuple[int, int, int]
"""BGR."""
SKIN: Colour = (120, 150, 190)
PHONE: Colour = (28, 28, 32)


def paint_person(image: NDArray[np.uint8], x: float, feet: float, tall: float, phase: float, colour: Colour) -> None:
    """A person-shaped blob standing at ``x`` with feet at ``feet``: legs and arms swinging with ``phase``."""
    hip, shoulder = feet - 0.47 * tall, feet - 0.80 * tall
    swing = 0.11 * tall * math.sin(phase)
    limb = max(1, round(0.07 * tall))
    dark = tuple(max(0, c - 25) for c in colour)
    for dx in (swing, -swing):
        cv2.line(image, (round(x), round(hip)), (round(x + dx), round(feet)), dark, limb, cv2.LINE_AA)
    body_centre = (round(x), round((hip + shoulder) / 2))
    body_axes = (round(0.11 * tall), round((hip - shoulder) / 2 + 0.04 * tall))
    cv2.ellipse(image, body_centre, body_axes, 0, 0, 360, colour, -1, cv2.LINE_AA)
    for dx in (-0.6 * swing, 0.6 * swing):
        cv2.line(
            image,
            (round(x), round(shoulder + 0.03 * tall)),
            (round(x + dx), round(hip + 0.02 * tall)),
            colour,
            max(1, round(0.05 * tall)),
            cv2.LINE_AA,
        )
    head = (round(x), round(feet - 0.90 * tall))
    cv2.circle(image, head, round(0.075 * tall), SKIN, -1, cv2.LINE_AA)


def _darker(colour: Colour, by: int) -> Colour:
    blue, green, red = (max(0, c - by) for c in colour)
    return blue, green, red


class _Figure:
    """Draws limbs between points given as (across, up) fractions of ``tall`` from the feet, leaning by a shear."""

    def __init__(self, image: NDArray[np.uint8], x: float, feet: float, tall: float, lean: float) -> None:
        self.image, self.x, self.feet, self.tall, self.lean = image, x, feet, tall, lean

    def at(self, across: float, up: float) -> tuple[int, int]:
        """Pixel (fixed point, 4 fraction bits) of a body point; ``lean`` shifts it sideways by ``up * lean``."""
        px = self.x + (across + up * self.lean) * self.tall
        return round(px * 16), round((self.feet - up * self.tall) * 16)

    def limb(self, a: tuple[float, float], b: tuple[float, float], colour: Colour, width: float) -> None:
        thickness = max(1, round(width * self.tall))
        cv2.line(self.image, self.at(*a), self.at(*b), colour, thickness, cv2.LINE_AA, shift=4)

    def body(self, colour: Colour) -> None:
        centre = self.at(0.0, 0.635)
        axes = (round(0.11 * self.tall * 16), round(0.205 * self.tall * 16))
        tilt = -math.degrees(math.atan(self.lean))
        cv2.ellipse(self.image, centre, axes, tilt, 0, 360, colour, -1, cv2.LINE_AA, shift=4)

    def head(self, across: float) -> None:
        cv2.circle(self.image, self.at(across, 0.90), round(0.075 * self.tall * 16), SKIN, -1, cv2.LINE_AA, shift=4)


def paint_on_phone(
    image: NDArray[np.uint8], x: float, feet: float, tall: float, colour: Colour, t: float, hand: float
) -> None:
    """A person standing on the phone: the ``hand`` side's arm (-1 left, 1 right) bent up to hold it to the head.

    While talking they shift their weight slowly, nod, and now and then move the phone a little.
    """
    dark = _darker(colour, 25)
    figure = _Figure(image, x + 0.01 * tall * math.sin(2.0 * math.pi * t / 6.0), feet, tall, 0.0)
    nod = 0.008 * math.sin(2.0 * math.pi * t / 2.3)
    for foot in (-0.045, 0.045):
        figure.limb((0.0, 0.47), (foot, 0.0), dark, 0.07)
    figure.body(colour)
    figure.limb((-hand * 0.07, 0.77), (-hand * 0.1, 0.47), colour, 0.05)  # the other arm hangs
    elbow = (hand * 0.17, 0.70 + 0.015 * math.sin(2.0 * math.pi * t / 4.1))
    figure.limb((hand * 0.07, 0.77), elbow, colour, 0.05)
    at_ear = (hand * 0.075 + nod, 0.89)
    figure.limb(elbow, at_ear, colour, 0.045)
    figure.head(nod)
    phone = figure.at(at_ear[0] + hand * 0.01, at_ear[1] + 0.01)
    half = (round(0.018 * tall * 16), round(0.04 * tall * 16))
    corners = (phone[0] - half[0], phone[1] - half[1]), (phone[0] + half[0], phone[1] + half[1])
    cv2.rectangle(image, *corners, PHONE, -1, cv2.LINE_AA, shift=4)


def paint_leaning(
    image: NDArray[np.uint8], x: float, feet: float, tall: float, colour: Colour, t: float, towards: float
) -> None:
    """A person leaning a shoulder on something ``towards`` one side (-1 left, 1 right), legs crossed, arms folded.

    ``x`` is where the feet are; the head is about a quarter of ``tall`` over to the ``towards`` side. They
    breathe and look about a little.
    """
    dark = _darker(colour, 25)
    lean = towards * (0.2 + 0.01 * math.sin(2.0 * math.pi * t / 4.0))
    figure = _Figure(image, x, feet, tall, lean)
    figure.limb((0.0, 0.47), (-towards * 0.05, 0.0), dark, 0.07)
    figure.limb((0.0, 0.47), (towards * 0.06, 0.02), dark, 0.07)  # crossed over in front
    figure.body(colour)
    for side in (-1.0, 1.0):
        figure.limb((side * 0.08, 0.77), (side * 0.1, 0.62), colour, 0.05)
    figure.limb((-0.1, 0.62), (0.1, 0.64), dark, 0.055)  # the folded forearms
    figure.head(0.012 * math.sin(2.0 * math.pi * t / 7.0))


def paint_pet(image: NDArray[np.uint8], x: float, ground: float, length: float, phase: float, colour: Colour) -> None:
    """A cat walking with its feet on ``ground``, body centre at ``x``, nose to tail ``length`` px.

    ``length`` is negative for a cat walking to the left. ``phase`` (radians) moves its legs.
    """
    size, facing = abs(length), math.copysign(1.0, length)
    dark = _darker(colour, 30)

    def at(along: float, up: float) -> tuple[int, int]:
        return round((x + facing * along * size) * 16), round((ground - up * size) * 16)

    step = 0.06 * math.sin(phase)
    leg = max(1, round(0.05 * size))
    for hip, swing in ((0.22, step), (-0.22, -step), (0.18, -step), (-0.26, step)):
        cv2.line(image, at(hip, 0.22), at(hip + swing, 0.0), dark, leg, cv2.LINE_AA, shift=4)
    axes = (round(0.34 * size * 16), round(0.12 * size * 16))
    cv2.ellipse(image, at(0.0, 0.3 + 0.01 * math.cos(2 * phase)), axes, 0, 0, 360, colour, -1, cv2.LINE_AA, shift=4)
    cv2.circle(image, at(0.4, 0.4), round(0.11 * size * 16), colour, -1, cv2.LINE_AA, shift=4)
    for ear in (0.35, 0.46):
        ears = np.array([at(ear - 0.04, 0.47), at(ear + 0.04, 0.47), at(ear, 0.56)], np.int32)
        cv2.fillConvexPoly(image, ears, colour, cv2.LINE_AA, shift=4)
    tail = max(1, round(0.04 * size))
    cv2.line(image, at(-0.32, 0.34), at(-0.5, 0.5 + 0.04 * math.sin(phase / 2)), colour, tail, cv2.LINE_AA, shift=4)
