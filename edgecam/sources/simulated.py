"""A scripted synthetic door scene: deterministic frames with known truth for the demo, the tests and benchmarks.

Two scenes and cameras (``camera.simulated.style``): the hall (``hall.py``), a white door seen straight on in the
middle third of the picture, and the porch (``porch.py``), a wooden or grey door seen from high up to one side
through a wide-angle lens. The door swings open on a fixed script, the camera adds sensor noise (fixed, or shot and
read noise scaled by its gain) and may compress each frame as JPEG or H.264 (``h264.py``), and between openings the
light may switch or ramp (with the camera's exposure adapting), a light from the side may come on, a person may
walk past outside the door zone or stand, lean or phone in front of the closed door (``people.py``), and a cat may
cross. What happens when is data (``scene.py``: a ``Script`` of events per door cycle), so benchmark scenarios can
add kinds of events without touching the painters; this module lights the painted scene and plays the camera. The
camera may have a light of its own that the agent switches (``SimulatedSource.wire_light``, the illuminator).
"""

import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import CameraSettings
from edgecam.errors import CameraError
from edgecam.models import Frame
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources import hall
from edgecam.sources.h264 import H264RoundTrip
from edgecam.sources.hall import Hall
from edgecam.sources.opencv import Pacer, detection_gray
from edgecam.sources.scene import (
    DARK,
    SEED_CYCLE,
    CameraLight,
    SceneState,
    Script,
    build_script,
    cycle_of,
    door_openings,
)

if TYPE_CHECKING:
    from edgecam.sources.porch import Porch

logger = logging.getLogger(__name__)

_NOISE_PAD = 16  # noise fields are this much larger than the image; each frame takes a shifted window
_NOISE_BAND = 1 << 18  # noise values drawn at a time (1 MB of float32)
_SEED_BASE, _SEED_NOISE, _SEED_FRAME, _SEED_JITTER = range(SEED_CYCLE + 1, SEED_CYCLE + 5)  # a stream per purpose
_SEED_SENSOR = SEED_CYCLE + 5  # shot and read noise, after the others so that they keep their numbers
_SEED_DEVELOP = SEED_CYCLE + 6  # the porch camera's row and colour noise
# A shadow's or side light's edge lies this far inside the door zone's right border, fraction of the width.
_EDGE_INSET = 0.02
_IR_WEIGHTS = np.array([[0.1, 0.3, 0.6]], np.float32)  # B, G, R: near infrared looks much like the red channel
_IR_GAIN = 0.75  # the infrared illuminator, relative to the hall light
# File suffix -> (OpenCV writer backend, codec, JPEG quality or None).
_CLIP_WRITERS = {".mkv": (cv2.CAP_FFMPEG, "FFV1", None), ".avi": (cv2.CAP_OPENCV_MJPEG, "MJPG", 95)}

DOOR_ZONE: list[tuple[float, float]] = hall.DOOR_ZONE
"""The hall's door opening as ``[x, y]`` fractions of width and height: ``motion.zone`` for the default style."""


def door_zone(sim: SimulatedSettings) -> list[tuple[float, float]]:
    """The door zone of the scene's style as ``[x, y]`` fractions: set ``motion.zone`` to this for the door."""
    if sim.style == "hall":
        return list(DOOR_ZONE)
    from edgecam.sources.porch import porch_door_zone  # the porch's camera and surfaces for its styles only

    return porch_door_zone(sim.width, sim.height)


def _porch(style: str, width: int, height: int) -> "Porch":
    from edgecam.sources.porch import Porch  # the porch's camera and surfaces for its styles only

    return Porch(style, width, height)


