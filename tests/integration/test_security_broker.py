"""Per-device broker access (docs/security.md): the documented Mosquitto configuration and ACL, run for real.

Every broker here runs docs/mosquitto/edgecam.conf with docs/mosquitto/edgecam.acl, changed only in its port
and file paths, and every certificate is made by the openssl commands shown in docs/security.md, with a
throwaway CA per test module. The cameras are ``door-a`` and ``door-b``, the consumer is ``homeassistant``.
"""

import logging
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgecam.broker_settings import MqttSettings
from edgecam.config import StorageSettings
from edgecam.models import Topics
from edgecam.mqtt.client import new_client, tls_context
from edgecam.mqtt.publisher import Publisher
from edgecam.mqtt.subscriber import Subscriber
from edgecam.outbox import Outbox
from tests.conftest import Broker, make_door_event, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECURITY_MD = ROOT / "docs" / "security.md"
CONF = ROOT / "docs" / "mosquitto" / "edgecam.conf"
ACL = ROOT / "docs" / "mosquitto" / "edgecam.acl"

A, B, CONSUMER = "door-a", "door-b", "homeassistant"
TOPICS_A, TOPICS_B = Topics(f"edgecam/{A}"), Topics(f"edgecam/{B}")
# paho leaves the socket of a failed TLS handshake to the garbage collector, which warns about it.
UNCLOSED_TLS_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")


# The documentation, as files and as the fenced blocks of docs/security.md.


def fenced_blocks(markdown: str) -> list[str]:
    """The body of every fenced code block, with its final newline."""
    return [m.group(1) for m in re.finditer(r"^```[\w-]*\n(.*?)^```$", markdown, flags=re.M | re.S)]


