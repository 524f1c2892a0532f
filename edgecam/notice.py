"""``edgecam notice``: the privacy notice to print and put up by the door, made from the settings the agent runs with.

The notice says who runs the camera and how to reach them, why it is there, what it records and when not, how long
pictures are kept, and that people may ask what was recorded of them (the "first layer" warning sign of camera
guidance such as EDPB guidelines 3/2019 on video devices). Every figure on it comes from the settings, so it is true
of the agent those settings run. Nothing that names a person comes from anywhere but ``privacy.operator`` and
``privacy.contact``: no host name, address, user name or file path; unset, the notice has blank lines to fill in.

One list of sections (``sections``) is rendered twice: as a self-contained HTML page (``render_html``, from the
Jinja2 template ``edgecam/templates/notice.html``) and as a PNG at 150 dots per inch (``edgecam.notice_png``, which
also writes the two files).
"""

import base64
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import cv2
import jinja2
import numpy as np

from edgecam.config import Settings
from edgecam.errors import ConfigError, StorageError
from edgecam.schedule import DAY_MINUTES, DAYS, parse_window, time_zone
from edgecam.zones import burn_masks, draw_zones

Paper = Literal["a5", "a4"]
PAPER_MM: dict[Paper, tuple[int, int]] = {"a5": (148, 210), "a4": (210, 297)}
"""Width and height of each paper in millimetres (ISO 216)."""

TITLE = "Camera at this door"
LEAD = "A camera watches this door, so the household knows when it opens."
"""The first thing the notice says, under its title: that there is a camera, and why."""
BLANK = "_" * 28
"""What stands for an unset operator or contact: a line to write on by hand."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The first 8 bytes of every PNG file (PNG specification, 5.2)."""

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class Notice:
    """What the notice says, each fact from the settings; durations in whole seconds."""

    operator: str | None
    """``privacy.operator``; None: a blank line to fill in."""
    contact: str | None
    """``privacy.contact``; None: a blank line to fill in."""
    camera: str | None
    """``device_id`` when the settings set it; None when it is the host name by default (no host names shown)."""
    stills_per_event: int
    interval: float
    """Least seconds between two stills of one event (``capture.interval``)."""
    still_size: tuple[int, int] | None
    """Width and height of a still; None: the camera's full size."""
    masks: int
    """How many privacy masks are blacked out in every still."""
    off_windows: tuple[str, ...]
    """``privacy.schedule``'s windows in words, in the settings' order."""
    time_zone: str | None
    """The schedule's IANA time zone; None without a schedule, or when the system's zone has no name."""
    privacy_switch: bool
    retention: int
    """Seconds delivered stills stay on the device (``storage.retention_days``)."""
    max_bytes: int
    broker_expires: bool
    """False with MQTT 3.1.1, which has no message expiry: the broker keeps a still until delivered or replaced."""
    broker_expiry: int
    """Seconds the broker keeps a still for a subscriber that is away (MQTT 5)."""
    snapshot_expiry: int
    """Seconds the retained snapshot stays on the broker after its still was taken (MQTT 5)."""
    event_expiry: int | None
    """Seconds the broker keeps an event record for a subscriber that is away (MQTT 5); None: until delivered."""
    picture_taken: date | None
    """When the picture of the camera's view was saved; None: there is no picture."""
    made: date

    @classmethod
    def from_settings(cls, settings: Settings, picture_taken: date | None, made: date) -> "Notice":
        """The notice of ``settings``; ConfigError when the schedule's time zone cannot be found (a bad ``$TZ``)."""
        privacy, storage, camera = settings.privacy, settings.storage, settings.camera
        still_size = None
        if camera.still_width is not None and camera.still_height is not None:
            still_size = (camera.still_width, camera.still_height)
        return cls(
            operator=privacy.operator,
            contact=privacy.contact,
            camera=settings.device_id if "device_id" in settings.model_fields_set else None,
            stills_per_event=settings.capture.stills_per_event,
            interval=settings.capture.interval,
            still_size=still_size,
            masks=len(settings.motion.masks),
            off_windows=tuple(describe_window(text) for text in privacy.schedule),
            time_zone=_zone_name(privacy.timezone) if privacy.schedule else None,
            privacy_switch=privacy.gpio_pin is not None,
            retention=storage.retention_s,
            max_bytes=storage.max_bytes,
            broker_expires=settings.mqtt.protocol == "5",
            broker_expiry=storage.broker_expiry_s,
            snapshot_expiry=storage.snapshot_expiry_s,
            event_expiry=storage.event_expiry_s,
            picture_taken=picture_taken,
            made=made,
        )


