"""Synthetic scenes: deterministic, well-formed, occluding in order, and learnable from appearance."""
import numpy as np
import pytest
import torch

from fcnfast.data.synthetic import (
    SYNTHETIC_CLASSES, SyntheticScenes, _sample_layout, _shape_mask, _STYLES, synthetic_scene)

N_CLASSES = len(SYNTHETIC_CLASSES)


def scenes(seeds, h=96, w=128):
    return [synthetic_scene(s, h, w) for s in seeds]


def test_classes():
    assert SYNTHETIC_CLASSES[0] == "background" and N_CLASSES == 6
    assert len(set(SYNTHETIC_CLASSES)) == N_CLASSES and len(_STYLES) == N_CLASSES


def test_deterministic_from_seed():
    a_im, a_lab = synthetic_scene(7, 64, 80)
    b_im, b_lab = synthetic_scene(7, 64, 80)
    np.testing.assert_array_equal(a_im, b_im)
    np.testing.assert_array_equal(a_lab, b_lab)
    # An int seed is the generator np.random.default_rng(seed).
    c_im, c_lab = synthetic_scene(np.random.default_rng(7), 64, 80)
    np.testing.assert_array_equal(a_im, c_im)
    np.testing.assert_array_equal(a_lab, c_lab)
    # A generator is advanced: two calls on it give two scenes; another seed another scene.
    rng = np.random.default_rng(7)
    synthetic_scene(rng, 64, 80)
    assert not np.array_equal(synthetic_scene(rng, 64, 80)[0], a_im)
    assert not np.array_equal(synthetic_scene(8, 64, 80)[0], a_im)


