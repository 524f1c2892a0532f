"""A 3-node nats-server JetStream cluster on loopback speaking MQTT 3.1.1, run from docs/nats/node.conf.

Every node runs the shipped docs/nats/node.conf unchanged, told which node it is by environment variables
(NODE, HOST, CLIENT_PORT, CLUSTER_PORT, ROUTES, MQTT_PORT, STORE_DIR). The node.conf is copied into the
cluster's directory next to its devices.conf: empty (anyone may connect and do anything), or with
``devices=True`` docs/nats/devices.conf with each bcrypt hash replaced by a fresh plain test password
(``NatsCluster.password(user)``).

    python -m tests.nats_cluster --dir /tmp/nats [--devices]

runs one in the foreground and prints its MQTT hosts.
"""

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgecam.broker_settings import MqttSettings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_CONF = ROOT / "docs" / "nats" / "node.conf"
DEVICES_CONF = ROOT / "docs" / "nats" / "devices.conf"
HOST = "127.0.0.1"
PROBE_USER = "homeassistant"
"""The devices.conf user that checks a node is ready (a consumer: it may publish under homeassistant/)."""
PROBE_TOPIC = "homeassistant/edgecam-ready-probe"
"""Where readiness is checked, outside ``edgecam/``; a subscriber to it sees empty messages on every start."""
_PASSWORD = re.compile(r'(user: (\S+)\n\s*password: )"[^"]*"')


class _PortTaken(RuntimeError):
    """A node exited because a port chosen for it was taken meanwhile."""


