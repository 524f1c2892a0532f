import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecam.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_ready_status_and_stopping_reach_systemd(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("watching")
    assert sock.recv(256) == b"READY=1\nSTATUS=watching"
    notifier.status("3 events queued")
    assert sock.recv(256) == b"STATUS=3 events queued"
    notifier.stopping()
    assert sock.recv(256) == b"STOPPING=1"


def test_watchdog_pings_at_most_every_half_interval(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, clock=lambda: now[0])
    pings = 0
    sock.settimeout(0)
    for _ in range(200):  # 20 s of frames at 10 fps
        notifier.watchdog()
        now[0] += 0.1
        try:
            assert sock.recv(64) == b"WATCHDOG=1"
            pings += 1
        except BlockingIOError:
            pass
    assert pings == 4  # every 5 s


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()


def test_watchdog_for_another_pid_is_ignored(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    notifier.watchdog()
    sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        sock.recv(64)


def test_status_lines_never_show_a_url_password(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("watching rtsp://admin:s3cret@cam.lan/stream1")
    assert sock.recv(256) == b"READY=1\nSTATUS=watching rtsp://admin:***@cam.lan/stream1"
    notifier.status("camera rtsp://s3cret@cam.lan failed")
    assert sock.recv(256) == b"STATUS=camera rtsp://***@cam.lan failed"


def test_the_running_agent_shows_the_camera_password_in_no_status_and_no_log_line(
    notify_socket: tuple[socket.socket, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    from edgecam.agent import Agent
    from edgecam.config import Settings
    from edgecam.sources.simulated import SimulatedSource

    sock, path = notify_socket
    settings = Settings.model_validate(
        {
            "device_id": "porch",
            "storage": {"dir": str(tmp_path / "state")},
            "mqtt": {"host": "127.0.0.1", "port": 9},  # nothing listens: the agent goes on without a broker
            "camera": {
                "source": "rtsp://admin:s3cret@cam.lan/stream1",
                "realtime": False,
                "simulated": {"duration": 1.0},
            },
        }
    )
    scene = settings.camera.model_copy(update={"source": "simulated"})
    agent = Agent(settings, lambda: SimulatedSource(scene, realtime=False), Notifier({"NOTIFY_SOCKET": path}))
    with caplog.at_level(logging.DEBUG):
        agent.run(threading.Event())
    sent = []
    sock.settimeout(0)
    with contextlib.suppress(BlockingIOError):
        while True:
            sent.append(sock.recv(4096).decode())
    assert "READY=1\nSTATUS=watching rtsp://admin:***@cam.lan/stream1" in sent
    assert "s3cret" not in "\n".join(sent)
    assert "watching rtsp://admin:***@cam.lan/stream1" in caplog.text
    assert "s3cret" not in caplog.text
