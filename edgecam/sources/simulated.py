"""A scripted synthetic door scene: deterministic frames with known truth for the demo, the tests and benchmarks.

The scene is a textured hall wall with a door in the middle third. The door swings open into a darker room on a
fixed script, the camera adds sensor noise (fixed, or shot and read noise scaled by its gain) and may compress each
frame as JPEG, and between openings the hall light may switch or ramp (with the camera's exposure adapting), a light
from the side may come on, and a person may walk past outside the door zone or stand in front of the closed door.
What happens when is data (``scene.py``: a ``Script`` of events per door cycle), so benchmark scenarios can add kinds
of events without touching the painter.
"""

import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings, SimulatedSettings
from edgecam.errors import CameraError
from edgecam.models import Frame
from edgecam.sources.opencv import Pacer, detection_gray
from edgecam.sources.scene import (
    DARK,
    SEED_CYCLE,
    STAND_WALK,
    SceneState,
    Script,
    Stand,
    StepOut,
    Walk,
    build_script,
    cycle_of,
    door_openings,
)

logger = logging.getLogger(__name__)

DOOR_ZONE: list[tuple[float, float]] = [(0.38, 0.14), (0.62, 0.14), (0.62, 0.88), (0.38, 0.88)]
"""The door opening as ``[x, y]`` fractions of width and height: set ``motion.zone`` to this for the door."""

_DOOR_X0, _DOOR_Y0, _DOOR_X1, _DOOR_Y1 = 0.38, 0.14, 0.62, 0.88
_ARCHITRAVE = 0.022  # door frame moulding width, fraction of the image width
_HORIZON = 0.45  # eye level, fraction of the image height
_PERSON_HEIGHT = 0.62  # fraction of the image height
_NOISE_PAD = 16  # noise fields are this much larger than the image; each frame takes a shifted window
_SEED_BASE, _SEED_NOISE, _SEED_FRAME, _SEED_JITTER = range(SEED_CYCLE + 1, SEED_CYCLE + 5)  # a stream per purpose
_SEED_SENSOR = SEED_CYCLE + 5  # shot and read noise, after the others so that they keep their numbers
# A shadow's or side light's edge lies this far inside the door zone's right border, fraction of the width.
_EDGE_INSET = 0.02
_IR_WEIGHTS = np.array([[0.1, 0.3, 0.6]], np.float32)  # B, G, R: near infrared looks much like the red channel
_IR_GAIN = 0.75  # the infrared illuminator, relative to the hall light
# File suffix -> (OpenCV writer backend, codec, JPEG quality or None).
_CLIP_WRITERS = {".mkv": (cv2.CAP_FFMPEG, "FFV1", None), ".avi": (cv2.CAP_OPENCV_MJPEG, "MJPG", 95)}


