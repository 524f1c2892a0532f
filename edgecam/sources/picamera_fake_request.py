"""The fake Picamera2's jobs and requests: a queued capture, one frame's buffers and metadata, a mapped stream.

Facts name their source: ``picamera2.py:N``, ``request.py:N``, ``job.py:N`` are files of the 0.3.38 wheel.
"""

import concurrent.futures
from types import TracebackType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.sources.picamera_fake_sensors import RGB_ORDER, YUV_FORMATS

if TYPE_CHECKING:
    from edgecam.sources.picamera_fake import FakePicamera2


class FakeJob:
    """Mirrors ``picamera2.job.Job``: a queued operation whose result a caller may wait for."""

    def __init__(self, camera: "FakePicamera2") -> None:
        self._camera = camera
        self.future: concurrent.futures.Future[FakeCompletedRequest] = concurrent.futures.Future()
        self.future.set_running_or_notify_cancel()  # job.py:30

    def get_result(self, timeout: float | None = None) -> "FakeCompletedRequest":
        """The request, waiting at most ``timeout`` seconds (None: for ever; bounded by the fake's hang limit).

        Raises concurrent.futures.TimeoutError on a timeout (``Future.result``, job.py:84) and CancelledError once
        ``cancel_all_and_flush`` cancelled the job (job.py:93).
        """
        return self._camera._wait_for_job(self, timeout)

    def cancel(self) -> None:
        """Make waiting for the result raise CancelledError (job.py:86-93)."""
        if not self.future.done():
            self.future.set_exception(concurrent.futures.CancelledError())


class FakeCompletedRequest:
    """Mirrors ``picamera2.request.CompletedRequest``: one frame's buffers and metadata until it is released."""

    def __init__(self, camera: "FakePicamera2", index: int, arrival: float) -> None:
        self._camera = camera
        self._scene = camera._scene
        self.index = index
        """The frame's number since the camera started (the real request has no such field)."""
        self.arrival = arrival
        self.config: dict[str, Any] = dict(camera.camera_config)
        self.stream_map: dict[str, str] = {
            name: name for name in ("main", "lores", "raw") if self.config.get(name) is not None
        }
        self.request: object | None = object()  # stands for the libcamera request
        self.stop_count = camera.stop_count
        self.ref_count = 1
        self._buffers: dict[str, NDArray[np.uint8]] = {}
        self._metadata: dict[str, Any] | None = None

    @property
    def released(self) -> bool:
        """The request went back to the camera."""
        return self.ref_count == 0

    def acquire(self) -> None:
        """Take another reference (request.py:106-111)."""
        if self.ref_count == 0:
            raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
        self.ref_count += 1

    def release(self) -> None:
        """Give one reference back; at zero the buffers go back to the camera (request.py:113-152)."""
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:
            self._forget()
            self._camera._requeue(self)

    def _forget(self) -> None:
        # request.py:148-152: the libcamera request, the configuration and the stream map are dropped.
        self.ref_count = 0
        self.request = None
        self.config = {}
        self.stream_map = {}
        self._buffers = {}

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata (ExposureTime, AnalogueGain, Lux, ColourGains, SensorTimestamp, FrameDuration...)."""
        assert self.request is not None  # request.py:164: a released request fails like this, not RuntimeError
        if self._metadata is None:
            self._render()
        assert self._metadata is not None
        return dict(self._metadata)

    def make_array(self, name: str) -> NDArray[np.uint8]:
        """A copy of the named stream: (h, w, 3 or 4) for RGB formats, (h * 3 / 2, stride) for YUV420."""
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")  # request.py:171-173
        with MappedArray(self, name, write=False) as mapped:
            assert mapped.array is not None
            return np.array(mapped.array)

    def _view(self, name: str, write: bool) -> NDArray[np.uint8]:
        """The named stream's buffer, shaped as picamera2 shapes it (request.py:300-345), without a copy."""
        stream = self.config[name]
        if name not in self._buffers:
            self._render()
        buffer = self._buffers[name]
        width, height = stream["size"]
        stride = stream["stride"]
        view: NDArray[np.uint8]
        if stream["format"] in YUV_FORMATS:
            view = buffer.reshape(height * 3 // 2, stride)
        elif stream["format"] in RGB_ORDER:
            channels = len(RGB_ORDER[stream["format"]])
            view = np.asarray(buffer.reshape(height, stride)[:, : width * channels].reshape(height, width, channels))
        else:
            view = buffer.reshape(height, stride)
        view = view.view()
        view.flags.writeable = write
        return view

    def _render(self) -> None:
        bgr, scene = self._scene().render(self.index)
        main = self.config["main"]
        self._buffers["main"] = _paint(bgr, main)
        lores = self.config.get("lores")
        if lores is not None:
            small = np.asarray(cv2.resize(bgr, lores["size"], interpolation=cv2.INTER_AREA), np.uint8)
            self._buffers["lores"] = _paint(small, lores)
        raw = self.config.get("raw")
        if raw is not None:
            self._buffers["raw"] = np.zeros(raw["framesize"], np.uint8)
        duration_us = round(self._camera._period * 1_000_000)
        self._metadata = {
            **scene,
            "SensorTimestamp": round(self.arrival * 1e9),
            "FrameDuration": duration_us,
            "DigitalGain": 1.0,
            "ColourTemperature": 4100,
        }


class MappedArray:
    """Mirrors ``picamera2.request.MappedArray``: the named stream's buffer in place, inside ``with``.

    Entering syncs the buffer for the CPU, which the real DmaAllocator does with an ioctl that raises OSError when
    it fails (``dmaallocator.py:126``); the fake fails so from frame ``sync_fails_at`` on.
    """

    def __init__(self, request: FakeCompletedRequest, stream: str, reshape: bool = True, write: bool = True) -> None:
        self._request = request
        self._stream = stream
        self._write = write
        self._array: NDArray[np.uint8] | None = None

    def __enter__(self) -> "MappedArray":
        request = self._request
        request.stream_map[self._stream]  # noqa: B018  # request.py:33: KeyError once the request is released
        request._camera._sync(request)
        self._array = request._view(self._stream, self._write)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        self._array = None

    @property
    def array(self) -> NDArray[np.uint8] | None:
        """The buffer as an array, valid inside ``with`` only."""
        return self._array


def _paint(bgr: NDArray[np.uint8], stream: dict[str, Any]) -> NDArray[np.uint8]:
    """The stream's buffer (1-D, ``framesize`` bytes) holding ``bgr`` in the stream's format and stride."""
    height, width = bgr.shape[:2]
    stride = stream["stride"]
    out = np.zeros(stream["framesize"], np.uint8)
    if stream["format"] in YUV_FORMATS:
        # Full-range YCbCr, as the preview configuration's Sycc colour space asks: Y is the plain grey level.
        ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
        half = stride // 2
        planes = [(ycrcb[:, :, 0], 0, stride)]
        for channel, offset in ((2, height * stride), (1, height * stride + height // 2 * half)):
            chroma = cv2.resize(ycrcb[:, :, channel], (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            planes.append((chroma, offset, half))
        for plane, offset, row in planes:
            rows = plane.shape[0]
            out[offset : offset + rows * row].reshape(rows, row)[:, : plane.shape[1]] = plane
        return out
    order = RGB_ORDER[stream["format"]]
    with_x = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]) if -1 in order else bgr
    pixels = with_x[:, :, [3 if i == -1 else i for i in order]]
    out.reshape(height, stride)[:, : width * len(order)] = pixels.reshape(height, -1)
    return out
