"""A real headless Chromium that opens a local HTML file and reports what a user would see.

The browser speaks the DevTools protocol over ``--remote-debugging-pipe``: it reads commands from its file
descriptor 3 and writes replies and events to its file descriptor 4, each message one JSON object followed by a
NUL byte (Chromium content/browser/devtools/devtools_pipe_handler.cc, PipeReaderASCIIZ and PipeWriterASCIIZ; the
numbers in components/devtools/devtools_pipe/devtools_pipe.h). Nothing listens on a port. Standard library only.
"""

import base64
import contextlib
import fcntl
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

CHROMIUM = Path("/usr/lib/chromium/chromium")
"""The browser itself: Debian's /usr/bin/chromium launcher would add the flags of /etc/chromium.d to ours."""
FLAGS = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"),
    *("--disable-component-update", "--disable-sync", "--disable-quic", "--remote-debugging-pipe"),
]
BROKEN_IMAGES = "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
IMAGES_SETTLED = """Promise.race([
  Promise.all([...document.images].filter(i => !i.complete).map(i => new Promise(settled => {
    i.addEventListener("load", settled, {once: true});
    i.addEventListener("error", settled, {once: true});
  }))),
  new Promise(settled => setTimeout(settled, %d)),
])"""
Message = dict[str, Any]


class BrowserError(RuntimeError):
    """Chromium refused a command, did not answer in time, or exited."""


def require_chromium() -> None:
    """Skip the calling test without Debian's chromium; fail instead under ``REQUIRE_CHROMIUM=1`` (scripts/test)."""
    if not Path("/usr/bin/chromium").exists() or not CHROMIUM.exists():
        reason = "Debian package chromium is not installed; scripts/test installs it"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + " (REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)