def doc_block(first_line: str) -> str:
    """The one fenced block of docs/security.md that starts with ``first_line``."""
    blocks = [b for b in fenced_blocks(SECURITY_MD.read_text()) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/security.md: expected one block starting {first_line!r}, found {len(blocks)}"
    return blocks[0]


def with_value(block: str, name: str, value: str) -> str:
    """``block`` with its ``NAME=...`` line set to ``value``."""
    changed, count = re.subn(rf"^{name}=\S+", f"{name}={value}", block, count=1, flags=re.M)
    assert count == 1, f"no {name}= line in:\n{block}"
    return changed


def run_doc(block: str, cwd: Path) -> None:
    """Run shell commands from the docs as a reader would paste them into bash."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{block}\nfailed with {done.returncode}:\n{done.stderr}"


def mosquitto_config(certs: Path, acl: Path = ACL) -> str:
    """docs/mosquitto/edgecam.conf for a test broker: the certificates in ``certs``, the ACL file ``acl``.

    The Broker fixture writes its own ``listener <free port> 127.0.0.1`` first; the listener options that follow
    (cafile ... use_username_as_clientid) then apply to it, so the docs' ``listener 8883`` line is left out.
    """
    text = CONF.read_text()
    for old, new in {
        "listener 8883\n": "",
        "/etc/mosquitto/certs/": f"{certs}/",
        "/etc/mosquitto/edgecam.acl": str(acl),
    }.items():
        assert old in text, f"{CONF} no longer says {old!r}: adapt this test"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Throwaway certificates made with the docs' commands, one directory per broker certificate.

    ``ca/``: the CA, a broker certificate for ``localhost``, and ``door-a``, ``door-b``, ``homeassistant``.
    ``wrong-name/``: a broker certificate from the same CA for ``broker.example``.
    ``other-ca/``: from another CA, a broker certificate for ``localhost`` and a ``door-a`` (its ``ca.crt`` is
    ours: the broker checks clients against it).
    """
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is not installed (apt-get install openssl)")
    root = tmp_path_factory.mktemp("pki")
    ca, wrong_name, other_ca = root / "ca", root / "wrong-name", root / "other-ca"
    for folder in (ca, wrong_name, other_ca):
        folder.mkdir()
    make_ca = doc_block("(umask 077 && openssl req -x509")
    make_broker = doc_block("BROKER=")
    make_client = doc_block("DEVICE=")

    run_doc(make_ca, ca)
    run_doc(with_value(make_broker, "BROKER", "localhost"), ca)
    for name in (A, B, CONSUMER):
        run_doc(with_value(make_client, "DEVICE", name), ca)

    shutil.copy(ca / "ca.crt", wrong_name)
    shutil.copy(ca / "ca.key", wrong_name)
    run_doc(with_value(make_broker, "BROKER", "broker.example"), wrong_name)

    run_doc(make_ca, other_ca)
    run_doc(with_value(make_broker, "BROKER", "localhost"), other_ca)
    run_doc(with_value(make_client, "DEVICE", A), other_ca)
    shutil.copy(ca / "ca.crt", other_ca / "ca.crt")
    return root


def client_settings(broker: Broker, pki: Path, name: str | None, **overrides: Any) -> MqttSettings:
    """MqttSettings for a client of ``broker`` with the certificate of ``name`` (None: no certificate)."""
    certs = pki / "ca"
    values: dict[str, Any] = {"host": "localhost", "tls": True, "ca_file": certs / "ca.crt"}
    if name is not None:
        values |= {"cert_file": certs / f"{name}.crt", "key_file": certs / f"{name}.key"}
    return broker.settings(**(values | overrides))


# Clients: a consumer (edgecam's Subscriber), bare probes, publishers.


class Inbox:
    """The messages a client received, in arrival order, with a way to wait for some."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()

    def put(self, topic: str, payload: bytes, retained: bool = False) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def wait_for(self, condition: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: condition(self.messages), timeout):
                pytest.fail(f"timed out after {timeout} s; received: {[t for t, _ in self.messages]}")

    def topics(self) -> set[str]:
        with self._cond:
            return {topic for topic, _ in self.messages}


class Probe:
    """A bare MQTT 5 client made by edgecam's ``new_client`` and ``tls_context``: shows what the broker answers."""

    def __init__(self, settings: MqttSettings, client_id: str = "") -> None:
        self.settings = settings
        self.client = new_client(settings, client_id, None, tls_context(settings), reconnect=False)
        self.inbox = Inbox()
        self.disconnected = threading.Event()
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.inbox.put(m.topic, bytes(m.payload))

    def connect(self) -> None:
        self.client.connect(self.settings.host, self.settings.port, 30, clean_start=True)
        self.client.loop_start()
        self._wait(lambda: self._connack is not None, "CONNACK")
        assert self._connack is not None
        assert not self._connack.is_failure, f"the broker refused the connection: {self._connack}"

    def publish(self, topic: str, payload: bytes = b"probe", retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the broker's answer (PUBACK reason code)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self._wait(lambda: info.mid in self._acks, f"PUBACK for {topic}")
        return self._acks[info.mid]

    def subscribe(self, filters: list[str]) -> list[ReasonCode]:
        """Subscribe at QoS 1 and return the broker's answer (SUBACK reason codes)."""
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        assert mid is not None
        self._wait(lambda: mid in self._subacks, "SUBACK")
        return self._subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(condition, timeout):
                pytest.fail(f"no {what} from the broker within {timeout} s")

    def _on_connect(
        self, _c: paho.Client, _u: Any, _f: paho.ConnectFlags, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._cond:
            self._connack = reason
            self._cond.notify_all()

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: paho.DisconnectFlags, _r: ReasonCode, _p: Properties | None
    ) -> None:
        self.disconnected.set()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        with self._cond:
            self._subacks[mid] = reasons
            self._cond.notify_all()


class Clients:
    """Starts clients for a test and stops them all afterwards, the last started first."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._stops: list[Callable[[], None]] = []

    def consumer(self, settings: MqttSettings, filters: tuple[str, ...] = ("edgecam/#",)) -> Inbox:
        inbox = Inbox()
        subscriber = Subscriber(settings, list(filters), inbox.put)
        self._stops.append(subscriber.stop)
        subscriber.start()
        assert subscriber.wait_subscribed(5), "the consumer did not subscribe"
        return inbox

    def probe(self, settings: MqttSettings, client_id: str = "") -> Probe:
        probe = Probe(settings, client_id)
        self._stops.append(probe.close)
        probe.connect()
        return probe

    def publisher(self, settings: MqttSettings, device_id: str) -> tuple[Publisher, Outbox]:
        """The agent's publisher for ``device_id`` and the outbox it drains (closed after the test)."""
        storage = StorageSettings(dir=self.tmp_path / device_id / "state")
        outbox = Outbox(storage)
        self._stops.append(outbox.close)
        publisher = Publisher(settings, Topics(f"edgecam/{device_id}"), storage, device_id)
        self._stops.append(publisher.stop)
        publisher.start()
        return publisher, outbox

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    made = Clients(tmp_path)
    yield made
    made.close()


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Broker], pki: Path) -> Broker:
    """Mosquitto with the docs' configuration and ACL, presenting a certificate for ``localhost``."""
    return mosquitto_factory(config=mosquitto_config(pki / "ca"))


