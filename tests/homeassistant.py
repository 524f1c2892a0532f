"""A real Home Assistant on loopback for the tests and the demo, driven through its own REST and websocket APIs.

``scripts/install-homeassistant VERSION`` builds each version in ``<cache>/edgecam-test/homeassistant-VERSION``
(``<cache>``: ``$XDG_CACHE_HOME``, default ``~/.cache``). :class:`HomeAssistant` runs ``hass --skip-pip`` (nothing is
downloaded while testing) on a fresh configuration directory with HTTP on ``127.0.0.1`` only, creates the owner
through the onboarding API, trades the code it returns for a token and adds the MQTT integration for a broker. The
requests are those Home Assistant's own frontend makes, read in ``homeassistant/components/onboarding/views.py``,
``auth/__init__.py``, ``config/config_entries.py`` and ``config/device_registry.py`` of 2024.3.3 and 2025.4.4; the
device and entity registries are only on the websocket API.

Run as a program it serves ``scripts/demo --homeassistant``::

    python tests/homeassistant.py serve --broker-port 1883

starts Home Assistant connected to that broker, prints its URL and login, and runs until SIGTERM or Ctrl-C.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from websockets.sync.client import connect

VERSIONS = ("2024.3.3", "2025.4.4")
DEMO_VERSION = "2024.3.3"
ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install-homeassistant"

T = TypeVar("T")

# What the test and the demo need, and no more (automations, and a folder image.snapshot may write, for the alert
# in docs/home-assistant.md): no recorder, history or default_config (each would want packages
# --skip-pip does not install). Onboarding, auth and config make the owner and the MQTT entry; mqtt itself comes
# from the config entry. 2024.3 logs each entity discovery creates at INFO (2025.4 at DEBUG): it helps read a failure.
CONFIGURATION = """\
homeassistant:
  name: edgecam test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
  language: en
  allowlist_external_dirs:
    - {www}
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
websocket_api:
onboarding:
auth:
config:
image:
event:
binary_sensor:
sensor:
switch:
automation: !include automations.yaml
shell_command: !include shell_commands.yaml
logger:
  default: warning
  logs:
    homeassistant.components.mqtt.discovery: info
"""

# The onboarding steps other than the owner, marked done beforehand: core_config would set up integrations
# (met, radio_browser, ...) whose packages are not installed, and a browser goes straight to the dashboard.
ONBOARDING = {
    "version": 4,
    "minor_version": 1,
    "key": "onboarding",
    "data": {"done": ["core_config", "analytics", "integration"]},
}

# Straight to 127.0.0.1, whatever proxy the environment names (http_proxy without a no_proxy for loopback).
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# A record of Home Assistant's log starts with the time and the level: "2025-04-30 10:01:02.345 ERROR (MainThread) ..."
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) ", re.MULTILINE)


class HomeAssistantError(Exception):
    """Home Assistant did not start, or answered a request with an error."""


def cache_dir() -> Path:
    """Where scripts/install-homeassistant keeps its virtual environments: ``$XDG_CACHE_HOME/edgecam-test``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecam-test"


def venv(version: str) -> Path:
    """The virtual environment of one Home Assistant version."""
    return cache_dir() / f"homeassistant-{version}"


def installed(version: str) -> bool:
    """The install finished: its stamp is written last."""
    return (venv(version) / ".edgecam-complete").is_file()


def install_command(version: str) -> str:
    """The command that installs ``version``, as a user would type it in the clone."""
    return f"scripts/install-homeassistant {version}"


def python_missing(version: str) -> str | None:
    """Why ``version`` cannot be installed here (no Python for it), or None when it can."""
    found = subprocess.run(["bash", str(INSTALL), "--python", version], capture_output=True, text=True, check=False)
    return None if found.returncode == 0 else found.stderr.strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Response:
    """One HTTP answer."""

    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class LogRecord:
    """One record of Home Assistant's log: its level and its whole text (a traceback included)."""

    level: str
    text: str


