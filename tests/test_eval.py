"""Scoring a model over a dataset (fcnfast.evaluation, `fcnfast eval`): the result equals score.py's
metrics computed directly from ``segment`` outputs with ConfusionMeter, on the readers' fixtures."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import fcnfast
from fcnfast.cli import main
from fcnfast.data import (NYUD_CLASSES, SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES,
                          ImageFolderSegmentation, NYUDv2, SIFTFlow, VOCSegmentation)
from fcnfast.evaluation import EvalResult, evaluate_dataset, open_eval_dataset
from fcnfast.metrics import ConfusionMeter
from fcnfast.models import build_model
from fcnfast.palette import VOC_CLASSES

from test_data_readers import (_make_nyud, _make_siftflow, _make_voc, _rgb, _write_image,
                               _write_palette_png)

NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fwavacc")


def make(arch, num_classes, seed=0):
    """A narrow model with random weights (bilinear deconvolutions), so its labels vary."""
    model = build_model(arch, num_classes, **NARROW).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "upscore" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def outputs(seg, dataset, pick=lambda labels: labels, head=None):
    """(ground truth, ``segment``'s labels) of every image."""
    out = []
    for i in range(len(dataset)):
        image, labels = dataset[i]
        pred = seg.segment(image)
        out.append((pick(labels), pred[head] if head else pred))
    return out


def meter_of(pairs, n_classes):
    """score.py's way: one histogram over the images."""
    meter = ConfusionMeter(n_classes)
    for gt, pred in pairs:
        meter.update(gt, pred)
    return meter


def direct(seg, dataset, n_classes, pick=lambda labels: labels, head=None):
    return meter_of(outputs(seg, dataset, pick, head), n_classes)


def assert_head_equals(scores, meter, names):
    np.testing.assert_array_equal(scores.confusion, meter.hist)
    want = meter.scores()
    for k in METRICS:
        assert getattr(scores, k) == pytest.approx(want[k], nan_ok=True), k
    assert list(scores.per_class_iu) == list(names) == scores.class_names
    np.testing.assert_allclose(list(scores.per_class_iu.values()), want["per_class_iu"])


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_voc_equals_direct_confusion(tmp_path, backend):
    _make_voc(str(tmp_path))
    ds = VOCSegmentation(str(tmp_path), split="val")
    seg = fcnfast.Segmenter(make("fcn8s", 21), device="cpu", backend=backend)
    result = evaluate_dataset(seg, ds, progress=False)
    assert isinstance(result, EvalResult) and list(result.heads) == ["semantic"]
    assert result.count == 3 and result.seconds > 0 and result.images_per_s > 0
    assert result.split == "val" and result.arch == "fcn8s" and result.backend == seg.backend
    pairs = outputs(seg, ds)
    meter = meter_of(pairs, 21)
    assert meter.hist.sum() == 3 * 4 * 7  # 5×7 labels, their border row ignored
    assert_head_equals(result.heads["semantic"], meter, VOC_CLASSES)
    assert result.mean_iu == result.heads["semantic"].mean_iu
    # limit scores the first N images only
    first = evaluate_dataset(seg, ds, limit=2, progress=False)
    assert first.count == 2
    np.testing.assert_array_equal(first.heads["semantic"].confusion, meter_of(pairs[:2], 21).hist)


def test_mixed_sizes_batched_and_ignored_labels(tmp_path):
    """Images of several sizes, grouped into batches; 255 and labels >= classes are ignored."""
    sizes = [(5, 7), (9, 6), (5, 7), (5, 7)]  # runs of one size: 1, 1, 2
    for n, (h, w) in enumerate(sizes):
        _write_image(str(tmp_path / "images" / f"im{n}.png"), _rgb(n, h, w))
        lab = np.random.default_rng(n).integers(0, 21, (h, w)).astype(np.uint8)
        lab[0, :3] = 255, 30, 21  # ignore, and two labels past the 21 classes
        _write_palette_png(str(tmp_path / "labels" / f"im{n}.png"), lab)
    ds = ImageFolderSegmentation(str(tmp_path / "images"), str(tmp_path / "labels"))
    # float64: batch and single runs agree to the last bit that matters for argmax
    seg = fcnfast.Segmenter(make("fcn16s", 21, seed=1), device="cpu", backend="torch",
                            dtype=torch.float64)
    result = evaluate_dataset(seg, ds, batch_size=2, progress=False)
    meter = direct(seg, ds, 21)
    assert meter.hist.sum() == sum(h * w - 3 for h, w in sizes)
    assert result.count == 4
    assert_head_equals(result.heads["semantic"], meter, VOC_CLASSES)  # the model's names


def test_siftflow_two_heads(tmp_path):
    _make_siftflow(str(tmp_path))
    both = SIFTFlow(str(tmp_path), split="test", target="both")
    seg = fcnfast.Segmenter(make("siftflow_fcn16s", 33, seed=2), device="cpu")
    assert seg.heads == ("semantic", "geometric")
    result = evaluate_dataset(seg, both, progress=False)
    assert list(result.heads) == ["semantic", "geometric"]
    sem = direct(seg, both, 33, lambda lab: lab[0], "semantic")
    geo = direct(seg, both, 3, lambda lab: lab[1], "geometric")
    assert_head_equals(result.heads["semantic"], sem, SIFTFLOW_SEMANTIC_CLASSES)
    assert_head_equals(result.heads["geometric"], geo, SIFTFLOW_GEOMETRIC_CLASSES)
    assert result.mean_iu == result.heads["semantic"].mean_iu  # the first head's at the top
    d = result.to_dict()
    assert d["heads"]["geometric"]["classes"] == 3
    assert d["heads"]["geometric"]["metrics"]["pixel_acc"] == pytest.approx(geo.scores()["pixel_acc"])
    assert d["metrics"] == d["heads"]["semantic"]["metrics"]
    json.dumps(d, allow_nan=False)  # undefined IUs are null, not NaN
    # A semantic-only reader scores the semantic head; a geometric-only reader the geometric one.
    only = evaluate_dataset(seg, SIFTFlow(str(tmp_path), split="test"), progress=False)
    assert list(only.heads) == ["semantic"]
    assert_head_equals(only.heads["semantic"], sem, SIFTFLOW_SEMANTIC_CLASSES)
    geo_only = evaluate_dataset(seg, SIFTFlow(str(tmp_path), split="test", target="geometric"),
                                progress=False)
    assert list(geo_only.heads) == ["geometric"]
    np.testing.assert_array_equal(geo_only.heads["geometric"].confusion, geo.hist)
    # The table has a row per head.
    table = result.table()
    assert "semantic " in table and "geometric " in table and "per-class IU (geometric)" in table


def test_single_head_model_on_siftflow_scores_semantic(tmp_path):
    _make_siftflow(str(tmp_path))
    both = SIFTFlow(str(tmp_path), split="trainval", target="both")
    seg = fcnfast.Segmenter(make("fcn32s", 33, seed=3), device="cpu", backend="torch")
    result = evaluate_dataset(seg, both, progress=False)
    assert list(result.heads) == ["semantic"]
    assert_head_equals(result.heads["semantic"], direct(seg, both, 33, lambda lab: lab[0]),
                       SIFTFLOW_SEMANTIC_CLASSES)  # the dataset's names


def test_errors(tmp_path):
    _make_siftflow(str(tmp_path))
    voc_model = fcnfast.Segmenter(make("fcn32s", 21), device="cpu", backend="torch")
    with pytest.raises(ValueError, match="class-count mismatch.*21 classes.*33"):
        evaluate_dataset(voc_model, SIFTFlow(str(tmp_path), split="test"), progress=False)
    two = fcnfast.Segmenter(make("siftflow_fcn32s", 33), device="cpu", backend="torch")
    image = _rgb(0)
    with pytest.raises(ValueError, match="class-count mismatch.*semantic head has 33.*21"):
        evaluate_dataset(two, VOCSegmentation(_make_voc(str(tmp_path / "voc"))[0], split="val"),
                         progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate_dataset(voc_model, [], progress=False)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="limit"):
            evaluate_dataset(voc_model, [(image, np.zeros((5, 7), np.uint8))], limit=bad)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_dataset(voc_model, [(image, np.zeros((5, 7), np.uint8))], batch_size=0)
    with pytest.raises(ValueError, match="sample 0: labels are"):
        evaluate_dataset(voc_model, [(image, np.zeros((7, 5), np.uint8))], progress=False)
    with pytest.raises(ValueError, match="6.*RGB-HHA"):
        evaluate_dataset(voc_model, [(np.zeros((5, 7, 6), np.uint8), np.zeros((5, 7), np.uint8))],
                         progress=False)
    with pytest.raises(ValueError, match="--data must be one of"):
        open_eval_dataset("coco", str(tmp_path))
    with pytest.raises(ValueError, match="needs --root"):
        open_eval_dataset("voc", None)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        open_eval_dataset("nyud", str(tmp_path / "nowhere"))


class _ColorHHA:
    """A stand-in for the two-stream color-HHA net (being added elsewhere): records the halves."""

    heads = ()
    input_names = ("rgb", "hha")
    classes = list(NYUD_CLASSES)
    num_classes = 40
    arch = "stub"
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def segment(self, rgb, hha=None):
        self.calls.append((rgb.copy(), hha.copy()))
        return ((rgb[..., 0].astype(np.int64) + hha[..., 0]) % 40).astype(np.uint8)


def test_color_hha_model_gets_both_halves(tmp_path):
    _make_nyud(str(tmp_path))
    stub = _ColorHHA()
    ds = open_eval_dataset("nyud", str(tmp_path), segmenter=stub)
    assert isinstance(ds, NYUDv2) and ds.modality == "rgbhha" and ds.split == "test"
    result = evaluate_dataset(stub, ds, progress=False)
    rgb, hha = NYUDv2(str(tmp_path), "test", "rgb")[0][0], NYUDv2(str(tmp_path), "test", "hha")[0][0]
    assert len(stub.calls) == 1
    np.testing.assert_array_equal(stub.calls[0][0], rgb)
    np.testing.assert_array_equal(stub.calls[0][1], hha)
    meter = ConfusionMeter(40).update(ds[0][1], stub.segment(rgb, hha=hha))
    assert_head_equals(result.heads["semantic"], meter, NYUD_CLASSES)
    with pytest.raises(ValueError, match="RGB and an HHA"):
        evaluate_dataset(stub, NYUDv2(str(tmp_path), "test", "rgb"), progress=False)
    # a one-input model gets RGB by default
    assert open_eval_dataset("nyud", str(tmp_path), segmenter=None).modality == "rgb"


def test_the_two_stream_net_is_evaluated_on_both_images(tmp_path):
    _make_nyud(str(tmp_path))
    model = build_model("nyud_fcn32s_color_hha", 40, widths=(8, 8, 16, 16, 16), fc_width=32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name != "upscore.weight":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    seg = fcnfast.Segmenter(model, device="cpu")
    ds = open_eval_dataset("nyud", str(tmp_path), segmenter=seg)
    result = evaluate_dataset(seg, ds, progress=False)
    meter = ConfusionMeter(40)
    for i in range(len(ds)):
        rgb = NYUDv2(str(tmp_path), "test", "rgb")[i][0]
        hha = NYUDv2(str(tmp_path), "test", "hha")[i][0]
        meter.update(ds[i][1], seg.segment(rgb, hha=hha))
    assert_head_equals(result.heads["semantic"], meter, NYUD_CLASSES)


def test_open_eval_dataset_defaults(tmp_path):
    _make_voc(str(tmp_path / "voc"), extra_sets={"seg11valid": ["2007_000061"]})
    _make_siftflow(str(tmp_path / "sift"))
    voc = open_eval_dataset("voc", str(tmp_path / "voc"))
    assert voc.split == "seg11valid" and voc.ids == ["2007_000061"]  # the paper's split
    two = fcnfast.Segmenter(make("siftflow_fcn32s", 33), device="cpu", backend="torch")
    assert open_eval_dataset("siftflow", str(tmp_path / "sift"), segmenter=two).target == "both"
    assert open_eval_dataset("siftflow", str(tmp_path / "sift")).target == "semantic"
    assert len(open_eval_dataset("synthetic", None, synthetic_count=3)) == 3


# ---------------------------------------------------------------- the command

def _popen(*args):
    return subprocess.Popen([sys.executable, "-m", "fcnfast", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    _make_siftflow(str(root / "sift"))
    _make_voc(str(root / "voc"), extra_sets={"seg11valid": ["2007_000033", "2007_000061"]})
    (root / "empty" / "images").mkdir(parents=True)
    (root / "empty" / "labels").mkdir()
    fcnfast.save(make("siftflow_fcn16s", 33, seed=4), root / "sift.safetensors")
    fcnfast.save(make("fcn8s", 21, seed=5), root / "voc.safetensors")
    return root


def test_cli_eval_siftflow_json_as_a_subprocess(trees, tmp_path):
    """The command as a user runs it: both heads in the JSON; a bad input is one line, exit 2."""
    model = trees / "sift.safetensors"
    run = _popen("eval", model, "--data", "siftflow", "--root", trees / "sift", "--backend", "torch",
                 "--json", tmp_path / "sift.json", "--device", "cpu")
    # A 21-class model on SIFT Flow's 33: found after loading the model, still one line.
    bad = _popen("eval", trees / "voc.safetensors", "--data", "siftflow", "--root", trees / "sift",
                 "--device", "cpu")
    out, err = run.communicate(timeout=120)
    _, bad_err = bad.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "Traceback" not in err and "eval" in err  # the progress bar, on stderr
    assert "images/s" in out and "geometric" in out and "per-class IU (semantic)" in out
    assert bad.returncode == 2 and "Traceback" not in bad_err, bad_err
    assert bad_err.startswith("fcnfast: error: class-count mismatch")
    assert len(bad_err.strip().splitlines()) == 1

    got = json.loads((tmp_path / "sift.json").read_text())
    assert got["model"] == str(model) and got["dataset"] == "siftflow" and got["split"] == "test"
    assert got["count"] == 1 and got["seconds"] > 0 and got["images_per_s"] > 0
    assert got["backend"] == "torch" and list(got["heads"]) == ["semantic", "geometric"]
    seg = fcnfast.load(model, device="cpu", backend="torch")
    both = SIFTFlow(str(trees / "sift"), split="test", target="both")
    for k, (head, n) in enumerate((("semantic", 33), ("geometric", 3))):
        want = direct(seg, both, n, lambda lab: lab[k], head).scores()
        head_json = got["heads"][head]
        for m in METRICS:
            assert head_json["metrics"][m] == pytest.approx(want[m]), (head, m)
        iu = [math.nan if v is None else v for v in head_json["per_class_iu"].values()]
        np.testing.assert_allclose(iu, want["per_class_iu"])
    assert got["metrics"] == got["heads"]["semantic"]["metrics"]
    assert list(got["heads"]["geometric"]["per_class_iu"]) == list(SIFTFLOW_GEOMETRIC_CLASSES)


def test_cli_eval_voc_default_split_on_the_engine(trees, tmp_path, capsys):
    model = trees / "voc.safetensors"
    assert main(["eval", "--model", str(model), "--data", "voc", "--root", str(trees / "voc"),
                 "--json", str(tmp_path / "voc.json"), "-q", "--dtype", "float32",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # -q: no bar
    assert "on voc seg11valid: 2 images" in out and "mean IU" in out and "aeroplane" in out
    got = json.loads((tmp_path / "voc.json").read_text())
    assert got["split"] == "seg11valid" and got["count"] == 2 and got["backend"] != "torch"
    seg = fcnfast.load(str(model), device="cpu", dtype=torch.float32)
    want = direct(seg, VOCSegmentation(str(trees / "voc"), split="seg11valid"), 21).scores()
    for m in METRICS:
        assert got["metrics"][m] == pytest.approx(want[m]), m


@pytest.mark.parametrize("args, needle", [
    (("--data", "coco", "--root", "{voc}"), "--data must be one of"),
    (("--data", "voc", "--root", "{root}/nowhere"), "not a directory"),
    (("--data", "voc"), "needs --root"),
    (("--data", "folder", "--root", "{root}/empty"), "no images"),
    (("--data", "voc", "--root", "{voc}", "--split", "test"), "split"),
    (("--data", "voc", "--root", "{voc}", "--limit", "0"), "--limit must be >= 1"),
    (("--data", "voc", "--root", "{voc}", "--json", "{root}/no/such/dir/out.json"), "--json"),
    (("--root", "{voc}"), "--data"),
    (("--model", "{model}", "--data", "voc", "--root", "{voc}"), "name the model once"),
], ids=["unknown-data", "missing-root", "no-root", "empty", "bad-split", "limit", "json-dir",
        "no-data", "model-twice"])
def test_cli_eval_bad_input_is_one_line_exit_2(trees, capsys, args, needle):
    model = str(trees / "voc.safetensors")
    fill = dict(root=str(trees), voc=str(trees / "voc"), model=model)
    assert main(["eval", model, *(a.format(**fill) for a in args), "-q", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnfast: error:") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
