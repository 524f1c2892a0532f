"""What happens when in the simulated door scene: the door's swings, light switches and people, as plain data.

A ``Script`` covers a stretch of door cycles; ``build_script`` makes it from the settings and the seed, so the
same seed always gives the same scene, and the benchmark's ground truth (``door_openings``) comes from the same
place as the frames the painter in ``simulated.py`` draws.
"""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgecam.scene_settings import SimulatedSettings

DARK = 0.4
"""Scene brightness with the hall light off, relative to on."""
SEED_CYCLE = 0
"""The random stream of the script; the painter's streams follow it."""
_AE_STRENGTH = 0.6  # how much auto exposure makes up for a darker scene (0 none, 1 fully)
STAND_WALK = 1.5
"""Seconds a person at the door takes to walk up to it, and to walk away again."""
PET_CROSSING = 4.0
"""Seconds a pet takes to cross the picture."""


def _ease(p: float) -> float:
    return (1.0 - math.cos(math.pi * p)) / 2.0


@dataclass(frozen=True)
class DoorSwing:
    """The door swings open from ``start``, stays open, and swings shut again."""

    start: float
    opening: float
    hold: float
    closing: float
    angle: float
    """Degrees open at the widest."""

    @property
    def end(self) -> float:
        """When the door is shut again."""
        return self.start + self.opening + self.hold + self.closing

    def angle_at(self, t: float) -> float:
        """Degrees open at ``t`` seconds."""
        if not self.start <= t < self.end:
            return 0.0
        dt = t - self.start
        if dt < self.opening:
            return self.angle * _ease(dt / self.opening)
        dt -= self.opening
        if dt < self.hold:
            return self.angle
        return self.angle * (1.0 - _ease((dt - self.hold) / self.closing))


@dataclass(frozen=True)
class LightSwitch:
    """The hall light is switched at ``t`` seconds."""

    t: float
    on: bool
    """The light's state after the switch."""


@dataclass(frozen=True)
class Person:
    """A person in the picture from ``start`` for ``duration`` seconds, leaving to one side."""

    start: float
    duration: float
    side: Literal["left", "right"]
    colour: tuple[int, int, int]
    """Clothes colour, BGR."""

    @property
    def end(self) -> float:
        """When the person has left the frame."""
        return self.start + self.duration


@dataclass(frozen=True)
class Walk(Person):
    """A person walks in from one side of the frame towards the door, turns short of it, and walks out."""

    def progress(self, t: float) -> tuple[float, float]:
        """How far in (0 at the frame edge, 1 at the turning point) and the leg phase in radians at ``t``."""
        p = (t - self.start) / self.duration
        return 1.0 - abs(2.0 * p - 1.0), 2.0 * math.pi * 5.0 * p


@dataclass(frozen=True)
class StepOut(Person):
    """A person comes out of the room through the open door, then walks away to one side."""


@dataclass(frozen=True)
class Stand(Person):
    """A person walks up to the closed door from one side, stands in front of it, and walks back out."""

    pose: Literal["stand", "lean", "phone"] = "stand"
    """What they do at the door: stand shifting weight, lean on the door frame, or talk on the phone."""

    def place(self, t: float) -> tuple[float, float]:
        """How far from the frame edge to the door's middle (0..1) and the leg phase in radians at ``t``."""
        dt = t - self.start
        away = self.duration - dt
        if dt < STAND_WALK:
            return dt / STAND_WALK, 2.0 * math.pi * 2.5 * dt / STAND_WALK
        if away < STAND_WALK:
            return away / STAND_WALK, 2.0 * math.pi * 2.5 * away / STAND_WALK
        return 1.0, 0.0


@dataclass(frozen=True)
class Pet(Person):
    """A cat crosses the picture along the bottom of the door from ``side``, past the door's middle half way."""

    def progress(self, t: float) -> tuple[float, float]:
        """How far across (0 off the picture at ``side``, 1 off the other side) and the leg phase in radians."""
        p = (t - self.start) / self.duration
        return p, 2.0 * math.pi * 6.0 * p


@dataclass(frozen=True)
class SceneState:
    """Everything the painter needs for one frame."""

    door_angle: float
    """Degrees open."""
    light_on: bool
    brightness: float
    """Scene gain as the camera sees it: light level times exposure (1.0 lit and settled)."""
    exposure: float
    """Exposure relative to the lit scene; rises when the light goes off."""
    walkers: tuple[tuple[Walk, float, float], ...]
    """Each person in view: the walk, how far in, the leg phase."""
    infrared: bool = False
    """The camera shows its grey infrared picture."""
    stepping: tuple[tuple[StepOut, float], ...] = ()
    """Each person coming out through the door: the step-out and how far through it (0..1)."""
    light_share: float = 1.0
    """How far the hall light is on: 0 off, 1 on, in between while it ramps (``lamp_rise``)."""
    standing: tuple[tuple[Stand, float, float], ...] = ()
    """Each person at the door: the stand, how far from the frame edge to the door (0..1), the leg phase."""
    side_share: float = 0.0
    """How far the side light is on: 0 off, 1 on, in between while it ramps (``lamp_rise``)."""
    pets: tuple[tuple[Pet, float, float], ...] = ()
    """Each pet in view: the pet, how far across (0..1), the leg phase."""


