"""Sections 3-6 of ``scripts/bench_pipeline.py``: the running agent, measured from outside.

Usage: .venv/bin/python scripts/bench_pipeline_live.py [--quick] [--only latency,memory,cpu,startup] [--out DIR]

Each section runs ``python -m edgecam run --config <toml>`` in a child process on the simulated camera
(``camera.source = "simulated"``, paced in real time), against a real Mosquitto on a free loopback port
(``tests.conftest.Broker``), with every ``EDGECAM_*`` variable removed from the child's environment. Settings
files, logs, state directories and what the subscriber received stay under ``--out`` (bench-out/pipeline/).

- latency: a subscriber in another process (this file with ``--subscribe``, paho, QoS 1) writes one JSON line per
  message with its arrival wall clock. Deciding frame -> ``start`` received: the start event's ``time`` is the wall
  clock the capture stage read while handling the frame whose detector result started the event
  (``Capture._event``, ``models.iso_ms``: milliseconds, truncated), so the figure is arrival minus that ``time``.
  ``start`` -> first still: arrival of the JPEG on ``<base>/events/<id>/stills/1`` minus the ``start``'s arrival.
  Door openings every 4 s, at still (scene) sizes 2028x1520 and 1280x960.
- memory: VmRSS of the agent every second at 10 fps, a door event every 30 s, stills of 640x480 (the scene's default)
  and of 2028x1520 in two agents side by side; beside it a
  process that only imports numpy, cv2, paho.mqtt.client and pydantic, and the simulated source alone.
- cpu: utime + stime of the agent (``/proc/PID/stat``) at 10 fps with nothing moving, then of a process that only
  runs the simulated source's ``frames()`` paced at the same size and fps, then of the import floor sleeping.
- startup: process start (just before ``Popen``) -> the first ``READY=1`` datagram on ``$NOTIFY_SOCKET`` (an
  ``AF_UNIX`` socket bound here), and -> ``online`` on ``<base>/availability`` at a subscriber in this process,
  beside ``python -c "import numpy, cv2, paho.mqtt.client; from pydantic import BaseModel"`` from start to exit,
  runs interleaved (``import pydantic`` alone loads almost nothing: pydantic 2 imports its parts when first used).

Targets are printed as met or missed; they never fail the run.
"""

import argparse
import concurrent.futures
import contextlib
import fcntl
import json
import math
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # edgecam and tests.conftest, as scripts/bench_reliability.py does

from bench_reliability import stop_agent as stop  # noqa: E402  SIGTERM, then SIGKILL if it lingers

if TYPE_CHECKING:
    from tests.conftest import Broker


@dataclass(frozen=True)
class Figure:
    """One row of the pipeline benchmark's table."""

    section: str
    name: str
    unit: str
    median: float
    low: float
    high: float
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""


SECTIONS = ("latency", "memory", "cpu", "startup")
DEVICE = "bench-door"
BASE = f"edgecam/{DEVICE}"
FLOOR_IMPORTS = "import numpy, cv2, paho.mqtt.client; from pydantic import BaseModel"
"""The bare import floor of the issue: what any agent built on these libraries pays before doing anything."""
FPS = 10.0
SMALL_SCENE = (640, 480)
"""The simulated scene's default size: CPU and start-up, where no still is taken and the source's cost is subtracted
or is part of start-up (rendering 2028x1520 costs about 20 ms a frame and 0.7 s to set up here)."""
LATENCY_SIZES = ((2028, 1520), (1280, 960))
LATENCY_SCENE = {"door_period": 4.0, "first_opening": 3.0, "door_opening": 0.5, "door_open": 0.5, "door_closing": 0.5}
"""A short swing every 4 s so that 50 events take under 4 minutes; the first after the detector's 2 s of learning."""
LATENCY_EVENT_GAP = 1.0
MEMORY_SIZES = ((640, 480), (2028, 1520))
"""The scene's default size and a Pi's still size, run side by side."""
MEMORY_SCENE = {"door_period": 30.0, "first_opening": 5.0}
"""The default swing (1 s open, 2 s open, 1 s shut) every 30 s."""
QUIET_SCENE = {"first_opening": 3600.0}
"""Nothing moves within any run (the scene's first opening is an hour in)."""
CPU_SETTLE_S = 3.0
"""Seconds after READY (after the first frame for the source alone) before CPU is counted: the detector learns 2 s."""


