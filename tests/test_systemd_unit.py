"""systemd/edgecam.service and its drop-in edgecam.service.d/gpio.conf: systemd accepts them, the sandbox scores an
exposure of at most 2.0, the unit names no group a Debian system may lack, and it hands the agent the secrets under
the names the agent reads."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecam.broker_settings import MqttSettings
from edgecam.config import CameraSettings

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgecam.service"
# systemd reads drop-ins from the directory beside a unit: systemd-analyze given UNIT scores the two together.
GPIO_DROPIN = UNIT.parent / "edgecam.service.d" / "gpio.conf"
# The groups Debian's base-passwd makes on every Debian and Ubuntu system, whatever the board.
BASE_PASSWD_GROUPS = Path("/usr/share/base-passwd/group.master")
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
@pytest.mark.parametrize("gpio_group", [True, False], ids=["with the gpio drop-in", "without"])
def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path, gpio_group: bool) -> None:
    # verify also wants ExecStart= to be executable, which /opt/edgecam is not here: point it at a stand-in.
    stand_in = tmp_path / "edgecam"
    stand_in.write_text("#!/bin/sh\n", encoding="utf-8")
    stand_in.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={EXEC_START} " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={stand_in} "), encoding="utf-8")
    if gpio_group:
        dropin = tmp_path / GPIO_DROPIN.parent.name / GPIO_DROPIN.name
        dropin.parent.mkdir()
        dropin.write_bytes(GPIO_DROPIN.read_bytes())
    result = analyze("verify", "--man=no", str(unit))
    # verify exits 0 on an unknown key or a value it cannot parse, and only says so: any output is a failure.
    said = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"systemd-analyze verify exited {result.returncode}:\n{said}"
    assert not said, f"systemd-analyze verify complains:\n{said}"


def test_the_unit_names_only_groups_every_debian_has_and_the_drop_in_adds_gpio() -> None:
    # systemd refuses to start a service whose SupplementaryGroups= names a missing group (status 216/GROUP): gpio
    # exists on Raspberry Pi OS only, so the installer adds it through the drop-in where it exists.
    groups = " ".join(directives(UNIT)["SupplementaryGroups"]).split()
    assert groups == ["video"]
    if BASE_PASSWD_GROUPS.exists():
        everywhere = {line.split(":", 1)[0] for line in BASE_PASSWD_GROUPS.read_text(encoding="utf-8").splitlines()}
        assert set(groups) <= everywhere, f"{sorted(set(groups) - everywhere)} not in {BASE_PASSWD_GROUPS}"
    dropin = GPIO_DROPIN.read_text(encoding="utf-8")
    assert "[Service]" in dropin.splitlines()
    assert directives(GPIO_DROPIN) == {"SupplementaryGroups": ["gpio"]}


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
