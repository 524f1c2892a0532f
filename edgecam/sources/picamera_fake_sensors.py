"""The fake Picamera2's sensors and camera memory: raw modes per sensor model, buffer sizes, CMA budgets.

Facts name their source: ``picamera2.py:N`` is ``picamera2/picamera2.py`` of the 0.3.38 wheel.
"""

import re
from dataclasses import dataclass

MIB = 1 << 20

ZERO_2W_CMA = 64 * MIB
"""The smallest CmaTotal a Pi has by default, the board edgecam's defaults must fit: 64 MB, the device tree's default
(raspberrypi/firmware#1807), seen on a 512 MB board on Bookworm Lite ("65536K cma-reserved",
ArduCAM/picamera2_examples#27). With Bookworm's KMS overlay a Zero 2 W shows 256 MB (raspberrypi/picamera2#1358),
so edgecam reads /proc/meminfo rather than assuming."""

CMA_IN_USE = 12 * MIB
"""What the fake assumes the rest of the system holds in CMA while the camera starts (the display's framebuffer,
the GPU, libcamera's statistics and embedded-data buffers). An assumption, not a measurement."""


@dataclass(frozen=True)
class FakeSensorMode:
    """One raw mode as ``rpicam-hello --list-cameras`` shows it on a Pi 4."""

    format: str
    size: tuple[int, int]
    fps: float
    """Highest frame rate of the mode."""
    crop: tuple[int, int, int, int]
    """The sensor area the mode reads, in full-resolution pixels: x, y, width, height."""

    @property
    def bit_depth(self) -> int:
        """Bits per pixel, from the format's name as picamera2's SensorFormat reads it (sensor_format.py:14)."""
        return bit_depth_of(self.format)


SENSORS: dict[str, tuple[FakeSensorMode, ...]] = {
    # HQ camera. raspberrypi/documentation pull 2587 (the --list-cameras example).
    "imx477": (
        FakeSensorMode("SRGGB10_CSI2P", (1332, 990), 120.05, (696, 528, 2664, 1980)),
        FakeSensorMode("SRGGB12_CSI2P", (2028, 1080), 50.03, (0, 440, 4056, 2160)),
        FakeSensorMode("SRGGB12_CSI2P", (2028, 1520), 40.01, (0, 0, 4056, 3040)),
        FakeSensorMode("SRGGB12_CSI2P", (4056, 3040), 10.00, (0, 0, 4056, 3040)),
    ),
    # Camera Module 3. --list-cameras output quoted in public projects; 10-bit only, 1536x864 the cropped mode
    # (raspberrypi/rpicam-apps#570).
    "imx708": (
        FakeSensorMode("SRGGB10_CSI2P", (1536, 864), 120.13, (768, 432, 3072, 1728)),
        FakeSensorMode("SRGGB10_CSI2P", (2304, 1296), 56.03, (0, 0, 4608, 2592)),
        FakeSensorMode("SRGGB10_CSI2P", (4608, 2592), 14.35, (0, 0, 4608, 2592)),
    ),
    # Camera Module v2. raspberrypi/documentation pull 2587: the same four sizes in 10 and 8 bits.
    "imx219": tuple(
        FakeSensorMode(fmt, size, fps, crop)
        for fmt in ("SRGGB10_CSI2P", "SRGGB8")
        for size, fps, crop in (
            ((640, 480), 206.65, (1000, 752, 1280, 960)),
            ((1640, 1232), 41.85, (0, 0, 3280, 2464)),
            ((1920, 1080), 47.57, (680, 692, 1920, 1080)),
            ((3280, 2464), 21.19, (0, 0, 3280, 2464)),
        )
    ),
}

# Channel order in memory of picamera2's RGB formats, as indexes into a BGR image (X is a constant 255).
RGB_ORDER = {"RGB888": (0, 1, 2), "BGR888": (2, 1, 0), "XRGB8888": (0, 1, 2, -1), "XBGR8888": (2, 1, 0, -1)}
YUV_FORMATS = ("YUV420",)
RAW_FORMAT = re.compile(r"^(S[RGB]{4}|R)\d+(_CSI2P)?$")


def bit_depth_of(fmt: str) -> int:
    """Bits per pixel of a raw format, e.g. 12 for ``SRGGB12_CSI2P`` (picamera2's sensor_format.py:14)."""
    match = re.search(r"\d+$", fmt.split("_", 1)[0])
    if match is None:
        raise RuntimeError(f"Unrecognised raw format {fmt}")
    return int(match.group())


def align(value: int, to: int) -> int:
    """``value`` rounded up to a multiple of ``to``."""
    return -(-value // to) * to


def stream_bytes(fmt: str, size: tuple[int, int]) -> tuple[int, int]:
    """The (stride, frame size) in bytes the fake gives a stream of ``fmt`` at ``size``.

    Rows are padded to 32 bytes, YUV420's Y rows to 64 so that its half-width U and V rows stay 32-aligned:
    picamera2's ``align_stream`` says this is what the VC4 hardware does (picamera2.py:1110-1115). Raw rows hold
    the packed pixels (CSI2P: bit depth / 8 bytes each), unpacked ones 1 byte up to 8 bits, else 2.
    """
    width, height = size
    if fmt in YUV_FORMATS:
        stride = align(width, 64)
        return stride, stride * height * 3 // 2
    if fmt in RGB_ORDER:
        stride = align(width * len(RGB_ORDER[fmt]), 32)
        return stride, stride * height
    bits = bit_depth_of(fmt)
    row = -(-width * bits // 8) if fmt.endswith("_CSI2P") else width * (1 if bits <= 8 else 2)
    stride = align(row, 32)
    return stride, stride * height