def _zone_name(name: str | None) -> str | None:
    """The IANA name of the zone ``privacy.timezone`` names or, unset, of the system's; None if it has no name."""
    try:
        zone = time_zone(name)
    except ValueError as err:  # only a bad $TZ: privacy.timezone was checked when the settings were read
        raise ConfigError(f"privacy.timezone is unset and {err}: set privacy.timezone") from err
    key = zone.key if isinstance(zone, ZoneInfo) else None
    return key if key and not key.startswith("/") else None  # an unlinked /etc/localtime is a path, not a name


@dataclass(frozen=True)
class NoticeSection:
    """One heading of the notice and its lines, each a sentence or two."""

    heading: str
    lines: tuple[str, ...]


def sections(notice: Notice) -> list[NoticeSection]:
    """What the notice says under its picture, in order: the one text both renderings show."""
    return [
        NoticeSection(
            "Who runs this camera",
            (f"Operated by: {notice.operator or BLANK}", f"Contact: {notice.contact or BLANK}"),
        ),
        NoticeSection("What it records", _records(notice)),
        _when_off(notice),
        NoticeSection("How long pictures are kept", _kept(notice)),
        NoticeSection(
            "Your rights",
            ("You may ask the operator what the camera recorded of you, have it erased, or learn more about it.",),
        ),
    ]


def _records(notice: Notice) -> tuple[str, ...]:
    if notice.stills_per_event == 0:
        lines = ["No pictures: only the times the door moves."]
    else:
        many = notice.stills_per_event > 1
        count = f"at most {notice.stills_per_event}" if many else "1"
        apart = f", {duration(notice.interval)} or more apart" if many and notice.interval > 0 else ""
        size = f"{notice.still_size[0]} x {notice.still_size[1]} pixels" if notice.still_size else "full size"
        lines = [f"Still pictures only while the door moves: {count} each time{apart}, at the camera's {size}."]
    lines.append("No video, no sound, no face recognition or other biometrics. Nothing is kept while nothing moves.")
    if notice.masks:
        areas = "1 area is" if notice.masks == 1 else f"{notice.masks} areas are"
        lines.append(f"{areas} blacked out in every picture before it leaves the camera.")
    return tuple(lines)


def _when_off(notice: Notice) -> NoticeSection:
    if not notice.off_windows and not notice.privacy_switch:
        return NoticeSection("When it watches", ("At all hours.",))
    lines = []
    if notice.off_windows:
        zone = f"{notice.time_zone} time" if notice.time_zone else "local time"
        lines.append(f"It takes no pictures at these times ({zone}):")
        lines.extend(f"{window}." for window in notice.off_windows)
    if notice.privacy_switch:
        also = "also " if notice.off_windows else ""
        lines.append(f"The household can {also}switch it off with a privacy switch.")
    return NoticeSection("When it is off", tuple(lines))


def _kept(notice: Notice) -> tuple[str, ...]:
    lines = [
        f"On the camera: {duration(notice.retention)} after they are passed on, then deleted; "
        f"{size_in_bytes(notice.max_bytes)} at most, the oldest deleted first."
    ]
    if notice.broker_expires:
        lines.append(
            f"On the household's message server: at most {duration(notice.broker_expiry)} while waiting to be "
            f"collected; the latest picture for {duration(notice.snapshot_expiry)}."
        )
        held = "until collected" if notice.event_expiry is None else f"at most {duration(notice.event_expiry)}"
        lines.append(f"The times the door moved (no pictures) stay there {held}.")
    else:
        lines.append(
            "On the household's message server, with no expiry: pictures wait there until collected, and the "
            "latest picture stays until a newer one replaces it."
        )
    lines.append("Copies the household keeps elsewhere: ask the operator.")
    return tuple(lines)


def picture_caption(notice: Notice) -> str:
    """The line under the picture of the camera's view, or in its place when there is none."""
    if notice.picture_taken is None:
        return "No picture of the camera's view yet: run 'edgecam calibrate' to add the camera's view."
    black = "Black areas are never shown; the" if notice.masks else "The"
    return f"The camera's view on {_day(notice.picture_taken)}. {black} green line marks where it watches for movement."