class SceneRenderer:
    """Paints the scene at any size; frame ``index`` shows the scene at ``index / fps`` seconds."""

    def __init__(self, sim: SimulatedSettings, width: int, height: int) -> None:
        self.sim = sim
        self.width = width
        self.height = height
        self._scale = height / 480.0
        self._base = self._paint_base(np.random.default_rng((sim.seed, _SEED_BASE)))
        self._noise = self._noise_fields(np.random.default_rng((sim.seed, _SEED_NOISE)))
        self._vignette = self._ir_vignette() if sim.infrared else None
        self._lamp = self._lamp_field() if sim.lamp > 0 or sim.shadow > 0 else None
        self._side = np.asarray(cv2.merge([self._edge_step()] * 3), np.float32) if sim.side_light > 0 else None
        self._sensor = self._sensor_fields() if sim.shot_noise > 0 or sim.read_noise > 0 else None
        self._script_cycle = -2
        self._script = Script()

    def script_at(self, t: float) -> Script:
        """The events around ``t``: this door cycle and the one before it (a switch's exposure ramp may reach)."""
        k = cycle_of(self.sim, t)
        if k != self._script_cycle:
            self._script = build_script(self.sim, k - 1, k)
            self._script_cycle = k
        return self._script

    def state(self, t: float) -> SceneState:
        """The scene at ``t`` seconds."""
        return self.script_at(t).state(t, self.sim.light_ramp, self.sim.lamp_rise)

    def render(self, index: int) -> tuple[NDArray[np.uint8], dict[str, Any]]:
        """Frame ``index``: the BGR image and camera-like metadata (Lux, ExposureTime, AnalogueGain)."""
        sim = self.sim
        t = index / sim.fps
        state = self.state(t)
        image = self._base.copy()
        self._paint_door(image, state.door_angle)
        for walk, how_far, phase in state.walkers:
            self._paint_walker(image, walk, how_far, phase)
        for step_out, progress in state.stepping:
            self._paint_step_out(image, step_out, progress)
        for stand, how_far, phase in state.standing:
            self._paint_stand(image, stand, how_far, phase, t)
        if self._side is not None and state.side_share > 0:
            light = self._side * np.float32(sim.side_light * state.side_share) + np.float32(1.0)
            image = np.asarray(cv2.multiply(image, light, dtype=cv2.CV_8U), np.uint8)
        jitter = np.random.default_rng((sim.seed, _SEED_JITTER, index))
        flicker, dx, dy = jitter.uniform(-1.0, 1.0, size=3)
        if sim.shake > 0:
            shift = np.array([[1.0, 0.0, dx * sim.shake], [0.0, 1.0, dy * sim.shake]], np.float32)
            image = np.asarray(cv2.warpAffine(image, shift, (self.width, self.height), borderMode=cv2.BORDER_REFLECT))
        camera_gain = sim.light_level * sim.sensor_gain * (1.0 + sim.flicker * flicker)
        camera_gain *= 1.0 + sim.drift * math.sin(2.0 * math.pi * t / sim.drift_period)
        brightness = state.brightness * camera_gain
        if state.infrared and self._vignette is not None:
            grey = cv2.transform(image, _IR_WEIGHTS) * self._vignette * (_IR_GAIN * camera_gain)
            image = np.asarray(cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        elif self._lamp is not None and 0.0 < state.light_share < 1.0:
            # The lamp ramping: part ambient light (DARK, even), part the lamp's field, at the exposure of now.
            light = self._lamp * state.light_share + DARK * (1.0 - state.light_share)
            image = np.asarray(
                cv2.multiply(image, light, scale=state.exposure * camera_gain, dtype=cv2.CV_8U), np.uint8
            )
        elif state.light_on and self._lamp is not None:
            image = np.asarray(cv2.multiply(image, self._lamp, scale=brightness, dtype=cv2.CV_8U), np.uint8)
        elif brightness != 1.0:
            image = np.asarray(cv2.convertScaleAbs(image, alpha=brightness), dtype=np.uint8)
        if self._sensor is not None:
            image = self._add_sensor_noise(image, index, self._sensor)
        if self._noise is not None:
            rng = np.random.default_rng((self.sim.seed, _SEED_FRAME, index))
            field = int(rng.integers(len(self._noise)))
            dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, size=2))
            up, down = self._noise[field]
            window = np.s_[dy : dy + self.height, dx : dx + self.width]
            # Exact for a signed noise field: at each pixel one of the two parts is zero.
            image = np.asarray(cv2.subtract(cv2.add(image, up[window]), down[window]), dtype=np.uint8)
        if sim.jpeg_quality > 0:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, sim.jpeg_quality])
            if not ok:
                raise CameraError(f"camera: OpenCV cannot encode JPEG at quality {sim.jpeg_quality}")
            image = np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)
        return image, self._metadata(state)

    def _metadata(self, state: SceneState) -> dict[str, Any]:
        exposure_us = 10_000.0 * state.exposure
        frame_us = 1_000_000.0 / self.sim.fps
        gain = max(1.0, exposure_us / frame_us)
        return {
            "Lux": round(400.0 * state.brightness / state.exposure, 1),
            "ExposureTime": int(min(exposure_us, frame_us)),
            "AnalogueGain": round(gain, 3),
            "ColourGains": (1.0, 1.0) if state.infrared else (1.92, 1.61),
        }

    def _px(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.width), round(y * self.height)

    def _paint_base(self, rng: np.random.Generator) -> NDArray[np.uint8]:
        """The static parts: wall, floor, door frame and the room behind the door."""
        w, h = self.width, self.height
        blotches = rng.normal(0.0, 4.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
        texture = cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)
        texture += rng.normal(0.0, 2.0, (h, w)).astype(np.float32)
        wall = np.array((168, 182, 194), np.float32)
        image: NDArray[np.uint8] = np.clip(wall + texture[:, :, None], 0, 255).astype(np.uint8)

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

    def _noise_fields(self, rng: np.random.Generator) -> list[tuple[NDArray[np.uint8], NDArray[np.uint8]]] | None:
        """Two signed Gaussian noise fields, each split into its positive and negative parts."""
        if self.sim.noise <= 0:
            return None
        shape = (self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3)
        fields = []
        for _ in range(2):
            noise = rng.standard_normal(shape, dtype=np.float32) * self.sim.noise
            noise = np.clip(np.rint(noise), -255, 255)
            fields.append((np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)))
        return fields

    def _sensor_fields(self) -> list[NDArray[np.float32]]:
        """Two fields of unit Gaussian noise, per channel; each frame takes a shifted window of one."""
        rng = np.random.default_rng((self.sim.seed, _SEED_SENSOR))
        shape = (self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3)
        return [rng.standard_normal(shape, dtype=np.float32) for _ in range(2)]

    def _add_sensor_noise(
        self, image: NDArray[np.uint8], index: int, fields: list[NDArray[np.float32]]
    ) -> NDArray[np.uint8]:
        """Shot noise (variance in proportion to the grey level) and read noise, both amplified by the gain.

        A pixel of grey level g at analogue gain G collected g / G units of light, so its shot noise's variance in
        grey levels is ``shot_noise**2 * G * g / 255`` and its read noise's standard deviation ``G * read_noise``.
        """
        sim = self.sim
        rng = np.random.default_rng((sim.seed, _SEED_SENSOR, index))
        field = fields[int(rng.integers(len(fields)))]
        dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, size=2))
        grey = np.arange(256, dtype=np.float32)
        std = np.sqrt(grey * (sim.shot_noise**2 * sim.sensor_gain / 255.0) + (sim.read_noise * sim.sensor_gain) ** 2)
        noise = cv2.multiply(cv2.LUT(image, std.astype(np.float32)), field[dy : dy + self.height, dx : dx + self.width])
        return np.asarray(cv2.add(image, noise, dtype=cv2.CV_8U), np.uint8)  # rounded and saturated

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

    def _lamp_field(self) -> NDArray[np.float32]:
        """How much of the hall light reaches each pixel: more near a lamp above the top left, 1 on average."""
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        d2 = ((x / self.width - 0.2) ** 2 + (y / self.width + 0.05) ** 2) / 0.45**2
        falloff = 1.0 / (1.0 + d2)
        field = (1.0 - self.sim.lamp) + self.sim.lamp * falloff / float(falloff.mean())
        if self.sim.shadow > 0:
            field *= 1.0 - self.sim.shadow * self._edge_step()
        return np.asarray(cv2.merge([field, field, field]), np.float32)

    def _edge_step(self) -> NDArray[np.float32]:
        """0 left of an edge just inside the door zone's right border, 1 right of it, with a soft penumbra."""
        x = np.arange(self.width, dtype=np.float32)
        edge = (_DOOR_X1 - _EDGE_INSET) * self.width
        row = np.clip((x - edge) / max(1.0, 0.005 * self.width) + 0.5, 0.0, 1.0)
        return np.ascontiguousarray(np.broadcast_to(row, (self.height, self.width)), np.float32)

    def _ir_vignette(self) -> NDArray[np.float32]:
        """The infrared illuminator lights the middle of the picture more than its corners."""
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        r2 = ((x - self.width / 2) / self.width) ** 2 + ((y - self.height / 2) / self.height) ** 2
        return np.asarray(1.15 - 1.2 * r2, np.float32)

    def _paint_walker(self, image: NDArray[np.uint8], walk: Walk, how_far: float, phase: float) -> None:
        """A passer-by that never reaches the door frame."""
        half = 0.17 * _PERSON_HEIGHT * self.height
        if walk.side == "left":
            turn = (_DOOR_X0 - 2 * _ARCHITRAVE) * self.width - half
            x = -half + (turn + half) * how_far
        else:
            turn = (_DOOR_X1 + 2 * _ARCHITRAVE) * self.width + half
            x = self.width + half - (self.width + half - turn) * how_far
        self._paint_person(image, x, 0.97 * self.height, 1.0, phase, walk.colour)

    def _paint_stand(self, image: NDArray[np.uint8], stand: Stand, how_far: float, phase: float, t: float) -> None:
        """A person in front of the closed door, shifting their weight from side to side while they stand."""
        centre = (_DOOR_X0 + _DOOR_X1) / 2 * self.width
        edge = -0.2 * self.width if stand.side == "left" else 1.2 * self.width
        standing_for = t - stand.start - STAND_WALK
        sway = 0.012 * self.width * math.sin(2.0 * math.pi * standing_for / 5.0) if how_far >= 1.0 else 0.0
        x = edge + (centre - edge) * how_far + sway
        self._paint_person(image, x, 0.93 * self.height, 1.0, phase, stand.colour)

    def _paint_step_out(self, image: NDArray[np.uint8], step: StepOut, progress: float) -> None:
        """Out of the room towards the camera (growing) for the first 40 %, then sideways out of the picture."""
        centre = (_DOOR_X0 + _DOOR_X1) / 2 * self.width
        phase = 2.0 * math.pi * 4.0 * progress
        if progress < 0.4:
            p = progress / 0.4
            feet = (0.72 + 0.25 * p) * self.height
            self._paint_person(image, centre, feet, 0.6 + 0.4 * p, phase, step.colour)
            return
        p = (progress - 0.4) / 0.6
        edge = -0.2 * self.width if step.side == "left" else 1.2 * self.width
        self._paint_person(image, centre + (edge - centre) * p, 0.97 * self.height, 1.0, phase, step.colour)

    def _paint_person(
        self, image: NDArray[np.uint8], x: float, feet: float, scale: float, phase: float, colour: tuple[int, int, int]
    ) -> None:
        """A person-shaped blob standing at ``x`` with feet at ``feet``: legs and arms swinging with ``phase``."""
        tall = _PERSON_HEIGHT * self.height * scale
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
        cv2.circle(image, head, round(0.075 * tall), (120, 150, 190), -1, cv2.LINE_AA)


