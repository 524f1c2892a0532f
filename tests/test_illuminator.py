"""The illuminator on gpiozero's mock pins: alone on synthetic frames, and in the pipeline over the simulated hall."""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edgecam.agent import Pipeline
from edgecam.capture import still_bgr
from edgecam.config import IlluminatorSettings, MotionSettings, Settings, StorageSettings
from edgecam.door import DoorWatcher
from edgecam.door_reference import DoorReference
from edgecam.gpio import GpioOutput, open_illuminator_pin
from edgecam.illuminator import JUDGE_EVERY, Illuminator, light_level
from edgecam.models import Frame
from edgecam.motion import MotionDetector
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import DOOR_ZONE, SimulatedSource
from edgecam.zones import polygon_mask

PIN = 5
SETTLE = 0.5


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.close()


def lamp_on(factory: MockFactory, **settings: object) -> tuple[GpioOutput, Illuminator]:
    light = IlluminatorSettings.model_validate({"pin": PIN, **settings})
    lamp = open_illuminator_pin(light, pin_factory=factory)
    assert lamp is not None
    return lamp, Illuminator(light, lamp, stills_per_event=3)


def grey(t: float, level: int, **metadata: object) -> Frame:
    return Frame(round(t * 10), t, np.full((24, 32), level, np.uint8), metadata)


def test_the_scene_is_judged_by_lux_where_the_camera_gives_it_else_by_grey_level() -> None:
    assert light_level(grey(0.0, 200, Lux=3.5, ExposureTime=60000)) == ("lux", 3.5)
    assert light_level(grey(0.0, 30)) == ("grey", 30.0)
    assert light_level(grey(0.0, 30, Lux=None)) == ("grey", 30.0)


@pytest.mark.parametrize(
    ("frame", "dark"),
    [(grey(0.0, 200, Lux=4.0), True), (grey(0.0, 10, Lux=40.0), False), (grey(0.0, 39), True), (grey(0.0, 41), False)],
    ids=["lux-dark-though-bright", "lux-light-though-black", "grey-dark", "grey-light"],
)
def test_dark_below_dark_lux_or_dark_level(factory: MockFactory, frame: Frame, dark: bool) -> None:
    _, light = lamp_on(factory)
    light.still_ready(frame)
    assert light.dark is dark


def test_in_the_dark_the_light_goes_on_at_the_start_and_off_after_the_last_still(factory: MockFactory) -> None:
    lamp, light = lamp_on(factory, settle=SETTLE)
    pin = factory.pin(PIN)
    assert not light.still_ready(grey(0.0, 20)), "no still in the dark before the light is on, even held ones"
    assert not pin.state
    assert not light.after_capture(0.0, 0, in_event=False)
    assert light.after_capture(0.1, 0, in_event=True), "on at the event's start"
    assert pin.state
    assert lamp.is_on()
    assert [light.still_ready(grey(t, 250)) for t in (0.2, 0.5, 0.6)] == [False, False, True]
    assert not light.after_capture(0.6, 1, in_event=True)
    assert not light.after_capture(1.1, 1, in_event=True)
    assert light.after_capture(1.6, 1, in_event=True), "off once the event has its 3 stills"
    assert not pin.state
    assert not light.after_capture(1.7, 0, in_event=True), "once an event"
    assert not pin.state
    assert light.still_ready(grey(1.8, 20)), "the stills are done: nothing to hold back"


def test_the_light_goes_off_when_the_event_ends_or_after_max_on(factory: MockFactory) -> None:
    _, light = lamp_on(factory, settle=SETTLE, max_on=2.0)
    pin = factory.pin(PIN)
    light.still_ready(grey(0.0, 20))
    assert light.after_capture(0.0, 0, in_event=True)
    assert light.after_capture(1.0, 1, in_event=False), "the event ended before its last still"
    assert not pin.state
    light.still_ready(grey(JUDGE_EVERY + 1.0, 20))
    assert light.after_capture(5.0, 0, in_event=True), "on again for the next event"
    assert not light.after_capture(6.9, 1, in_event=True)
    assert light.after_capture(7.0, 0, in_event=True), "max_on"
    assert not pin.state
    assert light.still_ready(grey(7.1, 20)), "the stills left are taken without the light"


def test_darkness_is_judged_only_from_frames_the_light_did_not_light(factory: MockFactory) -> None:
    _, light = lamp_on(factory, settle=SETTLE)
    light.still_ready(grey(0.0, 20))
    light.after_capture(0.0, 0, in_event=True)
    for t in np.arange(0.1, 3.0, 0.1):
        light.still_ready(grey(float(t), 250))  # lit
    assert light.dark
    light.after_capture(3.0, 0, in_event=False)
    light.still_ready(grey(3.1, 0))  # the exposure not yet back after the light: darker than the scene is
    light.after_capture(3.1, 0, in_event=False)
    light.still_ready(grey(3.6, 20))
    assert light.dark
    for t in np.arange(4.0, 10.0, JUDGE_EVERY):
        light.still_ready(grey(float(t), 120))  # dawn
    assert not light.dark
    assert not light.after_capture(10.0, 0, in_event=True), "no light by day"


