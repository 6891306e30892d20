"""HHA encoding on a rendered room corner: a floor plane and a wall plane seen by a known camera."""
import numpy as np
import pytest

from fcnfast.data.hha import estimate_gravity, hha_components, hha_encode, surface_normals

H, W = 64, 80
FOCAL = 40.0
K = np.array([[FOCAL, 0.0, (W - 1) / 2], [0.0, FOCAL, (H - 1) / 2], [0.0, 0.0, 1.0]])
CAMERA_HEIGHT = 1.5  # metres above the floor
WALL_DISTANCE = 4.0  # metres in front of the camera, along the level view direction


def render_corner(pitch_deg=0.0):
    """Depth (metres) of a floor and a facing wall seen by a camera pitched down by ``pitch_deg``.

    World frame as the camera's when level: x right, y down, z forward. Returns the depth map, the
    true gravity (down) in camera coordinates and the floor mask.
    """
    t = np.deg2rad(pitch_deg)
    to_world = np.array([[1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)]])
    u = (np.arange(W) - K[0, 2]) / K[0, 0]
    v = (np.arange(H) - K[1, 2]) / K[1, 1]
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((H, W))), axis=-1)
    world = rays @ to_world.T
    with np.errstate(divide="ignore"):
        to_floor = np.where(world[..., 1] > 0, CAMERA_HEIGHT / world[..., 1], np.inf)
        to_wall = np.where(world[..., 2] > 0, WALL_DISTANCE / world[..., 2], np.inf)
    depth = np.minimum(to_floor, to_wall)  # ray z = 1 in the camera frame: t is the depth
    return depth, to_world.T @ np.array([0.0, 1.0, 0.0]), to_floor < to_wall


def _away_from_corner(floor, margin=4):
    """Floor and wall masks without the rows whose normal windows (radius 3) reach the other plane."""
    below = np.zeros_like(floor)
    below[:-margin] = floor[margin:]  # floor `margin` rows further down the image
    above = np.zeros_like(floor)
    above[margin:] = floor[:-margin]
    return floor & above, ~floor & ~below


def _angle_between(a, b):
    return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.mark.parametrize("pitch", [0.0, 20.0])
