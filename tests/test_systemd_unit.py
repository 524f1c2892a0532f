"""systemd/edgecam.service: systemd accepts it, its sandbox scores an exposure of at most 2.0, and it hands the
agent the secrets under the names the agent reads."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecam.config import CameraSettings, MqttSettings

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgecam.service"
EXEC_START = "/opt/edgecam/venv/bin/edgecam"
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package 'systemd'; scripts/test installs it)",
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=60,
        check=False,
    )


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order; keys systemd allows more than once keep all their values."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_systemd_analyze
def test_security_exposure_is_at_most_2() -> None:
    # --threshold is on systemd's internal 0-100 scale: 20 fails the run above an exposure of 2.0.
    result = analyze("security", "--offline=true", f"--threshold={round(MAX_EXPOSURE * 10)}", "--no-pager", str(UNIT))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score is not None, f"no exposure in the output of systemd-analyze security:\n{result.stdout}{result.stderr}"
    exposed = "\n".join(line for line in result.stdout.splitlines() if line.startswith("✗"))
    assert float(score[1]) <= MAX_EXPOSURE, f"exposure {score[1]} > {MAX_EXPOSURE}; exposed:\n{exposed}"
    assert result.returncode == 0, f"exposure {score[1]}, but systemd-analyze failed:\n{result.stderr}"


@needs_systemd_analyze
def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path) -> None:
    # verify also wants ExecStart= to be executable, which /opt/edgecam is not here: point it at a stand-in.
    stand_in = tmp_path / "edgecam"
    stand_in.write_text("#!/bin/sh\n", encoding="utf-8")
    stand_in.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={EXEC_START} " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={stand_in} "), encoding="utf-8")
    result = analyze("verify", "--man=no", str(unit))
    # verify exits 0 on an unknown key or a value it cannot parse, and only says so: any output is a failure.
    said = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"systemd-analyze verify exited {result.returncode}:\n{said}"
    assert not said, f"systemd-analyze verify complains:\n{said}"


def test_the_unit_is_a_watched_notify_service() -> None:
    unit = directives(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["Restart"] == ["on-failure"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["ExecStart"] == [f"{EXEC_START} run"]


def test_the_agent_reads_the_secrets_the_unit_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each LoadCredential=ID:... lands as $CREDENTIALS_DIRECTORY/ID; the IDs must be the names the agent looks for.
    ids = sorted(line.split(":", 1)[0] for line in directives(UNIT)["LoadCredential"])
    assert ids == ["camera-password", "mqtt-client-key", "mqtt-password"]
    for credential in ids:
        (tmp_path / credential).write_text("secret\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = MqttSettings(tls=True, port=8883, cert_file=tmp_path / "client.pem")
    assert settings.secret_file("password") == tmp_path / "mqtt-password"
    assert settings.secret_file("key") == tmp_path / "mqtt-client-key"
    assert CameraSettings(source="rtsp://admin@cam.lan/stream1").secret_file() == tmp_path / "camera-password"
