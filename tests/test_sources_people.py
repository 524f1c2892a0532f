import numpy as np
import pytest
from numpy.typing import NDArray

from edgecam.scene_settings import SimulatedSettings
from edgecam.sources.scene import door_openings
from edgecam.sources.simulated import SceneRenderer, door_zone
from edgecam.zones import polygon_mask

W, H = 640, 480


def renderers(style: str, **sim: object) -> tuple[SceneRenderer, SceneRenderer]:
    """The scene with a person or a pet, and the same scene without, noise off so that differences are the figure."""
    settings = SimulatedSettings.model_validate({"style": style, "noise": 0, "door_period": 30.0, **sim})
    nobody = settings.model_copy(update={"person_at_door": 0.0, "person_pose": "stand", "pet": False})
    return SceneRenderer(settings, W, H), SceneRenderer(nobody, W, H)


def figure(scene: SceneRenderer, empty: SceneRenderer, t: float) -> NDArray[np.bool_]:
    """Pixels where the person or pet is at ``t`` seconds."""
    index = round(t * scene.sim.fps)
    diff = np.abs(scene.render(index)[0].astype(int) - empty.render(index)[0]).max(axis=2)
    changed: NDArray[np.bool_] = diff > 25
    return changed


def columns(mask: NDArray[np.bool_]) -> NDArray[np.intp]:
    return np.nonzero(mask.any(axis=0))[0]


@pytest.mark.parametrize("style", ["hall", "porch"])
@pytest.mark.parametrize("pose", ["stand", "lean", "phone"])
def test_each_pose_is_a_person_at_the_closed_door_who_moves_a_little(style: str, pose: str) -> None:
    scene, empty = renderers(style, person_at_door=15.0, person_pose=pose)
    inside = polygon_mask([door_zone(scene.sim)], W, H)
    stand = scene.script_at(20.0).stands[0]
    assert door_openings(scene.sim, 60.0) == door_openings(empty.sim, 60.0)
    for t in np.arange(stand.start, stand.end, 0.5):
        assert scene.state(float(t)).door_angle == 0.0
    steady = [float(t) for t in np.arange(stand.start + 2.0, stand.end - 2.0, 1.0)]
    shapes = [figure(scene, empty, t) for t in steady]
    for t, person in zip(steady, shapes, strict=True):
        assert person.sum() > 0.01 * W * H, t  # a person, not a speck
        assert person[inside].mean() > 0.05, t  # covering a good part of the door zone
    moved = [float((a ^ b).mean()) for a, b in zip(shapes, shapes[1:], strict=False)]
    assert max(moved) > 0.0003  # small movements while at the door
    assert max(moved) < 0.03  # but no walking about


@pytest.mark.parametrize("style", ["hall", "porch"])
def test_on_the_phone_an_arm_is_raised_to_the_head(style: str) -> None:
    phone, empty = renderers(style, person_at_door=15.0, person_pose="phone")
    standing, _ = renderers(style, person_at_door=15.0, person_pose="stand")
    stand = phone.script_at(20.0).stands[0]
    t = stand.start + stand.duration / 2

    def head_width(scene: SceneRenderer) -> int:
        """Columns of the person in the band from the top of the head down to a fifth of the person's height."""
        person = figure(scene, empty, t)
        rows = np.nonzero(person.any(axis=1))[0]
        top, tall = rows[0], rows[-1] - rows[0]
        return len(columns(person[top : top + tall // 5]))

    assert head_width(phone) > 1.4 * head_width(standing)


@pytest.mark.parametrize("style", ["hall", "porch"])
def test_leaning_on_the_door_frame_half_in_the_door_zone_and_tilted(style: str) -> None:
    scene, empty = renderers(style, person_at_door=15.0, person_pose="lean", seed=4)
    inside = polygon_mask([door_zone(scene.sim)], W, H)
    stand = scene.script_at(20.0).stands[0]
    person = figure(scene, empty, stand.start + stand.duration / 2)
    share_inside = person[inside].sum() / person.sum()
    assert 0.15 < share_inside < 0.85  # on the frame: partly over the door, partly over the wall
    rows = np.nonzero(person.any(axis=1))[0]
    top, bottom = rows[0], rows[-1]
    third = (bottom - top) // 3
    head_x = columns(person[top : top + third]).mean()
    feet_x = columns(person[bottom - third : bottom]).mean()
    assert abs(head_x - feet_x) > 0.02 * W  # leaning, not upright


@pytest.mark.parametrize("style", ["hall", "porch"])
def test_a_pet_crosses_the_bottom_of_the_door_zone(style: str) -> None:
    scene, empty = renderers(style, pet=True, seed=6)
    zone = door_zone(scene.sim)
    inside = polygon_mask([zone], W, H)
    pet = scene.script_at(20.0).pets[0]
    assert not any(start < pet.end and pet.start < end for start, end in door_openings(scene.sim, 60.0))
    zone_top, zone_bottom = min(y for _, y in zone) * H, max(y for _, y in zone) * H
    zone_left, zone_right = min(x for x, _ in zone) * W, max(x for x, _ in zone) * W
    xs = []
    for t in np.linspace(pet.start + 0.2, pet.end - 0.2, 9):
        blob = figure(scene, empty, float(t))
        if not blob.any():
            continue
        rows = np.nonzero(blob.any(axis=1))[0]
        assert blob.sum() < 0.02 * W * H, t  # small
        assert rows[-1] - rows[0] < 0.15 * H, t  # and low
        xs.append(float(columns(blob).mean()))
        if zone_left < xs[-1] < zone_right:  # in front of the door: at the bottom of the door zone
            assert rows[0] > zone_top + 0.7 * (zone_bottom - zone_top), t
    assert len(xs) >= 7
    assert abs(xs[-1] - xs[0]) > 0.3 * W  # across the picture
    middle = figure(scene, empty, (pet.start + pet.end) / 2)
    assert middle[inside].sum() > 0.5 * middle.sum()