def test_gravity_estimate_and_geocentric_channels(pitch):
    depth, gravity, floor = render_corner(pitch)
    c = hha_components(depth, K)
    assert _angle_between(c.gravity, gravity) < 2.0
    floor_inner, wall_inner = _away_from_corner(floor)
    assert floor_inner.sum() > 100 and wall_inner.sum() > 100
    np.testing.assert_allclose(c.angle[floor_inner], 0.0, atol=2.0)
    np.testing.assert_allclose(c.angle[wall_inner], 90.0, atol=2.0)
    np.testing.assert_allclose(c.height[floor], 0.0, atol=0.05)
    # up the wall (smaller row index) the height grows; disparity falls as depth grows
    wall_column = c.height[:, W // 2][~floor[:, W // 2]]
    assert np.all(np.diff(wall_column) < 0)
    np.testing.assert_allclose(c.disparity, 1.0 / depth)
    order = np.argsort(depth.ravel())
    assert np.all(np.diff(c.disparity.ravel()[order]) <= 0)


def test_known_gravity_gives_heights_in_metres():
    depth, gravity, floor = render_corner(0.0)
    c = hha_components(depth, K, gravity=gravity * 3.0)  # any length: it is normalised
    np.testing.assert_allclose(c.gravity, gravity)
    # level camera: a wall pixel in row v is (v - cy) / f * depth below the camera
    rows = np.arange(H)[:, None]
    expected = CAMERA_HEIGHT - (rows - K[1, 2]) / FOCAL * depth
    np.testing.assert_allclose(c.height, expected, atol=1e-9)


def test_single_wall_keeps_camera_down_and_assumed_camera_height():
    # a wall 1 m ahead: nothing constrains roll, and no point lies 0.9 m below the camera
    depth = np.ones((H, W))
    c = hha_components(depth, K)
    assert _angle_between(c.gravity, np.array([0.0, 1.0, 0.0])) < 0.5
    rows = np.arange(H)[:, None]
    # the reference then takes the camera to be 1.3 m above the floor
    np.testing.assert_allclose(c.height, 1.3 - (rows - K[1, 2]) / FOCAL * depth, atol=1e-6)
    np.testing.assert_allclose(c.angle, 90.0, atol=0.5)


def test_encoding_matches_reference_scaling():
    depth, gravity, floor = render_corner(0.0)
    hha = hha_encode(depth, K, gravity=gravity)
    assert hha.shape == (H, W, 3) and hha.dtype == np.uint8
    c = hha_components(depth, K, gravity=gravity)
    # saveHHA.m: 31000 / max(depth cm, 100); height in cm; angle + 128 - 90; uint8 rounds, saturates
    expected_disparity = np.clip(np.floor(31000 / np.maximum(depth * 100, 100) + 0.5), 0, 255)
    np.testing.assert_array_equal(hha[..., 0], expected_disparity)
    np.testing.assert_array_equal(hha[..., 1], np.clip(np.floor(c.height * 100 + 0.5), 0, 255))
    floor_inner, wall_inner = _away_from_corner(floor)
    assert np.all(np.abs(hha[..., 2][floor_inner].astype(int) - 38) <= 2)
    assert np.all(np.abs(hha[..., 2][wall_inner].astype(int) - 128) <= 2)
    # the wall's height channel rises up the image until it saturates at 2.55 m
    column = hha[:, W // 2, 1][~floor[:, W // 2]].astype(int)
    assert np.all(np.diff(column) <= 0) and column[0] == 255 and column[-1] < 20


def test_missing_depth_is_zero_not_nan():
    depth, gravity, _ = render_corner(10.0)
    depth[10:14, 20:30] = 0.0
    depth[40, :] = np.nan
    hha = hha_encode(depth, K)
    assert hha.dtype == np.uint8
    assert (hha[10:14, 20:30] == 0).all() and (hha[40] == 0).all()
    c = hha_components(depth, K)
    assert not c.valid[40].any() and np.isnan(c.height[40]).all()
    assert np.isfinite(c.angle[c.valid]).all() and np.isfinite(c.height[c.valid]).all()
    assert _angle_between(c.gravity, gravity) < 2.0


def test_isolated_pixel_gets_reference_nan_angle():
    depth = np.zeros((9, 11))
    depth[4, 5] = 2.0  # one point: no plane, the reference's NaN normal becomes 180°
    c = hha_components(depth, K, gravity=[0, 1, 0])
    assert c.angle[4, 5] == 180.0
    assert hha_encode(depth, K, gravity=[0, 1, 0])[4, 5, 2] == 218
    assert (hha_encode(np.zeros((3, 4)), K) == 0).all()  # no depth at all


def test_normals_point_away_from_camera():
    depth, _, floor = render_corner(0.0)
    u = (np.arange(W) - K[0, 2]) / FOCAL
    v = (np.arange(H) - K[1, 2]) / FOCAL
    points = np.stack(np.broadcast_arrays(u[None] * depth, v[:, None] * depth, depth), axis=-1)
    normals = surface_normals(points, np.ones((H, W), bool), radius=3)
    _, wall_inner = _away_from_corner(floor)
    np.testing.assert_allclose(normals[wall_inner], np.broadcast_to([0, 0, 1], normals[wall_inner].shape),
                               atol=1e-6)
    assert _angle_between(estimate_gravity(normals), np.array([0, 1, 0])) < 2.0


@pytest.mark.parametrize("depth, camera, gravity, match", [
    (np.ones((3, 4, 1)), K, None, "H×W"),
    (-np.ones((3, 4)), K, None, "negative"),
    (np.ones((3, 4)), np.eye(2), None, "3×3"),
    (np.ones((3, 4)), np.diag([0.0, 1.0, 1.0]), None, "focal"),
    (np.ones((3, 4)), K, [0, 0, 0], "gravity"),
    (np.ones((3, 4)), K, [0, 1], "gravity"),
])
def test_bad_inputs(depth, camera, gravity, match):
    with pytest.raises(ValueError, match=match):
        hha_encode(depth, camera, gravity=gravity)
