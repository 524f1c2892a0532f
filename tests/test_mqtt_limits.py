from edgecam.config import MqttSettings
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
