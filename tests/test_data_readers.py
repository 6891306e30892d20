"""Dataset readers on tiny fixtures written in each dataset's on-disk format."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fcnfast.data import (NYUD_CLASSES, SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES,
                          ImageFolderSegmentation, NYUDv2, SBDSegmentation, SIFTFlow,
                          VOCSegmentation, seg11valid_ids)
from fcnfast.palette import VOC_CLASSES, voc_palette

scipy_io = pytest.importorskip("scipy.io")

H, W = 5, 7  # odd sizes, height != width, so a transposed array shows up as a size mismatch


# ---------------------------------------------------------------- fixture writers

def _rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(seed, high, h=H, w=W):
    return np.random.default_rng(seed).integers(0, high, (h, w)).astype(np.uint8)


def _write_image(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, quality=100) if path.endswith(".jpg") else \
        Image.fromarray(pixels).save(path)


def _write_palette_png(path, indices):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(indices, mode="P")
    im.putpalette(voc_palette(256).reshape(-1).tolist())
    im.save(path)


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def _write_mat(path, variables):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy_io.savemat(path, variables)


VOC_IDS = {"train": ["2008_000002", "2008_000003"], "val": ["2007_000033", "2007_000042", "2007_000061"]}


def _make_voc(root, year="2011", extra_sets=None):
    voc = os.path.join(root, f"VOC{year}")
    labels = {}
    for n, sample_id in enumerate(VOC_IDS["train"] + VOC_IDS["val"]):
        _write_image(os.path.join(voc, "JPEGImages", f"{sample_id}.jpg"), _rgb(n))
        lab = _labels(n, 21)
        lab[0, :] = 255  # VOC's object border
        _write_palette_png(os.path.join(voc, "SegmentationClass", f"{sample_id}.png"), lab)
        labels[sample_id] = lab
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    _write_lines(os.path.join(sets, "train.txt"), VOC_IDS["train"])
    _write_lines(os.path.join(sets, "val.txt"), VOC_IDS["val"])
    _write_lines(os.path.join(sets, "trainval.txt"), VOC_IDS["train"] + VOC_IDS["val"])
    for name, ids in (extra_sets or {}).items():
        _write_lines(os.path.join(sets, f"{name}.txt"), ids)
    return voc, labels


def _sbd_mat(segmentation):
    # a MATLAB struct GTcls with the fields of SBD's cls/*.mat files
    return {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": np.unique(segmentation)}}


def _make_sbd(root, train=("2007_000042", "2008_000100"), val=("2008_000200",)):
    dataset = os.path.join(root, "benchmark_RELEASE", "dataset")
    labels = {}
    for n, sample_id in enumerate(list(train) + list(val)):
        _write_image(os.path.join(dataset, "img", f"{sample_id}.jpg"), _rgb(100 + n))
        lab = _labels(100 + n, 21)
        _write_mat(os.path.join(dataset, "cls", f"{sample_id}.mat"), _sbd_mat(lab))
        labels[sample_id] = lab
    _write_lines(os.path.join(dataset, "train.txt"), train)
    _write_lines(os.path.join(dataset, "val.txt"), val)
    return dataset, labels


SIFT_DIR = "spatial_envelope_256x256_static_8outdoorcategories"


def _make_siftflow(root, ids=("coast_arnat59", "street_urb506")):
    semantic, geometric = {}, {}
    for n, sample_id in enumerate(ids):
        _write_image(os.path.join(root, "Images", SIFT_DIR, f"{sample_id}.jpg"), _rgb(200 + n))
        sem = np.random.default_rng(n).integers(0, 34, (H, W))
        sem[0, 0], sem[0, 1] = 0, 33
        geo = np.random.default_rng(n).integers(-1, 4, (H, W))
        geo[0, 0], geo[0, 1] = -1, 0
        # the release stores S as double; one sample as int16 covers integer files
        _write_mat(os.path.join(root, "SemanticLabels", SIFT_DIR, f"{sample_id}.mat"),
                   {"S": sem.astype(np.float64 if n == 0 else np.int16), "names": "x"})
        _write_mat(os.path.join(root, "GeoLabels", SIFT_DIR, f"{sample_id}.mat"),
                   {"S": geo.astype(np.float64 if n == 0 else np.int16)})
        semantic[sample_id], geometric[sample_id] = sem, geo
    _write_lines(os.path.join(root, "trainval.txt"), ids[:1])
    _write_lines(os.path.join(root, "test.txt"), ids[1:])
    return semantic, geometric


def _make_nyud(root, ids=("5001", "5002")):
    labels = {}
    for n, sample_id in enumerate(ids):
        _write_image(os.path.join(root, "data", "images", f"img_{sample_id}.png"), _rgb(300 + n))
        _write_image(os.path.join(root, "data", "hha", f"img_{sample_id}.png"), _rgb(400 + n))
        lab = np.random.default_rng(n).integers(0, 41, (H, W)).astype(np.uint8)
        lab[0, 0], lab[0, 1] = 0, 40
        _write_mat(os.path.join(root, "segmentation", f"img_{sample_id}.mat"), {"segmentation": lab})
        labels[sample_id] = lab
    _write_lines(os.path.join(root, "train.txt"), ids[:1])
    _write_lines(os.path.join(root, "test.txt"), ids[1:])
    return labels


# ---------------------------------------------------------------- VOC

def test_voc_reads_palette_indices_and_border(tmp_path):
    _, labels = _make_voc(str(tmp_path))
    ds = VOCSegmentation(str(tmp_path), split="train")
    assert ds.ids == VOC_IDS["train"] and len(ds) == 2 and ds.classes == VOC_CLASSES
    image, lab = ds[1]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert lab.shape == (H, W) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, labels["2008_000003"])  # indices, not palette colours
    assert (lab[0] == 255).all()
    np.testing.assert_array_equal(ds[-1][1], lab)
    assert len(VOCSegmentation(str(tmp_path), split="trainval")) == 5


@pytest.mark.parametrize("where", ["voc_dir", "devkit_parent"])
def test_voc_root_forms(tmp_path, where):
    root = str(tmp_path / "VOCdevkit") if where == "devkit_parent" else str(tmp_path)
    voc, _ = _make_voc(root, year="2012")
    given = voc if where == "voc_dir" else str(tmp_path)
    ds = VOCSegmentation(given, split="val", year=2012)
    assert ds.root == voc and ds.ids == VOC_IDS["val"]


def test_seg11valid_ids_keeps_voc_order_minus_sbd_train():
    assert seg11valid_ids(["c", "a", "b", "d"], ["b", "x", "c"]) == ["a", "d"]


def test_voc_seg11valid_computed_from_sbd(tmp_path):
    _make_voc(str(tmp_path / "voc"))
    _make_sbd(str(tmp_path / "sbd"))  # SBD train holds 2007_000042, a VOC val image
    ds = VOCSegmentation(str(tmp_path / "voc"), split="seg11valid", sbd_root=str(tmp_path / "sbd"))
    assert ds.ids == ["2007_000033", "2007_000061"]
    assert ds[0][1].shape == (H, W)


def test_voc_seg11valid_prefers_official_list(tmp_path):
    _make_voc(str(tmp_path / "voc"), extra_sets={"seg11valid": ["2007_000061"]})
    _make_sbd(str(tmp_path / "sbd"))
    ds = VOCSegmentation(str(tmp_path / "voc"), split="seg11valid", sbd_root=str(tmp_path / "sbd"))
    assert ds.ids == ["2007_000061"]


def test_voc_seg11valid_needs_list_or_sbd(tmp_path):
    _make_voc(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="sbd_root"):
        VOCSegmentation(str(tmp_path), split="seg11valid")


def test_voc_bad_arguments_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC root"):
        VOCSegmentation(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="VOC2011 not found"):
        VOCSegmentation(str(tmp_path))
    voc, _ = _make_voc(str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        VOCSegmentation(str(tmp_path), split="test")
    with pytest.raises(ValueError, match="year"):
        VOCSegmentation(str(tmp_path), year="2010")
    os.remove(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"))
    with pytest.raises(FileNotFoundError, match="train.txt"):
        VOCSegmentation(str(tmp_path), split="train")


def test_voc_broken_samples(tmp_path):
    voc, _ = _make_voc(str(tmp_path))
    ds = VOCSegmentation(str(tmp_path), split="val")
    os.remove(os.path.join(voc, "JPEGImages", "2007_000033.jpg"))
    with pytest.raises(FileNotFoundError, match="2007_000033.jpg"):
        ds[0]
    os.remove(os.path.join(voc, "SegmentationClass", "2007_000042.png"))
    with pytest.raises(FileNotFoundError, match="2007_000042.png"):
        ds[1]
    # a colour-coded label is not class indices
    Image.fromarray(_rgb(9)).save(os.path.join(voc, "SegmentationClass", "2007_000042.png"))
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[1]
    _write_palette_png(os.path.join(voc, "SegmentationClass", "2007_000061.png"), _labels(3, 21, h=W, w=H))
    with pytest.raises(ValueError, match="size mismatch"):
        ds[2]
    _write_palette_png(os.path.join(voc, "SegmentationClass", "2007_000061.png"),
                       np.full((H, W), 30, np.uint8))
    with pytest.raises(ValueError, match=r"\[30\]"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds["2007_000061"]


# ---------------------------------------------------------------- SBD

def test_sbd_fixture_matches_official_access_pattern(tmp_path):
    dataset, labels = _make_sbd(str(tmp_path))
    mat = scipy_io.loadmat(os.path.join(dataset, "cls", "2008_000100.mat"))
    # pytorch-fcn / voc_layers.py read the real files this way
    np.testing.assert_array_equal(mat["GTcls"][0]["Segmentation"][0], labels["2008_000100"])


@pytest.mark.parametrize("root_level", ["parent", "release", "dataset"])
def test_sbd_reads_gtcls_segmentation(tmp_path, root_level):
    dataset, labels = _make_sbd(str(tmp_path))
    root = {"parent": str(tmp_path), "release": os.path.dirname(dataset), "dataset": dataset}[root_level]
    ds = SBDSegmentation(root, split="train")
    assert ds.ids == ["2007_000042", "2008_000100"] and ds.classes == VOC_CLASSES
    image, lab = ds[1]
    assert image.shape == (H, W, 3) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, labels["2008_000100"])
    assert SBDSegmentation(root, split="val").ids == ["2008_000200"]


def test_sbd_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="SBD root"):
        SBDSegmentation(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SBD dataset not found"):
        SBDSegmentation(str(tmp_path))
    dataset, _ = _make_sbd(str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        SBDSegmentation(dataset, split="test")
    os.remove(os.path.join(dataset, "val.txt"))
    with pytest.raises(FileNotFoundError, match=r"val.txt.*\['train'\]"):
        SBDSegmentation(dataset, split="val")
    ds = SBDSegmentation(dataset)
    cls = os.path.join(dataset, "cls")
    _write_mat(os.path.join(cls, "2007_000042.mat"), {"GTinst": {"Segmentation": _labels(0, 21)}})
    with pytest.raises(ValueError, match="no variable 'GTcls'"):
        ds[0]
    _write_mat(os.path.join(cls, "2007_000042.mat"), {"GTcls": {"Boundaries": _labels(0, 2)}})
    with pytest.raises(ValueError, match="no field 'Segmentation'"):
        ds[0]
    _write_mat(os.path.join(cls, "2007_000042.mat"), _sbd_mat(_labels(0, 21, h=W, w=H)))
    with pytest.raises(ValueError, match="size mismatch"):
        ds[0]
    with open(os.path.join(cls, "2007_000042.mat"), "wb") as f:
        f.write(b"not a mat file")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        ds[0]
    os.remove(os.path.join(cls, "2008_000100.mat"))
    with pytest.raises(FileNotFoundError, match="2008_000100.mat"):
        ds[1]
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    _make_sbd(str(tmp_path))
    with pytest.raises(ImportError, match="pip install scipy"):
        ds[1]


# ---------------------------------------------------------------- SIFT Flow

def test_siftflow_label_rules(tmp_path):
    semantic, geometric = _make_siftflow(str(tmp_path))
    assert len(SIFTFLOW_SEMANTIC_CLASSES) == 33 and SIFTFLOW_GEOMETRIC_CLASSES == ("sky", "horizontal", "vertical")
    for split, sample_id in (("trainval", "coast_arnat59"), ("test", "street_urb506")):
        sem_ds = SIFTFlow(str(tmp_path), split=split)
        assert sem_ds.ids == [sample_id] and sem_ds.classes == SIFTFLOW_SEMANTIC_CLASSES
        image, sem = sem_ds[0]
        assert image.shape == (H, W, 3) and sem.dtype == np.uint8
        expected = np.where(semantic[sample_id] == 0, 255, semantic[sample_id] - 1)
        np.testing.assert_array_equal(sem, expected)
        assert sem[0, 0] == 255 and sem[0, 1] == 32
        geo_ds = SIFTFlow(str(tmp_path), split=split, target="geometric")
        assert geo_ds.classes == SIFTFLOW_GEOMETRIC_CLASSES
        geo = geo_ds[0][1]
        raw = geometric[sample_id]
        np.testing.assert_array_equal(geo, np.where(raw <= 0, 255, raw - 1))
        assert geo[0, 0] == 255 and geo[0, 1] == 255 and set(np.unique(geo)) <= {0, 1, 2, 255}
        image_both, (sem_both, geo_both) = SIFTFlow(str(tmp_path), split=split, target="both")[0]
        np.testing.assert_array_equal(sem_both, sem)
        np.testing.assert_array_equal(geo_both, geo)


def test_siftflow_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="SIFT Flow root"):
        SIFTFlow(str(tmp_path / "nowhere"))
    _make_siftflow(str(tmp_path))
    with pytest.raises(ValueError, match="target"):
        SIFTFlow(str(tmp_path), target="depth")
    with pytest.raises(FileNotFoundError, match=r"train.txt.*\['test', 'trainval'\]"):
        SIFTFlow(str(tmp_path), split="train")
    with pytest.raises(ValueError, match="plain name"):
        SIFTFlow(str(tmp_path), split="../test")
    ds = SIFTFlow(str(tmp_path), target="both")
    sem_path = os.path.join(str(tmp_path), "SemanticLabels", SIFT_DIR, "coast_arnat59.mat")
    _write_mat(sem_path, {"S": np.full((H, W), 34.0)})
    with pytest.raises(ValueError, match=r"\[34\]"):
        ds[0]
    _write_mat(sem_path, {"S": np.full((H, W), 1.5)})
    with pytest.raises(ValueError, match="whole numbers"):
        ds[0]
    _write_mat(sem_path, {"S": np.ones((W, H))})
    with pytest.raises(ValueError, match="size mismatch"):
        ds[0]
    _write_mat(sem_path, {"L": np.ones((H, W))})
    with pytest.raises(ValueError, match="no variable 'S'"):
        ds[0]
    os.remove(os.path.join(str(tmp_path), "GeoLabels", SIFT_DIR, "coast_arnat59.mat"))
    with pytest.raises(FileNotFoundError, match="GeoLabels"):
        SIFTFlow(str(tmp_path), target="geometric")[0]


# ---------------------------------------------------------------- NYUDv2

def test_nyud_modalities_and_labels(tmp_path):
    labels = _make_nyud(str(tmp_path))
    assert len(NYUD_CLASSES) == 40 and NYUD_CLASSES[0] == "wall" and NYUD_CLASSES[-1] == "otherprop"
    rgb_ds = NYUDv2(str(tmp_path), split="train")
    assert rgb_ds.ids == ["5001"] and rgb_ds.classes == NYUD_CLASSES
    rgb, lab = rgb_ds[0]
    np.testing.assert_array_equal(rgb, _rgb(300))  # PNG: lossless
    np.testing.assert_array_equal(lab, np.where(labels["5001"] == 0, 255, labels["5001"] - 1))
    assert lab[0, 0] == 255 and lab[0, 1] == 39
    hha, _ = NYUDv2(str(tmp_path), split="train", modality="hha")[0]
    np.testing.assert_array_equal(hha, _rgb(400))
    both, _ = NYUDv2(str(tmp_path), split="train", modality="rgbhha")[0]
    assert both.shape == (H, W, 6) and both.dtype == np.uint8
    np.testing.assert_array_equal(both[..., :3], rgb)
    np.testing.assert_array_equal(both[..., 3:], hha)
    assert NYUDv2(str(tmp_path), split="test").ids == ["5002"]


def test_nyud_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="NYUDv2 root"):
        NYUDv2(str(tmp_path / "nowhere"))
    _make_nyud(str(tmp_path))
    with pytest.raises(ValueError, match="modality"):
        NYUDv2(str(tmp_path), modality="depth")
    with pytest.raises(FileNotFoundError, match=r"val.txt.*\['test', 'train'\]"):
        NYUDv2(str(tmp_path), split="val")
    ds = NYUDv2(str(tmp_path), split="train", modality="rgbhha")
    seg = os.path.join(str(tmp_path), "segmentation", "img_5001.mat")
    _write_mat(seg, {"segmentation": np.full((H, W), 41, np.uint8)})
    with pytest.raises(ValueError, match=r"\[41\]"):
        ds[0]
    _write_mat(seg, {"labels": np.ones((H, W), np.uint8)})
    with pytest.raises(ValueError, match="no variable 'segmentation'"):
        ds[0]
    _write_mat(seg, {"segmentation": np.ones((H, W), np.uint8)})
    _write_image(os.path.join(str(tmp_path), "data", "hha", "img_5001.png"), _rgb(0, h=W, w=H))
    with pytest.raises(ValueError, match="size mismatch.*hha"):
        ds[0]
    os.remove(os.path.join(str(tmp_path), "data", "hha", "img_5001.png"))
    with pytest.raises(FileNotFoundError, match="img_5001.png"):
        ds[0]
    assert NYUDv2(str(tmp_path), split="train")[0][0].shape == (H, W, 3)  # rgb alone needs no HHA


# ---------------------------------------------------------------- folders

def test_image_folder_pairs_by_stem(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _write_image(str(images / "b.jpg"), _rgb(1))
    _write_image(str(images / "a.png"), _rgb(2))
    _write_palette_png(str(labels / "b.png"), _labels(1, 3))
    gray = _labels(2, 3)
    gray[1, 1] = 255
    _write_image(str(labels / "a.png"), gray)  # grayscale ("L") labels are indices too
    (images / "notes.txt").write_text("not an image")
    ds = ImageFolderSegmentation(str(images), str(labels), classes=("bg", "cat", "dog"))
    assert ds.ids == ["a", "b"] and ds.classes == ("bg", "cat", "dog")
    image, lab = ds[0]
    np.testing.assert_array_equal(image, _rgb(2))
    np.testing.assert_array_equal(lab, gray)
    np.testing.assert_array_equal(ds[1][1], _labels(1, 3))
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch_images, batch_labels = next(iter(loader))
    assert tuple(batch_images.shape) == (2, H, W, 3) and tuple(batch_labels.shape) == (2, H, W)
    assert ImageFolderSegmentation(str(images), str(labels)).classes == ()


def test_image_folder_errors(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    with pytest.raises(FileNotFoundError, match="images directory"):
        ImageFolderSegmentation(str(images), str(labels))
    _write_image(str(images / "a.jpg"), _rgb(1))
    _write_image(str(images / "b.jpg"), _rgb(2))
    _write_palette_png(str(labels / "a.png"), _labels(1, 3))
    _write_palette_png(str(labels / "c.png"), _labels(1, 3))
    with pytest.raises(ValueError, match=r"\['b.jpg'\].*\['c.png'\]"):
        ImageFolderSegmentation(str(images), str(labels))
    os.remove(str(labels / "c.png"))
    _write_palette_png(str(labels / "b.png"), _labels(1, 3))
    _write_image(str(images / "b.png"), _rgb(2))
    with pytest.raises(ValueError, match="two files for 'b'"):
        ImageFolderSegmentation(str(images), str(labels))
    os.remove(str(images / "b.png"))
    ds = ImageFolderSegmentation(str(images), str(labels), classes=("bg", "cat"))
    with pytest.raises(ValueError, match=r"\[2\]"):
        ds[0]
    Image.fromarray(_rgb(3)).save(str(labels / "a.png"))
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderSegmentation(str(empty), str(empty))


def test_empty_split_file_is_an_error(tmp_path):
    _make_nyud(str(tmp_path))
    _write_lines(os.path.join(str(tmp_path), "train.txt"), [])
    with pytest.raises(ValueError, match="lists no sample ids"):
        NYUDv2(str(tmp_path))
