"""H.264 compression for the simulated scene: frames through a real encoder (libx264) and back, in memory.

An IP camera or ``rpicam-vid`` sends H.264 at a fixed bit rate: at a low rate the picture falls apart into blocks,
sensor noise turns into slowly crawling smears, and every I-frame (the first of each group of pictures) comes out
sharper than the predicted frames before it, so the whole picture pulses once a group. This module makes those
artefacts with libx264 through PyAV (the ``av`` package, a development dependency of edgecam; imported only here).

Each group of pictures is encoded by a fresh encoder starting with an IDR frame and decoded by a fresh decoder, so
a frame depends only on the frames of its own group: the same index always decodes to the same pixels, in whatever
order frames are asked for. Encoding is single-threaded, which keeps libx264's output the same from run to run.
"""

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgecam.errors import CameraError

Image = NDArray[np.uint8]


class H264RoundTrip:
    """The frames of ``render`` (BGR, ``width`` x ``height``) as an H.264 stream of ``bitrate`` kbit/s shows them.

    Raises:
        CameraError: PyAV or its libx264 encoder is not installed (one line naming the setting).
    """

    def __init__(
        self, render: Callable[[int], Image], width: int, height: int, fps: float, bitrate: int, gop: int
    ) -> None:
        try:
            import av  # here, not at the top: only this option needs PyAV, a development dependency
        except ImportError as err:
            raise CameraError(
                "camera.simulated.h264_bitrate needs PyAV for its libx264 encoder (pip install av), "
                "which is not installed: install it or set h264_bitrate = 0"
            ) from err
        if "libx264" not in av.codecs_available:
            raise CameraError(
                "camera.simulated.h264_bitrate needs PyAV built with libx264 (the PyPI wheels are): "
                "reinstall av from PyPI or set h264_bitrate = 0"
            )
        self._av: Any = av
        self._render = render
        self._size = (width, height)
        self._rate = Fraction(fps).limit_denominator(1001)
        self._bitrate = bitrate
        self._gop = gop
        self._group = -1
        self._decoded: list[Image] = []

    def frame(self, index: int) -> Image:
        """Frame ``index`` after the round trip through the encoder and the decoder."""
        group = index // self._gop
        if group != self._group:
            first = group * self._gop
            self._decoded = self._round_trip([self._render(i) for i in range(first, first + self._gop)])
            self._group = group
        return self._decoded[index % self._gop].copy()

    def _round_trip(self, images: list[Image]) -> list[Image]:
        av = self._av
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = self._size
        encoder.pix_fmt = "yuv420p"
        encoder.framerate = self._rate
        encoder.time_base = 1 / self._rate
        encoder.bit_rate = self._bitrate * 1000
        encoder.gop_size = self._gop
        encoder.thread_count = 1
        # A camera's encoder: no B-frames, no look-ahead, a constant bit rate over a one-second buffer.
        kbps = self._bitrate
        encoder.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "x264-params": f"bframes=0:scenecut=0:vbv-maxrate={kbps}:vbv-bufsize={kbps}:nal-hrd=none",
        }
        packets = []
        for pts, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = pts
            packets += encoder.encode(frame)
        packets += encoder.encode(None)
        decoder = av.CodecContext.create("h264", "r")
        decoder.thread_count = 1
        decoded = [f for packet in packets for f in decoder.decode(packet)]
        decoded += decoder.decode(None)
        if len(decoded) != len(images):
            raise CameraError(f"camera: libx264 gave back {len(decoded)} frames of {len(images)} (h264_bitrate)")
        return [np.asarray(f.to_ndarray(format="bgr24"), np.uint8) for f in decoded]
