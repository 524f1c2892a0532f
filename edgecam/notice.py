"""``edgecam notice``: the privacy notice to print and put up by the door, made from the settings the agent runs with.

The notice says who runs the camera and how to reach them, why it is there, what it records and when not, how long
pictures are kept, and that people may ask what was recorded of them (the "first layer" warning sign of camera
guidance such as EDPB guidelines 3/2019 on video devices). Every figure on it comes from the settings, so it is true
of the agent those settings run. Nothing that names a person comes from anywhere but ``privacy.operator`` and
``privacy.contact``: no host name, address, user name or file path; unset, the notice has blank lines to fill in.

One list of sections (``sections``) is rendered twice: as a self-contained HTML page (``render_html``, from the
Jinja2 template ``edgecam/templates/notice.html``) and as a PNG at 150 dots per inch (``render_png``, Pillow).
"""

import base64
import io
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import cv2
import jinja2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edgecam.config import Settings
from edgecam.disk import write_atomically
from edgecam.errors import ConfigError, StorageError
from edgecam.schedule import DAY_MINUTES, DAYS, parse_window, time_zone
from edgecam.zones import burn_masks, draw_zones

Paper = Literal["a5", "a4"]
PAPER_MM: dict[Paper, tuple[int, int]] = {"a5": (148, 210), "a4": (210, 297)}
"""Width and height of each paper in millimetres (ISO 216)."""
PAPER_PX: dict[Paper, tuple[int, int]] = {"a5": (874, 1240), "a4": (1240, 1754)}
"""Width and height of the PNG for each paper, at 150 dots per inch (millimetres / 25.4 * 150)."""
DPI = 150

HTML_FILE = "notice.html"
PNG_FILE = "notice.png"
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
            retention=max(1, round(storage.retention_days * 86400)),
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
    first = next(d for d in sorted(days) if (d - 1) % 7 not in days) if days != frozenset(range(7)) else 0
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


def notice_gaps(settings: Settings, picture_path: Path) -> list[str]:
    """What the notice leaves blank or out, one line each, for the household to fix or fill in by hand."""
    gaps = []
    if settings.privacy.operator is None:
        gaps.append("privacy.operator is not set: the notice has a blank line for the operator's name")
    if settings.privacy.contact is None:
        gaps.append("privacy.contact is not set: the notice has a blank line for how to reach the operator")
    if not picture_path.exists():
        gaps.append(f"no picture of the camera's view at {picture_path}: run 'edgecam calibrate' to add it")
    named = (settings.privacy.operator or "") + (settings.privacy.contact or "")
    if not named.isascii() and _system_font(12) is None:
        gaps.append(
            f"notice.png: no {FONT} here (Debian package fonts-dejavu-core), so letters beyond ASCII in "
            "privacy.operator or privacy.contact show as boxes; notice.html shows them"
        )
    return gaps


def write_notice(
    settings: Settings, out_dir: Path, paper: Paper, picture_path: Path, made: date | None = None
) -> list[Path]:
    """Write ``notice.html`` and ``notice.png`` of ``settings`` into ``out_dir``, each atomically; their paths.

    ``picture_path`` is the PNG of the camera's view (``read_picture``); ``made`` the date the notice gives as its
    own (default today). Raises ConfigError or StorageError as ``read_picture``, StorageError when a file cannot be
    written.
    """
    picture = read_picture(settings, picture_path)
    notice = Notice.from_settings(settings, picture.taken if picture else None, made or date.today())
    png = picture.png if picture else None
    written = [
        (out_dir / HTML_FILE, render_html(notice, png, paper).encode()),
        (out_dir / PNG_FILE, render_png(notice, png, paper)),
    ]
    for path, data in written:
        try:
            write_atomically(path, data)
        except OSError as err:
            raise StorageError(f"notice: cannot write {path}: {err.strerror or err}") from err
    return [path for path, _ in written]


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


# The PNG's proportions: sizes as fractions of the paper's width, the picture's height of the paper's height.
MARGIN = 0.065
TITLE_SIZE = 0.072
BODY_SIZE = 0.032
"""The body text's size to start with; smaller ones are tried until the notice fits the page."""
BODY_LEAST = 0.022
LEADING = 1.28
"""Line height, times the font size."""
PICTURE_MOST = 0.40
"""Most of the page's height the picture takes; it shrinks to make room for the text, down to PICTURE_LEAST."""
PICTURE_LEAST = 0.18
INK = (0, 0, 0)
GREY = (90, 90, 90)


FONT = "DejaVuSans.ttf"
"""The PNG's typeface: DejaVu Sans (Debian package fonts-dejavu-core), with the letters of most European languages."""


def notice_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels, else Pillow's built-in font (load_default, Pillow 10.1+): ASCII only."""
    return _system_font(size) or ImageFont.load_default(size=size)


