"""The training side on tiny nets: recipe pieces, each stage, resume, logs, the train CLI."""
import csv
import json

import numpy as np
import pytest
import torch

import fcnfast
from fcnfast.data.synthetic import SyntheticScenes
from fcnfast.models import build_model
from fcnfast.models.init import bilinear_weight
from fcnfast.training import (TrainConfig, drop_losses, fit, initial_model, make_optimizer,
                              next_stage, segmentation_loss, train)
from fcnfast.training.augment import augment_pair

TINY = dict(widths=(2, 4, 4, 8, 8), fc_width=8)
QUIET = dict(progress=False, log_every=1)


def _scenes(n=4, size=24, seed=0):
    return SyntheticScenes(n, size=(size, size), seed=seed)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- recipe pieces ------------------------------------------------------------------------------

def test_config_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.momentum, c.batch_size, c.weight_decay, c.bias_lr_mult) == (0.99, 1, 5e-4, 2.0)
    assert c.normalize_loss and c.base_lr == 1e-4 and c.upsampling == "fixed"
    assert TrainConfig(normalize_loss=False).base_lr == 1e-10
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ValueError, match="loss_sample_drop"):
        TrainConfig(loss_sample_drop=1.0)
    with pytest.raises(TypeError, match="unknown training option"):
        TrainConfig().replace(learning_rate=1)


def test_param_groups_bias_lr_x2_and_frozen_deconvs():
    model = build_model("fcn8s", 3, **TINY)
    from fcnfast.training import set_upsampling_trainable

    set_upsampling_trainable(model, "fixed")
    opt = make_optimizer(model, TrainConfig())
    weights, biases = opt.param_groups
    assert (weights["name"], weights["lr"], weights["weight_decay"]) == ("weights", 1e-4, 5e-4)
    assert (biases["name"], biases["lr"], biases["weight_decay"]) == ("biases", 2e-4, 0.0)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.score_fr.bias) in {id(p) for p in biases["params"]}
    assert id(model.conv1_1.weight) in {id(p) for p in weights["params"]}
    for deconv in (model.upscore2, model.upscore_pool4, model.upscore8):
        assert id(deconv.weight) not in in_opt and not deconv.weight.requires_grad
    set_upsampling_trainable(model, "learn_2x")
    in_opt = {id(p) for g in make_optimizer(model, TrainConfig()).param_groups for p in g["params"]}
    assert id(model.upscore2.weight) in in_opt and id(model.upscore_pool4.weight) in in_opt
    assert id(model.upscore8.weight) not in in_opt


def test_loss_sampling_drops_the_asked_fraction():
    labels = torch.zeros(4, 100, 100, dtype=torch.long)
    assert drop_losses(labels, 0.0) is labels
    g = torch.Generator().manual_seed(0)
    dropped = drop_losses(labels, 0.3, ignore_index=255, generator=g)
    frac = (dropped == 255).float().mean().item()
    assert abs(frac - 0.3) < 0.01
    assert ((dropped == 0) | (dropped == 255)).all()
    with pytest.raises(ValueError, match="drop"):
        drop_losses(labels, 1.0)


def test_loss_normalisation_ignore_and_class_weights():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[0, 0, :4] = 255
    valid = labels != 255
    logp = torch.log_softmax(scores, 1)
    per_pixel = -logp.gather(1, labels.clamp(max=2).unsqueeze(1))[:, 0]
    total = per_pixel[valid].sum()
    summed = segmentation_loss(scores, labels, normalize=False)
    torch.testing.assert_close(summed, total.float())
    mean = segmentation_loss(scores, labels, normalize=True)
    torch.testing.assert_close(mean, (total / valid.sum()).float())
    w = torch.tensor([1.0, 2.0, 0.5])
    wp = w[labels.clamp(max=2)]
    weighted = segmentation_loss(scores, labels, normalize=True, class_weights=w)
    torch.testing.assert_close(weighted, ((per_pixel * wp)[valid].sum() / wp[valid].sum()).float())
    # No labelled pixel: zero, and still differentiable.
    s = scores.clone().requires_grad_()
    loss = segmentation_loss(s, torch.full_like(labels, 255))
    loss.backward()
    assert loss.item() == 0.0


def test_augmentation_keeps_labels_exact():
    image, labels = _scenes(1, 32)[0]
    rng = np.random.default_rng(0)
    im, lab = augment_pair(image, labels, rng, flip=True, scale_jitter=(0.5, 1.5),
                           crop_size=(40, 20))
    assert im.shape == (40, 20, 3) and im.dtype == np.uint8 and lab.shape == (40, 20)
    # Nearest-neighbour labels: only values that were there, plus the ignore label for padding.
    assert set(np.unique(lab)) <= set(np.unique(labels)) | {255}
    flipped, lab_f = augment_pair(image, labels, np.random.default_rng(1), flip=True)
    assert np.array_equal(lab_f, labels) or np.array_equal(lab_f, labels[:, ::-1])


