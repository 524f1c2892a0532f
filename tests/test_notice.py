import base64
import os
import re
import socket
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from edgecam.cli import main
from edgecam.config import Settings
from edgecam.errors import ConfigError
from edgecam.notice import (
    BLANK,
    Notice,
    Paper,
    describe_window,
    duration,
    render_html,
    sections,
    size_in_bytes,
)
from edgecam.notice_png import PAPER_PX, notice_font, write_notice
from edgecam.settings_file import load_settings
from edgecam.zones import polygon_mask

MASK = [(0.0, 0.0), (0.3, 0.0), (0.3, 0.4), (0.0, 0.4)]
ZONE = [(0.4, 0.1), (0.6, 0.1), (0.6, 0.9), (0.4, 0.9)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)


def settings_file(tmp_path: Path, privacy: str = "", more: str = "") -> Path:
    """A TOML settings file with the state in ``tmp_path/state``, the door zone, one mask and ``privacy`` lines."""
    config = tmp_path / "edgecam.toml"
    config.write_text(
        f'[storage]\ndir = "{tmp_path / "state"}"\n'
        f"[motion]\nzone = {[list(p) for p in ZONE]}\nmasks = [{[list(p) for p in MASK]}]\n"
        f"[privacy]\n{privacy}\n{more}"
    )
    return config


OWNED = 'operator = "The O\'Brien & Sons, flat 3"\ncontact = "door@example.org"\n'


def calibrate_picture(path: Path, width: int = 320, height: int = 240) -> None:
    """A PNG like the one ``edgecam calibrate`` saves, but without the masks burned in: a lit, textured scene."""
    rng = np.random.default_rng(7)
    scene = rng.integers(80, 220, (height, width, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", scene)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png.tobytes())


def decode(png: bytes, flags: int = cv2.IMREAD_COLOR) -> NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), flags)
    assert image is not None
    return np.asarray(image, np.uint8)


def embedded_picture(html: str) -> NDArray[np.uint8]:
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match is not None, "no embedded PNG"
    return decode(base64.b64decode(match[1]))


def test_notice_names_the_operator_schedule_and_retention_and_is_self_contained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    privacy = OWNED + 'schedule = ["mon-fri 17:30-08:00", "sat,sun 00:00-24:00"]\ntimezone = "Europe/London"\n'
    storage = "[storage]\nretention_days = 14\nbroker_expiry = 2\nsnapshot_expiry = 0.5\n"
    config = settings_file(tmp_path, privacy)
    config.write_text(config.read_text().replace("[storage]\n", storage.removesuffix("\n") + "\n", 1))
    calibrate_picture(tmp_path / "state" / "door-reference.png")
    out = tmp_path / "notice"
    assert main(["--config", str(config), "notice", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"notice: wrote {out / 'notice.html'}", f"notice: wrote {out / 'notice.png'}"]
    assert captured.err == ""
    assert sorted(p.name for p in out.iterdir()) == ["notice.html", "notice.png"]  # no temporary file left
    html = (out / "notice.html").read_text()
    assert "Operated by: The O&#39;Brien &amp; Sons, flat 3" in html  # escaped
    assert "Contact: door@example.org" in html
    assert "Monday to Friday, 17:30 to 08:00 the next day." in html
    assert "Saturday and Sunday, all day." in html
    assert "(Europe/London time)" in html
    assert "On the camera: 14 days after they are passed on" in html
    assert "at most 2 days while waiting to be collected; the latest picture for 12 hours." in html
    assert "1 area is blacked out in every picture" in html
    assert "<script" not in html.lower()
    assert "http://" not in html
    assert "https://" not in html
    assert "@page { size: A5" in html


def test_the_picture_shows_every_current_mask_black_and_the_rest_of_the_scene(tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path, OWNED))
    picture = tmp_path / "view.png"
    calibrate_picture(picture)  # made before the mask was set: nothing of it is black
    write_notice(settings, tmp_path / "out", "a5", picture)
    image = embedded_picture((tmp_path / "out" / "notice.html").read_text())
    assert image.shape == (240, 320, 3)
    masked = polygon_mask([MASK], 320, 240)
    assert masked.sum() > 0.1 * masked.size
    assert not image[masked].any(), "a pixel of the mask is not black"
    assert image[~masked].mean() > 60, "outside the mask the scene is gone"
    assert (image[~masked] == (0, 220, 0)).all(axis=1).any(), "the door zone is not drawn"


