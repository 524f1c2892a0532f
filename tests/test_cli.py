import os
import subprocess
from pathlib import Path

import pytest

from edgecam.cli import main


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