# --- training -----------------------------------------------------------------------------------

def test_loss_decreases_and_logs_are_written(tmp_path):
    torch.manual_seed(0)
    model = initial_model("fcn32s", 6, widths=TINY["widths"], fc_width=TINY["fc_width"])
    data = _scenes(1, 32)  # one fixed batch
    config = TrainConfig(iterations=12, lr=1e-3, momentum=0.9, val_every=6, **QUIET)
    result = fit(model, data, data, config, out_dir=str(tmp_path), class_names=data.classes)
    losses = [float(r["loss"]) for r in _rows(tmp_path / "train_log.csv")]
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]
    assert [int(r["iteration"]) for r in _rows(tmp_path / "val_log.csv")] == [6, 12]
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["stage"] == "fcn32s" and len(log["validations"]) == 2
    assert log["final"]["iterations"] == 12 and log["config"]["lr"] == 1e-3
    assert 0 <= result.mean_iu <= 1 and not result.model.training
    seg = fcnfast.load(tmp_path / "model.safetensors", device="cpu")
    assert seg.classes == list(data.classes) and seg.model.widths == TINY["widths"]


def test_frozen_deconvolutions_stay_bilinear():
    torch.manual_seed(0)
    model = initial_model("fcn8s", 6, **TINY)
    before = model.score_fr.weight.clone()
    fit(model, _scenes(2), None, TrainConfig(iterations=3, lr=1e-2, **QUIET))
    for deconv in (model.upscore2, model.upscore_pool4, model.upscore8):
        torch.testing.assert_close(deconv.weight, bilinear_weight(6, 6, deconv.kernel_size[0]),
                                   rtol=0, atol=0)
    assert not torch.equal(model.score_fr.weight, before)


def _train_state(out, iterations, resume=False):
    torch.manual_seed(0)
    model = initial_model("fcn16s", 6, **TINY)
    config = TrainConfig(iterations=iterations, lr=1e-3, momentum=0.9, flip=True,
                         scale_jitter=(0.8, 1.2), loss_sample_drop=0.25, **QUIET)
    fit(model, _scenes(3), None, config, out_dir=str(out), resume=resume)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return model, state


def test_resume_continues_exactly(tmp_path):
    straight, s_state = _train_state(tmp_path / "a", 5)
    _train_state(tmp_path / "b", 2)
    resumed, r_state = _train_state(tmp_path / "b", 5, resume=True)
    assert s_state["iteration"] == r_state["iteration"] == 5
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for i, buf in s_state["optimizer"]["state"].items():
        torch.testing.assert_close(buf["momentum_buffer"],
                                   r_state["optimizer"]["state"][i]["momentum_buffer"], rtol=0, atol=0)
    assert [r["iteration"] for r in _rows(tmp_path / "b" / "train_log.csv")] == \
        [str(i) for i in range(1, 6)]
    # A training checkpoint is also a checkpoint fcnfast.load reads.
    assert fcnfast.load(tmp_path / "b" / "checkpoint.pt", device="cpu").arch == "fcn16s"


def test_next_stage_inherits_the_previous_one():
    torch.manual_seed(0)
    s32 = initial_model("fcn32s", 4, **TINY)
    with torch.no_grad():
        s32.score_fr.weight.normal_()
    s16 = next_stage(s32, "fcn16s")
    assert torch.equal(s16.conv3_1.weight, s32.conv3_1.weight)
    assert torch.equal(s16.score_fr.weight, s32.score_fr.weight)
    assert not s16.score_pool4.weight.any()
    with torch.no_grad():
        s16.score_pool4.weight.normal_()
    s8 = next_stage(s16, "fcn8s")
    assert torch.equal(s8.score_pool4.weight, s16.score_pool4.weight)
    assert not s8.score_pool3.weight.any() and s8.widths == TINY["widths"]


