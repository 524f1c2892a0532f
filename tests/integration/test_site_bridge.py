"""The site bridge of docs/fleet.md: docs/mosquitto/site-bridge.conf run for real between the agent and a central
Mosquitto, the uplink cut while 300 kB stills are published. The site broker acknowledges what its bridge queue
then drops: with ``outbox.confirm = "broker"`` events are lost; with ``"consumer"`` every one arrives."""

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from edgecam.config import OutboxSettings, Settings
from edgecam.listen import run_listen
from tests.conftest import Broker, Collector, DoorEvent, wait_until
from tests.test_mqtt_publisher import DEVICE, TOPICS, Rig

pytestmark = pytest.mark.integration

SITE_CONF = Path(__file__).resolve().parents[2] / "docs" / "mosquitto" / "site-bridge.conf"
QUEUED_BYTES = 2_000_000
"""The site's bridge queue in the test: about 3 stills of 300 kB with their snapshots (the docs' 100 MB would
take minutes to fill)."""
QUEUED_MESSAGES = 1000
STILL_BYTES = 300_000
DOORS, STILLS = 8, 3
"""Door events published while the uplink is down, and stills in each: 7.2 MB of stills, as many again of
snapshots (each still is also the retained ``snapshot``)."""
STATE = "$SYS/broker/connection/site-1/state"
"""The bridge's own notification on the site broker: 1 connected, 0 not."""
DROPPED = "$SYS/broker/publish/messages/dropped"


def site_config(path: Path, port: int, state_dir: Path, central: Broker) -> str:
    """docs/mosquitto/site-bridge.conf for a test: loopback ports and paths, small queues, quick bridge restarts.

    ``sys_interval 1`` has the site publish its drop counter every second (default 10).
    """
    text = path.read_text()
    for old, new in {
        "listener 1883\n": f"listener {port} 127.0.0.1\n",
        "persistence_location /var/lib/mosquitto/\n": f"persistence_location {state_dir}/\n",
        "max_queued_messages 10000\n": f"max_queued_messages {QUEUED_MESSAGES}\n",
        "max_queued_bytes 100000000\n": f"max_queued_bytes {QUEUED_BYTES}\nsys_interval 1\n",
        "address central.example:8883\n": f"address {central.host}:{central.port}\n",
        "restart_timeout 5 30\n": "restart_timeout 1\n",
    }.items():
        assert old in text, f"{path} no longer says {old!r}: adapt this test"
        text = text.replace(old, new)
    text += "log_dest stdout\nlog_type all\n"
    if os.geteuid() == 0:
        text += "user root\n"  # do not drop to the 'mosquitto' user, who cannot write the test's folders
    return text


@dataclass
class Site:
    """A central broker, a site broker bridged to it, an agent on the site, a subscriber on the central."""

    central: Broker
    site: Broker
    state: Collector
    """On the site: the bridge's state and the drop counter."""
    received: Collector
    """On the central broker, with a session it keeps across the outage: events and stills."""
    rig: Rig

    def bridge_is(self, value: bytes) -> bool:
        states = self.state.on(STATE)
        return bool(states) and states[-1].payload == value

    def dropped(self) -> int:
        counts = self.state.on(DROPPED)
        return int(counts[-1].payload) if counts else 0


@pytest.fixture
def site(mosquitto_factory: Callable[..., Broker], collector_factory: Callable[..., Collector], rig: Rig) -> Site:
    central = mosquitto_factory(persistence=True)
    site = mosquitto_factory(start=False)
    site.conf.write_text(site_config(SITE_CONF, site.port, site.dir, central))
    site.start()
    state = collector_factory(site, (STATE, DROPPED))
    received = collector_factory(central, (TOPICS.events, f"{TOPICS.base}/events/+/stills/+"), True)
    setup = Site(central, site, state, received, rig)
    assert wait_until(lambda: setup.bridge_is(b"1"), 10), site.log_text()
    return setup


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


@pytest.fixture
def listen_ack(site: Site, tmp_path: Path) -> Iterator[None]:
    """``edgecam listen --ack`` on the central broker, in a thread: confirms every event it has whole."""
    stop = threading.Event()
    settings = Settings(device_id=DEVICE, mqtt=site.central.settings())
    thread = threading.Thread(target=run_listen, args=(settings, tmp_path / "received", stop, None, DEVICE, True))
    thread.start()
    yield
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "listen did not return"


