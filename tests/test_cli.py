"""The fcnfast command line."""
import numpy as np
import pytest
import torch
from PIL import Image

from fcnfast.cli import main
from fcnfast.models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = build_model("fcn_alexnet", 4)
    with torch.no_grad():
        model.score_fr.weight.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("ckpt") / "alex.pth"
    torch.save(model.state_dict(), path)
    return path


def test_info(checkpoint, capsys):
    assert main(["info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "fcn_alexnet" in out and "classes      4" in out and "BGR" in out


def test_segment_writes_label_and_overlay_pngs(checkpoint, tmp_path, capsys):
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["segment", str(checkpoint), str(tmp_path / "a.png"), "-o", str(out), "--overlay",
                 "--device", "cpu"]) == 0
    labels = Image.open(out / "a_labels.png")
    assert labels.mode == "P" and labels.size == (90, 70)
    assert np.asarray(labels).max() < 4
    assert Image.open(out / "a_overlay.png").size == (90, 70)
    assert "a.png: 90x70" in capsys.readouterr().out


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnfast: error:") and "nope.pt" in err


def test_segment_backends_agree_and_check_reports(checkpoint, tmp_path, capsys):
    img = np.random.default_rng(1).integers(0, 256, (41, 53, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "b.png")
    outs = {}
    for backend, dtype in (("torch", "float32"), ("auto", "float32"), ("cpp", "float32")):
        out = tmp_path / f"out_{backend}"
        assert main(["segment", str(checkpoint), str(tmp_path / "b.png"), "-o", str(out),
                     "--device", "cpu", "--backend", backend, "--dtype", dtype]) == 0
        outs[backend] = np.asarray(Image.open(out / "b_labels.png"))
    np.testing.assert_array_equal(outs["auto"], outs["torch"])
    np.testing.assert_array_equal(outs["cpp"], outs["torch"])
    capsys.readouterr()
    assert main(["check", str(checkpoint), str(tmp_path / "b.png"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "firm pixels" in out and "OK" in out and "upsample_crop_argmax=" in out
    assert main(["check", str(checkpoint), "--device", "cpu", "--backend", "torch"]) == 2