class HomeAssistant:
    """``hass`` of one installed version, run in ``workdir`` on a loopback port.

    Use: ``start()``, ``onboard()``, ``add_mqtt(host, port)``, then the REST and websocket helpers; ``stop()``.
    """

    def __init__(self, version: str, workdir: Path, port: int = 0, shell_commands: str = "") -> None:
        """``shell_commands``: the body of ``shell_command:`` in configuration.yaml (YAML), read only at start; its
        ``/config/www`` (the folder on Home Assistant OS) stands for this instance's."""
        self.version = version
        self.shell_commands = shell_commands
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_dir = workdir / "config"
        self.log_path = workdir / "hass.log"
        self.token = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> float:
        """Start ``hass --skip-pip`` and wait until its HTTP API answers; return the seconds that took.

        Raises:
            HomeAssistantError: not installed, exited, or not answering within ``timeout`` seconds (with its log).
        """
        hass = venv(self.version) / "bin" / "hass"
        if not installed(self.version):
            raise HomeAssistantError(f"Home Assistant {self.version} is not installed: {install_command(self.version)}")
        (self.config_dir / ".storage").mkdir(parents=True, exist_ok=True)
        (self.config_dir / "www").mkdir(exist_ok=True)
        (self.config_dir / "automations.yaml").write_text("[]\n")
        www = str(self.config_dir / "www")
        (self.config_dir / "shell_commands.yaml").write_text(self.shell_commands.replace("/config/www", www) or "{}\n")
        configuration = CONFIGURATION.format(port=self.port, www=self.config_dir / "www")
        (self.config_dir / "configuration.yaml").write_text(configuration)
        (self.config_dir / ".storage" / "onboarding").write_text(json.dumps(ONBOARDING))
        argv = [str(hass), "-c", str(self.config_dir), "--skip-pip", "--log-no-color"]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # Before the owner exists only the onboarding API answers without a token.
        while True:
            if self._proc.poll() is not None:
                raise HomeAssistantError(f"hass exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if self.request("GET", "/api/onboarding", auth=False, timeout=2).status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise HomeAssistantError(f"hass did not answer on {self.url} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def onboard(self, username: str = "edgecam", password: str = "edgecam-test", timeout: float = 60.0) -> str:
        """Create the owner, log in (the token is kept for the helpers) and wait until Home Assistant runs.

        Returns:
            The access token (valid 30 minutes).
        """
        client_id = self.url + "/"
        user = {"client_id": client_id, "name": username, "username": username, "password": password, "language": "en"}
        code = self._ok(self.request("POST", "/api/onboarding/users", user, auth=False))["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
        self.token = self._ok(self.request("POST", "/auth/token", grant, form=True, auth=False))["access_token"]
        self.wait_for(lambda: self.get("/api/config")["state"] == "RUNNING", timeout, "Home Assistant running")
        return self.token

    def add_mqtt(self, host: str, port: int) -> dict[str, Any]:
        """Add the MQTT integration for the broker at ``host:port`` (the flow connects to it); return the entry.

        Raises:
            HomeAssistantError: the flow did not create a loaded entry (e.g. ``cannot_connect``).
        """
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        if flow.get("step_id") != "broker":
            raise HomeAssistantError(f"the MQTT flow did not ask for the broker: {flow}")
        done = self.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": host, "port": port})
        if done.get("type") != "create_entry" or done["result"].get("state") != "loaded":
            raise HomeAssistantError(f"the MQTT entry was not created and loaded: {done}\n{self.log_tail()}")
        entry: dict[str, Any] = done["result"]
        return entry

    # REST

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        form: bool = False,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> Response:
        """One HTTP request; an error status is returned, not raised. ``form`` sends ``body`` form-encoded.

        Raises:
            OSError: nothing answered (refused, timed out).
        """
        headers: dict[str, str] = {}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with _LOOPBACK.open(req, timeout=timeout) as answer:
                return Response(answer.status, answer.read(), answer.headers.get_content_type())
        except urllib.error.HTTPError as err:
            with err:
                return Response(err.code, err.read(), err.headers.get_content_type())

    def _ok(self, response: Response) -> Any:
        if response.status != 200:
            raise HomeAssistantError(f"HTTP {response.status}: {response.body[:500]!r}")
        return response.json()

    def get(self, path: str) -> Any:
        """GET ``path`` and return its JSON; any status but 200 raises HomeAssistantError."""
        return self._ok(self.request("GET", path))

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path`` and return the answer's JSON; any status but 200 raises."""
        return self._ok(self.request("POST", path, body))

    def states(self) -> list[dict[str, Any]]:
        """Every entity's state object (``entity_id``, ``state``, ``attributes``, ...)."""
        states: list[dict[str, Any]] = self.get("/api/states")
        return states

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """One entity's state object, or None while Home Assistant does not know the entity."""
        response = self.request("GET", f"/api/states/{entity_id}")
        if response.status == 404:
            return None
        state: dict[str, Any] = self._ok(response)
        return state

    def image(self, entity_id: str) -> Response:
        """What the image entity serves now (``/api/image_proxy/<entity_id>``): status, bytes, content type."""
        return self.request("GET", f"/api/image_proxy/{entity_id}")

    def call_service(self, domain: str, service: str, **data: Any) -> Any:
        """Call ``domain.service`` with ``data`` (e.g. ``entity_id=...``) as the frontend does; return its answer."""
        return self.post(f"/api/services/{domain}/{service}", data)

    # websocket

    def command(self, kind: str, **fields: Any) -> Any:
        """Send one websocket command (``{"id": 1, "type": kind, ...}``) on a new connection; return its result.

        Raises:
            HomeAssistantError: authentication or the command failed.
        """
        with connect(f"ws://127.0.0.1:{self.port}/api/websocket", max_size=None, open_timeout=10, proxy=None) as ws:
            if json.loads(ws.recv(10))["type"] == "auth_required":
                ws.send(json.dumps({"type": "auth", "access_token": self.token}))
                answer = json.loads(ws.recv(10))
                if answer["type"] != "auth_ok":
                    raise HomeAssistantError(f"websocket authentication failed: {answer}")
            ws.send(json.dumps({"id": 1, "type": kind, **fields}))
            result = json.loads(ws.recv(10))
        if not result.get("success"):
            raise HomeAssistantError(f"{kind} failed: {result}")
        return result["result"]

    def devices(self) -> list[dict[str, Any]]:
        """The device registry (``identifiers`` as lists of [domain, id], ``name``, ``manufacturer``, ...)."""
        devices: list[dict[str, Any]] = self.command("config/device_registry/list")
        return devices

    def entities(self) -> list[dict[str, Any]]:
        """The entity registry (``entity_id``, ``unique_id``, ``platform``, ``device_id``, ``entity_category``, ...)."""
        entities: list[dict[str, Any]] = self.command("config/entity_registry/list")
        return entities

    # waiting, the log, stopping

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
        """Poll ``check`` until it returns something true and return that; a failed request counts as not yet.

        Raises:
            AssertionError: ``timeout`` seconds passed (with the last value or error, and the log's tail).
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = check()
                if value:
                    return value
                last = value
            except (OSError, HomeAssistantError, KeyError) as err:
                last = err
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Home Assistant {self.version}: timed out after {timeout} s waiting for {what}; "
                    f"last: {last!r}\n{self.log_tail()}"
                )
            time.sleep(interval)

    def log_text(self) -> str:
        """Everything Home Assistant logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log, for a failure message."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_records(self) -> list[LogRecord]:
        """The log split into records, a traceback kept with the line that introduced it."""
        text = self.log_text()
        starts = list(_RECORD.finditer(text))
        ends = [match.start() for match in starts[1:]] + [len(text)] if starts else []
        return [
            LogRecord(match.group("level"), text[match.start() : end].rstrip("\n"))
            for match, end in zip(starts, ends, strict=True)
        ]

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Wait for the process to end (the demo's foreground); return its exit status."""
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Home Assistant saves its storage and disconnects), SIGKILL after ``timeout`` seconds."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def serve(args: argparse.Namespace) -> int:
    """Start Home Assistant for the demo, print how to log in, run until SIGTERM or Ctrl-C."""
    if not installed(args.version):
        print(f"Home Assistant {args.version} is not installed: run {install_command(args.version)}", file=sys.stderr)
        return 1

    def stop_on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    with tempfile.TemporaryDirectory(prefix="edgecam-homeassistant-") as scratch:
        workdir = Path(args.dir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        hass = HomeAssistant(args.version, workdir, args.port)
        try:
            hass.start()
            hass.onboard(args.username, args.password)
            hass.add_mqtt(args.broker_host, args.broker_port)
            print(
                f"Home Assistant {args.version} on {hass.url}/ (user {args.username!r}, password {args.password!r}); "
                f"the device is under Settings > Devices & services > MQTT; its log is {hass.log_path}",
                flush=True,
            )
            code = hass.wait()
            print(f"Home Assistant exited by itself with status {code}:\n{hass.log_tail(20)}", file=sys.stderr)
        except HomeAssistantError as err:
            print(f"Home Assistant {args.version}: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            hass.stop()
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/homeassistant.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="start Home Assistant for a broker and run until SIGTERM or Ctrl-C")
    run.add_argument("--broker-port", type=int, required=True, help="the MQTT broker's port")
    run.add_argument("--broker-host", default="127.0.0.1", help="the MQTT broker's host (default %(default)s)")
    run.add_argument("--version", default=DEMO_VERSION, choices=VERSIONS, help="default %(default)s")
    run.add_argument(
        "--port", type=int, default=0, help="Home Assistant's HTTP port on 127.0.0.1 (default: a free one)"
    )
    run.add_argument("--username", default="edgecam", help="the owner's user name (default %(default)s)")
    run.add_argument("--password", default="edgecam-demo", help="the owner's password (default %(default)s)")
    run.add_argument("--dir", type=Path, help="configuration and log directory (default: a temporary one, removed)")
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
