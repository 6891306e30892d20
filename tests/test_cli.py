"""The fcnfast command line."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fcnfast
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


def cli(*args, timeout=120):
    """The command as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fcnfast", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def _png(path, seed, shape=(30, 40, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_version_and_info_default(run_main):
    r = run_main("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fcnfast {fcnfast.__version__}"
    r = run_main("info", "default")
    assert r.returncode == 0, r.stderr
    assert "arch         fcn8s" in r.stdout and "classes      6" in r.stdout


def test_info_forms(checkpoint, capsys):
    assert main(["info"]) == 0 and "fcn8s" in capsys.readouterr().out
    assert main(["info", "--model", str(checkpoint)]) == 0
    assert "fcn_alexnet" in capsys.readouterr().out


def test_segment_folders_and_globs_mirror_paths(tmp_path):
    _png(tmp_path / "in" / "a" / "x.png", 0)
    _png(tmp_path / "in" / "b" / "x.png", 1)
    _png(tmp_path / "in" / "b" / "deep" / "y.png", 2)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    r = cli("segment", tmp_path / "in", "-o", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert got == ["a/x_labels.png", "b/deep/y_labels.png", "b/x_labels.png"]
    out2 = tmp_path / "out2"
    assert main(["segment", str(tmp_path / "in" / "**" / "x.png"), "-o", str(out2),
                 "--device", "cpu"]) == 0
    assert sorted(str(p.relative_to(out2)) for p in out2.rglob("*.png")) == ["a/x_labels.png",
                                                                             "b/x_labels.png"]


def test_segment_errors_are_clear(tmp_path, run_main):
    img = _png(tmp_path / "i.png", 3)
    (tmp_path / "file").write_text("x")
    r = cli("segment", img, "-o", tmp_path / "file")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "existing file" in r.stderr
    r = run_main("segment", img, "--alpha", "3")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--alpha" in r.stderr
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    r = run_main("segment", img, bad, "-o", tmp_path / "o", "--device", "cpu")
    assert r.returncode == 1
    assert "broken.png" in r.stderr and (tmp_path / "o" / "i_labels.png").exists()


def test_overlay_leaves_background_undrawn_and_legend(tmp_path):
    img = _png(tmp_path / "scene.png", 4, (64, 80, 3))
    rgb = np.asarray(Image.open(img))
    out = tmp_path / "o"
    assert main(["segment", str(img), "-o", str(out), "--overlay", "--device", "cpu"]) == 0
    labels = np.asarray(Image.open(out / "scene_labels.png"))
    over = np.asarray(Image.open(out / "scene_overlay.png"))
    assert (labels == 0).any() and (labels != 0).any()
    np.testing.assert_array_equal(over[labels == 0], rgb[labels == 0])
    assert (over[labels != 0] != rgb[labels != 0]).any()
    out2 = tmp_path / "o2"
    assert main(["segment", str(img), "-o", str(out2), "--overlay", "--draw-background",
                 "--legend", "--device", "cpu"]) == 0
    over2 = np.asarray(Image.open(out2 / "scene_overlay.png"))
    assert over2.shape[0] > 64 and over2.shape[1] == 80  # the legend strip below
    assert (over2[:64][labels == 0] != rgb[labels == 0]).any()


def test_convert_round_trip(checkpoint, tmp_path, capsys):
    out = tmp_path / "alex.safetensors"
    r = cli("convert", checkpoint, out)
    assert r.returncode == 0, r.stderr
    assert "fcn_alexnet" in r.stdout and "4 classes" in r.stdout and str(out) in r.stdout
    img = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    a = fcnfast.load(str(checkpoint), device="cpu", backend="torch").segment(img)
    b = fcnfast.load(str(out), device="cpu", backend="torch").segment(img)
    np.testing.assert_array_equal(a, b)
    capsys.readouterr()
    assert main(["convert", str(checkpoint), str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(checkpoint), str(out), "--overwrite"]) == 0
    assert main(["convert", str(checkpoint), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnfast: error:") and ".safetensors" in err
    assert not (tmp_path / "x.onnx").exists()
    assert main(["convert", str(checkpoint), str(tmp_path / "x.pt")]) == 0
    c = fcnfast.load(str(tmp_path / "x.pt"), device="cpu", backend="torch").segment(img)
    np.testing.assert_array_equal(a, c)
    # The built-in model keeps its class names and palette in the native format.
    assert main(["convert", "default", str(tmp_path / "d.safetensors")]) == 0
    default, back = fcnfast.load("default"), fcnfast.load(str(tmp_path / "d.safetensors"))
    assert back.classes == default.classes and back.arch == default.arch
    np.testing.assert_array_equal(back.palette[:back.num_classes],
                                  default.palette[:default.num_classes])


def test_bench_prints_both_rows(capsys):
    assert main(["bench", "--model", "default", "--size", "64x80", "--repeats", "2",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "float32 reference" in out and "fcnfast engine" in out and "engine / reference" in out
    assert "64x80" in out and "float32" in out and "% of pixels" in out
    assert main(["bench", "--size", "64by80"]) == 2 and "--size" in capsys.readouterr().err


def test_deprecated_positional_model_still_works(checkpoint, tmp_path, capsys):
    img = _png(tmp_path / "p.png", 6)
    assert main(["segment", str(checkpoint), str(img), "-o", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert len(err.strip().splitlines()) == 1 and "deprecated" in err and "--model" in err
    assert "class_" in captured.out  # the checkpoint's unnamed classes, not the default model's
    assert main(["check", str(checkpoint), str(img), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "deprecated" in captured.err and "OK" in captured.out


def test_no_inputs_and_rerun_into_own_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "nothing*.png")]) == 2
    assert "no files match" in capsys.readouterr().err
    _png(tmp_path / "in" / "z.png", 7)
    out = tmp_path / "in" / "out"  # inside the input folder: a rerun must not read its outputs
    for _ in range(2):
        assert main(["segment", str(tmp_path / "in"), "-o", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.rglob("*.png")) == ["z_labels.png"]


def test_expected_errors_and_interrupt_exit_codes(monkeypatch, capsys):
    import fcnfast.cli as cli_mod

    def boom(exc):
        def fn(args):
            raise exc
        return fn

    for exc in (fcnfast.CheckpointError("bad file"), PermissionError("denied"),
                IsADirectoryError("a dir"), RuntimeError("line one\nline two"), TypeError("t")):
        monkeypatch.setattr(cli_mod, "_cmd_info", boom(exc))
        assert main(["info"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fcnfast: error: ") and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr(cli_mod, "_cmd_info", boom(KeyboardInterrupt()))
    assert main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "fcnfast: interrupted"


def test_overlay_of_a_16_bit_image(tmp_path):
    """A 16-bit image is decoded once, to floats; its overlay is drawn from the same decode."""
    path = tmp_path / "depthlike.png"
    Image.fromarray(np.random.default_rng(6).integers(0, 65535, (40, 50), dtype=np.uint16)).save(path)
    out = tmp_path / "o"
    assert main(["segment", str(path), "-o", str(out), "--overlay", "--device", "cpu"]) == 0
    over = np.asarray(Image.open(out / "depthlike_overlay.png"))
    labels = np.asarray(Image.open(out / "depthlike_labels.png"))
    gray = np.round(np.asarray(Image.open(path), dtype=np.float64) / 65535 * 255)
    np.testing.assert_array_equal(over[labels == 0], np.repeat(gray[labels == 0][:, None], 3, 1))


def test_info_says_what_runs_here(capsys):
    from fcnfast import _ext, ops

    assert main(["info"]) == 0
    lines = dict(line.split(None, 1) if " " in line.strip() else (line, "")
                 for line in capsys.readouterr().out.splitlines() if not line.startswith("  "))
    assert lines["backends"].split(", ") == ops.backends()
    level = _ext.native_cpu_capability()
    assert lines["cpu"] == f"kernels  {level or 'not built'}"
    amx, why = ops.amx_status()
    assert lines["amx"] == "matmul   " + ("yes" if amx else f"no: {why}")
    if level is not None:
        import fcnfast._C as native

        assert level == native.cpu_capability() and level in native.cpu_capabilities()
