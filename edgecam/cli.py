"""The ``edgecam`` commands: run, check-config, replay, calibrate, listen, fleet, simulate, forget(-ha), notice."""

import argparse
import ctypes
import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from edgecam import __version__
from edgecam.config import Settings
from edgecam.errors import ConfigError, EdgecamError, StorageError
from edgecam.settings_file import config_path, load_settings, render_toml

logger = logging.getLogger("edgecam")

EXPLAIN_DIR = "edgecam-explain"
"""Where ``replay --explain`` draws when no ``--out`` is given."""

M_MMAP_THRESHOLD = -3
"""mallopt's parameter: the size from which malloc maps a block on its own (glibc malloc/malloc.h)."""
MAPPED_FROM = 1024 * 1024
"""Bytes from which ``run`` has each block mapped on its own, so unmapped when freed: a still's pixels, not a frame's
at detection size (640x480 BGR is 900 KiB), which the heap hands out again frame after frame without page faults."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file (default: $EDGECAM_CONFIG)"
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    parser = argparse.ArgumentParser(
        prog="edgecam", parents=[common], description="A private-by-design door camera agent."
    )
    parser.add_argument("--version", action="version", version=f"edgecam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the agent: watch the door, publish events and stills")
    sub.add_parser("check-config", parents=[common], help="print the effective settings, or what is wrong")
    replay = sub.add_parser("replay", parents=[common], help="run the detector over a recorded clip, no broker")
    replay.add_argument("clip", help="a video file OpenCV reads (raw .h264, .mp4, .mkv, ...)")
    replay.add_argument("--out", type=Path, help="also save the stills and a PNG sheet of the run here")
    replay.add_argument(
        "--fps",
        type=_frame_rate,
        help="frame rate the clip was recorded at, for a file without timestamps (raw .h264); default camera.fps "
        "when set, else OpenCV's guess",
    )
    replay.add_argument(
        "--explain",
        action="store_true",
        help="draw, per event, the frames and the score curve that started and ended it (into --out, default ./"
        f"{EXPLAIN_DIR})",
    )
    calibrate = sub.add_parser(
        "calibrate", parents=[common], help="learn the closed door from a few seconds of quiet scene (door state)"
    )
    calibrate.add_argument(
        "--out", type=Path, help="reference file to write (default door.reference or <storage.dir>/door-reference.npz)"
    )
    calibrate.add_argument(
        "--skip", type=float, default=0.0, metavar="SECONDS", help="pass over the first SECONDS of a recording"
    )
    listen = sub.add_parser(
        "listen", parents=[common], help="subscribe, print events, keep them in an event log, verify stills"
    )
    listen.add_argument(
        "--out",
        type=Path,
        default=Path("edgecam-events"),
        help="event log folder: events.sqlite3, stills per device and day, index.html",
    )
    listen.add_argument(
        "--keep-days",
        type=float,
        metavar="DAYS",
        help="days the event log keeps an event (more than 0; default storage.broker_expiry, else "
        "storage.retention_days)",
    )
    listen.add_argument("--device", default="+", help="device id to follow (default: every device)")
    listen.add_argument("--count", type=int, help="exit after this many event messages")
    listen.add_argument(
        "--ack",
        action="store_true",
        help="confirm each whole event and each forget on <base>/ack (for outbox.confirm = 'consumer')",
    )
    fleet = sub.add_parser(
        "fleet",
        parents=[common],
        help="one line per door heard on the broker: availability, door, last event, outbox, clock, version",
        description="Print one line per door from its retained topics on the broker, then exit: 0, or 1 when no door "
        "is heard. It subscribes with a clean session and publishes nothing; the retained messages count as all "
        "arrived once none has come for 0.5 s after the broker confirmed the subscription (at most 5 s). '-' is a "
        "value not known, '?' one that cannot be read.",
    )
    fleet.add_argument("--device", metavar="ID", help="only this device (default: every device)")
    fleet.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=10.0,
        metavar="SECONDS",
        help="keep the table current: print it again when it changes, looking at least every SECONDS (default 10) "
        "until Ctrl-C",
    )
    forget = sub.add_parser(
        "forget",
        parents=[common],
        help="erase door events and their stills: on the device, the broker's snapshot, and subscribers' copies",
    )
    forget.add_argument("--event", metavar="ID", help="the event with this event_id")
    forget.add_argument(
        "--before", metavar="DATE", help="every event begun before DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM, local time)"
    )
    forget.add_argument("--all", action="store_true", help="every event")
    forget.add_argument(
        "--force", action="store_true", help="also drop events not yet delivered (they are lost to every subscriber)"
    )
    sub.add_parser(
        "forget-ha",
        parents=[common],
        help="remove this device and its entities from Home Assistant (stop the agent or disable discovery first)",
    )
    simulate = sub.add_parser("simulate", parents=[common], help="render the simulated door scene to a video file")
    simulate.add_argument("out", type=Path, help="video file to write (.mkv or .avi)")
    simulate.add_argument("--seconds", type=float, default=60.0, help="length of the clip (default 60)")
    notice = sub.add_parser(
        "notice", parents=[common], help="make the privacy notice for the door (HTML and PNG) from the settings"
    )
    notice.add_argument("--out", type=Path, default=Path("."), help="folder for notice.html and notice.png (default .)")
    notice.add_argument("--paper", choices=("a5", "a4"), default="a5", help="paper size (default a5)")
    notice.add_argument(
        "--picture",
        type=Path,
        help="PNG of the camera's view (default the one 'edgecam calibrate' saved beside the door reference)",
    )
    return parser


def _setup_logging(verbose: bool) -> None:
    under_systemd = "JOURNAL_STREAM" in os.environ  # journald adds its own timestamps
    fmt = "%(levelname)s %(name)s: %(message)s" if under_systemd else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, stream=sys.stderr)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _check_config(settings: Settings) -> int:
    """Print the effective settings; make every check ``run`` makes before it starts (``check_settings``)."""
    from edgecam.agent import check_settings
    from edgecam.config_check import config_warnings
    from edgecam.events import EventTracker

    print(render_toml(settings), end="")
    try:
        door = check_settings(settings, "check-config")
    except (ConfigError, StorageError) as err:
        print(f"edgecam: {err}", file=sys.stderr)
        return 2
    print(f"# events: {EventTracker.describe(settings.motion, settings.door, door is not None)}")
    for warning in config_warnings(settings):
        print(f"edgecam: warning: {warning}", file=sys.stderr)
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.agent import Agent

    _unmap_freed_pixels()
    Agent(settings).run(_stop_on_signals())
    return 0


def _unmap_freed_pixels() -> None:
    """Have glibc give each freed block of ``MAPPED_FROM`` bytes or more back to the system at once: a still's pixels.

    glibc raises its mmap threshold to the size of each mapped block freed (up to 32 MiB on 64-bit systems, glibc
    malloc/malloc.c DEFAULT_MMAP_THRESHOLD_MAX), so after the first still the next ones come from the heap and
    stay in it once freed; setting the threshold turns that off (glibc manual, "Malloc Tunable Parameters").
    Measured on the simulated camera at 10 fps with an event every 30 s: steady RSS 88 -> 86 MB with its default
    640x480 picture, 177 -> 142 MB at 2028x1520, where every full-size frame the scene renders becomes a fresh
    mapping (2 % of a core more); the same CPU within 0.2 % of a core at 640x480. Does nothing without glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to load, or one without mallopt
        return
    mallopt(M_MMAP_THRESHOLD, MAPPED_FROM)


