"""Segmentation scores: the definitions of the paper's score.py, checked on cases worked by hand."""
import math
import warnings

import numpy as np
import pytest
import torch

from fcnfast.metrics import ConfusionMeter, confusion, scores_from_confusion, segmentation_scores

# A 2×3 image with 3 classes.
#   gt   = 0 0 1      pred = 0 1 1
#          1 2 2             1 2 0
# Pixel pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
#   hist = [[1, 1, 0],      diag = 1 2 1 (sum 4), total 6
#           [0, 2, 0],      rows = 2 2 2, cols = 2 3 1
#           [1, 0, 1]]
# pixel acc = 4/6; per-class acc = 1/2, 2/2, 1/2 -> mean acc = 2/3
# IU: 1/(2+2-1) = 1/3, 2/(2+3-2) = 2/3, 1/(2+1-1) = 1/2 -> mean IU = (1/3+2/3+1/2)/3 = 1/2
# freq = 1/3 each -> f.w. IU = (1/3+2/3+1/2)/3 = 1/2
GT = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 0]], dtype=np.uint8)
HIST = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def score_py_fast_hist(a, b, n):
    """score.py's fast_hist, verbatim but for names."""
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def test_hand_computed_2x3():
    hist = confusion(GT, PRED, 3)
    assert hist.dtype == np.int64 and hist.shape == (3, 3)
    np.testing.assert_array_equal(hist, HIST)
    s = segmentation_scores(GT, PRED, 3)
    assert s["pixel_acc"] == pytest.approx(4 / 6)
    assert s["mean_acc"] == pytest.approx(2 / 3)
    assert s["mean_iu"] == pytest.approx(1 / 2)
    assert s["fwavacc"] == pytest.approx(1 / 2)
    np.testing.assert_allclose(s["per_class_iu"], [1 / 3, 2 / 3, 1 / 2])
    assert all(isinstance(s[k], float) for k in ("pixel_acc", "mean_acc", "mean_iu", "fwavacc"))


def test_unequal_class_frequencies():
    # gt = 0 0 0 1, pred = 0 0 1 1 (a 1×4 image, 2 classes)
    # hist = [[2, 1], [0, 1]]; rows 3 1, cols 2 2, diag 2 1, total 4
    # pixel acc = 3/4; acc = 2/3, 1/1 -> mean 5/6
    # IU = 2/(3+2-2) = 2/3, 1/(1+2-1) = 1/2 -> mean 7/12
    # freq = 3/4, 1/4 -> f.w. IU = 3/4*2/3 + 1/4*1/2 = 1/2 + 1/8 = 5/8
    s = segmentation_scores(np.array([[0, 0, 0, 1]]), np.array([[0, 0, 1, 1]]), 2)
    assert (s["pixel_acc"], s["mean_acc"], s["mean_iu"], s["fwavacc"]) == pytest.approx(
        (3 / 4, 5 / 6, 7 / 12, 5 / 8))


def test_absent_class_is_nan_and_skipped_by_the_means():
    # The 2×3 case scored with 4 classes: class 3 is in neither gt nor pred, so its IU and
    # accuracy are 0/0 = nan and every mean equals the 3-class one.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or empty-slice warnings leak out
        s = segmentation_scores(GT, PRED, 4)
    assert math.isnan(s["per_class_iu"][3])
    np.testing.assert_allclose(s["per_class_iu"][:3], [1 / 3, 2 / 3, 1 / 2])
    assert (s["pixel_acc"], s["mean_acc"], s["mean_iu"], s["fwavacc"]) == pytest.approx(
        (4 / 6, 2 / 3, 1 / 2, 1 / 2))


def test_class_only_predicted_counts_as_zero_iu():
    # gt = 0 0, pred = 0 1: hist [[1, 1], [0, 0]]; class 1 is predicted but never true.
    # IU0 = 1/(2+1-1) = 1/2, IU1 = 0/(0+1-0) = 0 -> mean IU 1/4 (score.py counts the 0)
    # acc0 = 1/2, acc1 = 0/0 = nan -> mean acc 1/2; freq = 1, 0 -> f.w. IU = 1/2
    s = segmentation_scores(np.array([0, 0]), np.array([0, 1]), 2)
    np.testing.assert_array_equal(s["per_class_iu"], [0.5, 0.0])
    assert (s["pixel_acc"], s["mean_acc"], s["mean_iu"], s["fwavacc"]) == pytest.approx(
        (1 / 2, 1 / 2, 1 / 4, 1 / 2))