def test_no_stills_no_light(factory: MockFactory) -> None:
    light = IlluminatorSettings(pin=PIN)
    lamp = open_illuminator_pin(light, pin_factory=factory)
    assert lamp is not None
    illuminator = Illuminator(light, lamp, stills_per_event=0)
    assert illuminator.still_ready(grey(0.0, 5))
    assert not illuminator.after_capture(0.1, 0, in_event=True)
    assert not factory.pin(PIN).state


# The simulated hall in the dark, its camera with a light of its own on the illuminator's mock pin.


@dataclass
class Run:
    """What a pipeline run over the simulated hall showed, frame by frame."""

    lit: list[bool] = field(default_factory=list)
    """The lamp's pin after each frame: what lit the next one."""
    in_event: list[bool] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    stills: list[tuple[float, float]] = field(default_factory=list)
    """(frame time, mean grey level) of each still."""
    switched_on: list[float] = field(default_factory=list)
    detecting: list[bool] = field(default_factory=list)


def hall(light_level: float, reference: bool, **simulated: object) -> Settings:
    return Settings.model_validate(
        {
            "device_id": "hall",
            "camera": {
                "simulated": {"width": 320, "height": 240, "duration": 34.0, "light_level": light_level, **simulated}
            },
            "motion": {"zone": DOOR_ZONE},
            "illuminator": {"pin": PIN, "settle": SETTLE},
            "door": {"confirm": reference},
        }
    )


def run(
    settings: Settings,
    factory: MockFactory | None,
    reference: bool,
    lit: list[bool] | None = None,
    detect_off: tuple[float, float] | None = None,
) -> Run:
    """The pipeline over the hall; with ``factory`` the illuminator lights it; detection off during ``detect_off``.

    ``lit``: the list the run fills with the lamp's state after each frame, as it goes (``Run.lit`` at the end).
    """
    door = None
    if reference:  # a closed-door reference made from the hall before the first opening, as 'edgecam calibrate' does
        calibration = SimulatedSource(settings.camera, realtime=False)
        frames = [f.gray for f in itertools.islice(calibration.frames(), 30)]
        door = DoorWatcher.for_settings(DoorReference.learn(frames, []), settings)
    source = SimulatedSource(settings.camera, realtime=False)
    lamp, light = None, None
    if factory is not None:
        lamp = open_illuminator_pin(settings.illuminator, pin_factory=factory)
        assert lamp is not None
        source.wire_light(lamp.is_on)
        light = Illuminator(settings.illuminator, lamp, settings.capture.stills_per_event)
    pipeline = Pipeline(settings, source, None, door=door, illuminator=light)
    seen = Run(lit=[] if lit is None else lit)
    for step in pipeline.steps():
        t = step.frame.t
        on = lamp is not None and lamp.is_on()
        if on and not (seen.lit and seen.lit[-1]):
            seen.switched_on.append(t)
        seen.lit.append(on)
        seen.in_event.append(pipeline.capture.in_event)
        seen.detecting.append(pipeline.detecting)
        for event, shot in step.emitted:
            if event.type == "start":
                seen.starts.append(t)
            elif event.type == "end":
                seen.ends.append(t)
            elif shot is not None:
                seen.stills.append((t, float(still_bgr(shot.image).mean())))
        if detect_off is not None and t + 0.05 >= detect_off[0] and t < detect_off[1]:
            pipeline.set_detecting(False)  # as PrivacyControl does between frames
        elif detect_off is not None and t >= detect_off[1]:
            pipeline.set_detecting(True)
    return seen


SCENES = [
    pytest.param(False, {"door_open": 1.0}, id="camera-motion-alone"),
    pytest.param(True, {}, id="door-reference"),
]