@dataclass(frozen=True)
class Plan:
    """How much each section runs: full numbers, or ``--quick`` (CI)."""

    events: int
    memory_s: float
    memory_mark_s: float
    """The early RSS is the median of the window ending here (minute 2; 25% of a quick run)."""
    memory_window_s: float
    """Length of the windows whose medians are compared (the last minute is the steady RSS)."""
    cpu_s: float
    cpu_runs: int
    startup_runs: int


FULL = Plan(
    events=50, memory_s=600.0, memory_mark_s=120.0, memory_window_s=60.0, cpu_s=60.0, cpu_runs=3, startup_runs=7
)
QUICK = Plan(events=5, memory_s=40.0, memory_mark_s=10.0, memory_window_s=5.0, cpu_s=10.0, cpu_runs=1, startup_runs=2)


# --- processes and /proc ---------------------------------------------------------------------------------------------


def child_env(notify_socket: Path | None = None) -> dict[str, str]:
    """This process's environment without ``EDGECAM_*`` and systemd's variables; ``NOTIFY_SOCKET`` when given."""
    dropped = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "EDGECAM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = str(notify_socket)
    return env


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of ``/proc/PID/status`` (VmRSS, VmHWM), None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``, seconds (``/proc/PID/stat`` fields 14 and 15, proc(5))."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces; field 3 follows ") "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """One line of the child's stdout within ``timeout`` seconds; RuntimeError if it ends or stays silent."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        stop(proc)
        raise RuntimeError(f"{what}: no line on stdout within {timeout:g} s (exit status {proc.returncode})")
    return line


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class NotifySocket:
    """An ``AF_UNIX`` datagram socket standing in for systemd's ``$NOTIFY_SOCKET``; timestamps what arrives."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="edgecam-notify-"))
        self.path = self._dir / "notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._ready = threading.Event()
        self.ready_at: float | None = None
        """``time.monotonic()`` when the first datagram holding ``READY=1`` arrived since ``reset``."""
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self._ready.clear()
        self.ready_at = None

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            if b"READY=1" in data.split(b"\n") and not self._ready.is_set():
                self.ready_at = now
                self._ready.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


# --- the agent ------------------------------------------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(table: dict[str, Any], prefix: str = "") -> str:
    """A settings file: the keys of ``table``, then each nested dict as its own ``[section]``."""
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            text += f"\n[{name}]\n" + toml_text(value, name + ".")
    return text


@dataclass
class AgentRun:
    """One ``edgecam run`` in a folder of its own: settings file, log and state directory."""

    dir: Path
    broker: "Broker"
    size: tuple[int, int]
    scene: dict[str, float]
    event_gap: float = 2.0

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    def settings(self) -> dict[str, Any]:
        from edgecam.sources.simulated import DOOR_ZONE

        width, height = self.size
        return {
            "device_id": DEVICE,
            "camera": {
                "source": "simulated",
                "realtime": True,
                "simulated": {"width": width, "height": height, "fps": FPS, **self.scene},
            },
            "motion": {"zone": [list(p) for p in DOOR_ZONE], "event_gap": self.event_gap},
            "storage": {"dir": str(self.state)},
            "mqtt": {"host": self.broker.host, "port": self.broker.port},
        }

    def start(self, notify: NotifySocket | None = None) -> tuple[subprocess.Popen[bytes], float]:
        """Start the agent; return it and ``time.monotonic()`` read just before ``Popen``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "agent.toml"
        config.write_text(toml_text(self.settings()), encoding="utf-8")
        argv = [sys.executable, "-m", "edgecam", "run", "--config", str(config)]
        env = child_env(notify.path if notify is not None else None)
        with self.log.open("ab") as log:
            began = time.monotonic()
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return proc, began

    def fail(self, proc: subprocess.Popen[bytes], what: str) -> RuntimeError:
        stop(proc)
        return RuntimeError(
            f"agent in {self.dir}: {what} (exit status {proc.returncode}); its log ends:\n{tail(self.log)}"
        )


