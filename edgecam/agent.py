"""The one place that knows the order of the stages: source -> motion -> capture -> outbox -> publisher."""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from edgecam.capture import Capture, Captured, develop, fit_jpeg
from edgecam.commands import Commands
from edgecam.config import Settings
from edgecam.contact import DoorContact, open_contact
from edgecam.credentials import camera_url
from edgecam.discovery import DISCOVERY_FILE, Discovery, camera_model
from edgecam.disk import write_atomically
from edgecam.door import DoorWatcher, open_watcher
from edgecam.errors import CameraError, ConfigError
from edgecam.gpio import GpioOutput, GpioSwitch, open_illuminator_pin, open_privacy_switch
from edgecam.illuminator import Illuminator
from edgecam.models import DoorState, Frame, MotionResult, Topics, iso_ms
from edgecam.motion import MotionDetector
from edgecam.mqtt.client import read_password, tls_context
from edgecam.mqtt.publisher import Publisher
from edgecam.outbox import Outbox
from edgecam.privacy import Privacy, open_schedule
from edgecam.scene_monitor import SceneMonitor
from edgecam.sources import FrameSource, check_source, open_source
from edgecam.state_dir import check_state_dir
from edgecam.store import OutboxWriter
from edgecam.systemd import Notifier
from edgecam.vitals import Vitals

logger = logging.getLogger(__name__)

DRAIN_AT_END_S = 10.0
"""How long a source that ended by itself (a file) waits for the broker to take what is queued."""
DRAIN_ON_STOP_S = 2.0
"""The same on SIGTERM or a failed camera, kept short for systemd's stop timeout; what is left stays in the outbox."""
MAX_SHOTS = 4
"""Stills whose pixels wait for the outbox thread to encode them; a fifth is skipped (its event is not)."""


@dataclass(frozen=True)
class Step:
    """What one frame produced."""

    frame: Frame
    result: MotionResult
    emitted: list[Captured]
    """Events in publishing order, still events with their shots (``Capture.develop`` or the outbox thread)."""
    door_level: float | None = None
    """The zone's dissimilarity from the closed-door reference, where there is one and the frame said enough."""
    detect_s: float | None = None
    """Seconds the detector took over this frame; None while detection is off."""


