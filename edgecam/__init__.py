"""edgecam: a private-by-design door camera agent that publishes door events and stills over MQTT."""

__version__ = "0.1.0"