def start_broker(folder: Path) -> "Broker":
    from tests.conftest import MOSQUITTO, Broker

    if MOSQUITTO is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto; scripts/test installs it)")
    broker = Broker(folder / "mosquitto")
    broker.start()
    return broker


@contextlib.contextmanager
def broker_in(folder: Path) -> Iterator["Broker"]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    broker = start_broker(folder)
    try:
        yield broker
    finally:
        broker.kill()


def floor_process(seconds: float) -> subprocess.Popen[bytes]:
    """A process that imports the floor's libraries, prints ``ready`` and sleeps ``seconds``."""
    code = f"{FLOOR_IMPORTS}; import time; print('ready', flush=True); time.sleep({seconds!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE)


def source_process(size: tuple[int, int], seconds: float) -> subprocess.Popen[bytes]:
    """This file with ``--source-only``: the simulated source alone, paced, printing ``ready`` after its first frame."""
    argv = [sys.executable, __file__, "--source-only", str(size[0]), str(size[1]), str(FPS), str(seconds)]
    return subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE)


def run_source_only(width: int, height: int, fps: float, seconds: float) -> None:
    """``--source-only``: iterate ``SimulatedSource.frames()`` paced in real time, as ``edgecam run`` opens it."""
    from edgecam.config import CameraSettings
    from edgecam.scene_settings import SimulatedSettings
    from edgecam.sources.simulated import SimulatedSource

    scene = SimulatedSettings(width=width, height=height, fps=fps, **QUIET_SCENE)
    source = SimulatedSource(CameraSettings(source="simulated", simulated=scene), realtime=True)
    deadline = math.inf
    for frame in source.frames():
        if frame.index == 0:
            print("ready", flush=True)
            deadline = time.monotonic() + seconds
        if time.monotonic() >= deadline:
            break
    source.close()


# --- the subscriber in another process ---------------------------------------------------------------------------