def footer(notice: Notice) -> str:
    """The notice's last line: when it was made and, if the settings name it, which camera it is of."""
    camera = f" (camera {notice.camera})" if notice.camera else ""
    return f"Made from the camera's settings on {_day(notice.made)}{camera}."


def _day(day: date) -> str:
    """``day`` as "30 November 2025", whatever the locale."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def describe_window(text: str) -> str:
    """A ``privacy.schedule`` window in words, e.g. "Monday to Friday, 17:30 to 08:00 the next day".

    Raises ValueError as ``edgecam.schedule.parse_window`` for a text that is no window.
    """
    window = parse_window(text)
    days = _days_in_words(window.days)
    if window.start == 0 and window.end == DAY_MINUTES:
        return f"{days}, all day"
    end = "midnight" if window.end == DAY_MINUTES else _clock(window.end)
    next_day = " the next day" if window.end <= window.start else ""
    return f"{days}, {_clock(window.start)} to {end}{next_day}"


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _days_in_words(days: frozenset[int]) -> str:
    """The days in words: "Every day", "Monday to Friday", "Saturday and Sunday", "Monday, Wednesday and Friday"."""
    if len(days) == len(DAYS):
        return "Every day"
    first = next(d for d in sorted(days) if (d - 1) % 7 not in days)  # not every day: some day starts a run
    run = [(first + i) % 7 for i in range(len(days))]
    if set(run) == days and len(days) >= 3:
        return f"{DAY_NAMES[run[0]]} to {DAY_NAMES[run[-1]]}"
    names = [DAY_NAMES[d] for d in (run if set(run) == days else sorted(days))]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that reads well: "7 days", "1 day", "12 hours", "36 hours", "0.5 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        value = seconds / size
        if value >= 1 and (value == int(value) or value >= 2):
            return _count(round(value, 1), unit)
    return _count(round(seconds, 2), "second")


def _count(value: float, unit: str) -> str:
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def size_in_bytes(count: int) -> str:
    """``count`` bytes in decimal units, three figures at most: "1 GB", "500 MB", "1.5 GB"."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


@dataclass(frozen=True)
class Picture:
    """The camera's view for the notice: PNG bytes with the current masks burned in and the door zone drawn."""

    png: bytes
    taken: date


def read_picture(settings: Settings, path: Path) -> Picture | None:
    """The picture at ``path`` (the PNG ``edgecam calibrate`` saves) as the current settings would show it.

    The settings may have changed since the picture was saved: every ``motion.masks`` polygon is burned in black
    again, and the current ``motion.zone`` outlined, so the notice shows each mask the agent applies (a mask only
    in the old picture stays black too). Returns None when there is no file. Raises ConfigError when the file is
    not a PNG OpenCV decodes, StorageError when it cannot be read.
    """
    try:
        stat = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageError(f"notice: cannot read the picture {path}: {err.strerror or err}") from err
    image = None
    if data.startswith(PNG_SIGNATURE):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # 8-bit BGR, whatever the PNG's depth
    if image is None:
        raise ConfigError(
            f"notice: the picture {path} is not a readable PNG: run 'edgecam calibrate' to save it again, or name "
            "another with --picture"
        )
    motion = settings.motion
    masked = burn_masks(np.asarray(image, np.uint8), motion.masks)
    masked = burn_masks(draw_zones(masked, motion.zone, []), motion.masks)  # again: no zone line across a mask
    ok, png = cv2.imencode(".png", masked)
    if not ok:
        raise StorageError(f"notice: OpenCV could not encode the picture {path} again as PNG")
    return Picture(bytes(png.tobytes()), date.fromtimestamp(stat.st_mtime))


def render_html(notice: Notice, picture_png: bytes | None, paper: Paper) -> str:
    """The notice as one self-contained HTML page for ``paper``: inline CSS, the picture as a data URI, no script."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("edgecam", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    picture = None
    if picture_png is not None:
        picture = "data:image/png;base64," + base64.b64encode(picture_png).decode("ascii")
    width, height = PAPER_MM[paper]
    return environment.get_template("notice.html").render(
        title=TITLE,
        lead=LEAD,
        picture=picture,
        caption=picture_caption(notice),
        sections=sections(notice),
        footer=footer(notice),
        paper=paper.upper(),
        paper_width=width,
        paper_height=height,
        scale=width / PAPER_MM["a5"][0],
    )
