"""Real encoded video files for the tests, made with PyAV's libx264: raw H.264, timed containers, damaged streams.

A raw ``.h264`` is what ``rpicam-vid -o door.h264`` writes: an Annex B elementary stream (ITU-T H.264 annex B,
start codes ``00 00 01``) with no timestamps. ``.mkv`` and ``.mp4`` carry a timestamp per frame, so their frame rate
may vary. A damaged stream has a few access units (packets) cut short, as when RTP packets of a frame are lost on
Wi-Fi or a sector of the card is unreadable: FFmpeg conceals the missing macroblocks by smearing the rows above.
"""

import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.simulated import SceneRenderer

MS = Fraction(1, 1000)


def moving_pattern(count: int, width: int = 320, height: int = 240) -> Iterator[NDArray[np.uint8]]:
    """``count`` BGR frames of a bright square crossing a textured background, 7 px a frame."""
    rng = np.random.default_rng(7)
    background = rng.integers(40, 90, (height // 8, width // 8, 3), dtype=np.uint8)
    background = np.asarray(cv2.resize(background, (width, height), interpolation=cv2.INTER_NEAREST), np.uint8)
    for index in range(count):
        frame = background.copy()
        x = (index * 7) % (width - 40)
        frame[height // 2 - 20 : height // 2 + 20, x : x + 40] = 230
        yield frame


def door_scene(count: int, fps: float, *, noise: float = 0.0, **sim: float | bool) -> Iterator[NDArray[np.uint8]]:
    """``count`` frames (640x480) of the simulated door scene at ``fps``; by default the door stays shut.

    ``noise`` adds independent Gaussian noise of that standard deviation to every pixel of every frame, as a
    sensor at high gain in a dim hall does (the simulation's own noise moves as a whole, which an encoder predicts).
    """
    settings = SimulatedSettings.model_validate({"fps": fps, "first_opening": 3600.0, "door_period": 3600.0, **sim})
    renderer = SceneRenderer(settings, settings.width, settings.height)
    rng = np.random.default_rng(11)
    for index in range(count):
        image = renderer.render(index)[0]
        if noise > 0:
            image = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
        yield image


def encode_h264(frames: Iterable[NDArray[np.uint8]], fps: float, *, keyframe_every: int = 60) -> list[bytes]:
    """The Annex B access units (one packet a frame, in order) of ``frames`` encoded by libx264, no B-frames."""
    codec = av.CodecContext.create("libx264", "w")
    first = True
    packets: list[bytes] = []
    for index, image in enumerate(frames):
        if first:
            codec.height, codec.width = image.shape[:2]
            codec.pix_fmt = "yuv420p"
            codec.time_base = Fraction(1, 1000)
            codec.framerate = Fraction(fps).limit_denominator(1001)
            codec.options = {
                "g": str(keyframe_every),
                "bf": "0",
                "preset": "veryfast",
                "crf": "20",
                "x264-params": "scenecut=0",
            }
            first = False
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = round(index * 1000 / fps)
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


def cut_short(packet: bytes) -> bytes:
    """An access unit with the latter two thirds of its last slice lost (the decoder conceals what is missing)."""
    return packet[: max(16, len(packet) // 3)]


def write_raw_h264(
    path: Path, frames: Iterable[NDArray[np.uint8]], fps: float, *, damaged: Collection[int] = ()
) -> Path:
    """Write ``frames`` as a raw H.264 elementary stream (no timing), cutting short the packets numbered ``damaged``.

    A keyframe every 2 s, as IP cameras and ``rpicam-vid`` at 30 fps (60 frames) send them.
    """
    packets = encode_h264(frames, fps, keyframe_every=round(2 * fps))
    with path.open("wb") as out:
        for index, packet in enumerate(packets):
            out.write(cut_short(packet) if index in damaged else packet)
    return path


def write_timed(path: Path, frames: Sequence[NDArray[np.uint8]], times: Sequence[float]) -> Path:
    """Write ``frames`` (libx264) to ``path`` with frame ``i`` stamped at ``times[i]`` s, to the ms.

    The container is MP4 when the name ends in .mp4, else Matroska, whatever the name says.
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else "matroska") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = MS
        stream.codec_context.time_base = MS
        stream.codec_context.options = {"bf": "0", "preset": "veryfast"}
        for image, t in zip(frames, times, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = round(t * 1000)
            frame.time_base = MS
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def damage_at(count: int, fps: float, seconds: Sequence[float], seed: int = 1) -> set[int]:
    """Packet numbers near each of ``seconds`` (a few frames apart at random), for ``write_raw_h264(damaged=...)``."""
    rng = random.Random(seed)
    return {min(count - 1, round(s * fps) + rng.randrange(3)) for s in seconds}
