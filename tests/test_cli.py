import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecam.cli import main
from edgecam.door_reference import DoorReference
from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.opencv import detection_gray
from edgecam.sources.simulated import DOOR_ZONE, SceneRenderer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)


def test_check_config_prints_the_effective_settings_and_redacts_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text('device_id = "porch"\n[mqtt]\nhost = "broker.lan"\n')
    monkeypatch.setenv("EDGECAM_CAPTURE__INTERVAL", "1.5")
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert 'device_id = "porch"' in out
    assert 'host = "broker.lan"' in out
    assert "interval = 1.5" in out


def test_config_file_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text('device_id = "hall"\n')
    monkeypatch.setenv("EDGECAM_CONFIG", str(config))
    assert main(["--config", str(config), "check-config"]) == 0
    assert 'device_id = "hall"' in capsys.readouterr().out
    assert main(["check-config"]) == 0
    assert 'device_id = "hall"' in capsys.readouterr().out


def test_check_config_reports_each_problem_on_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text("[mqtt]\nport = 70000\n[capture]\nstills_per_event = -1\n")
    assert main(["check-config", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("edgecam: mqtt.port: 70000 is not allowed") for line in lines)
    assert any(line.startswith("edgecam: capture.stills_per_event: -1 is not allowed") for line in lines)
    assert captured.out == ""


def test_every_command_rejects_a_bad_config_the_same_way(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_MOTION__EVENT_GAP", "soon")
    for argv in (["run"], ["replay", "x.h264"], ["listen"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("edgecam: motion.event_gap: 'soon' is not allowed")
        assert len(err.strip().splitlines()) == 1


def test_run_with_a_missing_door_reference_is_one_line_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_DOOR__REFERENCE", str(tmp_path / "nowhere.npz"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgecam: door.reference: cannot read {tmp_path / 'nowhere.npz'}")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "state").exists(), "nothing started, nothing written"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and its key, made with the openssl command."""
    cert, key = folder / "cam.crt", folder / "cam.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
        + ["-subj", "/CN=porch", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_check_config_flags_tls_insecure_and_refuses_a_key_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = self_signed(tmp_path)
    key.chmod(0o600)
    config = tmp_path / "edgecam.toml"
    storage = f'[storage]\ndir = "{tmp_path / "state"}"\n'
    mqtt = storage + f'[mqtt]\nport = 8883\ntls = true\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    config.write_text(mqtt + "tls_insecure = true\n")
    assert main(["check-config", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert err == "edgecam: warning: mqtt.tls_insecure is on: the broker is not verified; for tests only\n"

    config.write_text(mqtt)
    key.chmod(0o644)
    assert main(["check-config", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert err == (
        f"edgecam: mqtt.key_file: {key} is readable by group or others (mode 0644); "
        f"fix: chmod 600 {key} (owned by the user edgecam runs as)\n"
    )
    assert "PRIVATE KEY" not in out + err
    assert main(["run", "--config", str(config)]) == 2, "the agent refuses to start the same way"
    assert capsys.readouterr().err.endswith(f"fix: chmod 600 {key} (owned by the user edgecam runs as)\n")
    assert not (tmp_path / "state").exists(), "refused before touching the state directory"


def test_check_config_refuses_what_run_refuses_a_zone_wholly_under_a_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text(
        f'[storage]\ndir = "{tmp_path / "state"}"\n'
        "[motion]\nzone = [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]]\nmasks = [[[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]]\n"
    )
    line = "edgecam: motion.zone: no pixel of the door zone is left outside motion.masks\n"
    assert main(["check-config", "--config", str(config)]) == 2
    assert capsys.readouterr().err == line
    assert main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err == line


def test_check_config_refuses_a_variable_that_names_no_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_MQTT_HOST", "broker.lan")
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == "edgecam: EDGECAM_MQTT_HOST: names no setting; did you mean EDGECAM_MQTT__HOST?\n"


def cli(*argv: str, env: dict[str, str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``edgecam`` command in a child process (as ``user``, through setpriv, when given)."""
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    command = [sys.executable, "-m", "edgecam", *argv]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(command, env=base | env, cwd=root, capture_output=True, text=True, timeout=60)


def test_check_config_shows_no_camera_password_and_reads_it_from_a_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "camera-password"
    secret.write_text("hunter2-camera\n")
    secret.chmod(0o644)
    env = {
        "EDGECAM_CAMERA__SOURCE": "rtsp://admin:hunter2-url@cam.lan/stream1",
        "EDGECAM_STORAGE__DIR": str(tmp_path / "state"),
    }
    done = cli("check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert 'source = "rtsp://admin:***@cam.lan/stream1"' in done.stdout

    env |= {"EDGECAM_CAMERA__SOURCE": "rtsp://admin@cam.lan/stream1", "EDGECAM_CAMERA__PASSWORD_FILE": str(secret)}
    done = cli("check-config", env=env)
    assert done.returncode == 2
    assert done.stderr == (
        f"edgecam: camera.password_file: {secret} is readable by group or others (mode 0644); "
        f"fix: chmod 600 {secret} (owned by the user edgecam runs as)\n"
    )
    secret.chmod(0o600)
    done = cli("check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_a_state_directory_the_user_cannot_enter_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to another user (setpriv) takes root; as that user the test is the same")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {"EDGECAM_STORAGE__DIR": str(state), "EDGECAM_CAMERA__SIMULATED__DURATION": "1", "HOME": str(tmp_path)}
    for command in ("run", "check-config"):
        done = cli(command, env=env, user="65534")
        assert done.returncode == (2 if command == "check-config" else 1), done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines() == [
            f"edgecam: storage.dir: cannot enter {state} (Permission denied): run edgecam as the user that owns it "
            f"(the service's: sudo -u edgecam edgecam {command}), or set storage.dir to a folder of yours"
        ], done.stderr


NOBODY = 65534
"""The unprivileged user the tests below run edgecam as (``nobody`` on Debian and Raspberry Pi OS)."""


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching to another user (setpriv) takes root; as that user the test is the same"
)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


@needs_root
def test_a_state_directory_that_cannot_be_made_is_one_line() -> None:
    # The default ~/.local/state/edgecam of a user whose home does not exist (nobody's is /nonexistent).
    env = {
        "HOME": "/nonexistent",
        "XDG_STATE_HOME": "",
        "STATE_DIRECTORY": "",
        "EDGECAM_CAMERA__SIMULATED__DURATION": "1",
    }
    state = "/nonexistent/.local/state/edgecam"
    both_say_as_nobody(
        env,
        f"edgecam: storage.dir: cannot create {state}: nobody, the user edgecam runs as, may not write to /: "
        f"make it for that user (sudo install -d -o nobody {state}), or set storage.dir to a folder of its own",
    )


def both_say_as_nobody(env: dict[str, str], line: str) -> None:
    """check-config (exit 2) and run (exit 1), as user nobody, each print ``line`` and nothing else."""
    for command in ("check-config", "run"):
        done = cli(command, env=env, user=str(NOBODY))
        assert done.returncode == (2 if command == "check-config" else 1), done.stderr
        assert done.stderr.splitlines() == [line], done.stderr


@needs_root
@pytest.mark.parametrize("foreign", ["outbox.sqlite3", "stills", "stills/an-event"])
def test_a_state_directory_left_with_files_of_another_user_is_one_line(open_tmp: Path, foreign: str) -> None:
    from edgecam.config import StorageSettings
    from edgecam.outbox import Outbox

    state = open_tmp / "state"
    Outbox(StorageSettings(dir=state)).close()  # root ran edgecam by hand once
    (state / "stills" / "an-event").mkdir()
    for path in [state, *state.rglob("*")]:
        if path != state / foreign:
            os.chown(path, NOBODY, NOBODY)  # the rest is the service user's
    env = {"EDGECAM_STORAGE__DIR": str(state), "EDGECAM_CAMERA__SIMULATED__DURATION": "1"}
    both_say_as_nobody(
        env,
        f"edgecam: storage.dir: {state / foreign} belongs to root, not to nobody, the user edgecam runs as: "
        f"sudo chown -R nobody {state}, or run edgecam as root",
    )


@pytest.mark.parametrize(("source", "why"), [("{tmp}/nowhere.mp4", "no such file"), ("/dev/video97", "no such device")])
def test_check_config_refuses_a_camera_source_that_is_not_there_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, source: str, why: str
) -> None:
    source = source.format(tmp=tmp_path)
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_CAMERA__SOURCE", source)
    line = f"edgecam: camera.source: cannot open {source!r}: {why}\n"
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == line
    assert main(["run"]) == 2
    assert capsys.readouterr().err == line
    assert not (tmp_path / "state").exists(), "refused before the broker and the state directory"


@pytest.mark.parametrize(("name", "value"), [("EDGECAM_MQTT", "x"), ("EDGECAM_CAMERA", "picamera2")])
def test_a_variable_naming_a_whole_section_is_one_line_for_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    key = "HOST" if name == "EDGECAM_MQTT" else "SOURCE"
    for command in ("check-config", "run"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"edgecam: {name}: names the section"), err
        assert f"write {name}__{key}={value} " in err
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize("device_id", ["raspberrypi", "DietPi", "ubuntu"])
def test_check_config_warns_of_a_device_id_that_is_a_distribution_default_host_name(
    device_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_DEVICE_ID", device_id)
    assert main(["check-config"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"edgecam: warning: device_id '{device_id}' is the default host name of a Linux distribution, so other "
        f"cameras may have it too, and two agents with one device_id take turns (docs/mqtt.md#connection): set "
        f"device_id in the settings file, or EDGECAM_DEVICE_ID"
    ]
    monkeypatch.setenv("EDGECAM_DEVICE_ID", "front-door")
    assert main(["check-config"]) == 0
    assert capsys.readouterr().err == ""


def test_check_config_says_mqtt_3_1_1_has_no_broker_side_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text(
        f'device_id = "front-door"\n[storage]\ndir = "{tmp_path / "state"}"\n[mqtt]\nprotocol = "3.1.1"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0, "a warning, not an error"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("edgecam: warning: mqtt.protocol is '3.1.1', which has no message expiry")
    assert "storage.broker_expiry and snapshot_expiry need MQTT 5" in line


def test_check_config_says_when_the_snapshot_expires_sooner_than_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgecam.toml"
    storage = f'device_id = "front-door"\n[storage]\ndir = "{tmp_path / "state"}"\nbroker_expiry = 0.0001\n'
    config.write_text(storage + "snapshot_expiry = 5\n")
    assert main(["check-config", "--config", str(config)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "edgecam: warning: storage.snapshot_expiry (5 days) is longer than the broker keeps a still "
        "(storage.broker_expiry): the snapshot expires after 9 s"
    )
    config.write_text(storage + "snapshot_expiry = 0.0001\n")
    assert main(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().err == ""


def test_check_config_warns_of_a_door_zone_too_small_for_the_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_MOTION__ZONE", "[[0.5, 0.5], [0.55, 0.5], [0.55, 0.55], [0.5, 0.55]]")
    assert main(["check-config"]) == 0, "a warning, not an error"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("edgecam: warning: motion.zone covers only 192 pixels (0.25 % of the 320x240 detection")
    assert "draw motion.zone round the whole door" in line


def test_check_config_warns_of_a_door_reference_made_in_the_dark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dark = np.full((240, 320), 18, np.uint8)
    dark[:, ::16] = 40  # the edges of a door and its frame, lit a little: enough detail for the door state
    reference = tmp_path / "door-reference.npz"
    reference.write_bytes(DoorReference.learn([dark], []).to_bytes())
    monkeypatch.setenv("EDGECAM_STORAGE__DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDGECAM_DOOR__REFERENCE", str(reference))
    monkeypatch.setenv("EDGECAM_DOOR__CONFIRM", "false")  # the fixed threshold; confirmed, it scales with the light
    assert main(["check-config"]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"edgecam: warning: the door reference {reference} (made ")
    assert "the door zone is too dark" in line
    assert line.endswith("add light or an infrared lamp, or lower motion.threshold; then run 'edgecam calibrate' again")


def test_check_config_says_whether_the_door_confirms_motion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edgecam.toml"
    config.write_text(f'[storage]\ndir = "{tmp_path}"\n[motion]\nzone = {[list(p) for p in DOOR_ZONE]}\n')
    assert main(["check-config", "--config", str(config)]) == 0
    alone = "no reference of the closed door ('edgecam calibrate' makes one) and no door contact: camera motion "
    assert alone + "alone starts events (3 moving frames in a row)" in capsys.readouterr().out
    sim = SceneRenderer(SimulatedSettings(), 640, 480)
    frames = [detection_gray(sim.render(i)[0], 320, 240) for i in range(10)]
    (tmp_path / "door-reference.npz").write_bytes(DoorReference.learn(frames, []).to_bytes())
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "# events: camera motion starts an event once confirmed by the door leaving its closed look\n" in out
    config.write_text(config.read_text() + "[door]\nconfirm = false\n")
    assert main(["check-config", "--config", str(config)]) == 0
    assert "# events: door.confirm is off: camera motion alone starts events" in capsys.readouterr().out


def python(code: str) -> str:
    """``code`` run by this Python in a fresh process (nothing imported yet), its output."""
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    done = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_run_imports_neither_the_other_commands_nor_scenes_it_does_not_show() -> None:
    imports = "import sys, edgecam.cli, edgecam.agent, edgecam.sources.simulated; print(*sys.modules)"
    loaded = set(python(imports).split())
    assert "edgecam.agent" in loaded
    unneeded = {"edgecam.listen", "edgecam.replay", "edgecam.calibrate", "edgecam.explain", "edgecam.forget"}
    unneeded |= {"edgecam.sources.porch", "edgecam.sources.picamera"}
    assert not loaded & unneeded


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the dynamic mmap threshold is glibc's malloc")
@pytest.mark.parametrize("unmapped", [False, True], ids=["glibc-default", "run"])
def test_run_gives_a_freed_still_back_to_the_system(unmapped: bool) -> None:
    kept_mb = python(
        "import numpy as np\n"
        "from edgecam.cli import _unmap_freed_pixels\n"
        f"if {unmapped}:\n"
        "    _unmap_freed_pixels()\n"
        "def rss():\n"
        "    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024\n"
        "still = np.ones((1520, 2028, 3), np.uint8)\n"
        "del still  # glibc unmaps it, and now takes blocks this large from its heap\n"
        "before = rss()\n"
        "still = np.ones((1520, 2028, 3), np.uint8)\n"
        "del still\n"
        "print(rss() - before)\n"
    )
    if unmapped:
        assert float(kept_mb) < 2.0, "the second still's 9 MB stay resident after it is freed"
    else:
        assert float(kept_mb) > 7.0, "glibc's dynamic threshold, which run turns off, no longer keeps a freed still"