class Chromium:
    """One headless Chromium with a fresh profile: ``with Chromium() as browser: page = browser.open(path)``.

    The child gets the pipe ends as fds 3 and 4 from ``preexec_fn`` (two ``os.dup2`` calls; the ends are first
    moved to fd 5 and up so that neither call overwrites the other), and keeps them across exec through
    ``pass_fds=(3, 4)``: CPython's _posixsubprocess runs preexec_fn before it closes the fds not in pass_fds.
    (preexec_fn is documented as unsafe when threads run; this one makes two system calls and takes no lock.)
    The browser leads a new session, so ``close`` can kill its whole process group and no renderer outlives it.
    ``timeout`` (seconds) bounds every command and every wait.
    """

    def __init__(self, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(prefix="edgecam-chromium-")
        profile = self._dir.name
        self.stderr_path = Path(profile) / "stderr.txt"
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (commands_in, replies_out))
        for fd in (commands_in, replies_out):
            os.close(fd)

        def place_pipe_ends() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        try:
            with self.stderr_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}/profile"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(3, 4),
                    preexec_fn=place_pipe_ends,
                    start_new_session=True,
                )
        finally:
            os.close(child_in)
            os.close(child_out)
        self._next_id = 0
        self._closed = False
        self._write_lock = threading.Lock()
        self._changed = threading.Condition()  # guards the three below
        self._waiting: dict[int, queue.Queue[Message]] = {}
        self._events: dict[str, list[Message]] = {}  # by sessionId
        self._reader = threading.Thread(target=self._read, name="chromium-devtools", daemon=True)
        self._reader.start()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _read(self) -> None:
        pending = bytearray()
        while chunk := os.read(self._replies, 1 << 16):
            pending += chunk
            if 0 not in chunk:
                continue
            *messages, rest = bytes(pending).split(b"\0")
            pending = bytearray(rest)
            for raw in messages:
                message: Message = json.loads(raw)
                with self._changed:
                    if "id" in message:
                        waiter = self._waiting.pop(message["id"], None)
                        if waiter is not None:
                            waiter.put(message)
                    else:
                        self._events.setdefault(message.get("sessionId", ""), []).append(message)
                        self._changed.notify_all()
        with self._changed:
            self._closed = True
            for waiter in self._waiting.values():
                waiter.put({"error": {"message": "Chromium closed its DevTools pipe"}})
            self._changed.notify_all()

    def send(self, method: str, params: Message | None = None, session: str = "") -> Message:
        """Send one DevTools command (to a page's ``session``, else the browser) and return its result."""
        reply: queue.Queue[Message] = queue.Queue(maxsize=1)
        with self._changed:
            if self._closed:
                raise BrowserError(f"{method}: Chromium has exited{self.stderr_tail()}")
            self._next_id += 1
            command: Message = {"id": self._next_id, "method": method, "params": params or {}}
            self._waiting[self._next_id] = reply
        if session:
            command["sessionId"] = session
        data = memoryview(json.dumps(command).encode() + b"\0")
        try:
            with self._write_lock:
                while data:
                    data = data[os.write(self._commands, data) :]
            answer = reply.get(timeout=self.timeout)
        except BrokenPipeError:
            raise BrowserError(f"{method}: Chromium has exited{self.stderr_tail()}") from None
        except queue.Empty:
            raise BrowserError(f"Chromium did not answer {method} within {self.timeout} s") from None
        finally:
            with self._changed:
                self._waiting.pop(command["id"], None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}{self.stderr_tail()}")
        result: Message = answer.get("result", {})
        return result

    def events(self, session: str) -> list[Message]:
        """The events of one page's session so far, oldest first (a copy)."""
        with self._changed:
            return list(self._events.get(session, []))

    def wait_event(self, session: str, method: str, after: int, timeout: float) -> int | None:
        """Wait for a ``method`` event of ``session`` later than its first ``after``; its index + 1, or None."""

        def index() -> int | None:
            events = self._events.get(session, [])
            return next((i + 1 for i in range(after, len(events)) if events[i]["method"] == method), None)

        with self._changed:
            self._changed.wait_for(lambda: self._closed or index() is not None, timeout)
            return index()

    def stderr_tail(self) -> str:
        """The last lines Chromium wrote to stderr, as an indented block to append to an error message."""
        lines = self.stderr_path.read_text(errors="replace").splitlines()[-8:] if self.stderr_path.exists() else []
        return "".join(f"\n    {line}" for line in lines)

    def open(self, path: Path, width: int = 1280, height: int = 900) -> "PageReport":
        """Open a local file in a new tab of ``width`` x ``height`` CSS pixels; return once it and its images loaded.

        Raises:
            BrowserError: the file cannot be opened, or its load event or an image does not come within the timeout.
        """
        url = path.resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = PageReport(self, url, target, session, width)
        try:
            self._load(page, width, height)
        except BaseException:
            with contextlib.suppress(BrowserError):
                page.close()
            raise
        return page

    def _load(self, page: "PageReport", width: int, height: int) -> None:
        url, session = page.url, page.session
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session)
        seen = len(self.events(session))
        navigation = self.send("Page.navigate", {"url": url}, session)
        if "errorText" in navigation:
            raise BrowserError(f"Chromium cannot open {url}: {navigation['errorText']}")
        deadline = time.monotonic() + self.timeout
        while True:  # a late load event of the tab's first about:blank must not count
            loaded = self.wait_event(session, "Page.loadEventFired", seen, deadline - time.monotonic())
            if loaded is None:
                raise BrowserError(f"{url} fired no load event within {self.timeout} s{self.stderr_tail()}")
            if page.evaluate("location.href.split('#')[0]") == url:
                break
            seen = loaded
        page.evaluate(IMAGES_SETTLED % (1000 * max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Browser.close, then wait; kill the process group if it lingers; close the pipes, delete the profile.

        Returns once no process of the group is left, zombies included: the zygotes the browser leaves behind are
        reparented to pid 1, which reaps them (about 1 s on the test VM, whose init reaps once a second).
        """
        if self._dir is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(BrowserError):  # the pipe may close before the reply comes
                self.send("Browser.close")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(self.timeout)
        deadline = time.monotonic() + self.timeout
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:  # until no process of the group is left (killpg raises)
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.poll()
                time.sleep(0.02)
        self.process.wait()
        self._reader.join(self.timeout)
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dir.cleanup()
        self._dir = None


class PageReport:
    """One tab showing a local file, read live: what it shows, logged and failed to fetch so far."""

    def __init__(self, browser: Chromium, url: str, target: str, session: str, width: int) -> None:
        self.browser = browser
        self.url = url
        self.target = target
        self.session = session
        self.width = width

    def __enter__(self) -> "PageReport":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (a promise is awaited).

        Raises:
            BrowserError: the expression threw; the message names it and the page.
        """
        reply = self.browser.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, self.session
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw on {self.url}: {describe(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    @property
    def dom(self) -> str:
        """``document.documentElement.outerHTML`` as it is now, after the page's scripts ran."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    @property
    def broken_images(self) -> list[str]:
        """The absolute URLs of the ``<img>`` elements that did not load or decode."""
        return [str(src) for src in self.evaluate(BROKEN_IMAGES)]

    @property
    def console_errors(self) -> list[str]:
        """console.error and console.assert messages, uncaught exceptions, and errors the browser logged."""
        errors: list[str] = []
        for event in self.browser.events(self.session):
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
            elif event["method"] == "Runtime.exceptionThrown":
                errors.append(describe(params["exceptionDetails"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}".strip())
        return errors

    @property
    def failed_requests(self) -> list[str]:
        """The URLs of the requests that failed (a missing file, a refused connection, a blocked load)."""
        urls: dict[str, str] = {}
        failed: list[str] = []
        for event in self.browser.events(self.session):
            if event["method"] == "Network.requestWillBeSent":
                urls[event["params"]["requestId"]] = event["params"]["request"]["url"]
            elif event["method"] == "Network.loadingFailed":
                failed.append(urls.get(event["params"]["requestId"], event["params"]["requestId"]))
        return failed

    def screenshot(self, path: Path | None = None) -> bytes:
        """A PNG of the whole page, ``width`` pixels wide and as tall as its content; also written to ``path``."""
        size = self.browser.send("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1}
        params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        png = base64.b64decode(self.browser.send("Page.captureScreenshot", params, self.session)["data"])
        if path is not None:
            path.write_bytes(png)
        return png

    def close(self) -> None:
        """Close the tab (the browser stays)."""
        self.browser.send("Target.closeTarget", {"targetId": self.target})


def describe(details: Message) -> str:
    """One line (plus any stack) for a DevTools ExceptionDetails: the thrown error's description, else its text."""
    thrown = details.get("exception", {})
    return str(thrown.get("description") or thrown.get("value") or details.get("text", "exception"))
