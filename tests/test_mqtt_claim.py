"""Who publishes as a device: the instance id, the claim payload and the decision after each connect."""

from pathlib import Path

from edgecam.mqtt.claim import DUPLICATE_WINDOW_S, Claim, DeviceClaim, instance_id

OTHER = Claim("b" * 32, "active", "2026-11-22T13:02:03.123Z")


def test_the_instance_id_is_made_once_and_survives_a_restart(tmp_path: Path) -> None:
    first = instance_id(tmp_path / "state")
    assert len(first) == 32
    assert instance_id(tmp_path / "state") == first
    assert instance_id(tmp_path / "other") != first


def test_a_claim_round_trips_and_anything_else_is_not_one() -> None:
    assert Claim.parse(OTHER.encode()) == OTHER
    for junk in (b"", b"online", b"[]", b'{"instance":1,"state":"active"}', b'{"instance":"x","state":"boss"}'):
        assert Claim.parse(junk) is None
    assert Claim.parse(b'{"instance":"' + b"x" * 2000 + b'","state":"active"}') is None


def test_a_live_holder_keeps_the_device_and_an_old_claim_is_taken_over_after_probation() -> None:
    now = [0.0]
    claim = DeviceClaim("a" * 32, clock=lambda: now[0])
    assert claim.checked(None, None) == "claim"
    assert claim.checked(OTHER, b"online") == "yield", "another agent is connected now"
    assert claim.checked(OTHER, b"offline") == "wait", "a replaced camera's claim, or a duplicate just kicked off"
    now[0] += 2.0
    assert claim.checked(OTHER, b"offline") == "yield", "it came back and took the session again: a duplicate"
    now[0] += DUPLICATE_WINDOW_S + 1
    assert claim.checked(OTHER, None) == "wait"


def test_an_agent_that_held_the_device_yields_to_one_that_took_it_over_and_resumes_when_told() -> None:
    claim = DeviceClaim("a" * 32)
    claim.claimed()
    assert claim.checked(OTHER, b"offline") == "yield"
    claim.resuming = True  # its watch saw the holder offline long enough
    assert claim.checked(OTHER, b"offline") == "claim"
    claim.claimed()
    assert not claim.resuming