def device_topics(topics: Topics) -> list[str]:
    """Every topic a camera publishes on: each topic of ``Topics`` but the two it reads, and a still's."""
    reads = {"commands", "ack", "detect_command"}
    names = [name for name, value in vars(Topics).items() if isinstance(value, property) and name not in reads]
    return [str(getattr(topics, name)) for name in names] + [topics.still("9c1f5a0e", 1)]


def messages(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level and text in r.getMessage()]


# The tests.


def test_the_docs_show_the_mosquitto_files_verbatim_and_their_commands_make_usable_keys(pki: Path) -> None:
    blocks = fenced_blocks(SECURITY_MD.read_text())
    assert CONF.read_text() in blocks, "docs/security.md must show docs/mosquitto/edgecam.conf verbatim"
    assert ACL.read_text() in blocks, "docs/security.md must show docs/mosquitto/edgecam.acl verbatim"
    for name in (A, B, CONSUMER):
        key = pki / "ca" / f"{name}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, "edgecam refuses a key that others may read"
        subject = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-in", str(pki / "ca" / f"{name}.crt")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert subject.strip() == f"subject=CN = {name}", "the CN is the device id: the broker's user name"


def test_a_camera_delivers_its_events_and_availability_to_a_consumer(
    broker: Broker, pki: Path, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam")
    consumer = clients.consumer(client_settings(broker, pki, CONSUMER))
    publisher, outbox = clients.publisher(client_settings(broker, pki, A), A)
    door = make_door_event(TOPICS_A, A, n_stills=2)
    for event, still in door.rows:
        outbox.append(event, still)
    publisher.wake()

    assert publisher.wait_idle(10)
    consumer.wait_for(lambda m: sum(t == TOPICS_A.events for t, _ in m) == 4)
    got = dict(consumer.messages)
    for still in door.stills:
        assert got[TOPICS_A.still(door.event_id, still.index)] == still.jpeg
    assert got[TOPICS_A.snapshot] == door.stills[-1].jpeg
    assert got[TOPICS_A.availability] == b"online"
    assert got[TOPICS_A.motion] == b"OFF"
    publisher.stop()
    consumer.wait_for(lambda m: m[-1] == (TOPICS_A.availability, b"offline"))
    assert not messages(caplog, "rejected"), "the ACL lets a camera publish everything it publishes"
    assert outbox.depth() == 0


def test_the_last_will_of_a_camera_reaches_consumers(broker: Broker, pki: Path, clients: Clients) -> None:
    consumer = clients.consumer(client_settings(broker, pki, CONSUMER), (TOPICS_A.availability,))
    camera = Probe(client_settings(broker, pki, A))
    camera.client.will_set(TOPICS_A.availability, "offline", qos=1, retain=True)  # as the publisher does
    camera.connect()
    assert not camera.publish(TOPICS_A.availability, b"online", retain=True).is_failure
    sock = camera.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the network goes, no DISCONNECT: the broker publishes the will
    consumer.wait_for(lambda m: [p for _, p in m] == [b"online", b"offline"])
    camera.close()


def test_a_camera_writes_its_own_topics_and_nothing_else(broker: Broker, pki: Path, clients: Clients) -> None:
    consumer = clients.consumer(client_settings(broker, pki, CONSUMER))
    camera = clients.probe(client_settings(broker, pki, A))
    refused = [
        *device_topics(TOPICS_B),  # another camera's states, events and stills
        f"{TOPICS_B.base}/set/detect",
        TOPICS_B.ack,
        f"{TOPICS_A.base}/set/detect",  # commands and confirmations come from consumers, even to itself
        TOPICS_A.ack,
        f"{TOPICS_A.base}/anything-else",
        "homeassistant/status",
        f"homeassistant/sensor/{B}/fps/config",  # another camera's Home Assistant config
    ]
    answers = {topic: str(camera.publish(topic)) for topic in refused}
    assert answers == dict.fromkeys(refused, "Not authorized")
    discovery = [f"homeassistant/sensor/{A}/fps/config", f"homeassistant/device/{A}/config"]
    assert [str(camera.publish(topic)) for topic in discovery] == ["No matching subscribers"] * 2
    own = device_topics(TOPICS_A)
    answers = {topic: str(camera.publish(topic)) for topic in own}
    assert all(answer in ("Success", "No matching subscribers") for answer in answers.values()), (
        f"{answers}: a topic of edgecam.models.Topics is missing from docs/mosquitto/edgecam.acl"
    )
    consumer.wait_for(lambda m: own[-1] in {t for t, _ in m})  # sent after every refused one
    assert consumer.topics() == set(own)


def test_a_camera_reads_only_its_own_commands_and_confirmations(broker: Broker, pki: Path, clients: Clients) -> None:
    other = clients.probe(client_settings(broker, pki, B))
    assert not other.publish(TOPICS_B.availability, b"online", retain=True).is_failure
    consumer_settings = client_settings(broker, pki, CONSUMER)
    consumer = clients.probe(consumer_settings)
    camera = clients.probe(client_settings(broker, pki, A))
    # Mosquitto 2.0 grants any subscription and checks each message against the ACL on delivery.
    camera.subscribe([TOPICS_B.commands, TOPICS_B.ack, "edgecam/#", "#", TOPICS_A.commands, TOPICS_A.ack])

    for topic in (f"{TOPICS_B.base}/set/detect", TOPICS_B.ack, f"{TOPICS_A.base}/set/detect"):
        assert str(consumer.publish(topic, b"OFF")) in ("Success", "No matching subscribers")
    camera.inbox.wait_for(lambda m: f"{TOPICS_A.base}/set/detect" in {t for t, _ in m})  # sent last
    assert camera.inbox.topics() == {f"{TOPICS_A.base}/set/detect"}, "nothing of door-b, retained or not"


def test_a_camera_cannot_take_over_another_cameras_session(broker: Broker, pki: Path, clients: Clients) -> None:
    camera = clients.probe(client_settings(broker, pki, A), client_id=f"edgecam-{A}")
    clients.probe(client_settings(broker, pki, B), client_id=f"edgecam-{A}")  # the broker uses the CN instead
    assert not camera.publish(TOPICS_A.motion, b"ON").is_failure, "door-a is still connected"
    assert not camera.disconnected.is_set()


@UNCLOSED_TLS_SOCKET
@pytest.mark.parametrize("issuer", [None, "other-ca"], ids=["no-certificate", "certificate-from-another-ca"])
def test_a_client_without_a_certificate_from_the_ca_is_refused(
    broker: Broker, pki: Path, clients: Clients, caplog: pytest.LogCaptureFixture, issuer: str | None
) -> None:
    if issuer is None:
        settings = client_settings(broker, pki, None)
    else:
        certs = pki / issuer
        settings = client_settings(broker, pki, None, cert_file=certs / f"{A}.crt", key_file=certs / f"{A}.key")
    context = tls_context(settings)
    assert context is not None
    with (
        socket.create_connection((settings.host, settings.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=settings.host) as tls,
        pytest.raises(ssl.SSLError, match="certificate required|unknown ca|handshake failure"),
    ):
        tls.recv(1)  # TLS 1.3: the broker checks the client's certificate after the client's handshake is done

    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    publisher, _ = clients.publisher(settings, A)
    assert wait_until(lambda: len(messages(caplog, f"broker localhost:{broker.port}")) >= 2, 10)
    assert not publisher.connected
    assert not messages(caplog, "connected to broker", logging.INFO)


@UNCLOSED_TLS_SOCKET
@pytest.mark.parametrize(
    ("certs", "why"),
    [
        ("wrong-name", "Hostname mismatch, certificate is not valid for 'localhost'"),
        ("other-ca", "unable to get local issuer certificate"),
    ],
    ids=["wrong-host-name", "other-ca"],
)
def test_a_broker_that_cannot_prove_its_name_is_refused(
    mosquitto_factory: Callable[..., Broker],
    pki: Path,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
    certs: str,
    why: str,
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    impostor = mosquitto_factory(config=mosquitto_config(pki / certs))
    publisher, _ = clients.publisher(client_settings(impostor, pki, A), A)
    assert wait_until(lambda: bool(messages(caplog, "is not trusted")), 10)
    publisher.stop()
    (line, *_) = messages(caplog, "is not trusted")
    assert line.startswith(f"mqtt: TLS: the certificate of broker localhost:{impostor.port} is not trusted: {why}")
    assert "; retrying in " in line
    assert not publisher.connected
    assert not messages(caplog, "connected to broker", logging.INFO)


def test_tls_insecure_connects_to_a_wrong_name_but_warns_on_every_connect(
    mosquitto_factory: Callable[..., Broker], pki: Path, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgecam.mqtt")
    impostor = mosquitto_factory(config=mosquitto_config(pki / "wrong-name"))
    publisher, _ = clients.publisher(client_settings(impostor, pki, A, tls_insecure=True), A)
    assert wait_until(lambda: publisher.connected, 10)
    warning = f"mqtt: mqtt.tls_insecure is on: the certificate of broker localhost:{impostor.port} is NOT verified"
    assert [m for m in messages(caplog, "tls_insecure") if m.startswith(warning)]

    impostor.stop()
    assert wait_until(lambda: not publisher.connected, 5)
    impostor.start()
    assert wait_until(lambda: publisher.connected, 10)
    assert len(messages(caplog, warning)) >= 2, "warned again on the reconnect"


def test_a_blocked_camera_can_no_longer_publish(
    mosquitto_factory: Callable[..., Broker], pki: Path, clients: Clients, tmp_path: Path
) -> None:
    acl = tmp_path / "blocked.acl"
    acl.write_text(ACL.read_text() + "\n" + doc_block("user front-door").replace("front-door", B))
    blocking = mosquitto_factory(config=mosquitto_config(pki / "ca", acl))
    blocked = clients.probe(client_settings(blocking, pki, B))
    assert str(blocked.publish(TOPICS_B.events)) == "Not authorized"
    assert str(blocked.publish(TOPICS_B.availability)) == "Not authorized"
    other = clients.probe(client_settings(blocking, pki, A))
    assert not other.publish(TOPICS_A.events).is_failure


def test_a_camera_whose_certificate_names_another_device_warns_without_flooding(
    broker: Broker, pki: Path, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.mqtt")
    publisher, outbox = clients.publisher(client_settings(broker, pki, A), B)  # device_id door-b, certificate door-a
    assert wait_until(lambda: bool(messages(caplog, "Not authorized")), 10)
    assert not wait_until(lambda: len(messages(caplog, "Not authorized")) > 20, 1.0)
    # An event the broker refuses stays in the outbox, and the agent backs off instead of hammering the broker.
    door = make_door_event(Topics(f"edgecam/{B}"), B, n_stills=0)
    for event, still in door.rows:
        outbox.append(event, still)
    publisher.wake()
    assert wait_until(lambda: bool(messages(caplog, "it stays in the outbox")), 10)
    assert outbox.depth() == 2
    # Backing off 0.2, 0.4, 0.8, then 1 s (mqtt.reconnect_max here): a handful of tries in 2 s, not thousands.
    assert not wait_until(lambda: len(messages(caplog, "it stays in the outbox")) > 6, 2.0)


def test_the_running_agent_shows_its_password_and_key_nowhere(
    broker: Broker, pki: Path, clients: Clients, tmp_path: Path
) -> None:
    password = "door-a-pw-" + "7f3c9e1d2b"
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    key = (pki / "ca" / f"{A}.key").read_text()
    key_lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
    consumer = clients.consumer(client_settings(broker, pki, CONSUMER), (f"{TOPICS_A.base}/#",))
    settings = client_settings(broker, pki, A)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")} | {
        "EDGECAM_DEVICE_ID": A,
        "EDGECAM_STORAGE__DIR": str(tmp_path / "state"),
        "EDGECAM_MQTT__HOST": settings.host,
        "EDGECAM_MQTT__PORT": str(settings.port),
        "EDGECAM_MQTT__TLS": "true",
        "EDGECAM_MQTT__CA_FILE": str(settings.ca_file),
        "EDGECAM_MQTT__CERT_FILE": str(settings.cert_file),
        "EDGECAM_MQTT__KEY_FILE": str(settings.key_file),
        "EDGECAM_MQTT__USERNAME": A,
        "EDGECAM_MQTT__PASSWORD_FILE": str(secret),
        "EDGECAM_CAMERA__SIMULATED__FIRST_OPENING": "2.5",
    }
    agent = subprocess.Popen([sys.executable, "-m", "edgecam", "-v", "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        consumer.wait_for(lambda received: any(topic == TOPICS_A.events for topic, _ in received), 30)
        seen = {
            "argv": Path(f"/proc/{agent.pid}/cmdline").read_bytes().decode(errors="replace"),
            "environment": Path(f"/proc/{agent.pid}/environ").read_bytes().decode(errors="replace"),
        }
        agent.terminate()
        seen["log"] = agent.communicate(timeout=20)[1]
        checked = subprocess.run(
            [sys.executable, "-m", "edgecam", "check-config"], env=env, capture_output=True, text=True, check=True
        )
        seen["check-config"] = checked.stdout + checked.stderr
    finally:
        agent.kill()
        agent.communicate()
    assert "mqtt: connected to broker localhost" in seen["log"]
    for where, text in seen.items():
        assert password not in text, f"the password is in the {where}"
        assert not [line for line in key_lines if line in text], f"key material is in the {where}"
