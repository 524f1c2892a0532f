"""scripts/install-pi.sh into a directory tree (--prefix): what lands where, idempotence, --dry-run."""

import hashlib
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgecam import __version__

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-pi.sh"
ON_A_PI = "Raspberry Pi" in (
    Path("/proc/device-tree/model").read_text(errors="replace") if Path("/proc/device-tree/model").exists() else ""
)
# What a run that has nothing left to do may say about each step.
NOTHING_NEW = {"already present", "kept", "skipped"}


def install(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def actions(stdout: str) -> list[tuple[str, str]]:
    """The action lines ("<verb>: <what>") between the heading and the next steps."""
    lines = stdout.splitlines()
    assert lines[0].startswith("install-pi.sh: installing edgecam from ")
    found = []
    for line in lines[1:]:
        if not line:
            break
        verb, sep, what = line.partition(": ")
        assert sep, f"not an action line: {line!r}"
        found.append((verb, what))
    return found


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