class Pipeline:
    """Door state, detector and capture policy over a source's frames: the part shared by ``run`` and ``replay``.

    With a door contact the door's state is the contact's; else, with a reference, the ``DoorWatcher``'s.
    """

    def __init__(
        self,
        settings: Settings,
        source: FrameSource,
        stills_dir: Path | None,
        door: DoorWatcher | None = None,
        contact: DoorContact | None = None,
        room: Callable[[], bool] = lambda: True,
        illuminator: Illuminator | None = None,
    ) -> None:
        """``room``: whether one more still may be taken now (``OutboxWriter.room``).

        ``illuminator``: a light for stills in the dark, switched around the capture policy (``_capture``).
        """
        self.settings = settings
        self.source = source
        self.door = door
        self.contact = contact
        self.illuminator = illuminator
        self.detecting = True
        """False while detection is held off (``PrivacyControl``): frames are read, nothing is detected."""
        self.detector = self._new_detector()
        self.capture = Capture(
            settings.capture,
            settings.motion.masks,
            settings.device_id,
            Topics(settings.topic_base),
            stills_dir,
            room=room,
        )

    def _new_detector(self) -> MotionDetector:
        cam = self.settings.camera
        confirmed = self.settings.door.confirm and (self.door is not None or self.contact is not None)
        return MotionDetector(
            self.settings.motion, cam.detect_width, cam.detect_height, self.settings.door, relative=confirmed
        )

    def set_detecting(self, on: bool) -> None:
        """Switch detection on (with a background learnt afresh) or off (ending the event under way, light off)."""
        if on and not self.detecting:
            self.detector = self._new_detector()
        if not on and self.illuminator is not None:
            self.illuminator.off("detection held off")
        self.detecting = on

    def steps(self, stop: threading.Event | None = None) -> Iterator[Step]:
        """Process frames until the source ends or ``stop`` is set; the last step closes an open event."""
        frame: Frame | None = None
        try:
            for frame in self.source.frames():
                if not self.detecting:
                    yield self._paused(frame)
                    if stop is not None and stop.is_set():
                        break
                    continue
                contact_open = self.contact.is_open() if self.contact is not None else None
                began = time.perf_counter()
                measure = self.detector.measure(frame)
                door = self.door.update(frame, measure.zone_changed) if self.door is not None else None
                if contact_open is not None:
                    door = "open" if contact_open else "closed"
                left_closed = self.door.left_closed if self.door is not None else None
                result = self.detector.decide(measure, door, contact_open, left_closed)
                detect_s = time.perf_counter() - began
                emitted = self._capture(frame, result)
                yield Step(frame, result, emitted, self.door.last if self.door is not None else None, detect_s)
                if stop is not None and stop.is_set():
                    break
        except CameraError:
            if frame is not None and self.capture.in_event:  # closed and stored before the error ends the run
                yield self._end(frame, "the camera failed")
            raise
        if frame is not None and self.capture.in_event:
            stopping = stop is not None and stop.is_set()
            yield self._end(frame, "the agent is stopping" if stopping else "the source ended")

    def _end(self, frame: Frame, why: str) -> Step:
        """The step that ends the event under way at ``frame`` (``why``, for the log), the light off with it."""
        if self.illuminator is not None:
            self.illuminator.off(why, frame.t)
        end = MotionResult(score=0.0, moving=False, event="end", why=why)
        return Step(frame, end, self.capture.finish(frame.t))

    def _capture(self, frame: Frame, result: MotionResult) -> list[Captured]:
        """The capture policy's events of ``frame``; the illuminator switches around it, the detector hears of it."""
        light = self.illuminator
        if light is None:
            return self.capture.on_frame(frame, result, self.source.still)
        captured = self.capture.on_frame(frame, result, self.source.still, light.still_ready(frame))
        stills = sum(event.type == "still" for event, _ in captured)
        if light.after_capture(frame.t, stills, self.capture.in_event):
            self.detector.light_switched()
        return captured

    def _paused(self, frame: Frame) -> Step:
        if self.capture.in_event:
            return self._end(frame, "detection held off")
        return Step(frame, MotionResult(score=0.0, moving=False), [])


def check_settings(settings: Settings, command: str = "run") -> DoorWatcher | None:
    """What ``run`` checks before it starts, shared with ``check-config`` so that the two cannot disagree.

    Secret files (private, readable), TLS files, the camera password's place in the URL, a camera file or device
    that is not there, the state directory (this user can make it, enter it and write what is in it), the door
    zone against the masks and the door reference, the privacy schedule's time zone, and the pins of the privacy
    switch and the illuminator.
    Returns the door watcher (None without a reference); raises ConfigError or StorageError with one line.
    """
    read_password(settings.mqtt)
    tls_context(settings.mqtt)
    camera_url(settings.camera)
    try:
        check_source(settings.camera)  # without opening it: check-config must not take the camera from run
    except CameraError as err:
        raise ConfigError(str(err)) from err
    open_schedule(settings.privacy)  # the system's time zone, where privacy.timezone is unset
    pins = [
        ("door.contact_pin", settings.door.contact_pin, "door contact"),
        ("privacy.gpio_pin", settings.privacy.gpio_pin, "privacy switch"),
        ("illuminator.pin", settings.illuminator.pin, "illuminator"),
    ]
    for i, (name, pin, what) in enumerate(pins):
        taken = next((other for other, used, _ in pins[:i] if pin is not None and used == pin), None)
        if taken is not None:
            raise ConfigError(f"{name}: GPIO{pin} is {taken} too: give the {what} a pin of its own")
    check_state_dir(settings.storage, command)
    cam = settings.camera
    MotionDetector(settings.motion, cam.detect_width, cam.detect_height, settings.door)  # refuses a hidden zone
    door = open_watcher(settings, settings.door_reference_path)
    if settings.illuminator.pin is not None and door is None and settings.door.contact_pin is None:
        logger.warning(
            "illuminator.pin: the light comes on only once an event has started, and without a door reference "
            "('edgecam calibrate') or door.contact_pin a door moving in the dark may change too little to start one "
            "(motion.threshold)"
        )
    return door