@pytest.mark.parametrize("h, w", [(64, 64), (37, 101), (120, 17)])
def test_shapes_and_dtypes(h, w):
    image, labels = synthetic_scene(3, h, w)
    assert image.shape == (h, w, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert labels.shape == (h, w) and labels.dtype == np.uint8
    assert labels.max() < N_CLASSES


@pytest.mark.parametrize("h, w", [(1, 1), (1, 2), (2, 1), (3, 3), (1, 300), (300, 1), (5, 2)])
def test_tiny_sizes(h, w):
    for seed in range(5):
        image, labels = synthetic_scene(seed, h, w, num_objects=12)
        assert image.shape == (h, w, 3) and labels.shape == (h, w)
        assert labels.max() < N_CLASSES


def test_num_objects():
    image, labels = synthetic_scene(0, 40, 40, num_objects=0)
    assert (labels == 0).all() and image.std() > 0  # still a textured background
    assert len(_sample_layout(np.random.default_rng(0), 40, 40, None)) in range(3, 9)
    assert len(_sample_layout(np.random.default_rng(0), 40, 40, 5)) == 5


def test_every_class_appears_over_a_handful_of_scenes():
    seen = np.zeros(N_CLASSES, bool)
    for _, labels in scenes(range(8)):
        seen[np.unique(labels)] = True
    assert seen.all(), [c for c, s in zip(SYNTHETIC_CLASSES, seen) if not s]


def test_later_shapes_occlude_earlier_ones():
    # Replay each scene's layout (drawn first from its generator) and paint the masks in order by
    # hand: the labels must be those of the last shape covering each pixel.
    h, w = 80, 90
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    overlaps = 0
    for seed in range(6):
        layout = _sample_layout(np.random.default_rng(seed), h, w, None)
        expected = np.zeros((h, w), np.uint8)
        for shape in layout:
            mask = _shape_mask(shape, ys, xs)
            # A pixel where a shape of another class lies on top of this one.
            overlaps += int(((expected != 0) & (expected != shape.class_id) & mask).sum())
            expected[mask] = shape.class_id
        _, labels = synthetic_scene(seed, h, w)
        np.testing.assert_array_equal(labels, expected)
    assert overlaps > 0, "no occlusion between classes in these scenes: pick other seeds"


def test_class_colours_in_the_image_match_the_labels():
    # The mean colour of each class's pixels is nearest to that class's colour (jitter +-25 per
    # instance and the shading move it, but not across to another class).
    nominal = np.array([s.colour for s in _STYLES], np.float64)
    checked = 0
    for image, labels in scenes(range(6)):
        for c in range(N_CLASSES):
            mask = labels == c
            if mask.sum() < 30:
                continue
            mean = image[mask].astype(np.float64).mean(axis=0)
            distances = np.linalg.norm(nominal - mean, axis=1)
            assert distances.argmin() == c, (SYNTHETIC_CLASSES[c], mean, distances)
            checked += 1
    assert checked >= 20


def _gradients_inside(image, labels, c):
    """Mean |horizontal| and |vertical| brightness differences between pixels of class c."""
    g = image.astype(np.float64).mean(axis=2)
    dx = np.abs(np.diff(g, axis=1))[:-1]
    dy = np.abs(np.diff(g, axis=0))[:, :-1]
    inside = (labels[:-1, :-1] == c) & (labels[:-1, 1:] == c) & (labels[1:, :-1] == c)
    if inside.sum() < 50:
        return None
    return dx[inside].mean(), dy[inside].mean()


def test_class_textures_in_the_image_match_the_labels():
    found = {c: [] for c in range(N_CLASSES)}
    for image, labels in scenes(range(100, 108), 128, 128):
        for c in range(N_CLASSES):
            g = _gradients_inside(image, labels, c)
            if g is not None:
                found[c].append(g)
    assert all(found.values()), {SYNTHETIC_CLASSES[c]: len(v) for c, v in found.items()}
    background = max(sum(g) for g in found[0])
    for c in range(1, N_CLASSES):
        # Every object texture is busier than the smooth background blotches.
        assert min(sum(g) for g in found[c]) > 1.5 * background, SYNTHETIC_CLASSES[c]
    for dx, dy in found[SYNTHETIC_CLASSES.index("disc")]:
        assert dx > 2 * dy  # near-vertical stripes: brightness changes along x
    for dx, dy in found[SYNTHETIC_CLASSES.index("triangle")]:
        assert dy > dx  # stripes at about 60 degrees: changes mostly along y
    for name in ("box", "ring", "bar"):  # checker, dots, speckle: no preferred direction
        for dx, dy in found[SYNTHETIC_CLASSES.index(name)]:
            assert 0.75 < dx / dy < 1.33, name


def test_input_errors():
    with pytest.raises(ValueError, match="seed_or_rng"):
        synthetic_scene(-1, 8, 8)
    with pytest.raises(TypeError, match="seed_or_rng"):
        synthetic_scene(1.5, 8, 8)
    with pytest.raises(ValueError, match="height"):
        synthetic_scene(0, 0, 8)
    with pytest.raises(TypeError, match="width"):
        synthetic_scene(0, 8, 8.0)
    with pytest.raises(ValueError, match="num_objects"):
        synthetic_scene(0, 8, 8, num_objects=-1)


def test_dataset_items_are_seeded_scenes():
    ds = SyntheticScenes(5, size=(40, 56), seed=3, num_objects=4)
    assert len(ds) == 5 and ds.classes == SYNTHETIC_CLASSES
    for i in (0, 4):
        image, labels = ds[i]
        want_image, want_labels = synthetic_scene(3 * 1_000_003 + i, 40, 56, num_objects=4)
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(ds[-1][0], ds[4][0])
    np.testing.assert_array_equal(ds[np.int64(2)][1], ds[2][1])
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(IndexError):
        ds[-6]


def test_dataset_size_ranges():
    ds = SyntheticScenes(12, size=((20, 30), (40, 41)), seed=1)
    sizes = [ds[i][1].shape for i in range(len(ds))]
    assert all(20 <= h <= 30 and 40 <= w <= 41 for h, w in sizes)
    assert len(set(sizes)) > 3
    # The same on a second pass and in a second dataset object (worker processes rebuild it).
    again = SyntheticScenes(12, size=((20, 30), (40, 41)), seed=1)
    assert [again[i][1].shape for i in range(12)] == sizes
    # The size comes from its own stream: the scene is still synthetic_scene(seed * 1_000_003 + i).
    h, w = sizes[3]
    np.testing.assert_array_equal(ds[3][0], synthetic_scene(1_000_003 + 3, h, w)[0])


def test_dataset_with_a_dataloader():
    ds = SyntheticScenes(4, size=(24, 32), seed=0)
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 24, 32, 3) and images.dtype == torch.uint8
    assert labels.shape == (4, 24, 32) and labels.dtype == torch.uint8


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(length=-1), ValueError, "length"),
    (dict(length=2.0), TypeError, "length"),
    (dict(length=2, seed=-1), ValueError, "seed"),
    (dict(length=2, size=(0, 5)), ValueError, "size height"),
    (dict(length=2, size=((9, 5), (5, 5))), ValueError, "min 9 > max 5"),
    (dict(length=2, size=((1, 2, 3), 5)), ValueError, "range"),
    (dict(length=2, size=64), TypeError, "size"),
    (dict(length=2, num_objects=-2), ValueError, "num_objects"),
])
def test_dataset_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SyntheticScenes(**kwargs)


def test_exported_from_the_data_package():
    import fcnfast.data as data
    assert data.SyntheticScenes is SyntheticScenes
    assert data.synthetic_scene is synthetic_scene
    assert data.SYNTHETIC_CLASSES is SYNTHETIC_CLASSES