@dataclass(frozen=True)
class Outage:
    """What was published while the uplink was down."""

    doors: list[DoorEvent]
    seqs: list[int]
    """The outbox seq of every event message (start, stills, end) of ``doors``."""


def cut_uplink_and_publish(setup: Site, delivery: OutboxSettings) -> Outage:
    """One door event end to end, the central broker stopped, door events with large stills, the central back.

    Returns once the site has dropped messages of the door events published meanwhile and its bridge is up again.
    """
    publisher = setup.rig.publisher(setup.site.settings(), delivery)
    before = setup.rig.append(setup.rig.door_event(n_stills=1), publisher)
    setup.received.wait_for(lambda c: before[-1] in c.seqs(TOPICS))
    assert publisher.wait_idle(10), "the first event is delivered (and, with a consumer, confirmed)"

    setup.central.stop()  # Mosquitto saves the sessions: the subscriber's, the bridge's and listen's
    assert wait_until(lambda: setup.bridge_is(b"0"), 10), setup.site.log_text()
    doors = [setup.rig.door_event(n_stills=STILLS, jpeg_size=STILL_BYTES) for _ in range(DOORS)]
    seqs = [seq for door in doors for seq in setup.rig.append(door, publisher)]
    assert wait_until(lambda: setup.dropped() > 0, 10), "the site's bridge queue overflows"
    if delivery.confirm == "broker":
        assert publisher.wait_idle(10), "the site broker has acknowledged every message"
        assert setup.rig.outbox.depth() == 0, "so the agent holds nothing to send again"
    setup.central.start()
    assert wait_until(lambda: setup.bridge_is(b"1"), 10), setup.site.log_text()
    return Outage(doors, seqs)


def missing(received: Collector, outage: Outage) -> tuple[list[int], list[tuple[str, int]]]:
    """The seqs of event messages, and the (event_id, index) of stills, never received (a still with its bytes)."""
    seqs = set(received.seqs(TOPICS))
    stills = [
        (door.event_id, still.index)
        for door in outage.doors
        for still in door.stills
        if still.jpeg not in {m.payload for m in received.on(TOPICS.still(door.event_id, still.index))}
    ]
    return [seq for seq in outage.seqs if seq not in seqs], stills


def arrived(received: Collector, seq: int) -> bool:
    return seq in received.seqs(TOPICS)


def summary(confirm: str, site: Site, outage: Outage, received: Collector) -> str:
    lost_events, lost_stills = missing(received, outage)
    n_stills = sum(len(door.stills) for door in outage.doors)
    all_seqs = received.seqs(TOPICS)
    return (
        f"confirm={confirm}: lost {len(lost_events)}/{len(outage.seqs)} event messages, "
        f"{len(lost_stills)}/{n_stills} stills of {STILL_BYTES // 1000} kB; {len(all_seqs) - len(set(all_seqs))} "
        f"repeats; the site dropped {site.dropped()} messages (max_queued_bytes {QUEUED_BYTES}, "
        f"max_queued_messages {QUEUED_MESSAGES})"
    )


def test_with_broker_confirmation_the_site_loses_what_it_acknowledged(site: Site) -> None:
    outage = cut_uplink_and_publish(site, OutboxSettings(confirm="broker"))
    # A door event after the outage: once one arrives, so has whatever the bridge kept in its queue (the first
    # may meet the queue still full, and be dropped too).
    for _ in range(3):
        after = site.rig.append(site.rig.door_event(n_stills=1), site.rig.publishers[-1])
        if wait_until(partial(arrived, site.received, after[-1]), 10):
            break
    else:
        pytest.fail(f"no door event arrives after the outage:\n{site.site.log_text()[-3000:]}")
    print(summary("broker", site, outage, site.received))
    lost_events, lost_stills = missing(site.received, outage)
    assert lost_events, "with confirm = 'broker' the overflowing bridge queue loses events"
    assert lost_stills


@pytest.mark.usefixtures("listen_ack")
def test_with_consumer_confirmation_every_event_and_still_arrives(site: Site) -> None:
    outage = cut_uplink_and_publish(site, OutboxSettings(confirm="consumer", resend_after=1.0))
    assert wait_until(lambda: site.rig.outbox.depth() == 0, 40), f"{site.rig.outbox.depth()} events unconfirmed"
    print(summary("consumer", site, outage, site.received))
    assert missing(site.received, outage) == ([], [])
