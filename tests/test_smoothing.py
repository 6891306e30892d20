"""Temporal smoothing: the engine's average of coarse scores equals the reference's average of the
full-resolution logits (the final upsampling is linear), on firm pixels; size changes and scene
cuts restart it."""
import numpy as np
import pytest
import torch

import fcnfast
from fcnfast.engine.smoothing import ScoreSmoother, check_smoothing

from test_engine import assert_firm_agreement, make_model, reference_scores, scenes


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # make_model's trunk init draws from the global generator


def ema_reference(model, frames, a, reset=None):
    """The definition: EMA of the float32 reference's full-resolution logits, frame after frame."""
    out, state, prev = [], None, None
    for f in frames:
        x = reference_scores(model, f[None]).double()[0]
        thumb = f.double().mean(-1) / 255.0
        if state is None or state.shape != x.shape or (
                reset is not None and prev is not None and prev.shape == thumb.shape
                and (thumb - prev).abs().mean() > reset):
            state = x
        else:
            state = a * state + (1 - a) * x
        prev = thumb
        out.append(state.float())
    return out


def moving_frames(n, h, w, seed=0):
    """Consecutive frames of one scene, shifting a pixel a frame and noisy: labels flicker."""
    base = scenes(1, h, w + n, seed)[0]
    g = torch.Generator().manual_seed(seed)
    frames = []
    for i in range(n):
        f = base[:, i:i + w].to(torch.int16) + torch.randint(-40, 41, (h, w, 3), generator=g)
        frames.append(f.clamp(0, 255).to(torch.uint8))
    return frames


@pytest.mark.parametrize("arch", ["fcn8s", "fcn_alexnet", "fcn_resnet50"])
@pytest.mark.parametrize("dtype", [torch.float32, None], ids=["float32", "auto"])
def test_engine_smoothing_equals_reference_ema(arch, dtype):
    model = make_model(arch)
    frames = moving_frames(5, 61, 67)
    a = 0.6
    expected = ema_reference(model, frames, a)
    seg = fcnfast.Segmenter(model, device="cpu", dtype=dtype)
    got = list(seg.stream(frames, batch_size=2, smooth=a, smooth_reset=None))
    for lab, ref in zip(got, expected):
        assert_firm_agreement(lab[None], ref[None], seg.dtype)
    # Smoothing changes the answer (else this test would not see it): frame-by-frame labels differ
    # (checked in float32, where every arch's labels flicker on these frames).
    if dtype is torch.float32:
        plain = list(seg.stream(frames, batch_size=2))
        assert any((p != g).any() for p, g in zip(plain[1:], got[1:]))


def test_reference_path_smoothing_is_the_definition():
    model = make_model("fcn_alexnet")
    frames = moving_frames(4, 29, 31, seed=3)
    expected = ema_reference(model, frames, 0.5)
    seg = fcnfast.Segmenter(model, device="cpu", backend="torch")
    got = list(seg.stream(frames, batch_size=3, smooth=0.5, smooth_reset=None))
    for lab, ref in zip(got, expected):
        assert_firm_agreement(lab[None], ref[None], torch.float32)


def test_size_change_and_scene_cut_restart():
    model = make_model("fcn8s")
    a = 0.9
    small = moving_frames(3, 33, 41)
    cut = [torch.full_like(small[0], 255) - f for f in moving_frames(3, 33, 41, seed=7)]
    big = moving_frames(2, 40, 44, seed=2)
    frames = small + cut + big
    seg = fcnfast.Segmenter(model, device="cpu", dtype=torch.float32)
    # Consecutive frames differ by ~0.07 in mean intensity, across the cut by ~0.2.
    got = list(seg.stream(frames, batch_size=4, smooth=a, smooth_reset=0.15))
    expected = ema_reference(model, frames, a, reset=0.15)
    for lab, ref in zip(got, expected):
        assert_firm_agreement(lab[None], ref[None], torch.float32)
    # The first frame after the cut and after the size change are that frame alone.
    for i in (3, 6):
        alone = seg.segment(frames[i])
        assert torch.equal(got[i], alone)


def test_smoother_state_is_float32_and_checks_arguments():
    sm = ScoreSmoother(0.5, None)
    x = torch.randn(3, 4, 5, 6, dtype=torch.bfloat16)
    y = sm.update(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y[1], 0.5 * x[0].float() + 0.5 * x[1].float())
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="smooth"):
            check_smoothing(bad, None)
    with pytest.raises(ValueError, match="smooth_reset"):
        check_smoothing(0.5, 0.0)
    seg = fcnfast.Segmenter(make_model("fcn_alexnet"), device="cpu")
    with pytest.raises(ValueError, match="smooth"):
        list(seg.stream([np.zeros((8, 8, 3), np.uint8)], smooth=2))


def test_non_finite_low_precision_scores_rerun_and_restart(monkeypatch):
    from test_engine import reference_scores as ref_scores

    model = make_model("fcn8s")
    frames = moving_frames(4, 37, 45)
    seg = fcnfast.Segmenter(model, device="cpu", dtype=torch.bfloat16)
    engine = seg.engine
    real, calls = engine.coarse_scores, []

    def overflow_second(x):  # frame 1 overflows, as fp16 fc6/fc7 can
        h = real(x)
        calls.append(1)
        if len(calls) == 2:
            h = h.clone()
            h[0, 0, 0, 0] = float("inf")
        return h

    monkeypatch.setattr(engine, "coarse_scores", overflow_second)
    sm = ScoreSmoother(0.8, None)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        got = [engine.run_smoothed(f[None], sm)[0] for f in frames]
    assert torch.equal(got[1].long(), ref_scores(model, frames[1][None]).argmax(1)[0])
    assert torch.isfinite(sm.state).all()
    # After the restart frame 2 is alone again (its own scores), not averaged with frame 1.
    monkeypatch.setattr(engine, "coarse_scores", real)
    assert torch.equal(got[2], engine.run(frames[2][None])[0])
