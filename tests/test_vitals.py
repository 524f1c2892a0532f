"""The frame loop's fields of ``<base>/stats``."""

from edgecam.vitals import Vitals


def test_the_stats_list_the_scene_warnings_that_hold() -> None:
    vitals = Vitals(clock=lambda: 100.0)
    assert vitals.payload()["scene_warnings"] == []
    vitals.scene_warnings = ("too_dark", "too_noisy")
    assert vitals.payload()["scene_warnings"] == ["too_dark", "too_noisy"]
