"""The few kinds of failure the agent handles, each mapped from vendor errors at its boundary."""


class EdgecamError(Exception):
    """Base class: an error with a one-line message meant for the user."""


class ConfigError(EdgecamError):
    """The configuration is invalid; the message names the key, the value and what is allowed."""


class CameraError(EdgecamError):
    """A frame source could not be opened or stopped delivering frames."""


class StorageError(EdgecamError):
    """The state directory or the outbox could not be written."""


class BrokerError(EdgecamError):
    """The MQTT broker could not be reached or refused the connection."""


class GpioError(EdgecamError):
    """A GPIO input could not be opened (the door contact, the privacy switch); the message names its setting."""
