from pathlib import Path

import pytest

from edgecam.errors import ConfigError
from edgecam.settings_file import load_settings, render_toml


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EDGECAM_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgecam.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_public_keys_exist() -> None:
    s = load_settings()
    assert s.camera.source == "simulated"
    assert s.camera.realtime is True
    assert s.motion.zone == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert s.motion.masks == []
    assert s.motion.event_gap > 0
    assert s.capture.stills_per_event == 3
    assert s.capture.interval == 0.5
    assert s.mqtt.host == "localhost"
    assert s.mqtt.port == 1883
    assert s.topic_base == f"edgecam/{s.device_id}"


def test_toml_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'device_id = "front"\n[mqtt]\nhost = "broker.lan"\nport = 1884\n')
    monkeypatch.setenv("EDGECAM_MQTT__PORT", "1999")
    monkeypatch.setenv("EDGECAM_MOTION__ZONE", "[[0.1, 0.1], [0.5, 0.1], [0.5, 0.9]]")
    s = load_settings(path)
    assert (s.device_id, s.mqtt.host, s.mqtt.port) == ("front", "broker.lan", 1999)
    assert s.motion.zone[1] == (0.5, 0.1)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[motion]\nevent_gap = -1\n", "motion.event_gap: -1 is not allowed: Input should be greater than or equal"),
        ('device_id = "front door"\n', "device_id: 'front door' is not allowed"),
        ("[mqtt]\nhots = 'x'\n", "mqtt.hots: unknown key (allowed here: host, port,"),
        ("[motion]\nzone = [[0, 0], [2, 0], [1, 1]]\n", "motion.zone: [[0, 0], [2, 0], [1, 1]] is not allowed: point"),
        ("[mqtt]\ntopic_prefix = 'a/#'\n", "mqtt.topic_prefix: 'a/#' is not allowed"),
        ("[mqtt]\ntopic_prefix = 'home/cams'\n", "mqtt.topic_prefix: 'home/cams' is not allowed: one topic level"),
        ('[mqtt]\nclient_id = "cam\\u0000"\n', "mqtt.client_id: 'cam\\x00' is not allowed: must not contain NUL"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml))
    assert str(err.value).startswith(expected)
    assert len(str(err.value).splitlines()) == 1


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[capture]\ninterval = -2\nstills_per_event = 'many'\n"))
    lines = str(err.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["capture.interval", "capture.stills_per_event"]


def test_missing_and_broken_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: cannot read .*nope\.toml"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_settings(write(tmp_path, "[mqtt\nhost=1"))


def test_rendered_settings_round_trip_and_redact_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    s = load_settings(write(tmp_path, f'[mqtt]\nusername = "cam"\npassword_file = "{secret}"\n'))
    text = render_toml(s)
    assert "hunter2" not in text
    again = load_settings(write(tmp_path, text))
    assert again.model_dump() == s.model_dump()


@pytest.mark.parametrize(
    ("mqtt", "line"),
    [
        ("port = 8883", "mqtt.port 8883 is MQTT over TLS: set mqtt.tls = true, or use port 1883"),
        ("tls = true", "mqtt.tls on port 1883, the plain MQTT port: use port 8883, or mqtt.tls = false"),
        ('ca_file = "/etc/ssl/ca.pem"', "mqtt.ca_file needs mqtt.tls = true"),
        ("tls_insecure = true", "mqtt.tls_insecure needs mqtt.tls = true"),
        (
            'tls = true\nport = 8883\nkey_file = "/k"',
            "mqtt.key_file needs mqtt.cert_file, the certificate it belongs to",
        ),
    ],
    ids=["8883-plain", "tls-on-1883", "ca-without-tls", "insecure-without-tls", "key-without-cert"],
)
def test_tls_settings_that_contradict_each_other_are_one_line(tmp_path: Path, mqtt: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"[mqtt]\n{mqtt}\n"))
    assert str(err.value) == line


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("EDGECAM_MQTT_HOST", "EDGECAM_MQTT_HOST: names no setting; did you mean EDGECAM_MQTT__HOST?"),
        ("EDGECAM_MQTT__HOTS", "EDGECAM_MQTT__HOTS: names no setting; did you mean EDGECAM_MQTT__HOSTS?"),
        ("EDGECAM_DEVICEID", "EDGECAM_DEVICEID: names no setting; did you mean EDGECAM_DEVICE_ID?"),
        ("EDGECAM_FOO", "EDGECAM_FOO: names no setting (EDGECAM_<SECTION>__<KEY>, e.g. EDGECAM_MQTT__HOST)"),
    ],
)
def test_an_environment_variable_that_names_no_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, line: str
) -> None:
    monkeypatch.setenv(name, "broker.lan")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == line


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "EDGECAM_CAMERA",
            "picamera2",
            "EDGECAM_CAMERA: names the section [camera], not a key: write EDGECAM_CAMERA__SOURCE=picamera2 "
            "(one variable per key: EDGECAM_CAMERA__<KEY>), or the whole section as a JSON object",
        ),
        (
            "EDGECAM_MQTT",
            "x",
            "EDGECAM_MQTT: names the section [mqtt], not a key: write EDGECAM_MQTT__HOST=x "
            "(one variable per key: EDGECAM_MQTT__<KEY>), or the whole section as a JSON object",
        ),
        (
            "edgecam_camera__simulated",
            "3",
            "edgecam_camera__simulated: names the section [camera.simulated], not a key: write "
            "EDGECAM_CAMERA__SIMULATED__SEED=3 (one variable per key: EDGECAM_CAMERA__SIMULATED__<KEY>), "
            "or the whole section as a JSON object",
        ),
        (
            "EDGECAM_STORAGE",
            '{"dir": ',
            "EDGECAM_STORAGE: the section [storage] is not valid JSON (Expecting value: line 1 column 9 (char 8)): "
            "write a JSON object, or one variable per key (EDGECAM_STORAGE__<KEY>)",
        ),
        (
            "EDGECAM_MOTION__ZONE",
            "0,0 1,0 1,1",
            "EDGECAM_MOTION__ZONE: motion.zone is a list, written as JSON, and this is not JSON "
            "(Extra data: line 1 column 2 (char 1)), e.g. "
            "EDGECAM_MOTION__ZONE='[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]'",
        ),
        (
            "EDGECAM_MOTION__MASKS",
            "none",
            "EDGECAM_MOTION__MASKS: motion.masks is a list, written as JSON, and this is not JSON "
            "(Expecting value: line 1 column 1 (char 0))",
        ),
    ],
    ids=["camera", "mqtt", "nested-section-lower-case", "bad-json-section", "zone", "masks"],
)
def test_a_variable_that_names_a_section_or_a_list_without_json_is_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, line: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == line


