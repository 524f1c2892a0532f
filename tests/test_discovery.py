import json
from pathlib import Path
from typing import Any

import jinja2  # Home Assistant's template engine: the template renders as it would there
import pytest

from edgecam.broker_settings import HomeAssistantSettings
from edgecam.discovery import MAX_STALE_CLEARS, Discovery, entities, read_remembered
from edgecam.models import Topics

TOPICS = Topics("edgecam/front")


def discovery(tmp_path: Path, door: bool = True, device_id: str = "front", **settings: Any) -> Discovery:
    ha = HomeAssistantSettings(**settings)
    return Discovery(ha, device_id, Topics(f"edgecam/{device_id}"), door, "simulated door camera", tmp_path / "ha.json")


def configs(d: Discovery) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(payload) for topic, payload in d.configs.items()}


def test_each_entity_is_one_retained_config_of_one_device_with_stable_unique_ids(tmp_path: Path) -> None:
    first, again = configs(discovery(tmp_path)), configs(discovery(tmp_path))
    assert first == again
    assert set(first) == {f"homeassistant/{e.component}/front/{e.object_id}/config" for e in entities(TOPICS, True)}
    assert len({c["unique_id"] for c in first.values()}) == len(first)
    assert {json.dumps(c["device"], sort_keys=True) for c in first.values()} == {
        json.dumps(
            {
                "identifiers": ["edgecam_front"],
                "manufacturer": "edgecam",
                "model": "simulated door camera",
                "name": "front",
                "sw_version": "0.1.0",
            },
            sort_keys=True,
        )
    }
    assert all(c["availability_topic"] == "edgecam/front/availability" for c in first.values())
    assert all(c["origin"]["name"] == "edgecam" for c in first.values())
    assert all("configuration_url" not in c["device"] for c in first.values())  # nothing listens


def test_the_door_state_is_announced_only_with_a_reference_or_a_contact(tmp_path: Path) -> None:
    assert "homeassistant/binary_sensor/front/door/config" in discovery(tmp_path, door=True).configs
    assert "homeassistant/binary_sensor/front/door/config" not in discovery(tmp_path, door=False).configs


def test_the_device_form_puts_every_entity_in_one_config(tmp_path: Path) -> None:
    d = discovery(tmp_path, discovery="device", device_name="Front door")
    (topic, config), component = next(iter(configs(d).items())), configs(discovery(tmp_path))
    assert topic == "homeassistant/device/front/config"
    assert config["dev"]["name"] == "Front door"
    assert config["availability_topic"] == "edgecam/front/availability"
    by_unique_id = {c["unique_id"]: c for c in config["cmps"].values()}
    assert set(by_unique_id) == {c["unique_id"] for c in component.values()}
    assert {c["p"] for c in config["cmps"].values()} == {"binary_sensor", "sensor", "switch", "image", "event"}


def test_a_changed_device_id_or_form_removes_what_was_announced_before(tmp_path: Path) -> None:
    old = discovery(tmp_path, device_id="front")
    sent = old.announce()
    assert [p for _, p in sent] == list(old.configs.values())  # nothing to remove the first time
    new = discovery(tmp_path, device_id="porch", discovery="device")
    sent = new.announce()
    removed = [t for t, p in sent if p == b""]
    assert removed == sorted(old.configs)  # removals first, then the new configs
    assert sent[len(removed) :] == list(new.configs.items())
    assert read_remembered(tmp_path / "ha.json") == ["homeassistant/device/porch/config"]


def test_discovery_switched_off_announces_nothing_and_removes_the_old_configs(tmp_path: Path) -> None:
    old = discovery(tmp_path)
    old.announce()
    off = discovery(tmp_path, enabled=False)
    assert off.filters() == []
    assert off.announce() == [(t, b"") for t in sorted(old.configs)]
    assert off.announce() == []


def test_home_assistant_coming_online_gets_every_config_again(tmp_path: Path) -> None:
    d = discovery(tmp_path)
    assert d.heard("homeassistant/status", b"online", retained=False) == list(d.configs.items())
    assert d.heard("homeassistant/status", b"online", retained=True) == []  # an old retained birth
    assert d.heard("homeassistant/status", b"offline", retained=False) == []


def test_a_retained_config_under_the_node_that_was_not_announced_is_removed(tmp_path: Path) -> None:
    d = discovery(tmp_path)
    mine = next(iter(d.configs))
    assert d.heard(mine, d.configs[mine][:16], retained=True) == []
    assert d.heard("homeassistant/sensor/front/old/config", b"{}", retained=True) == [
        ("homeassistant/sensor/front/old/config", b"")
    ]
    assert d.heard("homeassistant/sensor/front/old/config", b"", retained=True) == []  # already removed
    for n in range(MAX_STALE_CLEARS + 5):
        d.heard(f"homeassistant/sensor/front/junk{n}/config", b"{}", retained=True)
    assert d.heard("homeassistant/sensor/front/more/config", b"{}", retained=True) == []


def test_the_event_template_makes_start_and_end_events_and_ignores_stills() -> None:
    (event,) = [e for e in entities(TOPICS, True) if e.component == "event"]
    template = jinja2.Environment().from_string(event.config["value_template"])
    start = {"type": "start", "event_id": "e1", "seq": 4, "time": "2026-01-01T00:00:00.000Z", "door": "open"}
    assert json.loads(template.render(value_json=start)) == {
        "event_type": "start",
        "event_id": "e1",
        "seq": 4,
        "time": "2026-01-01T00:00:00.000Z",
        "door": "open",
        "stills": None,
    }
    assert json.loads(template.render(value_json={**start, "type": "end", "stills": 3}))["stills"] == 3
    assert template.render(value_json={**start, "type": "still", "index": 1}) == ""


def test_bad_discovery_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="discovery_prefix"):
        HomeAssistantSettings(discovery_prefix="home/assistant")
    with pytest.raises(ValueError, match="discovery"):
        HomeAssistantSettings(discovery="per-entity")


def test_a_config_removed_on_connect_is_not_removed_again_when_the_broker_hands_it_back(tmp_path: Path) -> None:
    component = discovery(tmp_path)
    component.announce()
    device = discovery(tmp_path, discovery="device")
    removed = [t for t, p in device.announce() if p == b""]
    assert removed == sorted(component.configs)
    # The retained copy, delivered to the new subscription before the broker got to the removal.
    assert device.heard(removed[0], component.configs[removed[0]], retained=True) == []


def test_the_birth_topic_is_its_own_setting(tmp_path: Path) -> None:
    d = discovery(tmp_path, discovery_prefix="ha", status_topic="hass/status")
    assert d.filters()[0] == "hass/status"
    assert d.heard("hass/status", b"online", retained=False) == list(d.configs.items())
    assert all(topic.startswith("ha/") for topic in d.configs)