class SimulatedSource:
    """The synthetic door scene as a frame source: endless until closed, paced at its fps when realtime."""

    def __init__(self, camera: CameraSettings, *, realtime: bool) -> None:
        sim = camera.simulated
        self._renderer = SceneRenderer(sim, sim.width, sim.height)
        self._detect_size = (camera.detect_width, camera.detect_height)
        self._closed = threading.Event()
        self._pacer = Pacer(sleep=self._closed.wait) if realtime else None
        self._index = 0
        self._last: NDArray[np.uint8] | None = None
        logger.info(
            "simulated door scene %dx%d at %.3g fps, seed %d, realtime %s",
            sim.width,
            sim.height,
            sim.fps,
            sim.seed,
            realtime,
        )

    @property
    def fps(self) -> float:
        """The scene's frame rate."""
        return self._renderer.sim.fps

    def frames(self) -> Iterator[Frame]:
        """Yield frames of the scene until closed."""
        end = self._renderer.sim.duration or math.inf
        while not self._closed.is_set():
            index = self._index
            t = index / self.fps
            if t >= end:
                return
            bgr, _metadata = self._renderer.render(index)  # a file has no camera metadata, nor does this source
            if self._pacer is not None:
                self._pacer.wait(t)
                if self._closed.is_set():
                    return
            self._last = bgr
            self._index += 1
            yield Frame(index, t, detection_gray(bgr, *self._detect_size))

    def still(self) -> NDArray[np.uint8]:
        """A copy of the most recent frame yielded, at the scene's full size."""
        if self._last is None:
            raise CameraError("camera: no frame has been read yet, so there is no still")
        return self._last.copy()

    def close(self) -> None:
        """Stop the frames; safe to call twice."""
        self._closed.set()