CAMERA_LIGHT_OVERSHOOT = 2.0
"""Right after the camera's own light goes on, the picture is this many times as bright as once the exposure has
adapted (auto exposure was set for the dark); right after it goes off, this many times as dark."""


@dataclass(frozen=True)
class CameraLight:
    """The camera's own light (an infrared lamp beside it): switched by the agent, not by the script."""

    on: bool
    since: float = math.inf
    """Seconds since it last switched; inf if it never has."""

    def exposure(self, ramp: float) -> float:
        """The picture's brightness relative to the adapted exposure: the overshoot fading linearly over ``ramp`` s."""
        left = 1.0 - self.since / ramp if ramp > 0 else 0.0
        if left <= 0.0:
            return 1.0
        peak = CAMERA_LIGHT_OVERSHOOT if self.on else 1.0 / CAMERA_LIGHT_OVERSHOOT
        return 1.0 + (peak - 1.0) * left


def _exposure(light_on: bool) -> float:
    return 1.0 if light_on else DARK**-_AE_STRENGTH


@dataclass(frozen=True)
class Script:
    """What happens in the scene over a stretch of door cycles: plain data, events sorted by time."""

    light_on: bool = True
    """The hall light's state before the first switch in this script."""
    swings: tuple[DoorSwing, ...] = ()
    switches: tuple[LightSwitch, ...] = ()
    walks: tuple[Walk, ...] = ()
    infrared: bool = False
    """The camera's infrared mode before the first infrared switch in this script."""
    ir_switches: tuple[LightSwitch, ...] = ()
    """Switches of the camera's infrared mode (``on`` = infrared)."""
    step_outs: tuple[StepOut, ...] = ()
    stands: tuple[Stand, ...] = ()
    side_on: bool = False
    """The side light's state before the first side switch in this script."""
    side_switches: tuple[LightSwitch, ...] = ()
    pets: tuple[Pet, ...] = ()

    def state(self, t: float, light_ramp: float, lamp_rise: float = 0.0) -> SceneState:
        """The scene at ``t`` seconds.

        After a switch the exposure adapts linearly over ``light_ramp`` s and the light itself over ``lamp_rise``.
        """
        angle = max((s.angle_at(t) for s in self.swings), default=0.0)
        on = before = self.light_on
        since = math.inf
        for switch in self.switches:
            if switch.t <= t:
                before, on, since = on, switch.on, t - switch.t
        exposure = _exposure(on)
        if since < light_ramp:
            exposure = _exposure(before) + (exposure - _exposure(before)) * since / light_ramp
        level = 1.0 if on else DARK
        share = _share(self.light_on, self.switches, t, lamp_rise)
        if 0.0 < share < 1.0:
            level = DARK + (1.0 - DARK) * share
        walkers = tuple((w, *w.progress(t)) for w in self.walks if w.start <= t < w.end)
        infrared = self.infrared
        for switch in self.ir_switches:
            if switch.t <= t:
                infrared = switch.on
        stepping = tuple((p, (t - p.start) / p.duration) for p in self.step_outs if p.start <= t < p.end)
        standing = tuple((p, *p.place(t)) for p in self.stands if p.start <= t < p.end)
        side = _share(self.side_on, self.side_switches, t, lamp_rise)
        pets = tuple((p, *p.progress(t)) for p in self.pets if p.start <= t < p.end)
        return SceneState(
            angle, on, level * exposure, exposure, walkers, infrared, stepping, share, standing, side, pets
        )


def _share(on: bool, switches: tuple[LightSwitch, ...], t: float, rise: float) -> float:
    """How far a light that was ``on`` before ``switches`` is on at ``t``, ramping linearly over ``rise`` s."""
    before, since = on, math.inf
    for switch in switches:
        if switch.t <= t:
            before, on, since = on, switch.on, t - switch.t
    if since < rise:
        return float(before) + (float(on) - float(before)) * since / rise
    return float(on)


def _cycle_start(sim: SimulatedSettings, k: int) -> float:
    return sim.first_opening + k * sim.door_period


def cycle_of(sim: SimulatedSettings, t: float) -> int:
    """The door cycle under way at ``t``: cycle k runs from the k-th opening to the next; -1 before the first."""
    return max(-1, math.floor((t - sim.first_opening) / sim.door_period))


