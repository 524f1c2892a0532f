import tomllib
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import DOOR_ZONE, SceneRenderer, door_zone
from edgecam.zones import polygon_mask

W, H = 640, 480


def grey(renderer: SceneRenderer, t: float) -> NDArray[np.float64]:
    image = renderer.render(round(t * renderer.sim.fps))[0]
    grey_levels: NDArray[np.float64] = np.asarray(image, np.float64).mean(axis=2)
    return grey_levels


def test_the_porch_is_another_picture_with_the_door_elsewhere() -> None:
    hall = SceneRenderer(SimulatedSettings(), W, H)
    porch = SceneRenderer(SimulatedSettings(style="porch"), W, H)
    assert np.abs(grey(porch, 1.0) - grey(hall, 1.0)).mean() > 25
    zone = np.array(door_zone(porch.sim))
    assert door_zone(hall.sim) == DOOR_ZONE

    def bounds(points: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.concatenate([points.min(axis=0), points.max(axis=0)])

    assert np.abs(bounds(zone) - bounds(np.array(DOOR_ZONE))).max() > 0.1
    # The door is seen at an angle: its near (right) edge is taller in the picture than its far (hinge) edge.
    left = zone[zone[:, 0] < zone[:, 0].mean()]
    right = zone[zone[:, 0] >= zone[:, 0].mean()]
    assert np.ptp(right[:, 1]) > 1.05 * np.ptp(left[:, 1])


@pytest.mark.parametrize("style", ["porch", "porch-grey"])
def test_the_porch_door_swings_inside_its_door_zone_and_shuts_again(style: str) -> None:
    sim = SimulatedSettings.model_validate({"style": style})
    renderer = SceneRenderer(sim, W, H)
    assert door_openings(sim, 40.0) == door_openings(SimulatedSettings(), 40.0)
    inside = polygon_mask([door_zone(sim)], W, H)
    closed = grey(renderer, 3.5)
    noise = np.abs(grey(renderer, 3.0) - closed)  # two frames of the shut door: the camera's noise alone
    changes = []
    for t in (4.5, 5.5, 6.5, 7.5):  # opening, open, open, closing
        diff = np.abs(grey(renderer, t) - closed)
        changes.append(diff[inside].mean() - noise[inside].mean())
        assert diff[~inside].mean() < noise[~inside].mean() + 1.0, t
        moved = diff > noise.max() + 1
        assert moved[inside].sum() > 0.95 * moved.sum(), t  # what moved is in the door zone
    assert min(changes) > (12 if style == "porch" else 4)
    shut_again = np.abs(grey(renderer, 9.0) - closed)
    assert shut_again[inside].mean() < noise[inside].mean() + 1.0


def test_the_grey_door_changes_the_picture_less_than_the_wooden_one() -> None:
    wooden = SceneRenderer(SimulatedSettings(style="porch", noise=0), W, H)
    painted = SceneRenderer(SimulatedSettings(style="porch-grey", noise=0), W, H)

    def opening(renderer: SceneRenderer) -> float:
        inside = polygon_mask([door_zone(renderer.sim)], W, H)
        return float(np.abs(grey(renderer, 5.5) - grey(renderer, 3.5))[inside].mean())

    assert opening(painted) < 0.5 * opening(wooden)


def test_the_porch_cameras_noise_has_rows_and_colour_blotches() -> None:
    sim = SimulatedSettings(style="porch", noise=0, sensor_gain=4.0, light_level=0.25, first_opening=100.0)
    renderer = SceneRenderer(sim, W, H)
    a = renderer.render(10)[0].astype(np.float64)
    b = renderer.render(11)[0].astype(np.float64)
    change = (a - b).mean(axis=2)
    rows = change.mean(axis=1)
    # Row noise: whole rows brighten or darken together, far more than averaging 640 independent pixels allows.
    assert rows.std() > 3 * change.std() / np.sqrt(W)
    # Colour noise: the channels differ from each other, in blotches larger than a pixel.
    chroma = (a[:, :, 0] - a[:, :, 2]) - (b[:, :, 0] - b[:, :, 2])
    assert chroma.std() > 1.0
    neighbours = np.corrcoef(chroma[:, :-1].ravel(), chroma[:, 1:].ravel())[0, 1]
    assert neighbours > 0.3


def test_the_same_porch_seed_renders_the_same_frames() -> None:
    sim = SimulatedSettings(style="porch", seed=3)
    a, b = SceneRenderer(sim, W, H), SceneRenderer(sim, W, H)
    for index in (0, 47, 130):
        assert np.array_equal(a.render(index)[0], b.render(index)[0])


def test_the_benchmark_scenes_give_the_porch_its_own_door_zone() -> None:
    scenes = tomllib.loads((Path(__file__).parents[1] / "scripts" / "bench_detection_scenes.toml").read_text())
    porch = [s for s in scenes["scenes"] if s["simulated"].get("style", "hall") != "hall"]
    assert porch
    for spec in porch:
        sim = SimulatedSettings.model_validate(spec["simulated"])
        assert [tuple(p) for p in spec["motion"]["zone"]] == door_zone(sim), spec["name"]
