"""Photographs edgecam's device page in a real Home Assistant with headless Chromium (docs/home-assistant.md).

Run by ``scripts/screenshot-homeassistant``, which installs what this needs (Mosquitto, Home Assistant, Debian's
chromium, a virtual environment with Playwright) and runs this file with that environment's Python.

Starts Mosquitto, Home Assistant (``tests/homeassistant.py``: owner, MQTT entry) and the agent on the simulated
camera after ``edgecam calibrate``; waits until the door has opened and closed once, so every entity has a value
(the still, the door event, the diagnostic sensors); logs the browser in by handing the frontend the tokens of a
login it would have made itself; opens ``/config/devices/device/<id>`` and saves a PNG.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as BrowserError  # type: ignore[import-not-found,unused-ignore]
from playwright.sync_api import Route, sync_playwright  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.homeassistant import VERSIONS, HomeAssistant, HomeAssistantError, Response, free_port  # noqa: E402

EDGECAM = ROOT / ".venv" / "bin" / "edgecam"
DEVICE_ID = "front-door"
DEVICE_NAME = "Front door"
USERNAME, PASSWORD = "edgecam", "edgecam-screenshot"
MARGIN = 16  # pixels kept right of and below the cards
# Debian's chromium; this machine's network is closed, so nothing that would call Google's servers.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def blank_png() -> bytes:
    """One transparent pixel (PNG: the signature, then IHDR, IDAT and IEND chunks, RFC 2083)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8 bits, RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(5))) + chunk(b"IEND", b"")


def log(message: str) -> None:
    print(f"screenshot: {message}", file=sys.stderr, flush=True)