def test_any_other_error_of_the_settings_sources_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic_settings import SettingsError, TomlConfigSettingsSource

    import edgecam.config

    class Failing(TomlConfigSettingsSource):
        def __call__(self) -> dict[str, object]:
            raise SettingsError('error parsing value for field "mqtt" from source "Failing"') from ValueError("bad")

    monkeypatch.setattr(edgecam.config, "TomlConfigSettingsSource", Failing)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, ""))
    assert str(err.value) == 'settings: error parsing value for field "mqtt" from source "Failing": bad'


def test_a_key_variable_wins_over_its_section_json_and_both_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[storage]\nretention_days = 9.0\nmax_bytes = 5000000\n[camera.simulated]\nseed = 9\n")
    monkeypatch.setenv("EDGECAM_STORAGE__RETENTION_DAYS", "3")
    monkeypatch.setenv("EDGECAM_STORAGE", '{"retention_days": 2, "max_bytes": 2000000}')
    monkeypatch.setenv("edgecam_camera__simulated__seed", "4")
    monkeypatch.setenv("EDGECAM_CAMERA__SIMULATED__NOISE", "1.5")
    s = load_settings(path, camera={"simulated": {"noise": 2.0}})
    assert (s.storage.retention_days, s.storage.max_bytes) == (3.0, 2_000_000)
    assert (s.camera.simulated.seed, s.camera.simulated.noise) == (4, 2.0), "arguments over the environment"


def test_the_config_file_variable_and_real_settings_are_not_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECAM_CONFIG", str(write(tmp_path, "")))
    monkeypatch.setenv("EDGECAM_CAMERA__SIMULATED__SEED", "3")
    monkeypatch.setenv("EDGECAM_STORAGE", '{"retention_days": 2}')
    s = load_settings()
    assert (s.camera.simulated.seed, s.storage.retention_days) == (3, 2.0)


def test_a_topic_prefix_starting_with_a_dollar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[mqtt]\ntopic_prefix = '$edgecam'\n"))
    assert str(err.value).startswith("mqtt.topic_prefix: '$edgecam' is not allowed: must not start with '$'")


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("rtsp://admin:s3cret@cam.lan:554/stream1", "rtsp://admin:***@cam.lan:554/stream1"),
        ("rtsp://admin:p%40ss%3Aw0rd@cam.lan/stream1", "rtsp://admin:***@cam.lan/stream1"),
        ("rtsp://admin:p@ss@word@cam.lan/stream1?x=1", "rtsp://admin:***@cam.lan/stream1?x=1"),
        ("http://T0KEN@cam.lan/video.mjpg", "http://***@cam.lan/video.mjpg"),
        ("RTSP://a:b@cam.lan", "RTSP://a:***@cam.lan"),
        ("rtsp://cam.lan/live@main", "rtsp://cam.lan/live@main"),
        ("/dev/video0", "/dev/video0"),
        ("http://SeCrEtToKeN@cam/x?user=a&password=QWERTY", "http://***@cam/x?user=a&password=***"),
        (
            "http://cam.lan/cgi-bin/CGIProxy.fcgi?cmd=snapPicture2&usr=admin&pwd=hunter2",
            "http://cam.lan/cgi-bin/CGIProxy.fcgi?cmd=snapPicture2&usr=admin&pwd=***",
        ),
        ("rtsp://cam.lan/Preview_01_main?Token=abc&channel=1", "rtsp://cam.lan/Preview_01_main?Token=***&channel=1"),
        ("http://cam.lan/snap.jpg?API_KEY=k1#top", "http://cam.lan/snap.jpg?API_KEY=***#top"),
        (
            "https://cam.lan/live?auth=YWRtaW46cGFzcw==&pass=p&passwd=q&secret=s&key=k&access_token=t",
            "https://cam.lan/live?auth=***&pass=***&passwd=***&secret=***&key=***&access_token=***",
        ),
        ("http://cam.lan/x?keyframe=1&passkey=2&pwd=3", "http://cam.lan/x?keyframe=1&passkey=2&pwd=***"),
    ],
)
def test_redact_hides_every_url_credential(source: str, shown: str) -> None:
    from edgecam.redact import redact

    assert redact(source) == shown
    assert redact(f"cannot open {source!r}: no") == f"cannot open {shown!r}: no"