def test_without_operator_the_notice_has_blank_lines_no_personal_data_and_the_cli_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = settings_file(tmp_path, more='[mqtt]\nhost = "broker.smiths.lan"\nusername = "alice"\n')
    out = tmp_path / "out"
    assert main(["--config", str(config), "notice", "--out", str(out)]) == 0
    html = (out / "notice.html").read_text()
    assert f"Operated by: {BLANK}" in html
    assert f"Contact: {BLANK}" in html
    for private in ("broker.smiths.lan", "alice", str(tmp_path), "1883"):
        assert private not in html
    host = socket.gethostname().split(".")[0]
    assert f"camera {host}" not in html, "the default device_id is the host name"
    assert "run &#39;edgecam calibrate&#39; to add the camera&#39;s view" in html
    assert "<img" not in html
    warnings = capsys.readouterr().err.splitlines()
    assert warnings[0].startswith("edgecam: warning: privacy.operator is not set")
    assert warnings[1].startswith("edgecam: warning: privacy.contact is not set")
    assert warnings[2].startswith("edgecam: warning: no picture of the camera's view at ")
    assert len(warnings) == 3


def test_a_device_id_the_settings_set_is_named(tmp_path: Path) -> None:
    config = settings_file(tmp_path, OWNED)
    config.write_text('device_id = "front-door"\n' + config.read_text())
    write_notice(load_settings(config), tmp_path, "a5", tmp_path / "none.png", made=date(2026, 3, 1))
    assert (
        "Made from the camera&#39;s settings on 1 March 2026 (camera front-door)."
        in (tmp_path / "notice.html").read_text()
    )


def test_mqtt_3_1_1_says_the_broker_keeps_pictures_without_expiry(tmp_path: Path) -> None:
    mqtt5 = load_settings(settings_file(tmp_path, OWNED))
    old = load_settings(settings_file(tmp_path, OWNED, '[mqtt]\nprotocol = "3.1.1"\n'))
    kept = {}
    for name, settings in (("5", mqtt5), ("3.1.1", old)):
        notice = Notice.from_settings(settings, None, date(2026, 1, 1))
        (section,) = [s for s in sections(notice) if s.heading == "How long pictures are kept"]
        kept[name] = " ".join(section.lines)
    assert "at most 7 days while waiting to be collected; the latest picture for 1 day" in kept["5"]
    assert "with no expiry" in kept["3.1.1"]
    assert "the latest picture stays until a newer one replaces it" in kept["3.1.1"]
    assert "while waiting to be collected" not in kept["3.1.1"]