def render_clip(path: Path, sim: SimulatedSettings, seconds: float) -> list[tuple[float, float]]:
    """Write ``seconds`` of the scene to a video file OpenCV reads back; return the door openings in it.

    ``.avi`` is MJPEG at quality 95 (about 2 ms and 90 KiB a 640x480 frame; grey levels within about 1 of the
    scene after downscaling; whole frame rates only); ``.mkv`` is lossless FFV1 (exact, but the sensor noise makes
    it about 20 ms and 470 KiB a frame).
    """
    writer_spec = _CLIP_WRITERS.get(path.suffix.lower())
    if writer_spec is None:
        raise ValueError(f"render_clip: {path.name!r}: use a .avi (MJPEG) or .mkv (lossless FFV1) file name")
    api, codec, quality = writer_spec
    if api == cv2.CAP_OPENCV_MJPEG and not sim.fps.is_integer():
        raise ValueError(f"render_clip: {path.name!r}: .avi keeps whole frame rates only; use .mkv for {sim.fps:g} fps")
    renderer = SceneRenderer(sim, sim.width, sim.height)
    size = (sim.width, sim.height)
    writer = cv2.VideoWriter(str(path), api, cv2.VideoWriter.fourcc(*codec), sim.fps, size)
    if not writer.isOpened():
        raise OSError(f"render_clip: OpenCV cannot write {codec} video to {path}")
    if quality is not None:
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    try:
        for index in range(round(seconds * sim.fps)):
            writer.write(renderer.render(index)[0])
    finally:
        writer.release()
    return door_openings(sim, seconds)
