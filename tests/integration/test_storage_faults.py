"""Storage faults under a running agent: an SD card whose file system turns read-only, against a real Mosquitto.

The card is an ext4 image on a loop device mounted ``errors=remount-ro``, and the kernel's ``trigger_fs_error``
makes it fail as a worn SD card does: the kernel remounts it read-only under the open files. A tmpfs cannot
stand in: ``mount -o remount,ro`` refuses ("busy") while SQLite holds the outbox open for writing. Since Linux 6.x
such an emergency read-only state lasts until the file system is unmounted, so the disk cannot come back under
the same process; that the waiting events keep their seq when the disk takes them again is tested in
tests/test_agent.py with an outbox that refuses rows and then takes them.
"""

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.test_agent import Inbox
from tests.integration.test_reliability import Child, busy_door, ended, first_copies

pytestmark = pytest.mark.integration


class SdCard:
    """An ext4 file system on a loop device, mounted on the state directory, that can be made to fail."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-O", "^has_journal", str(image)], check=True, capture_output=True)
        mountpoint.mkdir()
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(image), str(mountpoint)],
            check=True,
            capture_output=True,
            text=True,
        )
        self.mountpoint = mountpoint
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mountpoint)], check=True, capture_output=True, text=True
        )
        self._trigger = Path("/sys/fs/ext4") / Path(source.stdout.strip()).name / "trigger_fs_error"

    def fail(self) -> None:
        """An error the file system cannot go on from: the kernel remounts it read-only (errors=remount-ro)."""
        self._trigger.write_text("edgecam test: the SD card fails\n")

    def remove(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)


@pytest.fixture
def sd_card(tmp_path: Path) -> Iterator[SdCard]:
    try:
        card = SdCard(tmp_path / "sd.img", tmp_path / "state")
    except (OSError, subprocess.CalledProcessError) as err:
        said = err.stderr.strip().splitlines() if isinstance(err, subprocess.CalledProcessError) and err.stderr else []
        pytest.skip(f"cannot mount an ext4 image on a loop device (it takes root and loop devices): {said or err}")
    if not card._trigger.exists():
        card.remove()
        pytest.skip(f"this kernel has no {card._trigger} to make the file system fail")
    yield card
    card.remove()


def storage_said(box: Inbox) -> list[str]:
    return [json.loads(s).get("storage", "") for s in box.history.get("stats", [])]


def test_a_card_turned_read_only_under_the_agent_still_gets_events_to_the_broker(
    mosquitto: Broker,
    listen: Callable[[Broker], Inbox],
    run_agent: Callable[..., Child],
    sd_card: SdCard,
) -> None:
    inbox = listen(mosquitto)
    agent = run_agent(mosquitto, **busy_door())
    agent.wait_log("agent: end ", 20)
    inbox.wait(lambda b: bool(ended(b)), 10, "an event stored and delivered before the fault")
    assert storage_said(inbox)[-1:] == ["ok"]

    sd_card.fail()
    stored = set(ended(inbox))
    agent.wait_log("wait in memory", 20)
    inbox.wait(lambda b: len(ended(b) - stored) >= 2, 20, "two door events from memory")
    inbox.wait(lambda b: "read-only file system" in storage_said(b), 10, "stats saying the storage fault")
    assert agent.process.poll() is None, agent.log

    first = first_copies(inbox)
    assert list(first) == sorted(first), "seq goes on increasing through the fault"
    assert len({(e["seq"], e["event_id"]) for e in inbox.events}) == len(first), "one event_id per seq"
    from_memory = [e for e in first.values() if e["event_id"] in ended(inbox) - stored]
    stills = [e for e in from_memory if e["type"] == "still" and not e.get("dropped")]
    assert stills, "stills held in memory are published too"
    assert all(e["topic"] in inbox.stills for e in stills)

    agent.process.send_signal(signal.SIGTERM)
    assert agent.exit_code(30) == 0, agent.log
    assert "Traceback" not in agent.log