@pytest.mark.parametrize(("reference", "simulated"), SCENES)
def test_in_the_dark_the_light_lights_each_events_stills_and_only_them(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch, reference: bool, simulated: dict[str, object]
) -> None:
    settings = hall(0.2, reference, **simulated)
    openings = door_openings(settings.camera.simulated, 34.0)
    unlit = run(settings, None, reference)
    told = []
    light_switched = MotionDetector.light_switched

    def tell(detector: MotionDetector) -> None:
        told.append(len(lit_so_far))
        light_switched(detector)

    lit_so_far: list[bool] = []
    monkeypatch.setattr(MotionDetector, "light_switched", tell)
    lit = run(settings, factory, reference, lit_so_far)

    assert len(lit.starts) == len(openings) == len(unlit.starts), "one event per opening: none from the light"
    for (start, end), began, ended in zip(openings, lit.starts, lit.ends, strict=True):
        assert start <= began <= start + 0.6
        assert ended <= end + settings.motion.event_gap + 1.0, "the event ends as the door shuts, light or not"
    assert all(in_event for lit_now, in_event in zip(lit.lit, lit.in_event, strict=True) if lit_now)
    switches = [i for i in range(1, len(lit.lit)) if lit.lit[i] != lit.lit[i - 1]]
    assert told == switches, "the detector is told of each switch, on and off, at the frame it happens"
    assert len(lit.switched_on) == len(openings), "on once an event"
    assert len(lit.stills) == len(openings) * settings.capture.stills_per_event
    for on_at in lit.switched_on:
        stills = [(t, level) for t, level in lit.stills if on_at < t <= on_at + settings.illuminator.max_on]
        assert len(stills) == settings.capture.stills_per_event
        assert stills[0][0] >= on_at + SETTLE, "no still while the exposure settles"
        last = stills[-1][0]
        assert lit.lit[round(last * 10) - 1], "lit when the last still was taken"
        assert not lit.lit[round(last * 10)], "and off right after it"
    unlit_level = max(level for _, level in unlit.stills)
    assert unlit_level < 40
    assert all(3 * unlit_level < level < 230 for _, level in lit.stills), "lit, and not blown out"


def test_in_a_lit_hall_the_light_never_goes_on(factory: MockFactory) -> None:
    settings = hall(1.0, False, door_open=1.0)
    lit = run(settings, factory, False)
    unlit = run(settings, None, False)
    assert not any(lit.lit)
    assert lit.starts == unlit.starts
    assert lit.stills == unlit.stills


def test_the_light_is_off_while_detection_is_held_off(factory: MockFactory) -> None:
    settings = hall(0.2, False, door_open=1.0)
    held_off = (5.0, 20.0)  # from the middle of the first event over the second opening
    lit = run(settings, factory, False, detect_off=held_off)
    assert lit.switched_on[0] < held_off[0]
    assert not any(on for on, detecting in zip(lit.lit, lit.detecting, strict=True) if not detecting)
    assert not any(lit.lit[round(held_off[0] * 10) + 1 : round(held_off[1] * 10)]), "off from the next frame on"
    assert lit.ends[0] == pytest.approx(held_off[0], abs=0.15)
    assert len(lit.starts) == 2, "the first event, cut short, and the third opening's"
    assert lit.switched_on[1] > held_off[1]


@pytest.mark.parametrize("told", [True, False], ids=["told", "not-told"])
def test_the_detector_ignores_a_light_it_is_told_of_even_one_on_the_door_alone(told: bool) -> None:
    """A narrow beam on the door brightens the door zone only: the light check alone calls it motion."""
    width, height = 320, 240
    detector = MotionDetector(MotionSettings(zone=DOOR_ZONE, calibration=1.0), width, height)
    rng = np.random.default_rng(7)
    scene = rng.normal(30.0, 8.0, (height, width))
    beam = polygon_mask([DOOR_ZONE], width, height) * 50.0
    switches = {3.0: True, 5.0: False}
    lit = False
    moving, starts = [], []
    for index in range(70):
        t = index / 10
        lit = switches.get(t, lit)
        noise = rng.normal(0.0, 2.0, (height, width))
        gray = np.clip(scene + noise + (beam if lit else 0.0), 0, 255).astype(np.uint8)
        result = detector.process(Frame(index, t, gray))
        moving.append(result.moving)
        starts += [t] if result.event == "start" else []
        if told and round(t + 0.1, 1) in switches:  # the pipeline tells the detector once it has switched the lamp
            detector.light_switched()
    if told:
        assert not any(moving)
        assert starts == []
    else:
        assert starts == [3.2], "the light check alone takes the beam for motion"


def test_a_scene_that_ends_while_lit_switches_the_light_off_and_says_so(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="edgecam.illuminator")
    settings = hall(0.2, False, door_open=1.0, duration=5.0)  # the door opens at 4 s: lit, its stills still to come
    lit = run(settings, factory, False)
    assert len(lit.switched_on) == 1
    assert lit.ends == [pytest.approx(4.9)]
    assert lit.lit[-2], "lit until the last frame"
    assert not factory.pin(PIN).state, "off with the event's end"
    assert caplog.messages[-1].startswith("illuminator: off after ")
    assert caplog.messages[-1].endswith("the source ended")


def test_a_light_without_a_door_reference_or_contact_is_warned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edgecam.agent import check_settings

    settings = hall(0.2, False).model_copy(update={"storage": StorageSettings(dir=tmp_path / "state")})
    check_settings(settings)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("illuminator.pin: the light comes on only once an event has started")