class Agent:
    """The running agent: frames in, events and stills durably queued and published."""

    def __init__(
        self,
        settings: Settings,
        open_camera: Callable[[], FrameSource] | None = None,
        notifier: Notifier | None = None,
        open_door_contact: Callable[[], DoorContact | None] | None = None,
        open_lamp: Callable[[], GpioOutput | None] | None = None,
    ) -> None:
        """``open_lamp``: the illuminator's pin; by default ``illuminator.pin``, a mock one for the simulated scene."""
        self.settings = settings
        self._open_camera = open_camera or (lambda: open_source(settings.camera, realtime=settings.camera.realtime))
        self._notifier = notifier or Notifier()
        self._open_contact = open_door_contact or (lambda: open_contact(settings.door))
        simulated = settings.camera.source == "simulated"
        self._open_lamp = open_lamp or (lambda: open_illuminator_pin(settings.illuminator, simulated=simulated))

    def run(self, stop: threading.Event) -> None:
        """Run until the source ends or ``stop`` is set; raises CameraError, StorageError on fatal failures."""
        s = self.settings
        events = 0
        topics = Topics(s.topic_base)
        door_state: DoorState | None = None
        door = check_settings(s)
        fit_still = functools.partial(fit_jpeg, quality=s.capture.jpeg_quality)
        vitals = Vitals()
        knows_door = door is not None or s.door.contact_pin is not None
        scene = SceneMonitor(s, relative=s.door.confirm and knows_door)
        discovery = Discovery(
            s.homeassistant, s.device_id, topics, knows_door, camera_model(s.camera), s.storage.dir / DISCOVERY_FILE
        )
        publisher = Publisher(  # first: secrets fail fast
            s.mqtt, topics, s.storage, s.device_id, s.outbox, fit_still, discovery, vitals.payload
        )
        with ExitStack() as cleanup:  # in reverse: stop the camera, drain, disconnect, close outbox and contact
            contact = self._open_contact()
            if contact is not None:
                cleanup.callback(contact.close)
            privacy_switch = open_privacy_switch(s.privacy)
            if privacy_switch is not None:
                cleanup.callback(privacy_switch.close)
            outbox = Outbox(s.storage)
            cleanup.callback(outbox.close)
            outbox.recover(topics.still)
            outbox.sweep()
            vitals.last_event = outbox.last_start()
            if vitals.last_event is not None:
                publisher.set_last_event(vitals.last_event)
            publisher.start()
            cleanup.callback(publisher.stop)
            cleanup.push(lambda failed, *_: self._drain(publisher, stop.is_set() or failed is not None))
            still = functools.partial(develop, masks=s.motion.masks, quality=s.capture.jpeg_quality)
            writer = OutboxWriter(s.storage, still, publisher.wake, publisher.send_unstored, MAX_SHOTS)
            cleanup.callback(writer.close)  # after the camera: the last event's end and stills are stored first
            source = self._open_camera()
            cleanup.callback(source.close)
            lamp = self._open_lamp()
            if lamp is not None:
                cleanup.callback(lamp.close)  # off before the camera, the outbox and the broker stop
                self._wire_light(source, lamp)
            cleanup.callback(self._notifier.stopping)
            logger.info(
                "agent: %s watching %s, publishing to %s under %s/",
                s.device_id,
                s.camera.shown,
                s.mqtt.where,
                s.topic_base,
            )
            self._notifier.ready(f"watching {s.camera.shown}")
            light = Illuminator(s.illuminator, lamp, s.capture.stills_per_event) if lamp is not None else None
            pipeline = Pipeline(s, source, None, door, contact, writer.room, light)
            privacy = PrivacyControl(s, pipeline, publisher, privacy_switch)
            for step in pipeline.steps(stop):
                vitals.frame(step.detect_s)
                if step.detect_s is not None:  # detection is on: the result says what the frame showed
                    vitals.scene_warnings = scene.update(step.frame, step.result)
                privacy.apply(publisher.take_commands())
                result = step.result
                if result.door is not None and result.door != door_state:
                    door_state = result.door
                    logger.info("agent: the door is %s", door_state)
                    publisher.set_door(door_state)
                if result.event == "start":
                    publisher.set_motion(True)
                for event, _ in step.emitted:
                    why = f" ({result.why})" if event.type != "still" and result.why else ""
                    logger.info("agent: %s %s score=%.3f%s", event.type, event.event_id, event.score, why)
                    if event.type == "start":
                        events += 1
                        vitals.last_event = iso_ms(event.time)
                        publisher.set_last_event(vitals.last_event)
                writer.put(step.emitted)
                if result.event == "end":
                    publisher.set_motion(False)
                    self._notifier.status(f"{events} door events; {outbox.depth()} messages queued")
                self._notifier.watchdog()
        logger.info("agent: stopped after %d door events", events)

    def _wire_light(self, source: FrameSource, lamp: GpioOutput) -> None:
        """The simulated scene is lit by the illuminator's (mock) pin; a real camera by the light itself."""
        if self.settings.camera.source == "simulated":
            from edgecam.sources.simulated import SimulatedSource  # only the simulated scene reads the pin

            if isinstance(source, SimulatedSource):
                source.wire_light(lamp.is_on)

    @staticmethod
    def _drain(publisher: Publisher, stopping: bool) -> None:
        """Give the broker a moment to take what the last frames queued before disconnecting.

        ``stopping``: on SIGTERM or a failure the wait is short (systemd's stop timeout, a restart soon).
        """
        timeout = DRAIN_ON_STOP_S if stopping else DRAIN_AT_END_S
        if not publisher.wait_idle(timeout):
            logger.warning(
                "agent: the broker did not take every queued message within %.0f s; they stay in the outbox",
                timeout,
            )