def test_staged_and_at_once_training(tmp_path):
    data, val = _scenes(2), _scenes(2, seed=5)
    result = train(data, "fcn8s", val, stage_iterations=[2, 1, 1], out_dir=str(tmp_path),
                   lr=1e-3, **TINY, **QUIET)
    assert [r.arch for r in result.stages] == ["fcn32s", "fcn16s", "fcn8s"]
    assert set(result.mean_ius) == {"fcn32s", "fcn16s", "fcn8s"}
    for arch in ("fcn32s", "fcn16s", "fcn8s"):
        assert (tmp_path / arch / "model.safetensors").exists()
        assert (tmp_path / arch / "val_log.csv").exists()
    # Resuming a finished run retrains nothing.
    again = train(data, "fcn8s", val, stage_iterations=[2, 1, 1], out_dir=str(tmp_path),
                  resume=True, **TINY, **QUIET)
    assert again.stages[-1].scores is None
    at_once = train(data, "fcn8s_atonce", None, iterations=2, **TINY, **QUIET)
    assert [r.arch for r in at_once.stages] == ["fcn8s_atonce"]
    assert at_once.model.pool3_scale == 1e-4


def test_fine_tuning_from_a_trained_fcn_keeps_the_trunk(tmp_path):
    torch.manual_seed(0)
    trained = initial_model("fcn8s", 6, **TINY)
    with torch.no_grad():
        trained.score_fr.weight.normal_()
    fcnfast.save(trained, tmp_path / "t.safetensors")
    model = initial_model("fcn8s", 3, init=str(tmp_path / "t.safetensors"))
    assert model.num_classes == 3 and model.widths == TINY["widths"]
    assert torch.equal(model.conv2_1.weight, trained.conv2_1.weight)
    assert not model.score_fr.weight.any()


def test_first_stage_starts_from_a_convolutionalised_classifier_file(tmp_path):
    """FCN-32s-style training from an ImageNet classifier the user has (Caffe AlexNet layout, on
    disk): the trunk and fc6/fc7 come from it (fc6 reshaped to 6×6), the score layer from zero."""
    from test_surgery import _caffe_alexnet  # a random Caffe-layout AlexNet classifier

    classifier = _caffe_alexnet(torch.Generator().manual_seed(3))
    path = tmp_path / "alexnet_imagenet.pth"
    torch.save({"state_dict": classifier}, path)
    model = initial_model("fcn_alexnet", 3, init=str(path))
    assert torch.equal(model.conv3.weight, classifier["conv3.weight"])
    assert torch.equal(model.fc6.weight, classifier["fc6.weight"].view(4096, 256, 6, 6))
    assert not model.score_fr.weight.any()
    with pytest.raises(ValueError, match=r"outside the model's 3 classes"):
        train(_scenes(1, size=16), "fcn_alexnet", init=str(path), num_classes=3, iterations=1,
              **QUIET)  # the synthetic scenes have 6 classes
    result = train(_scenes(1, size=16), "fcn_alexnet", init=str(path), num_classes=6,
                   iterations=1, lr=1e-4, **QUIET)
    assert result.model.num_classes == 6
    assert not torch.equal(result.model.score_fr.weight, torch.zeros_like(result.model.score_fr.weight))


def test_train_cli(tmp_path, capsys):
    from fcnfast.cli import main

    rc = main(["train", "--data", "synthetic", "--synthetic-count", "2", "--val-count", "1",
               "--synthetic-size", "24", "24", "--widths", "2", "4", "4", "8", "8",
               "--fc-width", "8", "--arch", "fcn16s", "--stage-iterations", "1", "1",
               "--lr", "1e-3", "-o", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["fcn32s", "fcn16s"]
    assert "mean IU" in out[-1] and (tmp_path / "fcn16s" / "model.safetensors").exists()


def test_mixed_precision_option():
    torch.manual_seed(0)
    model = initial_model("fcn32s", 6, **TINY)
    with pytest.raises(ValueError, match="fp16"):
        fit(model, _scenes(1), None, TrainConfig(iterations=1, amp="fp16", device="cpu", **QUIET))
    # bf16 autocast runs on the CPU too (the GPU is where it pays).
    r = fit(model, _scenes(1), _scenes(1), TrainConfig(iterations=1, amp="bf16", device="cpu",
                                                       **QUIET))
    assert r.scores is not None and model.score_fr.weight.dtype == torch.float32


def test_open_dataset_by_name(tmp_path):
    from PIL import Image

    from fcnfast.training.dataset_names import open_dataset

    assert len(open_dataset("synthetic", synthetic_count=3, synthetic_size=(20, 20))) == 3
    train_first = open_dataset("synthetic", synthetic_count=1)[0][1]
    held_out_first = open_dataset("synthetic", synthetic_count=1, val=True)[0][1]
    assert not np.array_equal(train_first, held_out_first)
    with pytest.raises(ValueError, match="data must be one of"):
        open_dataset("imagenet")
    with pytest.raises(ValueError, match="root"):
        open_dataset("voc")
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.ones((8, 9), np.uint8)).save(tmp_path / "labels" / "a.png")
    image, labels = open_dataset("folder", str(tmp_path))[0]
    assert image.shape == (8, 9, 3) and labels.max() == 1