def run_subscriber(host: str, port: int, base: str, out: Path) -> None:
    """``--subscribe``: one JSON line per message on the event, still, availability and stats topics (QoS 1).

    Each line: topic, ``wall`` (``time.time()`` on arrival, the clock that crosses processes), ``mono_ns``, bytes,
    retain, and for JSON topics the parsed payload (``availability``: the text). Prints ``subscribed`` once the
    broker has granted the subscription; ends on SIGTERM.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    filters = [f"{base}/events", f"{base}/events/+/stills/+", f"{base}/availability", f"{base}/stats"]
    sink = out.open("w", encoding="utf-8")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe([(f, 1) for f in filters])

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        print("subscribed", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        wall, mono = time.time(), time.monotonic_ns()
        payload = bytes(message.payload)
        record: dict[str, Any] = {
            "topic": message.topic,
            "wall": wall,
            "mono_ns": mono,
            "bytes": len(payload),
            "retain": bool(message.retain),
        }
        if message.topic in (f"{base}/events", f"{base}/stats"):
            record["payload"] = json.loads(payload)
        elif message.topic == f"{base}/availability":
            record["payload"] = payload.decode(errors="replace")
        sink.write(json.dumps(record) + "\n")
        sink.flush()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect(host, port, 30)
    client.loop_forever()
    sink.close()


@contextlib.contextmanager
def subscriber(broker: "Broker", out: Path) -> Iterator[Path]:
    """The ``--subscribe`` child, subscribed before this yields; the JSON lines file it writes."""
    argv = [sys.executable, __file__, "--subscribe", broker.host, str(broker.port), BASE, str(out)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE)
    try:
        read_line(proc, 15.0, "the subscriber")
        yield out
    finally:
        stop(proc)


def received(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- figures --------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear between the two nearest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def at_most(value: float, limit: float) -> bool:
    return value <= limit


# --- 3. latency -----------------------------------------------------------------------------------------------------


def latency_figures(plan: Plan, out: Path) -> list[Figure]:
    figures: list[Figure] = []
    for width, height in LATENCY_SIZES:
        folder = out / f"latency-{width}x{height}"
        with broker_in(folder) as broker:
            scene = dict(LATENCY_SCENE)
            swing = scene["door_opening"] + scene["door_open"] + scene["door_closing"]
            # The last opening and its quiet gap end before the next would begin; then the agent drains and exits.
            scene["duration"] = scene["first_opening"] + (plan.events - 1) * scene["door_period"] + swing + 2.0
            run = AgentRun(folder, broker, (width, height), scene, LATENCY_EVENT_GAP)
            with subscriber(broker, folder / "messages.jsonl") as messages:
                agent, _ = run.start()
                try:
                    agent.wait(scene["duration"] + 60.0)
                except subprocess.TimeoutExpired:
                    raise run.fail(agent, f"did not end within {scene['duration'] + 60.0:g} s") from None
                if agent.returncode != 0:
                    raise run.fail(agent, "failed")
                time.sleep(0.5)  # the last messages on their way to the subscriber
            figures += latency_of(received(messages), (width, height), plan.events)
    return figures


def latency_of(records: list[dict[str, Any]], size: tuple[int, int], expected: int) -> list[Figure]:
    """Deciding frame -> start, and start -> first still's JPEG, per door event, from the subscriber's lines."""
    starts: dict[str, tuple[float, float]] = {}  # event id -> (the start's time field, its arrival), first copy
    first_still: dict[str, float] = {}
    detect_ms: list[float] = []
    for r in records:
        topic = r["topic"]
        if topic == f"{BASE}/events" and r["payload"]["type"] == "start":
            event = r["payload"]
            stamped = datetime.fromisoformat(event["time"]).timestamp()
            starts.setdefault(event["event_id"], (stamped, r["wall"]))
        elif topic.startswith(f"{BASE}/events/") and topic.endswith("/stills/1"):
            first_still.setdefault(topic.split("/")[-3], r["wall"])
        elif topic == f"{BASE}/stats" and r["payload"].get("detect_ms") is not None:
            detect_ms.append(float(r["payload"]["detect_ms"]))
    to_start = [(arrived - stamped) * 1e3 for stamped, arrived in starts.values()]
    to_still = [(first_still[e] - arrived) * 1e3 for e, (_, arrived) in starts.items() if e in first_still]
    label = f"{size[0]}x{size[1]}"
    if not to_start:
        raise RuntimeError(f"latency {label}: the subscriber received no start event")
    counted = f"{len(starts)} door events (of {expected} in the scene)"
    if len(to_still) < len(to_start):
        counted += f", {len(to_start) - len(to_still)} without a first still"
    columns = "median column = p95, min column = p50, max = the largest"
    detect = f"; the detector took {statistics.median(detect_ms):.2f} ms a frame (stats detect_ms)" if detect_ms else ""
    start_note = (
        f"{columns}, over {counted}. From the start event's 'time' (the agent's wall clock read by the capture stage "
        "while handling the deciding frame, after its detector result; ISO milliseconds, truncated, so up to 1 ms "
        f"more than the true delay) to the start JSON's arrival (time.time()) at a subscriber in another process"
        f"{detect}"
    )
    still_note = (
        f"{columns}, over {len(to_still)} events. From the start JSON's arrival to the arrival of the first still's "
        "JPEG (<base>/events/<id>/stills/1), both at the subscriber"
    )
    p95 = percentile(to_start, 95)
    figures = [
        Figure(
            "latency",
            f"{label}: deciding frame -> start p95",
            "ms",
            p95,
            percentile(to_start, 50),
            max(to_start),
            target="<= 30 ms",
            met=at_most(p95, 30.0),
            note=start_note,
        )
    ]
    if to_still:
        p95 = percentile(to_still, 95)
        big = size == (2028, 1520)
        figures.append(
            Figure(
                "latency",
                f"{label}: start -> first still p95",
                "ms",
                p95,
                percentile(to_still, 50),
                max(to_still),
                target="<= 80 ms" if big else None,
                met=at_most(p95, 80.0) if big else None,
                note=still_note,
            )
        )
    return figures


# --- 4. memory ------------------------------------------------------------------------------------------------------


def window_mb(samples: list[tuple[float, int]], end: float, length: float) -> list[float]:
    """VmRSS in MB (10^6 bytes) of the samples taken in ``(end - length, end]`` seconds after start."""
    return [kb * 1024 / 1e6 for t, kb in samples if end - length < t <= end]


RSS_SETTLE_S = 2.0
"""Seconds after a child's ``ready`` before its VmRSS is read: set-up's temporaries freed, the first frames made."""


def settled_rss_mb(proc: subprocess.Popen[bytes], what: str, seconds: float) -> float:
    """The median VmRSS (MB) of a child over ``seconds``, from ``RSS_SETTLE_S`` after it printed ``ready``."""
    read_line(proc, 60.0, what)
    time.sleep(RSS_SETTLE_S)
    values: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kb = proc_status_kb(proc.pid, "VmRSS")
        if kb is None:
            raise RuntimeError(f"{what} ended early (exit status {proc.poll()})")
        values.append(kb * 1024 / 1e6)
        time.sleep(0.5)
    return statistics.median(values)


def memory_figures(plan: Plan, out: Path) -> list[Figure]:
    """Each of ``MEMORY_SIZES`` in its own agent, at the same time; the import floor's row once."""
    with concurrent.futures.ThreadPoolExecutor(len(MEMORY_SIZES)) as pool:
        runs = [pool.submit(memory_figures_at, size, plan, out) for size in MEMORY_SIZES]
        figures = [figure for run in runs for figure in run.result()]
    floors = [f for f in figures if f.name.startswith("floor")]
    return [f for f in figures if not f.name.startswith("floor")] + floors[:1]