def _light_after_cycle(sim: SimulatedSettings, k: int) -> bool:
    # The light starts on and toggles once per cycle; with the door, it goes off in every gap.
    if sim.light_with_door:
        return False
    return not sim.light_switching or k < 0 or k % 2 == 1


def _side_light_after_cycle(sim: SimulatedSettings, k: int) -> bool:
    return sim.side_light > 0 and k >= 0 and k % 2 == 0


def _infrared_after_cycle(sim: SimulatedSettings, k: int) -> bool:
    return sim.infrared and k >= 0 and k % 2 == 0


def build_script(sim: SimulatedSettings, first_cycle: int, last_cycle: int) -> Script:
    """The events of door cycles ``first_cycle`` to ``last_cycle`` (inclusive); the same seed, the same script.

    Each cycle opens the door once; in the quiet gap after it the light may switch, a person may walk past or
    stand at the door, and a pet may cross in front of it.
    """
    swings: list[DoorSwing] = []
    switches: list[LightSwitch] = []
    walks: list[Walk] = []
    ir_switches: list[LightSwitch] = []
    step_outs: list[StepOut] = []
    stands: list[Stand] = []
    side_switches: list[LightSwitch] = []
    pets: list[Pet] = []
    swing_length = sim.door_opening + sim.door_open + sim.door_closing
    gap = sim.door_period - swing_length
    for k in range(max(0, first_cycle), last_cycle + 1):
        start = _cycle_start(sim, k)
        swings.append(DoorSwing(start, sim.door_opening, sim.door_open, sim.door_closing, sim.door_angle))
        # Draw every random number whatever the flags, so turning one feature on does not move the others.
        rng = np.random.default_rng((sim.seed, SEED_CYCLE, k))
        switch_at = start + swing_length + gap * rng.uniform(0.2, 0.35)
        side: Literal["left", "right"] = "left" if rng.random() < 0.5 else "right"
        blue, green, red = (int(c) for c in rng.integers(20, 140, size=3))
        walk_at = start + swing_length + gap * rng.uniform(0.45, 0.5)
        light_on_at = start + rng.uniform(-0.3, 0.3)
        ir_at = start + swing_length + gap * rng.uniform(0.6, 0.75)
        stand_side: Literal["left", "right"] = "left" if rng.random() < 0.5 else "right"
        stand_slack = rng.uniform(0.0, 1.0)
        side_at = start + swing_length + gap * rng.uniform(0.2, 0.7)
        # Draws added later come last, so that the scenes made before them keep their numbers.
        pet_slack = rng.uniform(0.0, 1.0)
        pet_side: Literal["left", "right"] = "left" if rng.random() < 0.5 else "right"
        fur = ((40, 90, 160), (70, 70, 75), (30, 30, 34), (150, 160, 170))[int(rng.integers(4))]
        if sim.light_with_door:
            switches.append(LightSwitch(max(0.0, light_on_at), True))
        if sim.light_switching or sim.light_with_door:
            switches.append(LightSwitch(switch_at, _light_after_cycle(sim, k)))
        if sim.passer_by:
            walks.append(Walk(walk_at, min(3.5, 0.4 * gap), side, (blue, green, red)))
        if sim.infrared:
            ir_switches.append(LightSwitch(ir_at, _infrared_after_cycle(sim, k)))
        if sim.walk_through and sim.door_open > 0:
            out_at = start + sim.door_opening + 0.1 * sim.door_open
            step_outs.append(StepOut(out_at, 0.8 * sim.door_open, side, (blue, green, red)))
        if sim.person_at_door > 0:
            stay = sim.person_at_door + 2 * STAND_WALK
            stand_at = start + swing_length + 0.5 + (gap - stay - 1.0) * stand_slack  # 0.5 s clear of either swing
            stands.append(Stand(stand_at, stay, stand_side, (red, blue, green), sim.person_pose))
        if sim.side_light > 0:
            side_switches.append(LightSwitch(side_at, _side_light_after_cycle(sim, k)))
        if sim.pet:
            pet_at = start + swing_length + 0.5 + (gap - PET_CROSSING - 1.0) * pet_slack
            pets.append(Pet(pet_at, PET_CROSSING, pet_side, fur))
    return Script(
        _light_after_cycle(sim, first_cycle - 1),
        tuple(swings),
        tuple(switches),
        tuple(walks),
        _infrared_after_cycle(sim, first_cycle - 1),
        tuple(ir_switches),
        tuple(step_outs),
        tuple(stands),
        _side_light_after_cycle(sim, first_cycle - 1),
        tuple(side_switches),
        tuple(pets),
    )


def door_openings(sim: SimulatedSettings, seconds: float) -> list[tuple[float, float]]:
    """Ground truth: (start, end) seconds of each door movement that starts within ``seconds``; ends are clipped."""
    script = build_script(sim, 0, cycle_of(sim, seconds))
    return [(s.start, min(s.end, seconds)) for s in script.swings if s.start < seconds]