def test_empty_histogram_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert all(math.isnan(s[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fwavacc"))
    assert np.isnan(s["per_class_iu"]).all()


def test_ignore_and_out_of_range_gt_are_dropped():
    # Same pixels as the 2×3 case plus four that must not count: 255 (ignore), 7 (>= n_classes)
    # and, in a signed array, -1. What pred holds there does not matter, even 255.
    gt = np.array([[0, 0, 1, 255, 7], [1, 2, 2, 255, -1]], dtype=np.int16)
    pred = np.array([[0, 1, 1, 255, 2], [1, 2, 0, 0, 99]], dtype=np.int16)
    np.testing.assert_array_equal(confusion(gt, pred, 3), HIST)


def test_ignore_index_inside_the_class_range():
    # ignore_index=2 drops the two gt==2 pixels: (2,2) and (2,0) leave the 2×3 histogram.
    expected = HIST.copy()
    expected[2] = 0
    np.testing.assert_array_equal(confusion(GT, PRED, 3, ignore_index=2), expected)
    np.testing.assert_array_equal(confusion(GT, PRED, 3, ignore_index=None), HIST)


def test_matches_score_py_on_random_labels():
    rng = np.random.default_rng(0)
    n = 21
    gt = rng.integers(0, n, size=(4, 37, 59)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, n, size=gt.shape).astype(np.uint8)
    np.testing.assert_array_equal(confusion(gt, pred, n), score_py_fast_hist(gt, pred, n))


def test_accumulation_equals_one_big_call():
    rng = np.random.default_rng(1)
    n = 5
    images = [(rng.integers(0, n + 1, size=(h, w)), rng.integers(0, n, size=(h, w)))
              for h, w in ((7, 9), (13, 5), (1, 1), (20, 31))]
    for gt, _ in images:
        gt[gt == n] = 255
    meter = ConfusionMeter(n)
    for gt, pred in images:
        meter.update(gt, pred)
    all_gt = np.concatenate([gt.ravel() for gt, _ in images])
    all_pred = np.concatenate([pred.ravel() for _, pred in images])
    np.testing.assert_array_equal(meter.hist, confusion(all_gt, all_pred, n))
    big = segmentation_scores(all_gt, all_pred, n)
    acc = meter.scores()
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fwavacc"):
        assert acc[key] == pytest.approx(big[key])
    np.testing.assert_allclose(acc["per_class_iu"], big["per_class_iu"])

    # A batch (N, H, W) in one update counts the same as its images one by one.
    batch_gt = rng.integers(0, n, size=(3, 8, 8))
    batch_pred = rng.integers(0, n, size=(3, 8, 8))
    one, each = ConfusionMeter(n).update(batch_gt, batch_pred), ConfusionMeter(n)
    for g, p in zip(batch_gt, batch_pred):
        each.update(g, p)
    np.testing.assert_array_equal(one.hist, each.hist)


def test_meter_hist_is_a_copy_and_reset_clears():
    meter = ConfusionMeter(3).update(GT, PRED)
    h = meter.hist
    h[:] = 0
    np.testing.assert_array_equal(meter.hist, HIST)
    meter.reset()
    assert meter.hist.sum() == 0
    meter.update(GT, PRED)
    np.testing.assert_array_equal(meter.hist, HIST)
    assert "pixels=6" in repr(meter)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_torch_input(dtype):
    gt, pred = torch.from_numpy(GT).to(dtype), torch.from_numpy(PRED).to(dtype)
    np.testing.assert_array_equal(confusion(gt, pred, 3), HIST)
    # Non-contiguous views and a mix of numpy and torch work too.
    np.testing.assert_array_equal(confusion(gt.t(), pred.t(), 3), HIST)
    np.testing.assert_array_equal(confusion(GT, pred, 3), HIST)
    assert segmentation_scores(gt, pred, 3)["mean_iu"] == pytest.approx(1 / 2)
    s = scores_from_confusion(torch.from_numpy(HIST))
    assert s["mean_iu"] == pytest.approx(1 / 2)


def test_numpy_dtypes_and_views():
    for dtype in (np.uint8, np.uint16, np.int32, np.uint64):
        np.testing.assert_array_equal(confusion(GT.astype(dtype), PRED.astype(dtype), 3), HIST)
    np.testing.assert_array_equal(confusion(GT.T, PRED.T, 3), HIST)
    np.testing.assert_array_equal(confusion(GT[:, ::-1], PRED[:, ::-1], 3), HIST)


def test_empty_input():
    hist = confusion(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), 3)
    np.testing.assert_array_equal(hist, np.zeros((3, 3)))


@pytest.mark.parametrize("gt, pred, n, match, error", [
    (GT, PRED[:, :2], 3, "same shape", ValueError),
    (GT.astype(np.float32), PRED, 3, "gt must have an integer dtype", TypeError),
    (GT, PRED.astype(np.float64), 3, "pred must have an integer dtype", TypeError),
    (GT, torch.from_numpy(PRED).float(), 3, "pred must have an integer dtype", TypeError),
    (GT.astype(bool), PRED, 3, "gt must have an integer dtype", TypeError),
    (GT.tolist(), PRED, 3, "gt must be a numpy array or a torch tensor", TypeError),
    (GT, np.full_like(PRED, 2), 2, r"pred must lie in \[0, 2\)", ValueError),
    (GT, PRED.astype(np.int8) - 1, 3, r"pred must lie in \[0, 3\)", ValueError),
    (GT, PRED, 0, "n_classes must be at least 1", ValueError),
    (GT, PRED, 3.0, "n_classes must be an integer", TypeError),
])
def test_errors(gt, pred, n, match, error):
    with pytest.raises(error, match=match):
        confusion(gt, pred, n)


def test_argument_errors():
    with pytest.raises(TypeError, match="ignore_index"):
        confusion(GT, PRED, 3, ignore_index=0.5)
    with pytest.raises(ValueError, match="hist must be a square"):
        scores_from_confusion(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="negative"):
        scores_from_confusion(-np.eye(2))
    with pytest.raises(TypeError, match="hist must be"):
        scores_from_confusion([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="n_classes"):
        ConfusionMeter(0)
    with pytest.raises(ValueError, match="pred must lie"):
        ConfusionMeter(2).update(GT, np.full_like(PRED, 2))
