"""What ``edgecam check-config`` warns of beyond what ``edgecam run`` refuses: settings that work but are unwise."""

from edgecam.config import Settings

DISTRIBUTION_HOST_NAMES = frozenset(
    {
        "raspberrypi",  # Raspberry Pi OS (pi-gen: TARGET_HOSTNAME defaults to raspberrypi)
        "dietpi",  # DietPi (dietpi.txt: AUTO_SETUP_NET_HOSTNAME=DietPi)
        "ubuntu",  # Ubuntu's Raspberry Pi and cloud images
        "debian",  # Debian's installer and cloud images
        "alarm",  # Arch Linux ARM
        "fedora",  # Fedora (systemd's fallback host name there)
        "localhost",  # no host name set (systemd's and Alpine's fallback)
        "openwrt",  # OpenWrt
        "homeassistant",  # Home Assistant OS
    }
)
"""Host names that distributions give every install (compared in lower case): as a device_id, not unique."""


def config_warnings(settings: Settings) -> list[str]:
    """One line per warning, without the ``edgecam: warning:`` prefix.

    The broker's expiry, TLS for tests, a distribution's host name as device_id, then the scene.
    """
    lines: list[str] = []
    if settings.mqtt.protocol == "3.1.1":
        lines.append(
            "mqtt.protocol is '3.1.1', which has no message expiry: the broker keeps the retained "
            "snapshot until the next still or 'edgecam forget', and stills held for away subscribers until they come "
            "(storage.broker_expiry and snapshot_expiry need MQTT 5)"
        )
    storage = settings.storage
    if settings.mqtt.protocol == "5" and storage.snapshot_expiry_s < round(storage.snapshot_expiry * 86400):
        lines.append(
            f"storage.snapshot_expiry ({storage.snapshot_expiry:g} days) is longer than the broker "
            f"keeps a still (storage.broker_expiry): the snapshot expires after {storage.snapshot_expiry_s} s"
        )
    if settings.mqtt.tls_insecure:
        lines.append("mqtt.tls_insecure is on: the broker is not verified; for tests only")
    if settings.device_id.lower() in DISTRIBUTION_HOST_NAMES:
        lines.append(
            f"device_id '{settings.device_id}' is the default host name of a Linux distribution, "
            "so other cameras may have it too, and two agents with one device_id take turns "
            "(docs/mqtt.md#connection): set device_id in the settings file, or EDGECAM_DEVICE_ID"
        )
    return lines + _scene_warnings(settings)


def _scene_warnings(settings: Settings) -> list[str]:
    """What ``check-config`` can tell of the scene without the camera: the door zone's size, the reference's look."""
    from edgecam.door_reference import load_reference
    from edgecam.viewing import DoorZoneView, judge

    view = DoorZoneView.for_settings(settings)
    threshold = settings.motion.threshold
    lines = [w.message for w in judge(view.viewing(), threshold)]
    path = settings.door_reference_path
    if path.exists():  # check_settings has read it already, or refused it
        reference = load_reference(path)
        for warning in judge(view.assess(reference.gray), threshold, relative=settings.door.confirm):
            if warning.code != "zone_too_small":
                lines.append(
                    f"the door reference {path} (made {reference.created}): {warning.message}; "
                    "then run 'edgecam calibrate' again"
                )
    return lines
