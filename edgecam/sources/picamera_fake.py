"""A stand-in for ``picamera2.Picamera2`` that films the simulated door scene, for tests without a Pi.

It behaves like picamera2 0.3.38 where edgecam depends on it, and each such behaviour names the line of the real
source it copies: ``picamera2.py:N`` is ``picamera2/picamera2.py`` of the 0.3.38 wheel, ``request.py:N``,
``job.py:N``, ``dmaallocator.py:N`` the other files of that wheel, ``v0.3.19 picamera2.py:N`` a line at that git tag
of raspberrypi/picamera2. What the real library cannot tell (how much camera memory the rest of the system holds)
is an assumption here, and says so.
Its jobs and requests are in ``picamera_fake_request``, its sensors and buffer sizes in ``picamera_fake_sensors``.

What it models:

- configurations as ``create_*_configuration`` builds them, a raw stream included by default;
- the sensor's raw modes per sensor model, and the mode picamera2 picks for a configuration;
- camera memory (CMA): every stream's ``buffer_count`` buffers, refused with ENOMEM past the board's budget;
- frames that arrive at the configured rate on a clock (``time.monotonic`` or an injected one) whether or not the
  application is reading, with only the newest completed request kept while it is busy;
- capture jobs: a timed-out job stays queued until ``cancel_all_and_flush()``, and ``stop()`` waits behind it;
- the real exceptions, and the differences of picamera2 before 0.3.20 and before 0.3.37.

Where the real library would block forever the fake gives up after ``hang_limit`` seconds, records what would have
hung in ``hangs`` and raises ``WouldHang``, so a test fails instead of hanging.
"""

import concurrent.futures
import errno
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.picamera_fake_request import FakeCompletedRequest, FakeJob
from edgecam.sources.picamera_fake_sensors import (
    CMA_IN_USE,
    RAW_FORMAT,
    RGB_ORDER,
    SENSORS,
    YUV_FORMATS,
    FakeSensorMode,
    bit_depth_of,
    stream_bytes,
)
from edgecam.sources.simulated import SceneRenderer

_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")
_RAW_IGNORED = ("bit_depth", "crop_limits", "exposure_limits", "fps", "unpacked")  # picamera2.py:796
_SENSOR_KEYS = {"bit_depth", "output_size"}
_FIRST_CANCEL_VERSION = (0, 3, 20)
_NO_CAMERA_MESSAGE_VERSION = (0, 3, 37)


class WouldHang(RuntimeError):
    """The real picamera2 would block forever here; the fake gave up after its ``hang_limit``."""


class FakeClock:
    """A clock for the fake camera whose ``sleep`` moves time on at once: tests of timing take no real time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time, seconds."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move time on by ``seconds``."""
        with self._lock:
            self.now += max(0.0, seconds)