@pytest.mark.parametrize("content", [b"not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 40], ids=["text", "cut-png"])
def test_a_picture_that_is_no_png_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    bad = tmp_path / "view.png"
    bad.write_bytes(content)
    out = tmp_path / "out"
    code = main(["--config", str(settings_file(tmp_path, OWNED)), "notice", "--out", str(out), "--picture", str(bad)])
    assert code != 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"edgecam: notice: the picture {bad} is not a readable PNG")
    assert not out.exists()


@pytest.mark.parametrize("paper", ["a5", "a4"])
def test_the_png_has_the_paper_size_at_150_dpi(tmp_path: Path, paper: Paper) -> None:
    settings = load_settings(settings_file(tmp_path, OWNED))
    calibrate_picture(settings.door_reference_path.with_suffix(".png"), 640, 480)
    (_, png) = write_notice(settings, tmp_path / "out", paper, settings.door_reference_path.with_suffix(".png"))
    image = decode(png.read_bytes())
    width, height = PAPER_PX[paper]
    assert image.shape == (height, width, 3)
    assert bool((image < 64).any()), "no text"
    assert "@page { size: " + paper.upper() in (tmp_path / "out" / "notice.html").read_text()


def test_the_png_fits_a_long_notice_onto_the_page(tmp_path: Path) -> None:
    privacy = (
        f'operator = "{"A very long household name " * 4}"\ncontact = "{"x" * 140}@example.org"\n'
        f"schedule = {[f'{day} 0{h}:00-0{h + 1}:00' for day in ('mon', 'wed', 'fri') for h in range(3)]}\n"
        "gpio_pin = 17\n"
    )
    settings = load_settings(settings_file(tmp_path, privacy))
    calibrate_picture(tmp_path / "view.png")
    (_, png) = write_notice(settings, tmp_path, "a5", tmp_path / "view.png")
    image = decode(png.read_bytes(), cv2.IMREAD_GRAYSCALE)
    margin = round(image.shape[1] * 0.05)
    assert image[-margin:].min() == 255, "text runs into the bottom margin"
    assert image[:, -margin:].min() == 255, "text runs into the right margin"


def test_the_html_escapes_what_the_settings_say() -> None:
    settings = Settings(privacy={"operator": "<b>Eve</b>", "contact": "a&b"})
    html = render_html(Notice.from_settings(settings, None, date(2026, 1, 1)), None, "a5")
    assert "<b>Eve</b>" not in html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html


def test_a_bad_time_zone_of_the_system_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    settings = Settings(privacy={"schedule": ["22:00-07:00"]})
    with pytest.raises(ConfigError, match="^privacy.timezone is unset and TZ="):
        Notice.from_settings(settings, None, date(2026, 1, 1))


@pytest.mark.parametrize(
    ("window", "words"),
    [
        ("mon-fri 17:30-08:00", "Monday to Friday, 17:30 to 08:00 the next day"),
        ("sat,sun 00:00-24:00", "Saturday and Sunday, all day"),
        ("22:00-07:00", "Every day, 22:00 to 07:00 the next day"),
        ("fri-mon 09:00-17:00", "Friday to Monday, 09:00 to 17:00"),
        ("mon,wed,fri 12:00-24:00", "Monday, Wednesday and Friday, 12:00 to midnight"),
        ("sun 08:15-09:45", "Sunday, 08:15 to 09:45"),
    ],
)
def test_schedule_windows_in_words(window: str, words: str) -> None:
    assert describe_window(window) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (7 * 86400, "7 days"),
        (86400, "1 day"),
        (43200, "12 hours"),
        (129600, "36 hours"),
        (7.3 * 86400, "7.3 days"),
        (3600, "1 hour"),
        (90, "90 seconds"),
        (0.5, "0.5 seconds"),
        (1, "1 second"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, words: str) -> None:
    assert duration(seconds) == words


def test_sizes_in_bytes() -> None:
    assert [size_in_bytes(n) for n in (10**9, 500 * 10**6, 1_500_000_000, 1_000_000)] == [
        "1 GB",
        "500 MB",
        "1.5 GB",
        "1 MB",
    ]


def test_the_png_has_the_letters_of_european_names() -> None:
    font = notice_font(20)
    box = font.getmask("\ue000").getbbox()  # a private-use code point: no font draws it, it is the missing-glyph box
    for letter in "ëüßéçøñ€":
        assert font.getmask(letter).getbbox() != box, f"{letter!r} is drawn as a box (fonts-dejavu-core missing?)"


@pytest.mark.parametrize("blank", ["   ", "\u200b", "a\tb"])
def test_a_blank_or_invisible_operator_is_refused(blank: str) -> None:
    with pytest.raises(ValidationError, match="privacy.operator"):
        Settings(privacy={"operator": blank})


def test_a_picture_named_on_the_command_line_must_be_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text(f'[storage]\ndir = "{tmp_path / "state"}"\n')
    missing = tmp_path / "view.png"
    assert main(["--config", str(config), "notice", "--out", str(tmp_path), "--picture", str(missing)]) == 2
    assert capsys.readouterr().err == f"edgecam: notice --picture: {missing} is not a file\n"
    assert not (tmp_path / "notice.png").exists()