def _frame_rate(text: str) -> float:
    """``replay --fps``: a frame rate as camera.fps allows it."""
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not 0 < fps <= 120:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate above 0 and at most 120")
    return fps


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.replay import replay

    out = args.out or (Path(EXPLAIN_DIR) if args.explain else None)
    try:
        count = replay(
            settings, args.clip, out, progress=sys.stderr.isatty(), explain=args.explain, fps=args.fps
        ).messages
    except OSError as err:
        raise StorageError(f"replay: cannot write to {out}: {err.strerror or err}") from err
    logger.info("replay: %d messages", count)
    return 0


def _calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.calibrate import calibrate
    from edgecam.contact import open_contact
    from edgecam.sources import open_source

    path = args.out or settings.door_reference_path
    source = open_source(settings.camera, realtime=False)
    contact = None
    try:
        contact = open_contact(settings.door)
        done = calibrate(settings, source, path, contact, args.skip)
    finally:
        source.close()
        if contact is not None:
            contact.close()
    print(
        f"calibrate: learnt the closed door from {done.reference.frames} frames ({done.seconds:.1f} s), detail "
        f"{done.detail:.1f}; saved {done.path}; check the zone in {done.picture}"
    )
    return 0


def _listen(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.listen import run_listen

    return run_listen(settings, args.out, _stop_on_signals(), args.count, args.device, args.ack, args.keep_days)


def _fleet(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.fleet import run_fleet

    stop = _stop_on_signals() if args.watch is not None else None
    return run_fleet(settings, sys.stdout, args.device, args.watch, stop)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.sources.simulated import render_clip

    openings = render_clip(args.out, settings.camera.simulated, args.seconds)
    print(json.dumps({"clip": str(args.out), "seconds": args.seconds, "door_moves": openings}))
    return 0


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.erasure import Scope, forget_events

    forget_events(settings, Scope.parse(args.event, args.before, args.all), args.force)
    return 0


def _forget_ha(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.discovery import DISCOVERY_FILE
    from edgecam.forget import forget

    device, prefix = settings.device_id, settings.homeassistant.discovery_prefix
    forgotten = forget(settings, settings.storage.dir / DISCOVERY_FILE)
    if forgotten.topics:
        print(
            f"forget-ha: removed {len(forgotten.topics)} discovery configs of device {device} from {prefix}/; "
            "Home Assistant deletes the device with its last entity"
        )
    else:
        print(f"forget-ha: nothing to remove: no discovery configs of device {device} under {prefix}/")
    if forgotten.agent_online:
        print(
            f"forget-ha: the agent of device {device} is online: it announces the device again when it reconnects "
            "or Home Assistant restarts; stop it, or set homeassistant.enabled = false and restart it"
        )
    elif settings.homeassistant.enabled:
        print(
            "forget-ha: the agent announces the device again when it next starts, unless homeassistant.enabled = false"
        )
    return 0


def _notice(settings: Settings, args: argparse.Namespace) -> int:
    from edgecam.notice_png import notice_gaps, write_notice

    if args.picture is not None and not args.picture.is_file():
        raise ConfigError(f"notice --picture: {args.picture} is not a file")
    picture = args.picture or settings.door_reference_path.with_suffix(".png")
    for path in write_notice(settings, args.out, args.paper, picture):
        print(f"notice: wrote {path}")
    for gap in notice_gaps(settings, picture):
        print(f"edgecam: warning: {gap}", file=sys.stderr)
    return 0


COMMANDS = {
    "run": _run,
    "replay": _replay,
    "calibrate": _calibrate,
    "listen": _listen,
    "fleet": _fleet,
    "simulate": _simulate,
    "forget": _forget,
    "forget-ha": _forget_ha,
    "notice": _notice,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgecam`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    try:
        settings = load_settings(config_path(getattr(args, "config", None)))
    except ConfigError as err:
        for line in str(err).splitlines():
            print(f"edgecam: {line}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings)
    try:
        return COMMANDS[args.command](settings, args)
    except EdgecamError as err:
        print(f"edgecam: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