class PrivacyControl:
    """Switches detection off and on: ``<base>/set/detect``, ``privacy.schedule`` and the privacy switch on a pin.

    The switch's last command is remembered across restarts in the state directory (``detect``); ``Privacy``
    decides, and the pipeline and the publisher (``<base>/detect``, ``<base>/privacy``) hear of each change only.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        publisher: Publisher,
        pin: GpioSwitch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = settings.storage.dir / "detect"
        self._pipeline = pipeline
        self._publisher = publisher
        self._pin = pin
        self._clock = clock
        self._commands = Commands()
        try:
            on = self._path.read_text(encoding="ascii").strip() != "OFF"
        except (OSError, UnicodeDecodeError):
            on = True
        if not on:
            logger.warning(
                "agent: detection is switched off (%s says OFF); turn on the Detection switch in Home Assistant, or "
                "send ON to set/detect, to resume",
                self._path,
            )
        schedule = open_schedule(settings.privacy)
        if schedule is not None:
            windows = ", ".join(settings.privacy.schedule)
            logger.info("privacy: the schedule holds detection off during %s (%s)", windows, schedule.zone)
        self._privacy = Privacy(on, schedule.covers if schedule is not None else None)
        self.apply([])

    def apply(self, received: list[tuple[str, bytes]]) -> None:
        """Act on the valid commands among ``received``, the schedule and the pin; cheap, called on every frame.

        Invalid commands are refused and logged by ``Commands``.
        """
        for name, payload in received:
            command = self._commands.parse(name, payload)
            if command is None:
                continue
            on = command.value == "ON"
            if on != self._privacy.switch_on:
                self._privacy.switch_on = on
                try:
                    write_atomically(self._path, command.value.encode())
                except OSError as err:
                    logger.error("agent: cannot remember detection %s in %s: %s", command.value, self._path, err)
        decision = self._privacy.update(self._clock(), self._pin is not None and self._pin.is_on())
        if decision is not None:
            self._pipeline.set_detecting(decision.detect)
            self._publisher.set_detect(decision.detect, decision.held_off_by)
