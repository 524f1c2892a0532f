import json
import logging

import pytest

from edgecam.broker_settings import MqttSettings
from edgecam.models import Topics
from edgecam.mqtt.limits import LOSSES_TO_SUSPECT, PACKET_TOO_LARGE, SOON, PacketLimit

IN_FLIGHT = [(7, 300_000)]
"""The still of row 7 in flight, a 300 kB PUBLISH packet."""


def limit() -> PacketLimit:
    return PacketLimit(MqttSettings(), Topics("edgecam/front"), None, lambda: None)


def test_connections_dropped_soon_after_connecting_with_one_still_in_flight_reveal_an_unstated_limit() -> None:
    packets = limit()
    for _ in range(LOSSES_TO_SUSPECT - 1):
        packets.connection_lost(IN_FLIGHT, 0.5, 0)
        assert packets.limit(None) is None
    packets.connection_lost(IN_FLIGHT, 0.5, 0)
    assert packets.limit(None) == 150_000


def test_a_long_connection_lost_with_a_still_in_flight_is_a_network_fault_not_a_limit() -> None:
    packets = limit()
    for _ in range(2 * LOSSES_TO_SUSPECT):
        packets.connection_lost(IN_FLIGHT, 10 * SOON, 0)  # a Wi-Fi drop during an event, again and again
    assert packets.limit(None) is None


def test_a_broker_that_says_packet_too_large_is_believed_at_once() -> None:
    packets = limit()
    packets.connection_lost(IN_FLIGHT, 10 * SOON, PACKET_TOO_LARGE)
    assert packets.limit(None) == 150_000
    assert packets.limit(100_000) == 100_000  # a stated limit below it wins


def test_an_event_json_over_the_limit_is_said_once_not_on_every_look(caplog: pytest.LogCaptureFixture) -> None:
    packets = limit()
    event = json.dumps({"type": "start", "seq": 2, "pad": "x" * 380}).encode()
    assert not any([packets.event_fits(300, 2, event) for _ in range(20)])  # the publisher looks once a second
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(told) == 1, told
    assert f"event seq=2 ({len(event)} bytes of JSON) does not fit the broker's limit of 300 bytes" in told[0]
    assert "mqtt.max_packet_size" in told[0]


def test_once_a_limit_is_found_out_one_more_loss_with_a_jpeg_under_it_lowers_it_without_a_second_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    packets = limit()
    for _ in range(LOSSES_TO_SUSPECT):
        packets.connection_lost([(0, 300_000)], 0.5, 0)  # the snapshot set again on connect
    assert packets.limit(None) == 150_000
    packets.connection_lost([(0, 149_000)], 0.5, 0)  # re-encoded under that: the broker has shown what it does
    assert packets.limit(None) == 74_500
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "with the snapshot (a 300000-byte packet) in flight" in warnings[0]
    assert "mqtt.max_packet_size" in warnings[0]
    assert "74500" in caplog.text