class FakePicamera2:
    """Mirrors ``picamera2.Picamera2`` for the calls edgecam makes; frames come from the simulated scene.

    Options beyond the real constructor's: ``sensor`` the sensor model (a key of ``SENSORS``); ``cma_bytes`` the
    board's CMA (None: unlimited) and ``cma_in_use`` what the rest of the system holds of it; ``version`` the
    picamera2 version to behave as; ``missing`` / ``busy`` to fail opening as a missing or busy camera does;
    ``fail_after`` frames after which no more arrive (a loose cable); ``sync_fails_at`` the frame from which
    syncing a buffer fails with OSError; ``stop_hangs`` to make stop() itself hang (libcamera stuck in the
    kernel); ``clock`` and ``sleep`` the time frames arrive on (default ``time.monotonic``); ``hang_limit`` the
    seconds after which what would block forever raises WouldHang instead; ``rpi_apps_yaml`` whether libcamera
    reads picamera2's ``rpi_apps.yaml`` (picamera2 ``__init__.py:18-38`` points it there when the file exists).
    """

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: int | None = None,
        tuning: Any = None,
        allocator: Any = None,
        *,
        sim: SimulatedSettings | None = None,
        sensor: str = "imx477",
        cma_bytes: int | None = None,
        cma_in_use: int = CMA_IN_USE,
        version: tuple[int, int, int] = (0, 3, 38),
        missing: bool = False,
        busy: bool = False,
        fail_after: int | None = None,
        sync_fails_at: int | None = None,
        stop_hangs: bool = False,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        hang_limit: float = 10.0,
        rpi_apps_yaml: bool = True,
    ) -> None:
        """Open fake camera ``camera_num``; see the class for the options."""
        self.version = version
        if missing or camera_num != 0:
            if version >= _NO_CAMERA_MESSAGE_VERSION:  # picamera2.py:345-348
                raise RuntimeError(
                    f'No camera number {camera_num} found - use "rpicam-hello --list-cameras" to check connected '
                    "cameras"
                )
            raise IndexError("list index out of range")  # v0.3.36 picamera2.py:344: global_camera_info()[n]
        if busy:
            # libcamera's acquire() fails with EBUSY (picamera2.py:580); __init__ wraps it (:370-372).
            cause = RuntimeError("Failed to acquire camera: Device or resource busy")
            raise RuntimeError("Camera __init__ sequence did not complete.") from cause
        self.camera_num = camera_num
        self.sim = sim or SimulatedSettings()
        self.sensor = sensor
        self.modes = SENSORS[sensor]
        self._raw_modes = [{"format": m.format, "size": m.size} for m in self.modes]  # picamera2.py:623-630
        native = self._native_mode()
        self.sensor_resolution = native.size  # picamera2.py:557-558
        self.sensor_format = native.format
        self.cma_bytes = cma_bytes
        self.cma_in_use = cma_in_use
        self.fail_after = fail_after
        self.sync_fails_at = sync_fails_at
        self.stop_hangs = stop_hangs
        self.hang_limit = hang_limit
        self.rpi_apps_yaml = rpi_apps_yaml
        self._clock = clock or time.monotonic
        self._sleep = sleep
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self.calls: list[str] = []
        """Names of the methods called, in order."""
        self.configurations: list[dict[str, Any]] = []
        """Every configuration passed to configure() or start(config=...)."""
        self.requests: list[FakeCompletedRequest] = []
        """Every request handed to the application."""
        self.hangs: list[str] = []
        """What would have blocked forever in the real library."""
        self.dropped = 0
        """Completed frames the library recycled without the application seeing them (picamera2.py:1498-1500)."""
        self.lost = 0
        """Frames the sensor had no buffer for: the application and the library held every request."""
        self.camera_config: dict[str, Any] = {}
        self.stream_bytes = 0
        """CMA held by the configured streams' buffers."""
        self.internal_bytes = 0
        """CMA held by libcamera's own raw buffers while started."""
        self.started = False
        self.is_open = True
        self.stop_count = 0
        self._renderer: SceneRenderer | None = None  # made by start(), not configure(): slow at large sizes
        self._period = 0.1
        self._mode: FakeSensorMode | None = None
        self._jobs: list[FakeJob] = []
        self._completed: list[FakeCompletedRequest] = []
        self._queued = 0  # requests libcamera holds to fill
        self._max_queue_len = 1
        self._t0 = 0.0
        self._arrived = 0
        if version >= _FIRST_CANCEL_VERSION:
            # cancel_all_and_flush() came with 0.3.20 (commit ddd2ca3; v0.3.20 picamera2.py:1179; not at v0.3.19):
            # an older fake has no such attribute, so hasattr() tells the versions apart as it does for the real one.
            self.cancel_all_and_flush: Callable[[], None] = self._cancel_all_and_flush

    def __enter__(self) -> "FakePicamera2":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _native_mode(self) -> FakeSensorMode:
        # picamera2.py:632-646: the largest mode, the deeper one of two the same size.
        return max(self.modes, key=lambda m: (m.size[0] * m.size[1], m.bit_depth))

    @property
    def cma_used(self) -> int:
        """Bytes of CMA this camera holds now."""
        return self.stream_bytes + self.internal_bytes

    # Configurations ---------------------------------------------------------------------------------------------

    def _create(
        self,
        main: dict[str, Any] | None,
        lores: dict[str, Any] | None,
        raw: dict[str, Any] | None,
        main_defaults: dict[str, Any],
        control_defaults: dict[str, Any],
        controls: dict[str, Any] | None,
        **rest: Any,
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main_config = self._stream(dict(main_defaults), {} if main is None else main)
        assert main_config is not None
        lores_config = self._stream({"format": "YUV420", "size": main_config["size"], "preserve_ar": False}, lores)
        for stream in (main_config, lores_config):
            if stream is not None:  # align_stream(optimal=False): even sizes (picamera2.py:1116-1121)
                width, height = stream["size"]
                stream["size"] = (width - width % 2, height - height % 2)
        # picamera2.py:825-827: a raw stream by default, at the main stream's size in the native Bayer format.
        raw_config = self._stream({"format": self.sensor_format, "size": main_config["size"]}, raw, _RAW_IGNORED)
        return {
            "main": main_config,
            "lores": lores_config,
            "raw": raw_config,
            "controls": control_defaults | dict(controls or {}),  # picamera2.py:829-833: the caller's values win
            **rest,
        }

    @staticmethod
    def _stream(
        defaults: dict[str, Any], updates: dict[str, Any] | None, ignored: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        # picamera2.py:769-781: None turns the stream off; an unknown key is a ValueError.
        if updates is None:
            return None
        for key, value in updates.items():
            if key in _STREAM_KEYS:
                defaults[key] = value
            elif key not in ignored:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {_STREAM_KEYS}")
        return defaults

    def create_preview_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = {},  # noqa: B006  # the real default: a raw stream (picamera2.py:798-803)
        transform: Any = "Transform()",
        colour_space: Any = "Sycc",
        buffer_count: int = 4,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = {},  # noqa: B006  # the real default; None turns the sensor setting off
        use_case: str = "preview",
    ) -> dict[str, Any]:
        """A configuration for a continuously running camera: 4 buffers, XBGR8888 640x480 (picamera2.py:798-847)."""
        self.calls.append("create_preview_configuration")
        return self._create(
            main,
            lores,
            raw,
            {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True},
            {"NoiseReductionMode": "Minimal", "FrameDurationLimits": (100, 83333)},
            controls,
            use_case=use_case,
            transform=transform,
            colour_space=colour_space,
            buffer_count=buffer_count,
            queue=queue,
            sensor=None if sensor is None else dict(sensor),
            display=display,
            encode=encode,
        )

    def create_still_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = {},  # noqa: B006  # the real default (picamera2.py:849-855)
        transform: Any = "Transform()",
        colour_space: Any = "Sycc",
        buffer_count: int = 1,
        controls: dict[str, Any] | None = None,
        display: str | None = None,
        encode: str | None = None,
        queue: bool = True,
        sensor: dict[str, Any] | None = {},  # noqa: B006  # the real default; None turns the sensor setting off
        use_case: str = "still",
    ) -> dict[str, Any]:
        """Single full-resolution captures: 1 buffer, BGR888 at the sensor's resolution (picamera2.py:849-900)."""
        self.calls.append("create_still_configuration")
        return self._create(
            main,
            lores,
            raw,
            {"format": "BGR888", "size": self.sensor_resolution, "preserve_ar": True},
            {"NoiseReductionMode": "HighQuality", "FrameDurationLimits": (100, 1_000_000_000)},
            controls,
            use_case=use_case,
            transform=transform,
            colour_space=colour_space,
            buffer_count=buffer_count,
            queue=queue,
            sensor=None if sensor is None else dict(sensor),
            display=display,
            encode=encode,
        )

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = {},  # noqa: B006  # the real default (picamera2.py:902-908)
        transform: Any = "Transform()",
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = {},  # noqa: B006  # the real default; None turns the sensor setting off
        use_case: str = "video",
    ) -> dict[str, Any]:
        """Video recording: 6 buffers, XBGR8888 1280x720 (picamera2.py:902-956)."""
        self.calls.append("create_video_configuration")
        return self._create(
            main,
            lores,
            raw,
            {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True},
            {"NoiseReductionMode": "Fast", "FrameDurationLimits": (33333, 33333)},
            controls,
            use_case=use_case,
            transform=transform,
            colour_space=colour_space,
            buffer_count=buffer_count,
            queue=queue,
            sensor=None if sensor is None else dict(sensor),
            display=display,
            encode=encode,
        )

    @property
    def sensor_modes(self) -> list[dict[str, Any]]:
        """Every raw mode with its fps and crop.

        Found as the real property finds them: by configuring the camera once per mode (picamera2.py:586-621,
        :613-614), which is slow and allocates each mode's buffers.
        """
        self.calls.append("sensor_modes")
        found = []
        for mode in self.modes:
            self.configure(self.create_preview_configuration(raw={"format": mode.format, "size": mode.size}))
            found.append(
                {
                    "format": mode.format,
                    "unpacked": mode.format.split("_", 1)[0],
                    "bit_depth": mode.bit_depth,
                    "size": mode.size,
                    "fps": mode.fps,
                    "crop_limits": mode.crop,
                    "exposure_limits": (26, 1_000_000),
                }
            )
        return found

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        """Apply a configuration: only while stopped, and only if its buffers fit the CMA.

        Raises RuntimeError for a configuration picamera2 refuses (picamera2.py:958-1012), ValueError never (that
        comes from create_*), and OSError(ENOMEM) when the buffers do not fit, as the DmaHeap ioctl does
        (dma_heap.py:93, inside configure: picamera2.py:1277).
        """
        self.calls.append("configure")
        if camera_config is None:
            camera_config = self.create_preview_configuration()
        self.configurations.append(camera_config)
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")  # picamera2.py:1188-1189
        config = dict(camera_config)
        self.camera_config = {}  # picamera2.py:1222-1224: unconfigured until allocation succeeds
        self._free_streams()
        self._check(config)
        mode = self._pick_mode(config)
        for name in ("main", "lores", "raw"):
            stream = config[name]
            if stream is None:
                continue
            if name == "raw":
                # libcamera sets the raw stream to the chosen mode (vc4.cpp platformValidate).
                stream["size"] = mode.size
                stream["format"] = mode.format
            stream["stride"], stream["framesize"] = stream_bytes(stream["format"], stream["size"])
        config["sensor"] = {"bit_depth": mode.bit_depth, "output_size": mode.size}  # picamera2.py:1173-1178
        needed = sum(
            config["buffer_count"] * config[name]["framesize"]
            for name in ("main", "lores", "raw")
            if config[name] is not None
        )
        if not self._fits(needed):
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        self.stream_bytes = needed
        self._mode = mode
        self._max_queue_len = 1 if config["queue"] and config["buffer_count"] > 1 else 0  # picamera2.py:1270-1273
        self.camera_config = config
        limits = config["controls"].get("FrameDurationLimits", (100, 83333))
        self._period = max(limits[0] / 1e6, 1 / mode.fps)
        self._renderer = None

    def _scene(self) -> SceneRenderer:
        """The simulated scene at the main stream's size and the frame rate, made once per configuration."""
        with self._lock:
            if self._renderer is None:
                sim = self.sim.model_copy(update={"fps": 1 / self._period})
                self._renderer = SceneRenderer(sim, *self.camera_config["main"]["size"])
            return self._renderer

    def _fits(self, more: int) -> bool:
        if self.cma_bytes is None:
            return True
        return self.cma_in_use + self.cma_used + more <= self.cma_bytes

    def _free_streams(self) -> None:
        # DmaAllocator.allocate frees the old buffers first (dmaallocator.py:35-44).
        self.stream_bytes = 0

    def _check(self, config: dict[str, Any]) -> None:
        sensor = config.get("sensor")
        if sensor is not None and set(sensor) - _SENSOR_KEYS:  # picamera2.py:998-1002
            raise RuntimeError(f"Unexpected keys {set(sensor) - _SENSOR_KEYS} in sensor configuration")
        self._check_stream(config["main"], "main")
        lores = config["lores"]
        if lores is not None:
            self._check_stream(lores, "lores")
            (main_w, main_h), (lores_w, lores_h) = config["main"]["size"], lores["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")  # picamera2.py:1010
            if lores["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")  # picamera2.py:1012 (VC4 boards)
        if config["raw"] is not None:
            self._check_stream(config["raw"], "raw")

    @staticmethod
    def _check_stream(stream: dict[str, Any], name: str) -> None:
        # picamera2.py:958-984.
        fmt = stream["format"]
        if name == "raw":
            if not RAW_FORMAT.match(fmt):
                raise RuntimeError("Unrecognised raw format " + fmt)
        elif fmt not in RGB_ORDER and fmt not in YUV_FORMATS:
            raise RuntimeError(f"Bad format {fmt} in stream {name} (the fake knows RGB formats and YUV420)")
        size = stream["size"]
        if not isinstance(size, tuple) or len(size) != 2:
            raise RuntimeError(f"size in {name} stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def _pick_mode(self, config: dict[str, Any]) -> FakeSensorMode:
        """The raw mode picamera2 asks libcamera for (picamera2.py:1064-1103)."""
        sensor = config.get("sensor")
        raw = config.get("raw")
        if sensor is not None and sensor.get("bit_depth") is not None:
            bit_depth = int(sensor["bit_depth"])
        elif raw is not None and "format" in raw:
            bit_depth = bit_depth_of(raw["format"])
        else:
            bit_depth = bit_depth_of(self.sensor_format)
        if sensor is not None and sensor.get("output_size") is not None:
            output: tuple[int, int] = (int(sensor["output_size"][0]), int(sensor["output_size"][1]))
        elif raw is not None and "size" in raw:
            output = raw["size"]
        else:
            output = config["main"]["size"]

        def score_format(desired: float, actual: float) -> float:
            score = desired - actual
            return -score / 4 if score < 0 else score * 2

        def score(mode: FakeSensorMode) -> float:
            # score_mode, picamera2.py:1084-1098.
            result = score_format(output[0], mode.size[0]) + score_format(output[1], mode.size[1])
            result += 1500 * score_format(output[0] / output[1], mode.size[0] / mode.size[1])
            return result + 500 * abs(bit_depth - mode.bit_depth)

        return min(self.modes, key=score)  # picamera2.py:1100: the first of equal scores

    def camera_configuration(self) -> dict[str, Any]:
        """The configuration in force, with sizes, strides, frame sizes and the sensor mode filled in."""
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        """One stream's configuration in force."""
        stream: dict[str, Any] = self.camera_config[name]
        return stream

    # Running ----------------------------------------------------------------------------------------------------

    def start(self, config: dict[str, Any] | None = None, show_preview: bool | None = False) -> None:
        """Start delivering frames, configuring first if ``config`` is given.

        libcamera allocates its own raw buffers here. With ``rpi_apps.yaml`` (``raw_mandatory_stream``) it needs
        none when the application has a raw stream, else max(2, 4 - raw buffers) (rpi_apps.yaml lines 21, 27-30;
        vc4.cpp prepareBuffers). Running out is ``RuntimeError: Failed to start camera`` from the bindings.
        """
        self.calls.append("start")
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        config = self.camera_config
        assert self._mode is not None
        raw_buffers = config["buffer_count"] if config["raw"] is not None else 0
        internal = 0 if raw_buffers and self.rpi_apps_yaml else max(2, 4 - raw_buffers)
        internal_bytes = internal * stream_bytes(self._mode.format, self._mode.size)[1]
        if not self._fits(internal_bytes):
            raise RuntimeError("Failed to start camera: Cannot allocate memory")
        self._scene()  # before the first frame is due, as the real camera's set-up precedes it
        with self._lock:
            self.internal_bytes = internal_bytes
            self.started = True
            self._t0 = self._clock()
            self._arrived = 0
            self._queued = config["buffer_count"]  # picamera2.py:1138: one request per buffer
            self._completed = []

    def stop(self) -> None:
        """Stop delivering frames.

        With the event loop running, stop_ is queued as a job behind any other (picamera2.py:1423-1424), and jobs
        finish strictly in order (:1479-1485): behind a capture that will never get a frame, stop() waits forever.
        """
        self.calls.append("stop")
        if not self.started:
            return
        self._block_until(lambda: not self._jobs, "stop() queued behind a capture job that never finishes")
        if self.stop_hangs:
            self._block_until(lambda: False, "stop() stuck in libcamera")
        self._stop_()

    def _stop_(self) -> None:
        with self._lock:
            # picamera2.py:1389-1413: completed requests go back; the ones the application holds stay valid.
            self.started = False
            self.stop_count += 1
            for request in self._completed:
                request._forget()  # released; the camera is stopped, so not queued again
            self._completed = []
            self._queued = 0
            self.internal_bytes = 0
            self._wake.notify_all()

    def close(self) -> None:
        """Stop and close the camera; a second close does nothing.

        close() stops the event loop first and then calls stop_ directly (picamera2.py:725-737), so it does not
        wait behind a queued job; it does not cancel jobs either.
        """
        self.calls.append("close")
        if not self.is_open:
            return
        if self.started:
            self._stop_()
        with self._lock:
            self._free_streams()
            self.is_open = False
            self.camera_config = {}
            self._wake.notify_all()

    def _cancel_all_and_flush(self) -> None:
        """Cancel every queued job, whose waiters get CancelledError, and empty the queue (picamera2.py:1375-1387)."""
        self.calls.append("cancel_all_and_flush")
        with self._lock:
            for job in self._jobs:
                job.cancel()
            self._jobs = []
            self._wake.notify_all()

    def capture_request(self, wait: bool | float | None = None, signal_function: Any = None, flush: Any = None) -> Any:
        """The oldest completed request (picamera2.py:1852-1856), or the next to complete; release it when done.

        ``wait``: None or True block, False returns the job, a number waits that many seconds and then raises
        concurrent.futures.TimeoutError, leaving the job queued (picamera2.py:1529-1558). 0 is falsy, so it returns
        the job too. Before 0.3.20 a number blocks like True (v0.3.19 picamera2.py:1320).
        """
        self.calls.append("capture_request")
        with self._lock:
            self._advance(self._clock())
            job = FakeJob(self)
            self._jobs.append(job)
            self._run_jobs()
        if wait is None:
            wait = signal_function is None
        if not wait:
            return job
        timeout = None if wait is True or self.version < _FIRST_CANCEL_VERSION else float(wait)
        request = job.get_result(timeout)
        self.requests.append(request)
        return request

    def capture_array(self, name: str = "main", wait: bool | float | None = None, signal_function: Any = None) -> Any:
        """The named stream's image of the next frame (the request is released at once)."""
        request = self.capture_request(wait)
        try:
            return request.make_array(name)
        finally:
            request.release()

    # The frame clock --------------------------------------------------------------------------------------------

    def _next_arrival(self) -> float | None:
        if not self.started or (self.fail_after is not None and self._arrived >= self.fail_after):
            return None
        return self._t0 + (self._arrived + 1) * self._period

    def _advance(self, now: float) -> None:
        """Let every frame due by ``now`` arrive, as libcamera and the event loop would have handled it."""
        while (arrival := self._next_arrival()) is not None and arrival <= now:
            index = self._arrived
            self._arrived += 1
            if self._queued == 0:
                self.lost += 1  # no buffer to fill: the frame is dropped before it reaches picamera2
                continue
            self._queued -= 1
            self._completed.append(FakeCompletedRequest(self, index, arrival))  # picamera2.py:1461
            self._run_jobs()
            while len(self._completed) > self._max_queue_len:  # picamera2.py:1498-1500: the oldest go back
                self._completed.pop(0)._forget()
                self._queued += 1
                self.dropped += 1

    def _run_jobs(self) -> None:
        # picamera2.py:1479-1485: the oldest job takes the oldest completed request. A job nobody waits for any more
        # (it timed out) still takes one, and that request is never released (job.py:78-84).
        while self._jobs and self._completed:
            job = self._jobs.pop(0)
            job.future.set_result(self._completed.pop(0))
        self._wake.notify_all()

    def _requeue(self, request: FakeCompletedRequest) -> None:
        with self._lock:
            self._advance(self._clock())
            if self.started and request.stop_count == self.stop_count:
                self._queued += 1  # request.py:120-147: only while the camera runs that started it

    def _sync(self, request: FakeCompletedRequest) -> None:
        if self.sync_fails_at is not None and request.index >= self.sync_fails_at:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    def _wait_for_job(self, job: FakeJob, timeout: float | None) -> FakeCompletedRequest:
        start = self._clock()
        limit = self.hang_limit if timeout is None else timeout
        while True:
            with self._lock:
                now = self._clock()
                self._advance(now)
                if job.future.done():
                    return job.future.result()
                if now - start >= limit:
                    if timeout is not None:
                        raise concurrent.futures.TimeoutError  # the job stays queued
                    self.hangs.append("capture_request() waiting for a frame that never comes")
                    raise WouldHang("capture_request() would wait forever for a frame")
                arrival = self._next_arrival()
                until = min(start + limit, arrival if arrival is not None else start + limit)
                self._pause(until - now)

    def _block_until(self, done: Callable[[], bool], what: str) -> None:
        start = self._clock()
        while True:
            with self._lock:
                now = self._clock()
                self._advance(now)
                if done():
                    return
                if now - start >= self.hang_limit:
                    self.hangs.append(what)
                    raise WouldHang(f"the real picamera2 would block forever: {what}")
                arrival = self._next_arrival()
                until = min(start + self.hang_limit, arrival if arrival is not None else start + self.hang_limit)
                self._pause(until - now)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the fake's clock (called holding the lock); another thread's cancel wakes it early."""
        seconds = max(seconds, 0.0)
        if self._sleep is None:
            self._wake.wait(seconds)
            return
        self._lock.release()
        try:
            self._sleep(seconds)
        finally:
            self._lock.acquire()
