"""The Pi camera's configuration planned for the board: still size, sensor mode, buffers and their camera memory.

Pure: no picamera2, no I/O. ``picamera.py`` reads the sensor's modes and the board's CMA and applies the plan.
Facts taken from picamera2 name their line: ``picamera2.py:N`` is ``picamera2/picamera2.py`` of the 0.3.38 wheel.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgecam.config import CameraSettings

MIB = 1 << 20
ASSUMED_CMA = 64 * MIB
"""CMA assumed when /proc/meminfo does not say: the least a Pi reserves by default (the device tree's 64 MB, what a
512 MB board shows without the KMS overlay, and the Pi 5's overlay); Bookworm's overlay gives most boards 256 MB."""
CMA_SHARE = 0.5
"""Share of the CMA the camera's own buffers may plan on. The rest is for the display and GPU, libcamera's
statistics and lens-shading buffers, and fragmentation: each buffer must be one contiguous piece."""
AUTO_STILL_PIXELS = 3_200_000
"""Largest still chosen when none is set: the 2x2-binned sensor modes' class (2028x1520, 2304x1296), which keep
full frame rates; full-resolution stills cost four times the memory, copy, JPEG bytes and MQTT packet."""
STANDARD_STILLS = (
    (2304, 1296),
    (2028, 1520),
    (1920, 1080),
    (1640, 1232),
    (1536, 864),
    (1280, 960),
    (1280, 720),
    (1024, 768),
    (640, 480),
    (640, 360),
)
"""Still sizes chosen from when none is set, those of the sensor's aspect ratio (4:3 or 16:9)."""
_RAW_FORMAT = re.compile(r"^(S[RGB]{4}|R)(\d+)(_CSI2P|_PISP_COMP\d)?$")


@dataclass(frozen=True)
class SensorMode:
    """A raw mode of the sensor as picamera2's ``_raw_modes`` lists it (picamera2.py:623-630)."""

    format: str
    """libcamera's name, e.g. ``SRGGB12_CSI2P``: Bayer order, bit depth, packing."""
    size: tuple[int, int]

    @property
    def bit_depth(self) -> int:
        """Bits per pixel from the sensor (how picamera2's SensorFormat reads it: sensor_format.py:14)."""
        match = _RAW_FORMAT.match(self.format)
        assert match is not None
        return int(match.group(2))

    @property
    def bytes_per_pixel(self) -> float:
        """Bytes per pixel in a raw buffer: packed CSI-2 keeps the bit depth, unpacked takes 1 or 2 bytes."""
        match = _RAW_FORMAT.match(self.format)
        assert match is not None
        if match.group(3) == "_CSI2P":
            return self.bit_depth / 8
        if match.group(3):
            return 1.0  # the Pi 5's compressed raw
        return 1.0 if self.bit_depth <= 8 else 2.0


def read_modes(camera: Any) -> list[SensorMode]:
    """The sensor's raw modes, from picamera2's private ``_raw_modes`` list, [] when it has none.

    The public ``sensor_modes`` is not used: it configures the camera once per mode (picamera2.py:613-614), slow,
    and on a 512 MB board it runs out of camera memory (raspberrypi/picamera2#1358). ``_raw_modes`` is read from
    libcamera at open (picamera2.py:556), present from 0.3.16 on. Without it picamera2 picks the mode itself.
    """
    entries = getattr(camera, "_raw_modes", None)
    modes = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            fmt, (width, height) = str(entry["format"]), entry["size"]
        except (KeyError, TypeError, ValueError):
            continue
        if _RAW_FORMAT.match(fmt):
            modes.append(SensorMode(fmt, (int(width), int(height))))
    return modes


@dataclass(frozen=True)
class CameraPlan:
    """The configuration chosen for the board: still size, sensor mode, buffers and their estimated memory."""

    still: tuple[int, int]
    detect: tuple[int, int]
    mode: SensorMode | None
    """None: the sensor's modes are unknown and picamera2 picks one for the still size."""
    buffers: int
    cma_bytes: int
    """Estimated camera memory of the streams' buffers (main, lores and raw), bytes."""
    budget: int
    """Camera memory the plan had to fit in, bytes: ``CMA_SHARE`` of the board's CMA."""
    chosen: bool
    """The still size was chosen for the board, not set by the user."""

    @property
    def upscaled(self) -> bool:
        """The sensor mode has fewer pixels than the still (across the still's aspect): the ISP scales it up."""
        if self.mode is None:
            return False
        return _view_width(self.mode.size, self.still[0] / self.still[1]) < self.still[0] - 1


def buffer_count(fps: float) -> int:
    """Buffers per stream for a camera running at ``fps``.

    edgecam holds one request (the latest frame, for its still) and picamera2 keeps the newest completed one
    (``_max_queue_len`` 1: picamera2.py:1270-1271); a third is the one the sensor fills. When a frame completes
    picamera2 releases the one it kept (picamera2.py:1498-1500), so the sensor always has a buffer to fill however
    long edgecam is busy, and a capture returns the newest frame. With two, a busy frame loop leaves the sensor
    none: frames are lost and the frame returned next is stale. The request comes back within the frame's
    readout and the ISP's pass (tens of ms), well inside a frame at 10 fps; above 15 fps the next frame may start
    before that (inferred from the timings, not measured), so a fourth keeps one buffer always queued. picamera2's
    preview uses 4 (picamera2.py:805) for preview windows that hold a buffer too.
    """
    return 3 if fps <= 15 else 4


def _even(value: int) -> int:
    # picamera2 refuses odd stream sizes.
    return value - value % 2


def _align(value: float, to: int) -> int:
    return math.ceil(value / to) * to


def _yuv420_bytes(size: tuple[int, int]) -> int:
    # Y rows padded to 64 bytes, so U and V rows (half as wide) to 32, as picamera2 aligns YUV420 for the VC4
    # hardware (picamera2.py:1110-1115); the height to 16 to err on the large side.
    return _align(size[0], 64) * _align(size[1], 16) * 3 // 2


def estimate_cma(
    still: tuple[int, int], detect: tuple[int, int], mode: SensorMode | None, native: tuple[int, int], buffers: int
) -> int:
    """Bytes of camera memory for ``buffers`` buffers of each stream: YUV420 main and lores, and the raw mode.

    picamera2 allocates every stream's buffers from CMA in configure() (dmaallocator.py:45-66). The raw stream is
    kept on: with it, libcamera (through picamera2's rpi_apps.yaml, ``raw_mandatory_stream``) needs no raw buffers
    of its own, while without it it allocates four (rpi_apps.yaml lines 21 and 27-30; vc4.cpp prepareBuffers).
    """
    raw_size, per_pixel = (mode.size, mode.bytes_per_pixel) if mode is not None else (native, 2.0)
    raw = _align(raw_size[0] * per_pixel, 32) * raw_size[1]
    return buffers * (_yuv420_bytes(still) + _yuv420_bytes(detect) + raw)


def _sensor_area(mode: SensorMode, native: tuple[int, int]) -> tuple[int, int] | None:
    """The sensor area a mode reads, where its size tells; None for a centre crop of unknown size.

    Known: all of the sensor, or its full width or height, read at full resolution or 2x2 binned. Other modes read
    a centre crop (1332x990 on the HQ camera, 1536x864 on the Camera Module 3, 640x480 and 1920x1080 on the v2).
    """
    for binning in (1, 2):
        width, height = mode.size[0] * binning, mode.size[1] * binning
        fits = width <= native[0] + 8 and height <= native[1] + 8
        if fits and (abs(width - native[0]) <= 8 or abs(height - native[1]) <= 8):
            return width, height
    return None


def _reads_whole(mode: SensorMode, native: tuple[int, int]) -> bool:
    area = _sensor_area(mode, native)
    return area is not None and abs(area[0] - native[0]) <= 8 and abs(area[1] - native[1]) <= 8


def _view_width(area: tuple[int, int], aspect: float) -> float:
    """Width of the largest rectangle of ``aspect`` inside ``area``: what a still of that aspect sees of it."""
    return min(area[0], area[1] * aspect)


def choose_mode(
    still: tuple[int, int],
    detect: tuple[int, int],
    modes: Sequence[SensorMode],
    native: tuple[int, int],
    buffers: int,
    budget: int,
) -> SensorMode | None:
    """The sensor mode for ``still``, None when the modes are unknown.

    The smallest mode that keeps the whole field of view of the still's aspect and has at least its pixels,
    within ``budget`` bytes; else the largest such mode that fits (the still is scaled up); else the smallest
    covering mode, for the allocator to judge.

    picamera2's own choice (score_mode, picamera2.py:1084-1100) prefers the mode closest in size and aspect, and
    picks a cropped one as readily: the HQ camera's 1332x990 for a 1280x960 still, the Camera Module 3's full
    4608x2592 for the old default 2028x1520.
    """
    if not modes:
        return None
    aspect = still[0] / still[1]
    whole = _view_width(native, aspect)
    viewing = [m for m in modes if (a := _sensor_area(m, native)) and _view_width(a, aspect) >= 0.99 * whole]
    candidates = viewing or list(modes)

    def cost(mode: SensorMode) -> int:
        return estimate_cma(still, detect, mode, native, buffers)

    def area(mode: SensorMode) -> tuple[int, int]:
        return mode.size[0] * mode.size[1], mode.bit_depth

    covering = sorted(
        (m for m in candidates if _view_width(m.size, aspect) >= still[0] - 1),
        key=lambda m: (m.size[0] * m.size[1], -m.bit_depth),
    )
    for mode in covering:
        if cost(mode) <= budget:
            return mode
    fitting = [m for m in candidates if cost(m) <= budget]
    if fitting:
        return max(fitting, key=area)
    return covering[0] if covering else max(candidates, key=area)


def still_sizes(modes: Sequence[SensorMode], native: tuple[int, int]) -> list[tuple[int, int]]:
    """Still sizes to choose from when none is set, largest first.

    The standard sizes of the sensor's aspect and the sizes of its modes that read the whole sensor, no larger than
    the sensor nor than ``AUTO_STILL_PIXELS``.
    """
    aspect = native[0] / native[1]
    sizes = {s for s in STANDARD_STILLS if abs(s[0] / s[1] - aspect) <= 0.02 * aspect}
    if not sizes:  # an unusual sensor: its own aspect at standard widths
        sizes = {(w, _even(round(w / aspect))) for w in (2028, 1640, 1280, 1024, 640)}
    sizes |= {m.size for m in modes if _reads_whole(m, native)}
    usable = [s for s in sizes if s[0] <= native[0] and s[1] <= native[1] and s[0] * s[1] <= AUTO_STILL_PIXELS]
    return sorted(usable, key=lambda s: s[0] * s[1], reverse=True)


def plan_camera(
    camera: CameraSettings, modes: Sequence[SensorMode], native: tuple[int, int], cma: int | None
) -> CameraPlan:
    """The configuration for the board, whose CMA is ``cma`` bytes (None: unknown, ``ASSUMED_CMA`` assumed).

    The user's still size, or the largest of ``still_sizes`` whose buffers fit ``CMA_SHARE`` of the CMA; the
    sensor mode for it (``choose_mode``); the buffer count (``buffer_count``).
    """
    budget = int((cma or ASSUMED_CMA) * CMA_SHARE)
    buffers = buffer_count(camera.fps)
    detect = (_even(camera.detect_width), _even(camera.detect_height))

    def plan(still: tuple[int, int], chosen: bool) -> CameraPlan:
        mode = choose_mode(still, detect, modes, native, buffers, budget)
        cma_bytes = estimate_cma(still, detect, mode, native, buffers)
        return CameraPlan(still, detect, mode, buffers, cma_bytes, budget, chosen)

    if camera.still_width is not None and camera.still_height is not None:
        return plan((_even(camera.still_width), _even(camera.still_height)), chosen=False)
    # A chosen still comes from a binned mode where the sensor has one: full-resolution modes are slower (the v2's
    # 3280x2464 gives at most 21 fps, the HQ's 4056x3040 10 fps) as well as larger.
    modes = [m for m in modes if m.size[0] * m.size[1] <= AUTO_STILL_PIXELS] or modes
    sizes = [s for s in still_sizes(modes, native) if s[0] >= detect[0] and s[1] >= detect[1]]
    plans = [plan(still, chosen=True) for still in sizes]
    for candidate in plans:
        if candidate.cma_bytes <= budget and not candidate.upscaled:
            return candidate
    if plans:
        return plans[-1]
    return plan(detect, chosen=True)