def memory_figures_at(size: tuple[int, int], plan: Plan, out: Path) -> list[Figure]:
    folder = out / f"memory-{size[0]}x{size[1]}"
    with broker_in(folder) as broker:
        run = AgentRun(folder, broker, size, dict(MEMORY_SCENE))
        agent, began = run.start()
        samples: list[tuple[float, int]] = []
        peak_kb = 0
        try:
            while (t := time.monotonic() - began) < plan.memory_s:
                kb = proc_status_kb(agent.pid, "VmRSS")
                if kb is None or agent.poll() is not None:
                    raise run.fail(agent, f"ended after {t:.0f} s")
                samples.append((t, kb))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - began - t)))
            peak_kb = proc_status_kb(agent.pid, "VmHWM") or 0
        finally:
            stop(agent)
    events = run.log.read_text(errors="replace").count("agent: start ")
    (folder / "rss.tsv").write_text("".join(f"{t:.2f}\t{kb}\n" for t, kb in samples), encoding="utf-8")
    floor = floor_process(120.0)
    source = source_process(size, 120.0)
    try:
        floor_mb = settled_rss_mb(floor, "the import floor", 2.0)
        source_mb = settled_rss_mb(source, "the simulated source alone", 3.0)
    finally:
        stop(floor)
        stop(source)
    w, run_s = plan.memory_window_s, plan.memory_s
    steady = window_mb(samples, run_s, w)
    early = window_mb(samples, plan.memory_mark_s, w)
    growth = statistics.median(steady) - statistics.median(early)
    rss = statistics.median(steady)
    scene = f"{size[0]}x{size[1]}"
    span = f"{run_s:g} s at {FPS:g} fps, a door opening every {MEMORY_SCENE['door_period']:g} s ({events} door events)"
    own = rss - (source_mb - floor_mb)
    return [
        Figure(
            "memory",
            f"agent RSS, steady ({scene} stills)",
            "MB",
            rss,
            min(steady),
            max(steady),
            ratio=rss / floor_mb,
            target="<= 70 MB",
            met=at_most(rss, 70.0),
            note=f"VmRSS every second over {span}; median, min and max of the last {w:g} s; the simulated scene's "
            "own buffers included (see 'simulated source alone')",
        ),
        Figure(
            "memory",
            f"agent RSS growth ({scene}), {plan.memory_mark_s:g} s -> {run_s:g} s",
            "MB",
            growth,
            growth,
            growth,
            target="< 1 MB",
            met=growth < 1.0,
            note=f"median VmRSS of the last {w:g} s minus that of the {w:g} s up to {plan.memory_mark_s:g} s after "
            "process start",
        ),
        Figure(
            "memory",
            f"agent RSS peak, VmHWM ({scene})",
            "MB",
            peak_kb * 1024 / 1e6,
            max(kb for _, kb in samples) * 1024 / 1e6,
            peak_kb * 1024 / 1e6,
            note="median and max columns: VmHWM at the end of the run; min column: the largest VmRSS sampled",
        ),
        Figure(
            "memory",
            f"agent RSS without the scene's buffers ({scene})",
            "MB",
            own,
            own,
            own,
            ratio=own / floor_mb,
            target="<= 70 MB",
            met=at_most(own, 70.0),
            note="steady agent RSS minus (simulated source alone - import floor): the agent as if its camera's "
            "frames cost no memory of its own beyond the libraries",
        ),
        Figure(
            "memory",
            f"simulated source alone ({scene})",
            "MB",
            source_mb,
            source_mb,
            source_mb,
            ratio=source_mb / floor_mb,
            note=f"VmRSS (median over 3 s, from {RSS_SETTLE_S:g} s after its first frame) of a process iterating "
            "SimulatedSource.frames() paced, nothing moving",
        ),
        Figure(
            "memory",
            "floor: imports only",
            "MB",
            floor_mb,
            floor_mb,
            floor_mb,
            ratio=1.0,
            note=f"VmRSS of a process that ran '{FLOOR_IMPORTS}' and sleeps",
        ),
    ]


