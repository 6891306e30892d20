"""`fcnfast demo` with the shipped default model, and the model file itself."""
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

import fcnfast
from fcnfast.api import DEFAULT_MODEL
from fcnfast.cli import main
from fcnfast.data.synthetic import SYNTHETIC_CLASSES


def _mean_iu(line):
    m = re.search(r"mean IU ([0-9.]+)%", line)
    assert m, line
    return float(m.group(1))


def test_default_model_is_shipped_small_and_described():
    assert os.path.getsize(DEFAULT_MODEL) < 5e6
    seg = fcnfast.load(device="cpu")  # "default"
    assert seg.arch == "fcn8s" and seg.classes == list(SYNTHETIC_CLASSES)
    assert seg.model.widths != (64, 128, 256, 512, 512)  # the narrow net


def test_demo_writes_overlay_and_scores_well_above_chance(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--output", str(out), "--device", "cpu", "--count", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    # Chance (uniform guesses over 6 classes) scores under 10% mean IU; all-background ~11%.
    assert _mean_iu(line) > 50, line
    assert re.search(r"[0-9.]+ frames/s", line) and "backend" in line
    picture = np.asarray(Image.open(out))
    # Two captioned rows of three scenes (prediction over truth), a legend strip below.
    assert picture.shape[1] == 3 * 128 and picture.shape[0] > 2 * 128 + 2 * 14
    white = (picture == 255).all(-1)
    assert white[:14].mean() > 0.8 and white[128 + 14:128 + 28].mean() > 0.8  # the captions
    assert white[2 * 128 + 28:].mean() > 0.5  # the legend


def test_python_m_fcnfast_demo(tmp_path):
    out = tmp_path / "d.png"
    proc = subprocess.run([sys.executable, "-m", "fcnfast", "demo", "-o", str(out), "--count", "1",
                           "--size", "96", "96", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "frames/s" in proc.stdout


def test_load_with_new_class_count_keeps_the_trunk():
    """Fine-tuning start: the shipped FCN-8s with 3 fresh classes (zero scores, bilinear ups)."""
    base = fcnfast.load(device="cpu", backend="torch")
    seg = fcnfast.load("default", device="cpu", num_classes=3)
    assert seg.num_classes == 3 and seg.classes == ["class_0", "class_1", "class_2"]
    assert (seg.model.conv3_1.weight == base.model.conv3_1.weight).all()
    assert not seg.model.score_fr.weight.any() and not seg.model.score_pool4.weight.any()
    labels = seg.segment(np.zeros((20, 30, 3), np.uint8))
    assert labels.shape == (20, 30) and labels.max() < 3