def nats_server() -> str:
    """The nats-server executable; RuntimeError naming the package to install when there is none."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nats-server is not installed: run apt-get install nats-server (Debian 12: 2.9.10)")
    return found


class NatsCluster:
    """``nodes`` nats-server processes routed into one JetStream cluster, each with an MQTT port on 127.0.0.1.

    Ports are fixed at construction, so a node restarted with ``restart(i)`` comes back on the same ports with the
    same JetStream store.
    """

    def __init__(self, workdir: Path, nodes: int = 3, devices: bool = False) -> None:
        self.dir = workdir
        self.nodes = nodes
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "node.conf"
        shutil.copyfile(NODE_CONF, self.conf)
        self._passwords: dict[str, str] = {}
        devices_text = ""
        if devices:

            def fresh(match: re.Match[str]) -> str:
                self._passwords[match.group(2)] = secrets.token_hex(12)
                return f'{match.group(1)}"{self._passwords[match.group(2)]}"'

            devices_text = _PASSWORD.sub(fresh, DEVICES_CONF.read_text())
        (workdir / "devices.conf").write_text(devices_text)
        self._client_ports: list[int] = []
        self._cluster_ports: list[int] = []
        self._mqtt_ports: list[int] = []
        self._choose_ports()
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._log_offsets = [0] * nodes
        """Where each node's log was when it was last started."""

    def _choose_ports(self) -> None:
        ports: list[int] = []
        while len(ports) < 3 * self.nodes:
            if (port := free_port()) not in ports:
                ports.append(port)
        n = self.nodes
        self._client_ports, self._cluster_ports, self._mqtt_ports = ports[:n], ports[n : 2 * n], ports[2 * n :]

    @property
    def hosts(self) -> list[str]:
        """``"127.0.0.1:<mqtt port>"`` of every node, in node order (for ``mqtt.hosts``)."""
        return [f"{HOST}:{port}" for port in self._mqtt_ports]

    @property
    def mqtt_ports(self) -> list[int]:
        """The MQTT port of every node, in node order."""
        return list(self._mqtt_ports)

    @property
    def users(self) -> list[str]:
        """The users of devices.conf (empty without ``devices``)."""
        return list(self._passwords)

    def password(self, user: str) -> str:
        """The test password of a devices.conf user (KeyError for an unknown one)."""
        return self._passwords[user]

    def password_file(self, user: str) -> Path:
        """A mode 0600 file holding ``user``'s test password, for ``settings(i, username=user, password_file=...)``."""
        path = self.dir / "passwords" / user
        path.parent.mkdir(exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(self.password(user))
        return path

    def pids(self) -> list[int]:
        """The process ids of the nodes that are alive."""
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def running(self, i: int) -> bool:
        """Node ``i``'s process is alive."""
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def log_path(self, i: int) -> Path:
        """Where node ``i`` writes its log."""
        return self.dir / f"node-{i}.log"

    def log_text(self, i: int) -> str:
        """Node ``i``'s log so far."""
        path = self.log_path(i)
        return path.read_text(errors="replace") if path.exists() else ""

    def settings(self, i: int, **overrides: Any) -> MqttSettings:
        """MqttSettings for node ``i`` over MQTT 3.1.1 (all NATS 2.9 speaks), with quick reconnects."""
        values: dict[str, Any] = {
            "host": HOST,
            "port": self._mqtt_ports[i],
            "protocol": "3.1.1",
            "reconnect_min": 0.1,
            "reconnect_max": 1.0,
        }
        values.update(overrides)
        return MqttSettings(**values)

    def environment(self, i: int) -> dict[str, str]:
        """The variables docs/nats/node.conf reads for node ``i``."""
        routes = ", ".join(f"nats://{HOST}:{port}" for port in self._cluster_ports)
        return {
            "NODE": f"nats-{i}",
            "HOST": HOST,
            "CLIENT_PORT": str(self._client_ports[i]),
            "CLUSTER_PORT": str(self._cluster_ports[i]),
            "ROUTES": f"[{routes}]",
            "MQTT_PORT": str(self._mqtt_ports[i]),
            "STORE_DIR": str(self.dir / f"store-{i}"),
        }

    def _spawn(self, i: int) -> None:
        assert not self.running(i), f"node {i} is already running"
        env = {**os.environ, **self.environment(i)}
        self._log_offsets[i] = self.log_path(i).stat().st_size if self.log_path(i).exists() else 0
        with self.log_path(i).open("ab") as log:
            self._procs[i] = subprocess.Popen(
                [nats_server(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def start(self, timeout: float = 30.0) -> None:
        """Start every node; return once each takes an MQTT 3.1.1 session and a retained QoS 1 message.

        RuntimeError with the nodes' log tails when a node exits or is not ready within ``timeout`` seconds. A
        free port taken by another process before a node bound it (a route's outgoing connection, another test)
        makes it start again on new ports, twice at most.
        """
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            for i in range(self.nodes):
                self._spawn(i)
            try:
                for i in range(self.nodes):
                    self._wait_ready(i, deadline)
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
                self._choose_ports()
            else:
                return

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start node ``i`` again, same ports and store, and wait until it takes MQTT as in ``start``."""
        self._spawn(i)
        self._wait_ready(i, time.monotonic() + timeout)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: it vanishes without closing anything or telling the others."""
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SIGTERM every node and wait (SIGKILL after 10 s)."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self._procs):
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill(i)

    def _wait_ready(self, i: int, deadline: float) -> None:
        why = "not started"
        while True:
            proc = self._procs[i]
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                if "address already in use" in self.log_text(i)[self._log_offsets[i] :]:
                    raise _PortTaken(f"nats-server node {i} found a port taken:\n{self._tails()}")
                raise RuntimeError(f"nats-server node {i} exited with {code}:\n{self._tails()}")
            why = self._probe(i)
            if not why:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server node {i} is not ready for MQTT ({why}):\n{self._tails()}")
            time.sleep(0.2)

    def _probe(self, i: int) -> str:
        """'' when node ``i`` keeps a session and acknowledges a retained QoS 1 message, else what failed."""
        try:
            socket.create_connection((HOST, self._mqtt_ports[i]), timeout=0.5).close()
        except OSError as err:
            return f"MQTT port {self._mqtt_ports[i]}: {err}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            f"edgecam-ready-probe-{i}",  # one kept session per node, not one per probe
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            connected.set()

        client.on_connect = on_connect
        if self._passwords:
            client.username_pw_set(PROBE_USER, self._passwords[PROBE_USER])
        try:
            client.connect(HOST, self._mqtt_ports[i], 10)
        except OSError as err:
            return f"connect: {err}"
        client.loop_start()
        try:
            if not connected.wait(5) or refused:
                return f"CONNACK: {refused or 'none in 5 s'}"
            info = client.publish(PROBE_TOPIC, b"", qos=1, retain=True)  # empty retained: stores nothing
            info.wait_for_publish(5)
        except (RuntimeError, ValueError) as err:
            return f"publish: {err}"
        else:
            return "" if info.is_published() else "no PUBACK for a retained QoS 1 message in 5 s"
        finally:
            client.disconnect()
            client.loop_stop()

    def _tails(self, lines: int = 30) -> str:
        parts = []
        for i in range(self.nodes):
            tail = self.log_text(i).splitlines()[-lines:]
            parts.append(f"--- node {i} ({self.log_path(i)}) ---\n" + "\n".join(tail))
        return "\n".join(parts)


def main() -> int:
    """Run a cluster in the foreground until Ctrl-C, printing its MQTT hosts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, required=True, help="where the nodes keep their config, stores, logs")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--devices", action="store_true", help="with docs/nats/devices.conf and test passwords")
    args = parser.parse_args()
    cluster = NatsCluster(args.dir, args.nodes, args.devices)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        cluster.start()
        print("mqtt hosts:", " ".join(cluster.hosts))
        for user in cluster.users:
            print(f"user {user} password {cluster.password(user)}")
        sys.stdout.flush()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