def test_check_config_output_shows_no_camera_password(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[camera]\nsource = "rtsp://admin:s3cret@cam.lan/stream1"\n'))
    text = render_toml(s)
    assert "s3cret" not in text
    assert 'source = "rtsp://admin:***@cam.lan/stream1"' in text


def test_the_camera_password_comes_from_a_file_or_the_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecam.config import CameraSettings

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    camera = CameraSettings(source="rtsp://admin@cam.lan/stream1")
    assert camera.secret_file() is None
    (credentials / "camera-password").write_text("s3cret\n")
    assert camera.secret_file() == credentials / "camera-password"
    own = tmp_path / "pw"
    assert CameraSettings(source="rtsp://admin@cam.lan/stream1", password_file=own).secret_file() == own


def test_the_camera_password_goes_into_the_url_opened_and_only_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecam.config import CameraSettings
    from edgecam.credentials import camera_url

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    secret = tmp_path / "pw"
    secret.write_text("p@ss:w/rd\n")
    secret.chmod(0o600)
    camera = CameraSettings(source="rtsp://admin@cam.lan:554/stream1", password_file=secret)
    assert camera_url(camera) == "rtsp://admin:p%40ss%3Aw%2Frd@cam.lan:554/stream1"
    assert camera.shown == "rtsp://***@cam.lan:554/stream1"
    assert camera_url(CameraSettings(source="rtsp://admin@cam.lan/s")) == "rtsp://admin@cam.lan/s", "no file, as is"
    for source, says in [
        ("rtsp://cam.lan/stream1", "names no user: write it as rtsp://USER@cam.lan"),
        ("rtsp://admin:old@cam.lan/stream1", "'rtsp://admin:***@cam.lan/stream1' has a password already"),
        ("/dev/video0", "is not a URL"),
    ]:
        with pytest.raises(ConfigError, match="^camera.password_file: ") as err:
            camera_url(CameraSettings(source=source, password_file=secret))
        assert says in str(err.value)
        assert "p@ss" not in str(err.value)


def test_mqtt_hosts_name_the_brokers_with_or_without_a_port(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, '[mqtt]\nport = 1884\nhosts = ["a.lan", "b.lan:1999", "[fd00::1]", "[::1]:2000"]\n')
    )
    assert [(b.host, b.port) for b in s.mqtt.brokers] == [
        ("a.lan", 1884),
        ("b.lan", 1999),
        ("fd00::1", 1884),
        ("::1", 2000),
    ]
    assert [(b.host, b.port) for b in load_settings(write(tmp_path, "")).mqtt.brokers] == [("localhost", 1883)]


@pytest.mark.parametrize(
    ("mqtt", "line"),
    [
        (
            'hosts = ["a.lan:0"]',
            "mqtt.hosts[0]: 'a.lan:0' is not allowed: the port must be a number from 1 to 65535",
        ),
        ('hosts = ["a.lan", "b lan"]', "mqtt.hosts[1]: 'b lan' is not allowed: not a host name or address"),
        (
            'hosts = ["fd00::1"]',
            "mqtt.hosts[0]: 'fd00::1' is not allowed: write an IPv6 address in brackets, [address]:port",
        ),
        ('hosts = ["a.lan", "a.lan"]', "mqtt.hosts names a broker twice"),
        (
            'host = "a.lan"\nhosts = ["b.lan"]',
            "set mqtt.hosts or mqtt.host, not both (put every broker in mqtt.hosts)",
        ),
        ('hosts = ["a.lan:8883"]', "mqtt.port 8883 is MQTT over TLS: set mqtt.tls = true, or use port 1883"),
    ],
    ids=["port-0", "space", "bare-v6", "twice", "host-and-hosts", "tls-port-without-tls"],
)
def test_bad_mqtt_hosts_are_one_line_naming_the_entry(tmp_path: Path, mqtt: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"[mqtt]\n{mqtt}\n"))
    assert str(err.value) == line