class SceneRenderer:
    """Paints the scene at any size; frame ``index`` shows the scene at ``index / fps`` seconds."""

    def __init__(self, sim: SimulatedSettings, width: int, height: int) -> None:
        self.sim = sim
        self.width = width
        self.height = height
        self._porch = _porch(sim.style, width, height) if sim.style != "hall" else None
        self._scene: Hall | Porch = self._porch or Hall(width, height, np.random.default_rng((sim.seed, _SEED_BASE)))
        self._noise = self._noise_fields(np.random.default_rng((sim.seed, _SEED_NOISE)))
        self._vignette = self._ir_vignette() if sim.infrared else None
        self._lamp = self._lamp_field() if sim.lamp > 0 or sim.shadow > 0 else None
        self._side = np.asarray(cv2.merge([self._edge_step()] * 3), np.float32) if sim.side_light > 0 else None
        self._sensor = self._sensor_fields() if sim.shot_noise > 0 or sim.read_noise > 0 else None
        self._script_cycle = -2
        self._script = Script()
        self._light: CameraLight | None = None
        self._light_field: NDArray[np.float32] | None = None
        self._h264: H264RoundTrip | None = None
        if sim.h264_bitrate > 0:
            self._h264 = H264RoundTrip(self._uncompressed, width, height, sim.fps, sim.h264_bitrate, sim.h264_gop)

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

    def render(self, index: int, light: CameraLight | None = None) -> tuple[NDArray[np.uint8], dict[str, Any]]:
        """Frame ``index``: the BGR image and camera-like metadata (Lux, ExposureTime, AnalogueGain).

        ``light``: the camera's own light as it is for this frame, None for none. Through H.264 (``h264_bitrate``)
        a group of pictures is rendered at once, so the light shows as it was at the group's first frame.
        """
        self._light = light
        if self._h264 is not None:
            return self._h264.frame(index), self._metadata(self.state(index / self.sim.fps))
        image, state = self._picture(index, light)
        return image, self._metadata(state)

    def _uncompressed(self, index: int) -> NDArray[np.uint8]:
        return self._picture(index, self._light)[0]

    def _picture(self, index: int, own_light: CameraLight | None) -> tuple[NDArray[np.uint8], SceneState]:
        """Frame ``index`` as the camera makes it, before any video compression, and the scene it shows."""
        sim = self.sim
        t = index / sim.fps
        state = self.state(t)
        image = self._scene.paint(state, t)
        if self._side is not None and state.side_share > 0:
            light = self._side * np.float32(sim.side_light * state.side_share) + np.float32(1.0)
            image = np.asarray(cv2.multiply(image, light, dtype=cv2.CV_8U), np.uint8)
        jitter = np.random.default_rng((sim.seed, _SEED_JITTER, index))
        flicker, dx, dy = jitter.uniform(-1.0, 1.0, size=3)
        if sim.shake > 0:
            shift = np.array([[1.0, 0.0, dx * sim.shake], [0.0, 1.0, dy * sim.shake]], np.float32)
            image = np.asarray(cv2.warpAffine(image, shift, (self.width, self.height), borderMode=cv2.BORDER_REFLECT))
        reflected = image  # lit evenly at the lit scene's exposure: what the camera's own light shows
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
        if own_light is not None and sim.camera_light > 0 and (own_light.on or own_light.since < sim.light_ramp):
            image = self._camera_lit(image, reflected, own_light)
        if self._porch is not None:
            image = self._porch.lens(image)
        if self._sensor is not None:
            image = self._add_sensor_noise(image, index, self._sensor)
        if self._noise is not None:
            rng = np.random.default_rng((self.sim.seed, _SEED_FRAME, index))
            field = int(rng.integers(len(self._noise)))
            dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, size=2))
            up, down = self._noise[field]
            window = np.s_[dy : dy + self.height, dx : dx + self.width]
            # Exact for a signed noise field: at each pixel one of the two parts is zero. In place: the picture is
            # this frame's own, and a full-size temporary per step costs a fresh mapping at 2028x1520.
            image = np.asarray(cv2.add(image, up[window], dst=image), dtype=np.uint8)
            image = np.asarray(cv2.subtract(image, down[window], dst=image), dtype=np.uint8)
        if self._porch is not None:
            image = self._porch.develop(image, np.random.default_rng((sim.seed, _SEED_DEVELOP, index)), sim.sensor_gain)
        if sim.jpeg_quality > 0:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, sim.jpeg_quality])
            if not ok:
                raise CameraError(f"camera: OpenCV cannot encode JPEG at quality {sim.jpeg_quality}")
            image = np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)
        return image, state

    def _camera_lit(
        self, image: NDArray[np.uint8], reflected: NDArray[np.uint8], light: CameraLight
    ) -> NDArray[np.uint8]:
        """``image`` with the camera's own light: grey (infrared) light added while on, then the exposure's overshoot.

        The overshoot after a switch is ``CameraLight.exposure``.
        """
        sim = self.sim
        exposure = light.exposure(sim.light_ramp)
        if not light.on:
            return np.asarray(cv2.convertScaleAbs(image, alpha=exposure), np.uint8)
        if self._light_field is None:
            self._light_field = self._camera_light_field()
        lamp = (
            cv2.transform(reflected, _IR_WEIGHTS) * self._light_field * np.float32(sim.camera_light * sim.sensor_gain)
        )
        lit = image.astype(np.float32) + lamp[:, :, np.newaxis]
        return np.asarray(cv2.convertScaleAbs(lit, alpha=exposure), np.uint8)

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

    def _noise_fields(self, rng: np.random.Generator) -> list[tuple[NDArray[np.uint8], NDArray[np.uint8]]] | None:
        """Two signed Gaussian noise fields, each split into its positive and negative parts (rounded, at most 255).

        Drawn a band of rows at a time: the generator fills an array one element after another (numpy 2.4
        random/src/distributions/distributions.c, ``random_standard_normal_fill_f``), so the bands join into the
        field one draw would give, without a float copy of the whole field (37 MB per field at 2028x1520).
        """
        if self.sim.noise <= 0:
            return None
        shape = (self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3)
        band = max(1, _NOISE_BAND // (shape[1] * shape[2]))
        sigma = np.float32(self.sim.noise)
        fields = []
        for _ in range(2):
            up, down = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
            for top in range(0, shape[0], band):
                noise = rng.standard_normal((min(band, shape[0] - top), *shape[1:]), dtype=np.float32)
                noise *= sigma
                np.rint(noise, out=noise)
                rows = np.s_[top : top + len(noise)]
                up[rows] = np.clip(noise, 0, 255)
                np.negative(noise, out=noise)
                down[rows] = np.clip(noise, 0, 255, out=noise)
            fields.append((up, down))
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
        edge = (self._scene.right_edge - _EDGE_INSET) * self.width
        row = np.clip((x - edge) / max(1.0, 0.005 * self.width) + 0.5, 0.0, 1.0)
        return np.ascontiguousarray(np.broadcast_to(row, (self.height, self.width)), np.float32)

    def _camera_light_field(self) -> NDArray[np.float32]:
        """How much of the camera's own light reaches each pixel: the most near the camera, the least in the corners.

        1 in the middle of its beam, 0.4 in the corners, up to 2.5 on the floor nearest the camera (the bottom
        quarter of the picture).
        """
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        r2 = ((x - self.width / 2) / self.width) ** 2 + ((y - self.height / 2) / self.height) ** 2
        near = 1.0 + 1.5 * np.clip((y / self.height - 0.75) / 0.25, 0.0, 1.0)
        return np.asarray(near / (1.0 + 3.0 * r2), np.float32)

    def _ir_vignette(self) -> NDArray[np.float32]:
        """The infrared illuminator lights the middle of the picture more than its corners."""
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        r2 = ((x - self.width / 2) / self.width) ** 2 + ((y - self.height / 2) / self.height) ** 2
        return np.asarray(1.15 - 1.2 * r2, np.float32)


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
        self._lit: Callable[[], bool] | None = None
        self._light_on = False
        self._light_switched = -math.inf
        logger.info(
            "simulated door scene (%s) %dx%d at %.3g fps, seed %d, realtime %s",
            sim.style,
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
            light = self._follow_light(t)
            bgr, _metadata = self._renderer.render(index, light)  # a file has no camera metadata, nor this source
            if self._pacer is not None:
                self._pacer.wait(t)
                if self._closed.is_set():
                    return
            self._last = bgr
            self._index += 1
            yield Frame(index, t, detection_gray(bgr, *self._detect_size))

    def wire_light(self, lit: Callable[[], bool]) -> None:
        """Give the camera a light of its own, on while ``lit()`` (the illuminator's pin), asked before each frame.

        How bright: ``camera.simulated.camera_light``; the exposure adapts over ``light_ramp`` after each switch.
        """
        self._lit = lit

    def _follow_light(self, t: float) -> CameraLight | None:
        """The camera's own light at ``t``, noting when it switched; None without one."""
        if self._lit is None:
            return None
        on = bool(self._lit())
        if on != self._light_on:
            self._light_on, self._light_switched = on, t
        return CameraLight(on, t - self._light_switched)

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
