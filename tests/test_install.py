"""scripts/install-pi.sh into a directory tree (--prefix): what lands where, idempotence, --dry-run, and the checks
of the machine (board, OS, architecture, picamera2, CMA) on four boards the INSTALL_PI_* variables stand in for."""

import hashlib
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edgecam import __version__

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-pi.sh"
GPIO_DROPIN = ROOT / "systemd" / "edgecam.service.d" / "gpio.conf"
ON_A_PI = "Raspberry Pi" in (
    Path("/proc/device-tree/model").read_text(errors="replace") if Path("/proc/device-tree/model").exists() else ""
)
# What a run that has nothing left to do may say about each step.
NOTHING_NEW = {"already present", "kept", "skipped"}
# The lines that report what the checks found, before the actions.
CHECKS = ("board", "OS", "architecture", "picamera2", "camera memory")


def install(
    *args: str | Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def lines(stdout: str) -> list[tuple[str, str]]:
    """Every "<what>: <finding>" line between the heading and the next steps."""
    found = stdout.splitlines()
    assert found[0].startswith("install-pi.sh: installing edgecam from ")
    pairs = []
    for line in found[1:]:
        if not line:
            break
        verb, sep, what = line.partition(": ")
        assert sep, f"not a check or action line: {line!r}"
        pairs.append((verb, what))
    return pairs


def checks(stdout: str) -> dict[str, str]:
    """The check lines, first in the output, one for each of CHECKS in that order."""
    found = lines(stdout)[: len(CHECKS)]
    assert tuple(what for what, _ in found) == CHECKS, found
    return dict(found)


def actions(stdout: str) -> list[tuple[str, str]]:
    """The action lines ("<verb>: <what>") after the check lines."""
    return lines(stdout)[len(CHECKS) :]


def next_steps(stdout: str) -> str:
    return stdout.split("\nNext steps", 1)[1]


def snapshot(top: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``top`` with its mode, modification time and content hash."""
    tree = {}
    for path in [top, *sorted(top.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        tree[str(path.relative_to(top))] = (info.st_mode, info.st_mtime_ns, digest)
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def password_file(stdout: str) -> Path:
    """Where the next steps say the broker password goes."""
    match = re.search(r"cat > (/\S+)'", next_steps(stdout))
    assert match, next_steps(stdout)
    return Path(match[1])


@dataclass(frozen=True)
class Machine:
    """What the installer reads of a machine: /proc/device-tree/model, /etc/os-release, `dpkg --print-architecture`,
    `uname -m`, CmaTotal in /proc/meminfo, the groups, and picamera2 in the OS Python or in apt's offer."""

    model: str
    os_release: str
    arch: str
    kernel: str
    cma_kb: int
    groups: str
    picamera2: str  # "0.3.31": the package's metadata; "module": a package without metadata; "": not installed
    apt_candidates: str = ""

    def env(self, top: Path) -> dict[str, str]:
        """The INSTALL_PI_* variables (and a PYTHONPATH for the OS Python) that make the installer see this machine."""
        top.mkdir(parents=True, exist_ok=True)
        (top / "os-release").write_text(self.os_release)
        (top / "meminfo").write_text(f"CmaTotal:       {self.cma_kb} kB\nCmaFree:         1024 kB\n")
        site = top / "site-packages"
        site.mkdir(exist_ok=True)
        if self.picamera2 == "module":
            fake_picamera2(site, with_cancel_all_and_flush=True)
        elif self.picamera2:
            metadata = site / f"picamera2-{self.picamera2}.dist-info"
            metadata.mkdir()
            (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: picamera2\nVersion: {self.picamera2}\n")
        return {
            "INSTALL_PI_MODEL": self.model,
            "INSTALL_PI_OS_RELEASE": str(top / "os-release"),
            "INSTALL_PI_MEMINFO": str(top / "meminfo"),
            "INSTALL_PI_ARCH": self.arch,
            "INSTALL_PI_MACHINE": self.kernel,
            "INSTALL_PI_GROUPS": self.groups,
            "INSTALL_PI_APT_CANDIDATES": self.apt_candidates,
            "PYTHONPATH": str(site),
        }


def fake_picamera2(site: Path, *, with_cancel_all_and_flush: bool) -> None:
    """A picamera2 package without metadata (as from a source checkout), older or newer than 0.3.20."""
    package = site / "picamera2"
    package.mkdir()
    method = (
        "    def cancel_all_and_flush(self) -> None:\n        pass\n" if with_cancel_all_and_flush else "    pass\n"
    )
    (package / "__init__.py").write_text(f"class Picamera2:\n{method}")


# Four boards: /proc/device-tree/model as they write it, the os-release of their images, and CmaTotal as they boot by
# default. The vc4-kms-v3d overlay of Raspberry Pi OS asks 256 MB (raspberrypi/linux overlays/cma-overlay.dts), the
# Pi 5's vc4-kms-v3d-pi5 64 MB (overlays/vc4-kms-v3d-pi5-overlay.dts), the Pi 4's 512 MB, which the firmware cuts to
# 256 MB only below 2 GB of RAM (raspberrypi/linux#5376, raspberrypi/firmware#1807); Ubuntu's 512 MB on a 4 GB Pi 4 is
# assumed, not measured. 64 MB on the Zero 2 W is the device tree's default without the overlay (firmware#1807);
# with it a Zero 2 W shows 262144 kB (raspberrypi/picamera2#1358).
PI3_BOOKWORM_32BIT = Machine(
    model="Raspberry Pi 3 Model B Rev 1.2",
    os_release='PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\nNAME="Raspbian GNU/Linux"\nVERSION_ID="12"\n'
    "VERSION_CODENAME=bookworm\nID=raspbian\nID_LIKE=debian\n",
    arch="armhf",
    kernel="armv7l",  # arm_64bit defaults to 1 on a Pi 4 or 5 only: a Pi 3 on a 32-bit OS boots a 32-bit kernel
    cma_kb=262144,
    groups="video gpio",  # pi-gen stage2/01-sys-tweaks/01-run.sh: groupadd gpio
    picamera2="0.3.31",  # the Desktop image has it (pi-gen stage3)
)
ZERO2W_BOOKWORM_64BIT = Machine(
    model="Raspberry Pi Zero 2 W Rev 1.0",
    os_release='PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
    "VERSION_CODENAME=bookworm\nID=debian\n",
    arch="arm64",
    kernel="aarch64",
    cma_kb=65536,
    groups="video gpio",
    picamera2="",  # Lite: not installed (pi-gen installs python3-picamera2 in stage3, the Desktop)
    apt_candidates="python3-picamera2=0.3.31-1",
)
PI5_TRIXIE = Machine(
    model="Raspberry Pi 5 Model B Rev 1.0",
    os_release='PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n'
    "VERSION_CODENAME=trixie\nID=debian\n",
    arch="arm64",
    kernel="aarch64",
    cma_kb=65536,
    groups="video gpio",
    picamera2="module",
)
UBUNTU_2404_PI4 = Machine(
    model="Raspberry Pi 4 Model B Rev 1.5",
    os_release='PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n'
    "ID=ubuntu\nID_LIKE=debian\n",
    arch="arm64",
    kernel="aarch64",
    cma_kb=524288,
    groups="video",  # no gpio group on Ubuntu
    picamera2="",
    apt_candidates="",  # no python3-picamera2: Ubuntu's archive has none
)


def test_help_prints_the_usage_and_a_bad_option_is_refused() -> None:
    out = install("--help").stdout
    assert out.startswith("Usage: sudo scripts/install-pi.sh ")
    for option in ("--dry-run", "--prefix DIR", "--skip-packages", "--no-venv", "--python PATH", "--force"):
        assert option in out
    bad = install("--frobnicate", check=False)
    assert bad.returncode == 2
    assert "unknown option: --frobnicate" in bad.stderr
    assert bad.stdout == ""


@pytest.mark.skipif(ON_A_PI, reason="on a Raspberry Pi this would install for real")
def test_refuses_a_real_install_on_a_machine_that_is_not_a_pi() -> None:
    result = install(check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "not a Raspberry Pi" in line
    assert "--dry-run" in line
    assert "--prefix" in line
    assert "--force" in line


def test_dry_run_prints_each_action_and_writes_nothing(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    out = install("--dry-run", "--prefix", tmp_path / "root").stdout
    assert snapshot(tmp_path) == before
    steps = actions(out)
    assert {verb for verb, _ in steps} <= {"would create", "would install", "would write", "skipped"}
    said = "\n".join(f"{verb}: {what}" for verb, what in steps)
    root = tmp_path / "root"
    for expected in (
        "skipped: OS packages python3-picamera2 ",
        f"would create: venv {root}/opt/edgecam/venv (--system-site-packages",
        f"would install: edgecam {__version__} from {ROOT} into {root}/opt/edgecam/venv",
        f"would write: {root}/etc/edgecam/edgecam.toml (0640",
        f"would install: {root}/etc/systemd/system/edgecam.service (0644",
        f"would install: {root}/etc/udev/rules.d/60-edgecam-dma-heap.rules (0644",
        f"would create: {root}/var/lib/edgecam (0700)",
        "skipped: systemctl daemon-reload (--prefix)",
        "skipped: udevadm control --reload",
    ):
        assert expected in said, f"{expected!r} not in:\n{said}"
    assert f"would create: {root}{password_file(out).parent} (0700)" in said
    assert "systemctl enable --now edgecam" in next_steps(out)


def test_files_land_in_the_prefix_with_their_modes(tmp_path: Path) -> None:
    out = install("--prefix", tmp_path, "--no-venv").stdout
    config = tmp_path / "etc/edgecam/edgecam.toml"
    assert config.read_bytes() == (ROOT / "edgecam.example.toml").read_bytes()
    assert mode(config) == 0o640
    assert mode(tmp_path / "etc/edgecam") == 0o755
    unit = tmp_path / "etc/systemd/system/edgecam.service"
    assert unit.read_bytes() == (ROOT / "systemd/edgecam.service").read_bytes()
    assert mode(unit) == 0o644
    rule = tmp_path / "etc/udev/rules.d/60-edgecam-dma-heap.rules"
    assert mode(rule) == 0o644
    active = [line for line in rule.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert active == ['SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660"']
    assert mode(tmp_path / "var/lib/edgecam") == 0o700
    secrets = tmp_path / password_file(out).parent.relative_to("/")
    assert secrets.is_dir()
    assert mode(secrets) == 0o700
    assert (tmp_path / "opt/edgecam/README.md").read_bytes() == (ROOT / "README.md").read_bytes()
    assert not (tmp_path / "opt/edgecam/venv").exists()


def test_a_second_run_changes_nothing_and_never_overwrites_the_config(tmp_path: Path) -> None:
    install("--prefix", tmp_path, "--no-venv")
    config = tmp_path / "etc/edgecam/edgecam.toml"
    config.write_text('[mqtt]\nhost = "broker.lan"\n')
    before = snapshot(tmp_path)

    again = actions(install("--prefix", tmp_path, "--no-venv").stdout)
    assert {verb for verb, _ in again} <= NOTHING_NEW, again
    assert ("kept", f"{config} (exists; never overwritten)") in again
    assert snapshot(tmp_path) == before

    dry = actions(install("--prefix", tmp_path, "--no-venv", "--dry-run").stdout)
    assert dry == again

    # What the installer owns is put back; the settings are still the user's.
    unit = tmp_path / "etc/systemd/system/edgecam.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    third = actions(install("--prefix", tmp_path, "--no-venv").stdout)
    assert [verb for verb, what in third if verb not in NOTHING_NEW] == ["updated"]
    assert unit.read_bytes() == (ROOT / "systemd/edgecam.service").read_bytes()
    assert config.read_text() == '[mqtt]\nhost = "broker.lan"\n'


def test_a_directory_with_the_wrong_mode_is_put_right(tmp_path: Path) -> None:
    install("--prefix", tmp_path, "--no-venv")
    state = tmp_path / "var/lib/edgecam"
    state.chmod(0o755)
    steps = actions(install("--prefix", tmp_path, "--no-venv").stdout)
    assert ("fixed", f"{state} (0700)") in steps
    assert mode(state) == 0o700


@pytest.mark.slow
def test_the_venv_sees_the_os_packages_and_runs_edgecam(tmp_path: Path) -> None:
    # The interpreter that made the test venv stands in for the OS Python (/usr/bin/python3 on the Pi).
    python = Path(sys.base_prefix) / "bin" / "python3"
    out = install("--prefix", tmp_path, "--python", python).stdout
    venv = tmp_path / "opt/edgecam/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text().splitlines()
    version = subprocess.run([venv / "bin/edgecam", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"edgecam {__version__}"
    assert ("installed", f"edgecam {__version__} from {ROOT} into {venv} (pip)") in [
        (verb, re.sub(r" \(pip, keeping the OS numpy==\S+\)$", " (pip)", what)) for verb, what in actions(out)
    ]

    again = actions(install("--prefix", tmp_path, "--python", python).stdout)
    assert {verb for verb, _ in again} <= NOTHING_NEW, again
    assert ("already present", f"edgecam {__version__} in {venv}") in again

    # Installed from other sources (an older checkout): the next run installs these.
    (venv / ".edgecam-source").write_text("an older checkout\n")
    update = actions(install("--prefix", tmp_path, "--python", python).stdout)
    assert [verb for verb, _ in update if verb not in NOTHING_NEW] == ["updated"]
    version = subprocess.run([venv / "bin/edgecam", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"edgecam {__version__}"


def dry_run(machine: Machine, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A dry run into tmp_path/root on ``machine``; nothing under tmp_path changes."""
    env = machine.env(tmp_path / "machine")
    before = snapshot(tmp_path)
    result = install("--dry-run", "--prefix", tmp_path / "root", *args, env=env)
    assert snapshot(tmp_path) == before
    return result


def said(stdout: str) -> str:
    return "\n".join(f"{verb}: {what}" for verb, what in actions(stdout))


def test_a_pi_3_on_32_bit_raspberry_pi_os_takes_opencv_from_apt(tmp_path: Path) -> None:
    result = dry_run(PI3_BOOKWORM_32BIT, tmp_path)
    found = checks(result.stdout)
    assert found["board"] == "Raspberry Pi 3 Model B Rev 1.2"
    assert found["OS"] == "Raspbian GNU/Linux 12 (bookworm): Bookworm (12) or later, supported"
    assert found["architecture"] == (
        "armhf (kernel armv7l): OpenCV from apt (python3-opencv); PyPI has no opencv-python-headless wheel for armhf"
    )
    assert found["picamera2"] == "0.3.31 (edgecam needs 0.3.20 or later)"
    assert found["camera memory"].startswith("CMA 256 MB (CmaTotal in ")
    root = tmp_path / "root"
    steps = said(result.stdout)
    assert (
        "skipped: OS packages python3-picamera2 python3-venv python3-lgpio mosquitto-clients fonts-dejavu-core "
        "python3-opencv " in steps
    )
    assert "skipped: create system user edgecam in groups video gpio (--prefix)" in steps
    assert f"into {root}/opt/edgecam/venv (pip, OpenCV from python3-opencv" in steps
    assert f"would install: {root}/etc/systemd/system/edgecam.service.d/gpio.conf (0644" in steps
    assert result.stderr == ""  # nothing refused, nothing to warn of


def test_a_zero_2_w_on_64_bit_lite_takes_opencv_from_pypi_and_picamera2_from_apt(tmp_path: Path) -> None:
    result = dry_run(ZERO2W_BOOKWORM_64BIT, tmp_path)
    found = checks(result.stdout)
    assert found["board"] == "Raspberry Pi Zero 2 W Rev 1.0"
    assert found["OS"] == "Debian GNU/Linux 12 (bookworm): Bookworm (12) or later, supported"
    assert found["architecture"] == "arm64 (kernel aarch64): OpenCV from PyPI (opencv-python-headless)"
    assert found["picamera2"] == "not installed; apt offers python3-picamera2 0.3.31-1 (edgecam needs 0.3.20 or later)"
    assert found["camera memory"].startswith("CMA 64 MB (CmaTotal in ")
    steps = said(result.stdout)
    assert (
        "skipped: OS packages python3-picamera2 python3-venv python3-lgpio mosquitto-clients fonts-dejavu-core "
        "(--prefix)" in steps
    )
    assert "OpenCV from python3-opencv" not in steps
    assert "edgecam.service.d/gpio.conf (0644" in steps
    assert result.stderr == ""  # 64 MB is enough: no warning


def test_a_pi_5_on_trixie_knows_picamera2_without_metadata_by_its_methods(tmp_path: Path) -> None:
    result = dry_run(PI5_TRIXIE, tmp_path)
    found = checks(result.stdout)
    assert found["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert found["OS"] == "Debian GNU/Linux 13 (trixie): Bookworm (12) or later, supported"
    assert found["architecture"] == "arm64 (kernel aarch64): OpenCV from PyPI (opencv-python-headless)"
    assert found["picamera2"] == (
        "version unknown (no package metadata), with Picamera2.cancel_all_and_flush: 0.3.20 or later"
    )
    assert found["camera memory"].startswith("CMA 64 MB (CmaTotal in ")
    assert found["camera memory"].endswith("; a Pi 5 takes picamera2's buffers from the system heap")
    assert "edgecam.service.d/gpio.conf (0644" in said(result.stdout)
    assert result.stderr == ""


def test_ubuntu_on_a_pi_4_is_refused_without_force_and_installs_without_picamera2_with_it(tmp_path: Path) -> None:
    result = dry_run(UBUNTU_2404_PI4, tmp_path / "plain")
    found = checks(result.stdout)
    assert found["board"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert found["OS"] == "Ubuntu 24.04.1 LTS: not Raspberry Pi OS; Ubuntu's archive has no python3-picamera2"
    assert found["architecture"] == "arm64 (kernel aarch64): OpenCV from PyPI (opencv-python-headless)"
    assert found["picamera2"].startswith("not installed, and Ubuntu's archive has no python3-picamera2: ")
    assert found["camera memory"].startswith("CMA 512 MB (CmaTotal in ")
    [refusal] = result.stderr.splitlines()
    assert refusal.startswith("install-pi.sh: a real install stops here: needs Raspberry Pi OS Bookworm (12) or later")
    assert "Ubuntu 24.04.1 LTS" in refusal
    assert "--force" in refusal
    steps = said(result.stdout)
    # No gpio group: no drop-in naming it, else systemd would not start the service (216/GROUP).
    assert "skipped: create system user edgecam in groups video (--prefix)" in steps
    assert (
        f"skipped: {tmp_path}/plain/root/etc/systemd/system/edgecam.service.d/gpio.conf (there is no gpio group)"
        in (steps)
    )
    assert "gpio.conf (0644" not in steps

    forced = dry_run(UBUNTU_2404_PI4, tmp_path / "forced", "--force")
    [going_on] = forced.stderr.splitlines()
    assert going_on.startswith("install-pi.sh: going on (--force): needs Raspberry Pi OS")
    assert "skipped: OS packages python3-venv python3-lgpio mosquitto-clients fonts-dejavu-core (--prefix)" in said(
        forced.stdout
    )


@pytest.mark.parametrize(
    ("picamera2", "expected"),
    [
        ("0.3.19", "0.3.19, too old (edgecam needs 0.3.20 or later)"),
        ("module", "version unknown (no package metadata), without Picamera2.cancel_all_and_flush: too old"),
    ],
)
def test_a_picamera2_older_than_0_3_20_is_refused(tmp_path: Path, picamera2: str, expected: str) -> None:
    machine = replace(ZERO2W_BOOKWORM_64BIT, picamera2="" if picamera2 == "module" else picamera2)
    env = machine.env(tmp_path / "machine")
    if picamera2 == "module":
        fake_picamera2(Path(env["PYTHONPATH"]), with_cancel_all_and_flush=False)
    result = install("--dry-run", "--prefix", tmp_path / "root", env=env)
    assert checks(result.stdout)["picamera2"].startswith(expected)
    [refusal] = result.stderr.splitlines()
    assert refusal.startswith("install-pi.sh: a real install stops here: picamera2 ")
    assert "older than 0.3.20" in refusal
    assert "apt-get install python3-picamera2" in refusal


def test_a_picamera2_that_does_not_import_is_said_in_one_line(tmp_path: Path) -> None:
    env = ZERO2W_BOOKWORM_64BIT.env(tmp_path / "machine")
    package = Path(env["PYTHONPATH"]) / "picamera2"
    package.mkdir()
    (package / "__init__.py").write_text("import libcamera_that_is_not_installed  # noqa: F401\n")
    result = install("--dry-run", "--prefix", tmp_path / "root", env=env)
    assert checks(result.stdout)["picamera2"] == (
        "version unknown (no package metadata), and import picamera2 fails (ModuleNotFoundError: No module named"
        " 'libcamera_that_is_not_installed'): it needs libcamera's Python bindings (python3-libcamera)"
    )
    assert result.stderr == ""


def test_a_pi_with_less_than_64_mb_of_cma_is_warned(tmp_path: Path) -> None:
    machine = replace(PI3_BOOKWORM_32BIT, cma_kb=32768)
    result = dry_run(machine, tmp_path)
    assert checks(result.stdout)["camera memory"].startswith("CMA 32 MB (CmaTotal in ")
    [warning] = result.stderr.splitlines()
    assert warning.startswith("install-pi.sh: warning: only 32 MB of CMA, under 64 MB: ")
    assert "dtoverlay=vc4-kms-v3d,cma-128" in warning


def test_the_gpio_drop_in_follows_the_gpio_group(tmp_path: Path) -> None:
    root = tmp_path / "root"
    dropin = root / "etc/systemd/system/edgecam.service.d/gpio.conf"
    with_gpio = {"INSTALL_PI_GROUPS": "video gpio"}
    first = actions(install("--prefix", root, "--no-venv", env=with_gpio).stdout)
    assert ("installed", f"{dropin} (0644, the service joins the gpio group)") in first
    assert dropin.read_bytes() == GPIO_DROPIN.read_bytes()
    assert mode(dropin) == 0o644
    again = actions(install("--prefix", root, "--no-venv", env=with_gpio).stdout)
    assert {verb for verb, _ in again} <= NOTHING_NEW, again

    # The group is gone (a Debian or Ubuntu image): the drop-in would stop the service from starting.
    without_gpio = {"INSTALL_PI_GROUPS": "video"}
    removed = actions(install("--prefix", root, "--no-venv", env=without_gpio).stdout)
    assert ("removed", f"{dropin} (there is no gpio group: systemd would not start the service)") in removed
    assert ("skipped", "systemctl daemon-reload (--prefix)") in removed
    assert not dropin.parent.exists()
    assert (root / "etc/systemd/system/edgecam.service").exists()
    last = actions(install("--prefix", root, "--no-venv", env=without_gpio).stdout)
    assert ("skipped", f"{dropin} (there is no gpio group)") in last
    assert {verb for verb, _ in last} <= NOTHING_NEW, last


@pytest.mark.slow
def test_on_armhf_the_venv_takes_opencv_from_the_os_and_pip_never_installs_it(tmp_path: Path) -> None:
    # A cv2 module on the OS Python's path stands in for python3-opencv; pip must install every other dependency.
    os_site = tmp_path / "os-site-packages"
    os_site.mkdir()
    (os_site / "cv2.py").write_text('__version__ = "4.6.0"\n')
    python = Path(sys.base_prefix) / "bin" / "python3"
    env = {**PI3_BOOKWORM_32BIT.env(tmp_path / "machine"), "PYTHONPATH": str(os_site)}
    root = tmp_path / "root"
    out = install("--prefix", root, "--python", python, env=env).stdout
    venv = root / "opt/edgecam/venv"
    assert [verb for verb, what in actions(out) if what.startswith(f"edgecam {__version__} from ")] == ["installed"]
    listed = subprocess.run(
        [
            venv / "bin/python",
            "-m",
            "pip",
            "list",
            "--format=freeze",
            "--path",
            next(venv.glob("lib/python3*/site-packages")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "opencv-python-headless" not in installed
    # The rest of pyproject.toml's dependencies: into the venv, or already there from the OS Python's packages.
    assert {"edgecam", "paho-mqtt", "gpiozero"} <= installed
    imports = "import cv2, gpiozero, numpy, paho.mqtt, pydantic, pydantic_settings; print(cv2.__file__)"
    cv2 = subprocess.run([venv / "bin/python", "-c", imports], capture_output=True, text=True, check=True, env=env)
    assert cv2.stdout.strip() == str(os_site / "cv2.py")
    version = subprocess.run([venv / "bin/edgecam", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"edgecam {__version__}"
