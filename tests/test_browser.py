"""The headless Chromium harness (tests/browser.py) on static pages written into tmp_path."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.browser import BrowserError, Chromium, require_chromium

RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR, as cv2 writes and reads them


def image(path: Path, bgr: tuple[int, int, int], width: int = 64, height: int = 48) -> str:
    """Write a solid ``width`` x ``height`` image (PNG or JPEG by the suffix); return its name for an ``src``."""
    ok, data = cv2.imencode(path.suffix, np.full((height, width, 3), bgr, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path.name


def page(path: Path, body: str) -> Path:
    path.write_text(f"<!doctype html>\n<html><head><title>events</title></head><body>{body}</body></html>\n")
    return path


def test_a_page_with_good_images_loads_them_logs_nothing_and_screenshots_the_whole_page(
    chromium: Chromium, tmp_path: Path
) -> None:
    red = image(tmp_path / "red.png", RED)
    blue = image(tmp_path / "blue.jpg", BLUE)
    html = page(
        tmp_path / "events.html",
        f'<img style="position:absolute;left:0;top:0" src="{red}">'
        f'<img style="position:absolute;left:100px;top:0" src="{blue}">'
        '<div class="door" style="height:1200px">first</div><div class="door">second</div>',
    )
    with chromium.open(html, width=800) as report:
        assert report.broken_images == []
        assert report.console_errors == []
        assert report.failed_requests == []
        assert f'<img style="position:absolute;left:0;top:0" src="{red}">' in report.dom
        assert report.evaluate("[...document.querySelectorAll('.door')].map(d => d.textContent)") == [
            "first",
            "second",
        ]
        shot = cv2.imdecode(np.frombuffer(report.screenshot(tmp_path / "shot.png"), np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None
    assert shot.shape[1] == 800
    assert shot.shape[0] > 1200  # the whole page, not the 900-pixel viewport
    assert (tmp_path / "shot.png").read_bytes().startswith(b"\x89PNG")
    assert np.abs(shot[24, 32].astype(int) - RED).max() < 8  # what a user sees where the red image is
    assert np.abs(shot[24, 132].astype(int) - BLUE).max() < 16  # JPEG: a little off pure blue


def test_a_missing_image_is_broken_and_its_request_failed(chromium: Chromium, tmp_path: Path) -> None:
    good = image(tmp_path / "still-1.jpg", BLUE)
    html = page(tmp_path / "event.html", f'<img src="{good}"><img src="still-2.jpg">')
    with chromium.open(html) as report:
        missing = (tmp_path / "still-2.jpg").as_uri()
        assert report.broken_images == [missing]
        assert report.failed_requests == [missing]
        assert any(missing in error for error in report.console_errors)  # "Failed to load resource: ..."


def test_console_errors_and_uncaught_exceptions_are_reported(chromium: Chromium, tmp_path: Path) -> None:
    html = page(
        tmp_path / "broken.html",
        '<script>console.log("fine"); console.error("x")</script><script>throw new Error("boom")</script>',
    )
    with chromium.open(html) as report:
        errors = report.console_errors
    assert len(errors) == 2, errors
    assert errors[0] == "x"
    assert errors[1].startswith("Error: boom")


def test_evaluate_names_the_expression_that_threw(chromium: Chromium, tmp_path: Path) -> None:
    with chromium.open(page(tmp_path / "plain.html", "<p>hello</p>")) as report:
        assert report.evaluate("document.querySelector('p').textContent") == "hello"
        with pytest.raises(BrowserError, match="nowhere"):
            report.evaluate("nowhere()")


def test_a_missing_page_is_an_error_naming_its_url(chromium: Chromium, tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match=str(tmp_path / "absent.html")):
        chromium.open(tmp_path / "absent.html")


def test_no_browser_process_is_left_after_the_context_even_when_the_test_fails(tmp_path: Path) -> None:
    require_chromium()
    html = page(tmp_path / "plain.html", "<p>hello</p>")
    browser = Chromium()

    def failing_test() -> None:
        with browser:
            assert browser.open(html).evaluate("document.title") == "events"
            os.killpg(browser.process.pid, 0)  # the group exists while the browser runs
            raise AssertionError("the test failed")

    with pytest.raises(AssertionError, match="the test failed"):
        failing_test()
    assert browser.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(browser.process.pid, 0)  # no renderer or zygote of it either
    assert not browser.stderr_path.parent.exists()  # the profile is deleted
    browser.close()  # a second close does nothing


def test_without_chromium_the_tests_skip_unless_it_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tests.browser.CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package chromium is not installed"):
        require_chromium()
    monkeypatch.setenv("REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_CHROMIUM=1"):
        require_chromium()