# --- 5. cpu ---------------------------------------------------------------------------------------------------------


def cpu_share(pid: int, seconds: float) -> float:
    """% of one core the process used over the next ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0)


def cpu_figures(plan: Plan, out: Path) -> list[Figure]:
    agent_pc: list[float] = []
    source_pc: list[float] = []
    floor_pc: list[float] = []
    folder = out / "cpu"
    with broker_in(folder) as broker:
        run = AgentRun(folder, broker, SMALL_SCENE, dict(QUIET_SCENE))
        notify = NotifySocket()
        try:
            for _ in range(plan.cpu_runs):
                notify.reset()
                agent, _ = run.start(notify)
                try:
                    if not notify.wait_ready(60.0):
                        raise run.fail(agent, "sent no READY=1 within 60 s")
                    time.sleep(CPU_SETTLE_S)
                    agent_pc.append(cpu_share(agent.pid, plan.cpu_s))
                    if agent.poll() is not None:
                        raise run.fail(agent, "ended while measured")
                finally:
                    stop(agent)
                source = source_process(SMALL_SCENE, plan.cpu_s + CPU_SETTLE_S + 30.0)
                floor = floor_process(plan.cpu_s + CPU_SETTLE_S + 60.0)
                try:
                    read_line(source, 60.0, "the simulated source alone")
                    read_line(floor, 60.0, "the import floor")
                    time.sleep(CPU_SETTLE_S)
                    f0 = cpu_seconds(floor.pid)
                    source_pc.append(cpu_share(source.pid, plan.cpu_s))
                    floor_pc.append(100.0 * (cpu_seconds(floor.pid) - f0) / plan.cpu_s)
                finally:
                    stop(source)
                    stop(floor)
        finally:
            notify.close()
    own = [a - s for a, s in zip(agent_pc, source_pc, strict=True)]
    runs_file = {"agent": agent_pc, "source": source_pc, "floor": floor_pc}
    (folder / "runs.json").write_text(json.dumps(runs_file) + "\n", encoding="utf-8")
    scene = f"{SMALL_SCENE[0]}x{SMALL_SCENE[1]} at {FPS:g} fps, nothing moving"
    runs = f"{plan.cpu_runs} run(s) of {plan.cpu_s:g} s, agent then source"
    unit = "% of a core"
    return [
        Figure(
            "cpu",
            "agent (edgecam run), idle",
            unit,
            statistics.median(agent_pc),
            min(agent_pc),
            max(agent_pc),
            note=f"utime+stime of every thread (/proc/PID/stat) from {CPU_SETTLE_S:g} s after READY, {scene}, "
            f"{runs}; the simulated source renders and converts each frame in the agent's process",
        ),
        Figure(
            "cpu",
            "simulated source alone",
            unit,
            statistics.median(source_pc),
            min(source_pc),
            max(source_pc),
            note="a process iterating SimulatedSource.frames() paced at the same size and fps (render, grey, "
            f"downscale), from {CPU_SETTLE_S:g} s after its first frame",
        ),
        Figure(
            "cpu",
            "agent minus source",
            unit,
            statistics.median(own),
            min(own),
            max(own),
            target="<= 1% of a core",
            met=at_most(statistics.median(own), 1.0),
            note="per run: agent minus the source alone measured right after it",
        ),
        Figure(
            "cpu",
            "floor: imports, sleeping",
            unit,
            statistics.median(floor_pc),
            min(floor_pc),
            max(floor_pc),
            note=f"a process that ran '{FLOOR_IMPORTS}' and sleeps, over the source's window",
        ),
    ]


# --- 6. start-up ----------------------------------------------------------------------------------------------------


def startup_figures(plan: Plan, out: Path) -> list[Figure]:
    from tests.conftest import Collector

    class Arrivals(Collector):
        """The tests' subscriber, timestamping each message (``time.monotonic()``) on arrival."""

        arrivals: list[tuple[float, str, bytes]]

        def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
            self.arrivals.append((time.monotonic(), message.topic, bytes(message.payload)))

    folder = out / "startup"
    ready: list[float] = []
    online: list[float] = []
    floor: list[float] = []
    with broker_in(folder) as broker:
        run = AgentRun(folder, broker, SMALL_SCENE, dict(QUIET_SCENE))
        collector = Arrivals(broker, (f"{BASE}/availability",))
        collector.arrivals = []
        collector.start()
        notify = NotifySocket()

        def agent_once() -> tuple[float, float]:
            notify.reset()
            agent, began = run.start(notify)
            try:

                def came_online() -> float | None:
                    return next((t for t, _, p in collector.arrivals[:] if t > began and p == b"online"), None)

                deadline = time.monotonic() + 60.0
                while notify.ready_at is None or came_online() is None:
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise run.fail(agent, "no READY=1 and 'online' within 60 s")
                    time.sleep(0.01)
                assert notify.ready_at is not None
                return notify.ready_at - began, (came_online() or math.nan) - began
            finally:
                stop(agent)

        def floor_once() -> float:
            began = time.monotonic()
            subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], env=child_env(), check=True)
            return time.monotonic() - began

        try:
            agent_once()  # warm-up, not counted: the state directory, the outbox and the file cache
            floor_once()
            for i in range(plan.startup_runs):
                order: list[Callable[[], object]] = [agent_once, floor_once] if i % 2 == 0 else [floor_once, agent_once]
                for step in order:
                    result = step()
                    if isinstance(result, tuple):
                        ready.append(result[0] * 1e3)
                        online.append(result[1] * 1e3)
                    else:
                        assert isinstance(result, float)
                        floor.append(result * 1e3)
        finally:
            notify.close()
            collector.stop()
    (folder / "runs.json").write_text(json.dumps({"ready_ms": ready, "online_ms": online, "floor_ms": floor}) + "\n")
    to_ready = [r / f for r, f in zip(ready, floor, strict=True)]
    to_online = [o / f for o, f in zip(online, floor, strict=True)]
    runs = f"{plan.startup_runs} interleaved pairs (agent first in even pairs, floor first in odd), after a warm-up"
    scene = f"simulated scene {SMALL_SCENE[0]}x{SMALL_SCENE[1]}, its set-up included"
    ratio_ready = statistics.median(to_ready)
    return [
        Figure(
            "start-up",
            "process start -> READY",
            "ms",
            statistics.median(ready),
            min(ready),
            max(ready),
            ratio=ratio_ready,
            target="<= 1.3x floor",
            met=at_most(ratio_ready, 1.3),
            note=f"time.monotonic() just before Popen to the first datagram holding READY=1 on $NOTIFY_SOCKET; {scene};"
            f" {runs}; x floor: median of the per-pair ratios",
        ),
        Figure(
            "start-up",
            "process start -> online at the broker",
            "ms",
            statistics.median(online),
            min(online),
            max(online),
            ratio=statistics.median(to_online),
            note="to the arrival of 'online' on <base>/availability at a subscriber in the bench process, subscribed "
            "before the agent starts",
        ),
        Figure(
            "start-up",
            "floor: process start -> exit of the imports",
            "ms",
            statistics.median(floor),
            min(floor),
            max(floor),
            ratio=1.0,
            note=f"python -c '{FLOOR_IMPORTS}'",
        ),
    ]


