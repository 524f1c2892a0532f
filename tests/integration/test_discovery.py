"""Home Assistant discovery as the agent publishes it on a real Mosquitto (with Home Assistant: test_homeassistant)."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from tests.conftest import Broker, Collector, wait_until
from tests.integration.test_agent import BASE, DEVICE
from tests.integration.test_reliability import Child

pytestmark = pytest.mark.integration

CONFIGS = "homeassistant/+/+/+/config"


def retained_configs(broker: Broker, collector_factory: Callable[..., Collector], node: str) -> dict[str, bytes]:
    """The retained configs under ``node`` a new subscriber gets (its own unique topic ends the retained batch)."""
    marker = f"homeassistant/sensor/{node}/marker/config"
    seen = collector_factory(broker, (f"homeassistant/+/{node}/+/config", f"homeassistant/device/{node}/config"))
    publish.single(marker, b"", hostname=broker.host, port=broker.port, qos=1)
    seen.wait_for(lambda c: bool(c.on(marker)))
    return {m.topic: m.payload for m in seen.received if m.retain and m.payload}


def test_the_agent_announces_itself_again_on_birth_and_removes_stale_configs(
    mosquitto: Broker, run_agent: Callable[..., Child], collector_factory: Callable[..., Collector]
) -> None:
    stale = f"homeassistant/sensor/{DEVICE}/from_an_old_version/config"
    publish.single(stale, b'{"name": "old"}', retain=True, hostname=mosquitto.host, port=mosquitto.port, qos=1)
    seen = collector_factory(mosquitto, (CONFIGS, f"{BASE}/stats"))
    agent = run_agent(mosquitto, EDGECAM_MQTT__STATS_INTERVAL="1")
    agent.wait_log("mqtt: connected", 10)

    seen.wait_for(lambda c: any(m.payload == b"" for m in c.on(stale)))
    configs = retained_configs(mosquitto, collector_factory, DEVICE)
    assert stale not in configs
    assert len(configs) == 13, sorted(configs)  # no door entity: no reference, no contact
    assert {json.loads(p)["device"]["identifiers"][0] for p in configs.values()} == {f"edgecam_{DEVICE}"}

    seen.wait_for(lambda c: any(json.loads(m.payload).get("fps") for m in c.on(f"{BASE}/stats")))
    stats = json.loads(seen.on(f"{BASE}/stats")[-1].payload)
    assert {"uptime_s", "fps", "detect_ms", "time_synced", "last_event"} <= set(stats)

    announced = len(seen.on(next(iter(configs))))
    publish.single("homeassistant/status", b"online", hostname=mosquitto.host, port=mosquitto.port, qos=1)
    seen.wait_for(lambda c: all(len(c.on(topic)) > announced for topic in configs))
    agent.wait_log("Home Assistant came online", 5)


def test_a_new_device_id_removes_the_old_device_and_forget_ha_removes_the_new_one(
    mosquitto: Broker, run_agent: Callable[..., Child], collector_factory: Callable[..., Collector], tmp_path: Path
) -> None:
    old = run_agent(mosquitto, EDGECAM_DEVICE_ID="old-name")
    old.wait_log("mqtt: connected", 10)
    assert wait_for_configs(mosquitto, collector_factory, "old-name")
    old.stop()

    new = run_agent(mosquitto, EDGECAM_HOMEASSISTANT__DISCOVERY="device")
    assert wait_for_configs(mosquitto, collector_factory, DEVICE)
    assert retained_configs(mosquitto, collector_factory, "old-name") == {}
    assert list(retained_configs(mosquitto, collector_factory, DEVICE)) == [f"homeassistant/device/{DEVICE}/config"]
    new.stop()

    forgot = forget_ha(mosquitto, tmp_path)
    assert forgot.returncode == 0, forgot.stderr
    assert "removed 1 discovery configs" in forgot.stdout
    assert "homeassistant.enabled = false" in forgot.stdout
    assert retained_configs(mosquitto, collector_factory, DEVICE) == {}


def test_discovery_switched_off_removes_what_the_agent_announced_before(
    mosquitto: Broker, run_agent: Callable[..., Child], collector_factory: Callable[..., Collector]
) -> None:
    first = run_agent(mosquitto)
    assert wait_for_configs(mosquitto, collector_factory, DEVICE)
    first.stop()
    run_agent(mosquitto, EDGECAM_HOMEASSISTANT__ENABLED="false").wait_log("mqtt: connected", 10)
    assert wait_for_configs(mosquitto, collector_factory, DEVICE, present=False)


def wait_for_configs(
    broker: Broker, collector_factory: Callable[..., Collector], node: str, present: bool = True
) -> bool:
    """Whether retained configs under ``node`` come to be there (or gone) within 10 s."""
    return wait_until(lambda: bool(retained_configs(broker, collector_factory, node)) == present, 10, interval=0.2)


def forget_ha(broker: Broker, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "EDGECAM_DEVICE_ID": DEVICE,
        "EDGECAM_MQTT__HOST": broker.host,
        "EDGECAM_MQTT__PORT": str(broker.port),
        "EDGECAM_STORAGE__DIR": str(tmp_path / "state"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "edgecam", "forget-ha"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_broker_acl_without_the_discovery_topics_is_one_line_naming_the_fix(
    mosquitto_factory: Callable[..., Broker], run_agent: Callable[..., Child], tmp_path: Path
) -> None:
    acl = tmp_path / "edgecam.acl"
    acl.write_text("topic readwrite edgecam/#\n")  # before any "user" line: for anonymous clients
    broker = mosquitto_factory(config=f"acl_file {acl}")
    agent = run_agent(broker)
    agent.wait_log("refused the Home Assistant discovery config", 10)
    agent.wait_log("agent: start", 20)  # the door events go on; every config has been answered by now
    (line,) = agent.lines("discovery config")
    assert "Not authorized" in line
    assert "homeassistant.enabled = false" in line
