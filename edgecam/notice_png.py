"""The privacy notice as a PNG, and the two files ``edgecam notice`` writes: ``notice.html`` and ``notice.png``.

``render_png`` draws what ``edgecam.notice`` says (``sections``, ``picture_caption``, ``footer``) with Pillow at 150
dots per inch; ``write_notice`` writes it beside ``edgecam.notice.render_html``'s page, and ``notice_gaps`` says what
the two leave blank or out, the PNG's typeface among them.
"""

import io
import math
from datetime import date
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from edgecam.config import Settings
from edgecam.disk import write_atomically
from edgecam.errors import StorageError
from edgecam.notice import (
    LEAD,
    TITLE,
    Notice,
    Paper,
    footer,
    picture_caption,
    read_picture,
    render_html,
    sections,
)

PAPER_PX: dict[Paper, tuple[int, int]] = {"a5": (874, 1240), "a4": (1240, 1754)}
"""Width and height of the PNG for each paper, at 150 dots per inch (millimetres / 25.4 * 150)."""
DPI = 150

HTML_FILE = "notice.html"
PNG_FILE = "notice.png"

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
            f"{PNG_FILE}: no {FONT} here (Debian package fonts-dejavu-core), so letters beyond ASCII in "
            f"privacy.operator or privacy.contact show as boxes; {HTML_FILE} shows them"
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