@contextmanager
def mosquitto(binary: str, workdir: Path) -> Iterator[int]:
    """A private Mosquitto on a free loopback port; yields the port."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with (workdir / "mosquitto.log").open("wb") as out:
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        broker.terminate()
        broker.wait(10)


def agent_environment(broker_port: int, workdir: Path) -> dict[str, str]:
    """The agent's settings: the demo's door scene, opening once 3 s after the start and then not for a minute."""
    zone = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-c",
            "import json; from edgecam.sources.simulated import DOOR_ZONE; print(json.dumps(DOOR_ZONE))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    environ.update(
        EDGECAM_DEVICE_ID=DEVICE_ID,
        EDGECAM_HOMEASSISTANT__DEVICE_NAME=DEVICE_NAME,
        EDGECAM_MQTT__HOST="127.0.0.1",
        EDGECAM_MQTT__PORT=str(broker_port),
        EDGECAM_MQTT__STATS_INTERVAL="2",
        EDGECAM_STORAGE__DIR=str(workdir / "state"),
        EDGECAM_CAMERA__SOURCE="simulated",
        EDGECAM_CAMERA__SIMULATED__FIRST_OPENING="3",
        EDGECAM_CAMERA__SIMULATED__DOOR_PERIOD="60",
        EDGECAM_MOTION__ZONE=zone,
    )
    return environ


@contextmanager
def agent(environ: dict[str, str], workdir: Path) -> Iterator[None]:
    """``edgecam calibrate`` on a quiet stretch of the scene, then ``edgecam run`` until the block ends."""
    quiet = dict(environ, EDGECAM_CAMERA__SIMULATED__FIRST_OPENING="60")
    done = subprocess.run([str(EDGECAM), "calibrate"], env=quiet, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HomeAssistantError(f"edgecam calibrate failed:\n{done.stderr}")
    with (workdir / "agent.log").open("wb") as out:
        child = subprocess.Popen([str(EDGECAM), "run"], env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        child.terminate()
        child.wait(15)


def device_entities(hass: HomeAssistant) -> tuple[str, dict[str, str]]:
    """The device's registry id and its entities by object (``door``, ``still``, ...), once all have values.

    Waits until the door has opened and closed again: the still is there, the door event has ended, and the
    diagnostic sensors show the outbox drained since.
    """
    identifier = ["mqtt", f"edgecam_{DEVICE_ID}"]
    device = hass.wait_for(
        lambda: next((d for d in hass.devices() if identifier in d["identifiers"]), None), 30, "the device"
    )
    prefix = f"edgecam_{DEVICE_ID}_"

    def registered() -> dict[str, str]:
        found = {
            e["unique_id"].removeprefix(prefix): e["entity_id"]
            for e in hass.entities()
            if e["device_id"] == device["id"]
        }
        return found if {"door", "motion", "still", "activity", "detect", "fps", "uptime"} <= set(found) else {}

    entities = hass.wait_for(registered, 30, "the device's entities")

    def value(obj: str) -> str:
        state = hass.state(entities[obj])
        return state["state"] if state else "unknown"

    def settled() -> bool:
        activity = hass.state(entities["activity"])
        # The outbox has drained (so oldest waiting is rightly unknown), as it has between door events.
        return (
            activity is not None
            and activity["attributes"].get("event_type") == "end"
            and value("door") == "off"
            and value("motion") == "off"
            and value("outbox_depth") == "0"
            and all(value(obj) not in ("unknown", "unavailable") for obj in entities if obj != "oldest_waiting")
        )

    hass.wait_for(settled, 60, "the door to open and close once, every entity with a value", interval=0.5)
    return device["id"], entities


def login(hass: HomeAssistant) -> dict[str, Any]:
    """Log in as the frontend does (``/auth/login_flow``, then ``/auth/token``); return what it keeps in
    ``localStorage.hassTokens`` (home-assistant-js-websocket's ``AuthData``: the token answer plus ``hassUrl``,
    ``clientId`` and ``expires`` in ms since the epoch).
    """
    client_id = hass.url + "/"

    def ok(response: Response) -> dict[str, Any]:
        if response.status != 200:
            raise HomeAssistantError(f"login: HTTP {response.status}: {response.body[:300]!r}")
        answer: dict[str, Any] = response.json()
        return answer

    flow = ok(
        hass.request(
            "POST",
            "/auth/login_flow",
            {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
            auth=False,
        )
    )
    done = ok(
        hass.request(
            "POST",
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": client_id, "username": USERNAME, "password": PASSWORD},
            auth=False,
        )
    )
    if done.get("type") != "create_entry":
        raise HomeAssistantError(f"login refused: {done}")
    grant = {"grant_type": "authorization_code", "code": done["result"], "client_id": client_id}
    tokens = ok(hass.request("POST", "/auth/token", grant, form=True, auth=False))
    tokens.update(hassUrl=hass.url, clientId=client_id, expires=int(time.time() * 1000) + tokens["expires_in"] * 1000)
    return tokens


def photograph(hass: HomeAssistant, tokens: dict[str, Any], device_id: str, out: Path, size: tuple[int, int]) -> None:
    """Open the device page in headless Chromium with ``tokens`` already stored, wait for it, save a PNG."""
    width, height = size

    def only_home_assistant(route: Route) -> None:
        # The frontend loads integration logos from the internet (brands.home-assistant.io): nothing goes out, and
        # a logo becomes a blank rather than a broken image.
        if route.request.url.startswith(hass.url + "/"):
            route.continue_()
        elif route.request.resource_type == "image":
            log(f"no internet: a blank for {route.request.url}")
            route.fulfill(status=200, content_type="image/png", body=blank_png())
        else:
            log(f"no internet: refused {route.request.url}")
            route.abort()

    with tempfile.TemporaryDirectory(prefix="edgecam-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": height},
            locale="en-US",
            timezone_id="UTC",
        )
        try:
            context.route("**/*", only_home_assistant)
            context.add_init_script(f"window.localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});")
            page = context.new_page()
            page.goto(f"{hass.url}/config/devices/device/{device_id}")
            page.get_by_text("Door movement").first.wait_for(timeout=30_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # the last icons and the still fade in
            if page.get_by_text("Unavailable", exact=True).count():
                raise HomeAssistantError("the device page shows entities as unavailable: is the agent running?")
            # The cards end well before a wide viewport does: cut at the last card's right and bottom edges.
            boxes = [box for card in page.locator("ha-card").all() if (box := card.bounding_box())]
            right = min(width, max(box["x"] + box["width"] for box in boxes) + MARGIN)
            bottom = min(height, max(box["y"] + box["height"] for box in boxes) + MARGIN)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": right, "height": bottom})
        finally:
            context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshot-homeassistant", description=__doc__.split("\n\n")[0])
    # The newest: its frontend shows the duration sensors with their units (2024.3.3: "0" for 0.87 ms).
    parser.add_argument("--version", default=VERSIONS[-1], choices=VERSIONS, help="default %(default)s")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "homeassistant-device.png")
    parser.add_argument("--size", default="1280x1400", help="browser viewport WIDTHxHEIGHT (default %(default)s)")
    parser.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    parser.add_argument("--keep", type=Path, help="keep the logs and Home Assistant's configuration in this directory")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.size.split("x"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecam-screenshot-") as scratch:
        workdir = Path(args.keep or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            # Stopped in reverse: the agent, then Home Assistant (it disconnects cleanly), then the broker.
            with ExitStack() as running:
                broker_port = running.enter_context(mosquitto(args.mosquitto, workdir))
                hass = HomeAssistant(args.version, workdir / "homeassistant")
                running.callback(hass.stop)
                hass.start()
                hass.onboard(USERNAME, PASSWORD)
                hass.add_mqtt("127.0.0.1", broker_port)
                log(f"Home Assistant {args.version} on {hass.url}, Mosquitto on 127.0.0.1:{broker_port}")
                running.enter_context(agent(agent_environment(broker_port, workdir), workdir))
                device_id, entities = device_entities(hass)
                log(f"device {device_id}: {len(entities)} entities; the door has opened and closed")
                photograph(hass, login(hass), device_id, args.out, (width, height))
                log("the states just after the picture:")
                for entity_id in sorted(entities.values()):
                    state = hass.state(entity_id)
                    log(f"  {entity_id} = {state['state'] if state else None}")
        except (HomeAssistantError, AssertionError, BrowserError) as err:
            log(f"failed: {err}\n(logs in {workdir}; --keep DIR keeps them)")
            return 1
    log(f"saved {args.out} ({args.out.stat().st_size // 1024} KB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
