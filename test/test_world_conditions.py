"""Rendering conditions (night, rain, fog) and the clear default: what each changes, determinism per seed."""

from __future__ import annotations

import numpy as np
import pytest

from drive_mllm_ros.data.render import (
    CONDITIONS,
    LOOKS,
    Renderer,
    _lights,
    _object_matrix,
    nuscenes_cameras,
    transform_points,
)
from drive_mllm_ros.data.world import VEHICLE_KINDS, build_world

WIDTH, HEIGHT = 224, 126


@pytest.fixture(scope="module")
def state():
    """A braking lead car ahead of the ego, traffic around: lamps, near and far objects in view."""
    world = build_world("lead_brake", seed=4)
    for _ in range(70):
        current = world.step(1 / 12)
    return current


def render_all(state, condition: str, seed: int = 0, size: tuple[int, int] = (WIDTH, HEIGHT)) -> list[np.ndarray]:
    cameras = nuscenes_cameras(*size)
    renderer = Renderer(cameras, condition, seed)
    return [renderer.render(state, camera) for camera in cameras]


def test_clear_is_the_default_look_whatever_the_seed(state):
    default = render_all(state, "clear")
    cameras = nuscenes_cameras(WIDTH, HEIGHT)
    plain = [Renderer(cameras).render(state, camera) for camera in cameras]
    assert all(np.array_equal(a, b) for a, b in zip(default, plain, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(render_all(state, "clear", seed=9), plain, strict=True))


@pytest.mark.parametrize("condition", [c for c in CONDITIONS if c != "clear"])
def test_conditions_are_deterministic_per_seed_and_differ_from_clear(state, condition):
    first = render_all(state, condition, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, render_all(state, condition, seed=1), strict=True))
    clear = render_all(state, "clear")
    assert all(np.abs(a.astype(int) - b).mean() > 5 for a, b in zip(first, clear, strict=True))
    if LOOKS[condition].noise or LOOKS[condition].streaks:  # seeded randomness: another seed, other pixels
        assert not np.array_equal(first[0], render_all(state, condition, seed=2)[0])


def test_night_is_dark_with_lit_lamps_brighter_than_their_car(state):
    assert np.mean(render_all(state, "night")) < 0.35 * np.mean(render_all(state, "clear"))
    size = (800, 450)  # lamps a few pixels wide
    camera = nuscenes_cameras(*size)[1]
    assert camera.name == "CAM_FRONT"
    night = Renderer([camera], "night").render(state, camera).max(axis=2)
    mask = Renderer.instance_mask(state, camera)
    to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
    checked = 0
    for obj in state.objects:
        body = night[mask == obj.instance + 1]
        if obj.kind not in VEHICLE_KINDS or body.size < 400:
            continue
        camera_from_box = to_camera @ _object_matrix(obj)
        camera_x = np.linalg.inv(camera_from_box)[0, 3]  # the camera along the car: which end it sees
        for face, quad, _ in _lights(obj, lamps_on=True):
            if not {"front": camera_x > obj.size[0] / 2, "back": camera_x < -obj.size[0] / 2}.get(face, False):
                continue
            centre = transform_points(camera_from_box, quad.mean(axis=1, keepdims=True))[:, 0]
            u, v = (camera.intrinsic @ centre)[:2] / centre[2]
            if 0 <= u < size[0] and 0 <= v < size[1] and mask[int(v), int(u)] == obj.instance + 1:
                assert night[int(v), int(u)] >= 150 > 2 * np.median(body)
                checked += 1
    assert checked >= 2


def object_contrast(image: np.ndarray, mask: np.ndarray, instance: int, fog: np.ndarray) -> float:
    """Mean L1 distance of an object's pixels from the fog colour: what fog takes away."""
    return float(np.abs(image[mask == instance + 1].astype(float) - fog).sum(axis=1).mean())


def test_fog_takes_more_contrast_from_far_objects_than_from_near_ones(state):
    camera = nuscenes_cameras(WIDTH, HEIGHT)[1]
    clear, fog = (Renderer([camera], condition).render(state, camera) for condition in ("clear", "fog"))
    mask = Renderer.instance_mask(state, camera)
    fog_colour = np.array(LOOKS["fog"].fog_colour, dtype=float)
    to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
    ratios = {}
    for obj in state.objects:
        if (mask == obj.instance + 1).sum() >= 6:
            distance = float(np.linalg.norm(transform_points(to_camera, np.array(obj.centre).reshape(3, 1))))
            ratios[distance] = (object_contrast(fog, mask, obj.instance, fog_colour)
                                / object_contrast(clear, mask, obj.instance, fog_colour))
    near, far = min(ratios), max(ratios)
    assert far > 2 * near and ratios[far] < 0.5 * ratios[near] and ratios[near] > 0.5, ratios


def test_rain_lowers_contrast(state):
    for rain, clear in zip(render_all(state, "rain"), render_all(state, "clear"), strict=True):
        assert rain.std() < 0.85 * clear.std()


@pytest.mark.parametrize("argv", [dict(condition="snow"), dict(seed=0, condition="")])
def test_unknown_condition_is_refused(argv):
    with pytest.raises(ValueError, match="condition: expected one of"):
        Renderer(nuscenes_cameras(WIDTH, HEIGHT), **argv)
