"""A stand-in for ``picamera2.Picamera2`` that films the simulated door scene, for tests and demos without a Pi.

It mirrors the names and arguments of the real methods ``PiCameraSource`` uses, keeps the real class's rules that
matter to callers (configure only while stopped, lores no larger than main and YUV, even sizes, a request is
released exactly once, a held buffer is not handed out again) and records what was called so tests can check the
camera was configured once, never switched mode for a still, and had every request released.
"""

from types import TracebackType
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.config import SimulatedSettings
from edgecam.sources.simulated import SceneRenderer

_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")
# Channel order in memory of picamera2's RGB formats, as indexes into a BGR image (X is a constant 255).
_RGB_ORDER = {"RGB888": (0, 1, 2), "BGR888": (2, 1, 0), "XRGB8888": (0, 1, 2, -1), "XBGR8888": (2, 1, 0, -1)}
_YUV = ("YUV420",)
_STRIDE_ALIGN = 64  # bytes; libcamera pads each row of a buffer like this


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


class FakeCompletedRequest:
    """Mirrors ``picamera2.request.CompletedRequest``: one frame's arrays and metadata until it is released."""

    def __init__(self, arrays: dict[str, NDArray[np.uint8]], metadata: dict[str, Any]) -> None:
        self._arrays: dict[str, NDArray[np.uint8]] | None = arrays
        self._metadata = metadata
        self.ref_count = 1

    @property
    def released(self) -> bool:
        """The request went back to the camera."""
        return self.ref_count == 0

    def acquire(self) -> None:
        """Take another reference, as the real class does."""
        if self.ref_count == 0:
            raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
        self.ref_count += 1

    def release(self) -> None:
        """Give one reference back; at zero the buffers go back to the camera."""
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:
            self._arrays = None

    def make_array(self, name: str) -> NDArray[np.uint8]:
        """A copy of the named stream's image: (h, w, 3 or 4) for RGB formats, (h * 3 / 2, stride) for YUV420."""
        if self._arrays is None or name not in self._arrays:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._arrays[name].copy()

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata (ExposureTime, AnalogueGain, Lux, ColourGains, SensorTimestamp, ...)."""
        if self._arrays is None:
            raise RuntimeError("CompletedRequest: metadata of a released request")
        return dict(self._metadata)


class FakePicamera2:
    """Mirrors ``picamera2.Picamera2`` for the calls edgecam makes; frames come from the simulated scene."""

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: int | None = None,
        tuning: Any = None,
        allocator: Any = None,
        *,
        sim: SimulatedSettings | None = None,
        sensor_resolution: tuple[int, int] = (4056, 3040),
        fail_after: int | None = None,
    ) -> None:
        """Open fake camera ``camera_num``; after ``fail_after`` frames, capture_request times out."""
        self.camera_num = camera_num
        self.sim = sim or SimulatedSettings()
        self.sensor_resolution = sensor_resolution
        self.fail_after = fail_after
        self.calls: list[str] = []
        """Names of the methods called, in order."""
        self.configurations: list[dict[str, Any]] = []
        """Every configuration passed to configure() or start(config=...)."""
        self.requests: list[FakeCompletedRequest] = []
        """Every request handed out."""
        self.camera_config: dict[str, Any] = {}
        self.started = False
        self.is_open = True
        self._renderer: SceneRenderer | None = None
        self._frame = 0

    def __enter__(self) -> "FakePicamera2":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _create(
        self,
        main: dict[str, Any] | None,
        lores: dict[str, Any] | None,
        defaults: dict[str, Any],
        controls: dict[str, Any] | None,
        **rest: Any,
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        for stream in (main, lores):
            bad = set(stream or {}) - set(_STREAM_KEYS)
            if bad:
                raise ValueError(f"Bad key {sorted(bad)[0]!r}: valid stream configuration keys are {_STREAM_KEYS}")
        main_config = {**defaults, **(main or {})}
        lores_config = None
        if lores is not None:
            lores_config = {"format": "YUV420", "size": main_config["size"], "preserve_ar": False, **lores}
        return {"main": main_config, "lores": lores_config, "raw": None, "controls": dict(controls or {}), **rest}

    def create_preview_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 4,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "preview",
    ) -> dict[str, Any]:
        """A configuration for a continuously running camera (4 buffers by default)."""
        self.calls.append("create_preview_configuration")
        defaults = {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True}
        return self._create(main, lores, defaults, controls, buffer_count=buffer_count, use_case=use_case)

    def create_still_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 1,
        controls: dict[str, Any] | None = None,
        display: str | None = None,
        encode: str | None = None,
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "still",
    ) -> dict[str, Any]:
        """A configuration for single full-resolution captures (1 buffer by default)."""
        self.calls.append("create_still_configuration")
        defaults = {"format": "BGR888", "size": self.sensor_resolution, "preserve_ar": True}
        return self._create(main, lores, defaults, controls, buffer_count=buffer_count, use_case=use_case)

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        """A configuration for video recording (6 buffers by default)."""
        self.calls.append("create_video_configuration")
        defaults = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        return self._create(main, lores, defaults, controls, buffer_count=buffer_count, use_case=use_case)

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        """Apply a configuration; like the real camera, only while stopped."""
        self.calls.append("configure")
        if camera_config is None:
            camera_config = self.create_preview_configuration()
        self.configurations.append(camera_config)
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = {**camera_config, "main": dict(camera_config["main"])}
        self._check_stream(config["main"], "main")
        if camera_config["lores"] is not None:
            config["lores"] = dict(camera_config["lores"])
            self._check_stream(config["lores"], "lores")
            (main_w, main_h), (lores_w, lores_h) = config["main"]["size"], config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if config["lores"]["format"] not in _YUV:
                raise RuntimeError("lores stream must be YUV")
        for stream in (config["main"], config["lores"]):
            if stream is not None:
                width = stream["size"][0]
                row = width if stream["format"] in _YUV else width * len(_RGB_ORDER[stream["format"]])
                stream["stride"] = _align(row, _STRIDE_ALIGN)
        self.camera_config = config
        duration_us = config["controls"].get("FrameDurationLimits", (33333, 33333))[0]
        sim = self.sim.model_copy(update={"fps": 1_000_000 / duration_us})
        self._renderer = SceneRenderer(sim, *config["main"]["size"])

    @staticmethod
    def _check_stream(stream: dict[str, Any], name: str) -> None:
        if stream["format"] not in _RGB_ORDER and stream["format"] not in _YUV:
            raise RuntimeError(f"Bad format {stream['format']} in stream {name} (the fake knows RGB and YUV420)")
        size = stream["size"]
        if not isinstance(size, tuple) or len(size) != 2:
            raise RuntimeError(f"size in {name} stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def camera_configuration(self) -> dict[str, Any]:
        """The configuration in force, with strides filled in."""
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        """One stream's configuration in force."""
        stream: dict[str, Any] = self.camera_config[name]
        return stream

    def start(self, config: dict[str, Any] | None = None, show_preview: bool | None = False) -> None:
        """Start delivering frames, configuring first if ``config`` is given."""
        self.calls.append("start")
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        """Stop delivering frames."""
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        """Stop and close the camera; a second close does nothing."""
        self.calls.append("close")
        if not self.is_open:
            return
        self.started = False
        self.is_open = False

    def capture_request(
        self, wait: bool | float | None = None, signal_function: Any = None, flush: Any = None
    ) -> FakeCompletedRequest:
        """The next frame; the caller must release it. Times out (TimeoutError) after ``fail_after`` frames."""
        self.calls.append("capture_request")
        if not self.started:
            raise RuntimeError("Camera is not started: the real capture_request would wait forever")
        held = sum(not r.released for r in self.requests)
        if held >= self.camera_config["buffer_count"]:
            raise RuntimeError(f"all {held} buffers are held by the caller: capture_request would wait forever")
        if self.fail_after is not None and self._frame >= self.fail_after:
            raise TimeoutError
        request = self._render(self._frame)
        self._frame += 1
        self.requests.append(request)
        return request

    def capture_array(self, name: str = "main", wait: bool | float | None = None, signal_function: Any = None) -> Any:
        """The named stream's image of the next frame (the request is released at once)."""
        request = self.capture_request(wait)
        try:
            return request.make_array(name)
        finally:
            request.release()

    def _render(self, index: int) -> FakeCompletedRequest:
        assert self._renderer is not None
        bgr, scene = self._renderer.render(index)
        arrays = {"main": self._rgb(bgr, self.camera_config["main"])}
        lores = self.camera_config["lores"]
        if lores is not None:
            small = np.asarray(cv2.resize(bgr, lores["size"], interpolation=cv2.INTER_AREA), np.uint8)
            arrays["lores"] = self._yuv420(small, lores["stride"])
        duration_us = round(1_000_000 / self._renderer.sim.fps)
        metadata = {
            **scene,
            "SensorTimestamp": index * duration_us * 1000,
            "FrameDuration": duration_us,
            "DigitalGain": 1.0,
            "ColourTemperature": 4100,
        }
        return FakeCompletedRequest(arrays, metadata)

    @staticmethod
    def _rgb(bgr: NDArray[np.uint8], stream: dict[str, Any]) -> NDArray[np.uint8]:
        order = _RGB_ORDER[stream["format"]]
        with_x = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]) if -1 in order else bgr
        return np.ascontiguousarray(with_x[:, :, [3 if i == -1 else i for i in order]])

    @staticmethod
    def _yuv420(bgr: NDArray[np.uint8], stride: int) -> NDArray[np.uint8]:
        """Planar YUV 4:2:0 as picamera2 returns it: (h * 3 / 2, stride), each row padded to the stride.

        Full-range sYCC (what the preview configuration asks for): Y is the plain grey level, 0-255.
        """
        h, w = bgr.shape[:2]
        ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
        y = ycrcb[:, :, 0]
        u, v = (cv2.resize(ycrcb[:, :, c], (w // 2, h // 2), interpolation=cv2.INTER_AREA) for c in (2, 1))
        out = np.zeros(h * stride * 3 // 2, np.uint8)
        out[: h * stride].reshape(h, stride)[:, :w] = y
        half = stride // 2
        for plane, offset in ((u, h * stride), (v, h * stride * 5 // 4)):
            out[offset : offset + h // 2 * half].reshape(h // 2, half)[:, : w // 2] = plane
        return out.reshape(h * 3 // 2, stride)