# --- entry points ---------------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Plan, Path], list[Figure]]] = {
    "latency": latency_figures,
    "memory": memory_figures,
    "cpu": cpu_figures,
    "startup": startup_figures,
}


def live_figures(quick: bool, out: Path, sections: Sequence[str] = SECTIONS) -> list[Figure]:
    """Sections 3-6 (``sections``, a subset of ``SECTIONS``): the running agent's figures, files under ``out``.

    Raises RuntimeError when an agent, the broker or a helper process fails, or another run holds ``out`` (two
    runs in one folder would delete each other's files, and share the machine); targets never raise.
    """
    plan = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{out}: another run of this benchmark is writing there; wait, or give --out") from None
        figures: list[Figure] = []
        for name in sections:
            figures += RUNNERS[name](plan, out)
        return figures


def number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    size = abs(value)
    return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"


def table(figures: Sequence[Figure]) -> str:
    """The rows as a plain text table, then each row's note."""
    head = ("section", "figure", "median", "min", "max", "unit", "x floor", "target", "met")
    rows = [
        (
            f.section,
            f.name,
            number(f.median),
            number(f.low),
            number(f.high),
            f.unit,
            number(f.ratio),
            f.target or "",
            "" if f.met is None else "met" if f.met else "MISSED",
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {f.section} / {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines + ["", "notes:", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers (CI): every section in under 3 minutes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({','.join(SECTIONS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "pipeline", help="logs, state, live.json")
    parser.add_argument("--subscribe", nargs=4, metavar=("HOST", "PORT", "BASE", "OUTFILE"), help=argparse.SUPPRESS)
    parser.add_argument("--source-only", nargs=4, metavar=("W", "H", "FPS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe:
        host, port, base, outfile = args.subscribe
        run_subscriber(host, int(port), base, Path(outfile))
        return 0
    if args.source_only:
        width, height, fps, seconds = args.source_only
        run_source_only(int(width), int(height), float(fps), float(seconds))
        return 0
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    began = time.monotonic()
    figures = live_figures(args.quick, args.out, sections)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(table(figures))
    print(f"\n{os.cpu_count()} CPUs, load average {load}; {time.monotonic() - began:.0f} s")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "figures": [asdict(f) for f in figures]}
    (args.out / "live.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