def _system_font(size: int) -> ImageFont.FreeTypeFont | None:
    """``FONT`` from where ``ImageFont.truetype`` looks (``$XDG_DATA_DIRS/fonts``: ``/usr/share/fonts``), or None."""
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return None


def render_png(notice: Notice, picture: bytes | None, paper: Paper) -> bytes:
    """The notice as a PNG of ``paper`` at 150 dots per inch (``PAPER_PX``); ``picture`` is a PNG of the view.

    Text is DejaVu Sans (``notice_font``), headings in a bold made by drawing them twice a pixel apart. The body
    text takes the largest size from ``BODY_SIZE`` down at which the whole notice fits the page with the picture at
    least ``PICTURE_LEAST`` of its height.
    """
    width, height = PAPER_PX[paper]
    view = Image.open(io.BytesIO(picture)).convert("RGB") if picture is not None else None
    body = round(width * BODY_SIZE)
    while True:
        sheet = _Sheet(width, height, body)
        text_height = sheet.lay_out(notice, None, draw=False)
        room = height - 2 * sheet.margin - text_height - body // 3  # body // 3: below the picture
        if room >= height * PICTURE_LEAST or body <= round(width * BODY_LEAST):
            break
        body -= 1
    page = Image.new("RGB", (width, height), "white")
    sheet.lay_out(notice, view, draw=True, page=page, picture_room=max(0, min(room, round(height * PICTURE_MOST))))
    out = io.BytesIO()
    page.save(out, format="PNG", dpi=(DPI, DPI))
    return out.getvalue()


class _Sheet:
    """The PNG's layout at one body text size: measures the text, or draws it and the picture onto a page."""

    def __init__(self, width: int, height: int, body: int) -> None:
        self.width, self.height = width, height
        self.margin = round(width * MARGIN)
        self.text_width = width - 2 * self.margin
        self.title_font = notice_font(round(width * TITLE_SIZE))
        self.body_font = notice_font(body)
        self.body = body
        self.line = round(body * LEADING)

    def lay_out(
        self,
        notice: Notice,
        view: Image.Image | None,
        *,
        draw: bool,
        page: Image.Image | None = None,
        picture_room: int = 0,
    ) -> int:
        """Height in pixels of everything but the picture.

        With ``draw``, draws everything onto ``page``, the picture fitted into ``picture_room`` pixels of height.
        """
        pen = ImageDraw.Draw(page) if draw and page is not None else None
        y = self.margin
        title_size = round(self.width * TITLE_SIZE)
        if pen is not None:
            pen.text(
                (self.margin, y),
                TITLE,
                font=self.title_font,
                fill=INK,
                stroke_width=max(1, title_size // 30),
                stroke_fill=INK,
            )
        y += round(title_size * 1.15)
        rule = max(3, self.body // 5)
        if pen is not None:
            pen.rectangle((self.margin, y, self.width - self.margin, y + rule), fill=INK)
        y += rule + self.body // 2
        y = self._paragraph(pen, LEAD, y, bold=True)
        y += self.body // 2
        text_only = y - self.margin
        if view is not None and page is not None and draw:
            scale = min(self.text_width / view.width, picture_room / view.height)
            size = (max(1, math.floor(view.width * scale)), max(1, math.floor(view.height * scale)))
            left = self.margin + (self.text_width - size[0]) // 2
            page.paste(view.resize(size, Image.Resampling.LANCZOS), (left, y))
            if pen is not None:
                pen.rectangle((left - 1, y - 1, left + size[0], y + size[1]), outline=INK, width=1)
            y += size[1] + self.body // 3
        start = y
        y = self._paragraph(pen, picture_caption(notice), y, fill=GREY)
        for section in sections(notice):
            y += round(self.body * 0.55)
            y = self._paragraph(pen, section.heading, y, bold=True)
            for line in section.lines:
                y = self._paragraph(pen, line, y)
        y += round(self.body * 0.55)
        y = self._paragraph(pen, footer(notice), y, fill=GREY)
        return text_only + (y - start)

    def _paragraph(
        self,
        pen: ImageDraw.ImageDraw | None,
        text: str,
        y: int,
        *,
        bold: bool = False,
        fill: tuple[int, int, int] = INK,
    ) -> int:
        """Wrap ``text`` to the page's text width at the body size and draw it from ``y``; the y below it."""
        for line in _wrap(text, self.body_font, self.text_width):
            if pen is not None:
                for dx in (0, 1) if bold else (0,):  # bold: drawn twice a pixel apart (the font has no bold face)
                    pen.text((self.margin + dx, y), line, font=self.body_font, fill=fill)
            y += self.line
        return y


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels in ``font``; a longer word across lines."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while font.getlength(word) > width:  # a long e-mail address: broken where it must be
            cut = next((i for i in range(len(word) - 1, 1, -1) if font.getlength(word[:i]) <= width), 1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines
