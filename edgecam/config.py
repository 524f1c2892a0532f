"""Settings: one TOML file plus ``EDGECAM_<SECTION>__<KEY>`` environment overrides, validated at start."""

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edgecam.broker_settings import HomeAssistantSettings, MqttSettings
from edgecam.redact import redact
from edgecam.scene_settings import SimulatedSettings
from edgecam.schedule import check_window, check_zone
from edgecam.section import Section, systemd_credential

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _check_polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) < 3:
        raise ValueError("a polygon needs at least 3 [x, y] points")
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point [{x}, {y}] is outside the frame: x and y are fractions from 0 to 1")
    return points


Polygon = Annotated[list[tuple[float, float]], AfterValidator(_check_polygon)]


def _check_one_line(value: str | None) -> str | None:
    if value is not None and not value.isprintable():
        raise ValueError("one line of text: no line breaks, control or invisible characters")
    if value is not None and not value.strip():
        raise ValueError("blank: write it, or leave the setting out")
    return value


def _seconds(days: float) -> int:
    """Whole seconds of ``days``, at least 1 (an MQTT 5 Message Expiry Interval is whole seconds)."""
    return max(1, round(days * 86400))


WHOLE_FRAME: list[tuple[float, float]] = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]


class CameraSettings(Section):
    """Where frames come from and at which sizes."""

    source: str = Field(
        "simulated",
        min_length=1,
        description="'simulated', 'picamera2', or anything OpenCV opens: /dev/videoN, rtsp://..., a file path.",
    )
    realtime: bool = Field(True, description="Pace a recorded file at its frame rate in 'edgecam run'.")
    detect_width: int = Field(320, ge=64, le=1920, description="Width of the detection (lores) image.")
    detect_height: int = Field(240, ge=48, le=1080, description="Height of the detection (lores) image.")
    still_width: int | None = Field(
        None,
        ge=64,
        le=9152,
        description=(
            "Width of a still from the Pi's main stream; unset (with still_height): the largest standard size of "
            "the sensor's aspect whose buffers fit the board's camera memory (2028x1520 on the HQ camera)."
        ),
    )
    still_height: int | None = Field(
        None, ge=48, le=6944, description="Height of a still from the Pi's main stream; unset with still_width."
    )
    fps: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Frame rate asked of a live camera; when set, also that of a file without timestamps (raw .h264).",
    )
    frame_timeout: float = Field(
        5.0, ge=0.5, le=300.0, description="Seconds a live camera may go without a frame before it has failed."
    )
    password_file: Path | None = Field(
        None,
        description=(
            "File (mode 0600) holding the password of the user named in an rtsp:// or http:// source; default the "
            "systemd credential 'camera-password'. Keeps the password out of the settings."
        ),
    )
    simulated: SimulatedSettings = Field(
        default_factory=SimulatedSettings, description="The scene when source = 'simulated'."
    )

    @model_validator(mode="after")
    def _sizes_and_timeout_agree(self) -> "CameraSettings":
        width, height = self.still_width, self.still_height
        if (width is None) != (height is None):
            given, missing = ("still_width", "still_height") if height is None else ("still_height", "still_width")
            raise ValueError(
                f"camera.{given} is set and camera.{missing} is not: set both, or neither to fit the still to the board"
            )
        if width is not None and height is not None and (width < self.detect_width or height < self.detect_height):
            raise ValueError(
                f"camera.still_width/still_height {width}x{height} is smaller than camera.detect_width/detect_height "
                f"{self.detect_width}x{self.detect_height}: a still is at least as large as a detection frame"
            )
        if self.frame_timeout < 2.0 / self.fps:
            raise ValueError(
                f"camera.frame_timeout = {self.frame_timeout:g} s is shorter than two frames at camera.fps = "
                f"{self.fps:g}: every frame would look like a failed camera"
            )
        return self

    @property
    def shown(self) -> str:
        """``source`` as logs and status lines show it: URL credentials hidden."""
        return redact(self.source)

    def secret_file(self) -> Path | None:
        """``camera.password_file``, else the systemd credential ``camera-password`` (``LoadCredential=``) if any."""
        return self.password_file or systemd_credential("camera-password")


class MotionSettings(Section):
    """The door-zone motion detector and when an event starts and ends."""

    zone: Polygon = Field(
        default_factory=lambda: list(WHOLE_FRAME),
        description="Door zone polygon: [x, y] fractions of width and height; default the whole frame.",
    )
    masks: list[Polygon] = Field(
        default_factory=lambda: [],  # not the builtin: pydantic tokenizes a builtin's signature, 5 ms at every start
        description="Privacy mask polygons: ignored by the detector and filled black in every still.",
    )
    threshold: int = Field(
        25, ge=1, le=255, description="Grey-level difference from the background that counts as changed."
    )
    min_area: float = Field(
        0.02, gt=0.0, le=1.0, description="Changed fraction of the door zone that makes a frame 'moving'."
    )
    min_frames: int = Field(3, ge=1, le=100, description="Consecutive moving frames that start an event.")
    event_gap: float = Field(2.0, ge=0.1, le=600.0, description="Seconds of quiet that end an event.")
    learning_rate: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Weight of each new frame in the running-average background; 0.1 forgets in ~1 s at 10 fps.",
    )
    blur: int = Field(
        0,
        ge=0,
        le=5,
        description=(
            "Radius of a box blur against sensor noise before comparing, in pixels of the half-size image the "
            "detector compares (each already the mean of 2 x 2 detection pixels); 0 = none."
        ),
    )
    calibration: float = Field(
        2.0, ge=0.0, le=60.0, description="Seconds the background learns after start before events can fire."
    )
    global_change: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="Changed fraction of the whole frame treated as a light or exposure change, not motion.",
    )
    settle: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Seconds after a global change during which the background adapts fast while exposure settles.",
    )


class DoorSettings(Section):
    """Door open/closed state from a calibrated reference of the zone, and an optional door contact (reed switch)."""

    reference: Path | None = Field(
        None,
        description="Closed-door reference saved by 'edgecam calibrate'; default <storage.dir>/door-reference.npz.",
    )
    open_level: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description=(
            "Dissimilarity of the zone from the closed-door reference (0 same, 1 unrelated) that means open; "
            "0.3 is about 5 degrees ajar. Closed again below 70 % of it, which also confirms camera motion."
        ),
    )
    confirm: bool = Field(
        True,
        description=(
            "With a reference or a contact, camera motion starts an event only once the door leaves its closed "
            "look or the contact opens; false: motion.min_frames moving frames start one, as without."
        ),
    )
    confirm_window: float = Field(
        2.0,
        ge=0.1,
        le=30.0,
        description="Seconds after camera motion in the zone within which the door must confirm it.",
    )
    open_quiet: float = Field(
        30.0,
        ge=0.1,
        le=3600.0,
        description="Seconds of quiet after which an event ends even though the door is still open.",
    )
    calibrate_seconds: float = Field(
        3.0, ge=0.5, le=60.0, description="Seconds of quiet scene 'edgecam calibrate' learns the closed door from."
    )
    contact_pin: int | None = Field(
        None,
        ge=0,
        le=27,
        description="GPIO (BCM number) of a reed switch on the door, read through gpiozero; unset = none.",
    )
    contact_closed_when: Literal["low", "high"] = Field(
        "low",
        description="Pin level while the door is shut: 'low' for a switch to ground with the internal pull-up.",
    )
    contact_bounce: float = Field(0.05, ge=0.0, le=1.0, description="Seconds of contact bounce to ignore.")
    contact_mode: Literal["any", "both", "contact_only"] = Field(
        "any",
        description=(
            "How the contact and the camera start events: 'any' either one, 'both' camera motion only while the "
            "contact says open, 'contact_only' the contact alone."
        ),
    )


class CaptureSettings(Section):
    """Stills taken while the door moves."""

    stills_per_event: int = Field(3, ge=0, le=50, description="Most stills taken during one event.")
    interval: float = Field(0.5, ge=0.0, le=60.0, description="Least seconds between two stills of an event.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of the stills.")


class IlluminatorSettings(Section):
    """A light on a GPIO output, on in the dark only for an event's stills (docs/illuminator.md)."""

    pin: int | None = Field(
        None,
        ge=0,
        le=27,
        description=(
            "GPIO (BCM number) driving the input of a relay or MOSFET board that switches the light (gpiozero); "
            "unset = no light. With camera.source 'simulated' a mock pin lights the simulated scene instead."
        ),
    )
    on_level: Literal["high", "low"] = Field(
        "high",
        description="Pin level that switches the light on: 'high' for most MOSFET boards, 'low' for many relays.",
    )
    dark_lux: float = Field(
        10.0,
        ge=0.0,
        le=100_000.0,
        description="With a camera that reports Lux (the Pi camera's rpi.lux): the scene is dark below this many lux.",
    )
    dark_level: float = Field(
        40.0,
        ge=0.0,
        le=255.0,
        description="Without Lux: the scene is dark while the detection frame's mean grey level (0-255) is below this.",
    )
    settle: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Seconds from switching on to the first still: the camera's exposure adapts meanwhile.",
    )
    max_on: float = Field(
        10.0,
        ge=1.0,
        le=300.0,
        description="Most seconds the light stays on in one event; the event's stills left are then taken without it.",
    )


class PrivacySettings(Section):
    """Who runs the camera (the notice at the door) and when detection is held off: a schedule, a GPIO switch."""

    schedule: list[Annotated[str, AfterValidator(check_window)]] = Field(
        default_factory=lambda: [],  # not the builtin list, as motion.masks
        max_length=64,
        description=(
            "Windows of local time when detection is held off, '[days ]HH:MM-HH:MM': e.g. 'mon-fri 17:30-08:00', "
            "'sat,sun 00:00-24:00', '22:00-07:00' (every day); one crossing midnight belongs to the day it starts."
        ),
    )
    timezone: Annotated[str | None, AfterValidator(check_zone)] = Field(
        None,
        min_length=1,
        max_length=64,
        description="IANA time zone of the schedule, e.g. 'Europe/Berlin'; default the system's (TZ, /etc/localtime).",
    )
    gpio_pin: int | None = Field(
        None,
        ge=0,
        le=27,
        description="GPIO (BCM number) of a privacy switch that holds detection off (gpiozero); unset = none.",
    )
    gpio_off_when: Literal["low", "high"] = Field(
        "low",
        description="Pin level that holds detection off: 'low' for a switch to ground that is closed for privacy.",
    )
    gpio_pull: Literal["up", "down", "none"] | None = Field(
        None,
        description=(
            "The pin's internal resistor, 'none' for a driven signal or an external one; default 'up' with "
            "gpio_off_when 'low', 'down' with 'high', so that an open switch lets detection run."
        ),
    )

    operator: Annotated[str | None, AfterValidator(_check_one_line)] = Field(
        None,
        min_length=1,
        max_length=120,
        description="Who operates the camera, as the notice at the door names them, e.g. 'The Smiths, flat 3'.",
    )
    contact: Annotated[str | None, AfterValidator(_check_one_line)] = Field(
        None,
        min_length=1,
        max_length=160,
        description="How people at the door reach the operator, for the notice: an e-mail, a phone or a door bell.",
    )


def _default_state_dir() -> Path:
    if state := os.environ.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "edgecam"


class StorageSettings(Section):
    """The state directory: the outbox database and the stills."""

    dir: Path = Field(
        default_factory=_default_state_dir,
        description="State directory; default $STATE_DIRECTORY (systemd) or ~/.local/state/edgecam.",
    )
    max_bytes: int = Field(
        1_000_000_000,
        ge=1_000_000,
        description="Most bytes the outbox and stills may use; past it stills are deleted (docs/reliability.md).",
    )
    retention_days: float = Field(
        7.0, gt=0.0, le=3650.0, description="Days delivered events and their stills are kept before deletion."
    )
    broker_expiry: float | None = Field(
        None,
        gt=0.0,
        le=3650.0,
        description=(
            "Days the broker keeps a still it holds for a subscriber that is away (MQTT 5 message expiry); "
            "default retention_days. Not available with mqtt.protocol '3.1.1'."
        ),
    )
    snapshot_expiry: float = Field(
        1.0,
        gt=0.0,
        le=3650.0,
        description="Days the retained snapshot (the latest still) stays on the broker after it was taken (MQTT 5), "
        "at most broker_expiry.",
    )
    event_expiry: float | None = Field(
        None,
        gt=0.0,
        le=3650.0,
        description="Days the broker keeps an event JSON for a subscriber that is away (MQTT 5); default never.",
    )

    @property
    def retention_s(self) -> int:
        """Whole seconds of ``retention_days``, at least 1."""
        return _seconds(self.retention_days)

    @property
    def broker_expiry_s(self) -> int:
        """Seconds of the MQTT 5 Message Expiry Interval of a still (MQTT 5.0 section 3.3.2.3.3), at least 1."""
        return _seconds(self.broker_expiry if self.broker_expiry is not None else self.retention_days)

    @property
    def snapshot_expiry_s(self) -> int:
        """Seconds the retained snapshot lives from when its still was taken: ``snapshot_expiry``, capped."""
        return min(_seconds(self.snapshot_expiry), self.broker_expiry_s)

    @property
    def event_expiry_s(self) -> int | None:
        """Seconds of an event JSON's Message Expiry Interval, or None: it does not expire."""
        return None if self.event_expiry is None else _seconds(self.event_expiry)

    @property
    def outbox_path(self) -> Path:
        """The outbox database: events and stills waiting for the broker."""
        return self.dir / "outbox.sqlite3"

    @property
    def stills_dir(self) -> Path:
        """Where stills wait for the broker and stay for ``retention_days``: ``<event_id>/<index>.jpg``."""
        return self.dir / "stills"


class OutboxSettings(Section):
    """When a queued event counts as delivered."""

    confirm: Literal["broker", "consumer"] = Field(
        "broker",
        description=(
            "'broker': delivered once the broker acknowledges it (PUBACK); 'consumer': kept until a subscriber "
            "confirms it on <base>/ack, the only guarantee that survives a broker crash (docs/reliability.md)."
        ),
    )
    resend_after: float = Field(
        300.0, ge=1.0, le=86400.0, description="With confirm = 'consumer': seconds before unconfirmed events go again."
    )


def _default_device_id() -> str:
    return socket.gethostname().split(".")[0] or "edgecam"


class Settings(BaseSettings):
    """All of edgecam's settings."""

    model_config = SettingsConfigDict(
        env_prefix="EDGECAM_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    device_id: str = Field(
        default_factory=_default_device_id,
        pattern=DEVICE_ID_PATTERN,
        description="This camera's id in topics and events; default the host name.",
    )
    camera: CameraSettings = Field(default_factory=CameraSettings, description="Frame source.")
    motion: MotionSettings = Field(default_factory=MotionSettings, description="Motion detection.")
    door: DoorSettings = Field(default_factory=DoorSettings, description="Door state and door contact.")
    capture: CaptureSettings = Field(default_factory=CaptureSettings, description="Stills.")
    illuminator: IlluminatorSettings = Field(
        default_factory=IlluminatorSettings, description="A light on a GPIO pin for stills in the dark."
    )
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings, description="When detection is held off: schedule, GPIO switch."
    )
    storage: StorageSettings = Field(default_factory=StorageSettings, description="State directory.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Delivery confirmation.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker.")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant discovery."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read, highest priority first: arguments, environment, the TOML file."""
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @property
    def door_reference_path(self) -> Path:
        """Where ``edgecam calibrate`` saves the closed-door reference and the agent reads it."""
        return self.door.reference or self.storage.dir / "door-reference.npz"

    @property
    def topic_base(self) -> str:
        """``<mqtt.topic_prefix>/<device_id>``: the root of every topic this device uses."""
        return f"{self.mqtt.topic_prefix}/{self.device_id}"
