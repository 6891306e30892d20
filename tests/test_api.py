"""fcnfast.load / Segmenter: inputs, outputs, batches, conventions, formats, errors."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torch import nn

import fcnfast
from fcnfast.convention import CAFFE_BGR, TORCHVISION_RGB
from fcnfast.models import FCNBase, build_model

rng = np.random.default_rng(1)


def frame(h=131, w=157):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def randomise_scores(model, std=0.05):
    """Non-zero score layers so labels vary (FCN score layers start at zero)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and m.out_channels == model.num_classes:
                m.weight.normal_(0, std, generator=g)
                m.bias.normal_(0, std, generator=g) if m.bias is not None else None
    return model


@pytest.fixture(scope="module")
def alexnet_seg():
    return fcnfast.Segmenter(randomise_scores(build_model("fcn_alexnet", 6)), device="cpu",
                            dtype=torch.float32)


def manual_scores(model, img_uint8):
    """The pytorch-fcn recipe by hand: RGB→BGR, float64 minus mean, CHW, model."""
    x = (img_uint8[:, :, ::-1].astype(np.float64) - np.array(CAFFE_BGR.mean)).transpose(2, 0, 1)
    with torch.no_grad():
        return model(torch.from_numpy(x.copy()).float()[None])[0]


class Tiny(FCNBase):
    """A cheap stand-in with the FCN interface, for API behaviour that does not need a real trunk."""

    arch = "tiny"
    input_convention = TORCHVISION_RGB

    def __init__(self, num_classes):
        super().__init__()
        self.score = nn.Conv2d(3, num_classes, 1)

    @property
    def num_classes(self):
        return self.score.out_channels

    def forward(self, x):
        return self.score(x)


def test_segment_numpy_matches_reference(alexnet_seg):
    img = frame()
    labels = alexnet_seg.segment(img)
    assert isinstance(labels, np.ndarray) and labels.dtype == np.uint8 and labels.shape == img.shape[:2]
    scores = manual_scores(alexnet_seg.model, img)
    np.testing.assert_array_equal(labels, scores.argmax(0).numpy())
    assert scores.std(dim=(1, 2)).max() > 1e-3  # the scores vary over the image: not a blank test


def test_logits_full_resolution(alexnet_seg):
    img = frame(23, 31)
    s = alexnet_seg.logits(img)
    assert s.shape == (6, 23, 31) and s.dtype == np.float32
    np.testing.assert_allclose(s, manual_scores(alexnet_seg.model, img).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(s.argmax(0), alexnet_seg.segment(img))


def test_output_type_follows_input(alexnet_seg, tmp_path):
    img = frame(20, 26)
    want = alexnet_seg.segment(img)
    t = alexnet_seg.segment(torch.from_numpy(img))
    assert isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype == torch.uint8
    np.testing.assert_array_equal(t.numpy(), want)
    np.testing.assert_array_equal(alexnet_seg.segment(PILImage.fromarray(img)), want)
    path = tmp_path / "f.png"
    PILImage.fromarray(img).save(path)
    np.testing.assert_array_equal(alexnet_seg.segment(str(path)), want)
    # C×H×W float in [0, 1] is the same picture: same scores up to float rounding.
    chw = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    np.testing.assert_allclose(alexnet_seg.logits(chw).numpy(), alexnet_seg.logits(img), atol=2e-3)
    # Non-contiguous views.
    view = frame(40, 60)[::2, ::-2]
    np.testing.assert_array_equal(alexnet_seg.segment(view), alexnet_seg.segment(view.copy()))


def test_gray_and_rgba(alexnet_seg):
    g = rng.integers(0, 256, size=(19, 21), dtype=np.uint8)
    np.testing.assert_array_equal(alexnet_seg.segment(g), alexnet_seg.segment(np.stack([g] * 3, -1)))
    img = frame(19, 21)
    rgba = np.concatenate([img, np.full((19, 21, 1), 7, np.uint8)], -1)
    np.testing.assert_array_equal(alexnet_seg.segment(rgba), alexnet_seg.segment(img))


def test_segment_batch_list_mixed_sizes(alexnet_seg):
    imgs = [frame(20, 24), frame(31, 17), frame(20, 24), frame(1, 1), frame(20, 24)]
    out = alexnet_seg.segment_batch(imgs, batch_size=2)
    assert isinstance(out, list) and len(out) == len(imgs)
    for img, lab in zip(imgs, out):
        np.testing.assert_array_equal(lab, alexnet_seg.segment(img))
    assert alexnet_seg.segment_batch([]) == []


def test_segment_batch_stacked(alexnet_seg):
    batch = np.stack([frame(18, 22) for _ in range(3)])
    out = alexnet_seg.segment_batch(batch)
    assert isinstance(out, np.ndarray) and out.shape == (3, 18, 22)
    for i in range(3):
        np.testing.assert_array_equal(out[i], alexnet_seg.segment(batch[i]))
    t = alexnet_seg.segment_batch(torch.from_numpy(batch))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), out)
    with pytest.raises(fcnfast.ImageError, match="empty"):
        alexnet_seg.segment_batch(np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(fcnfast.ImageError, match="4-D"):
        alexnet_seg.segment_batch(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        alexnet_seg.segment_batch([frame()], batch_size=0)


def test_bad_images_rejected_before_the_model(alexnet_seg):
    with pytest.raises(fcnfast.ImageError, match="empty"):
        alexnet_seg.segment(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(fcnfast.ImageError, match="2 channels"):
        alexnet_seg.segment(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(fcnfast.ImageError, match="NaN"):
        alexnet_seg.segment(np.full((5, 5, 3), np.nan, np.float32))
    with pytest.raises(fcnfast.ImageError, match="image 1"):
        alexnet_seg.segment_batch([frame(), np.zeros((5, 5, 7), np.uint8)])


def test_label_dtype_by_class_count():
    few = fcnfast.Segmenter(randomise_scores(Tiny(256), 1.0), device="cpu").segment(frame(9, 9))
    many = fcnfast.Segmenter(randomise_scores(Tiny(300), 1.0), device="cpu").segment(frame(9, 9))
    assert few.dtype == np.uint8 and many.dtype == np.int32
    assert many.max() < 300


def test_colorize(alexnet_seg):
    labels = np.array([[0, 1], [2, 5]], np.uint8)
    pic = alexnet_seg.colorize(labels)
    assert pic.shape == (2, 2, 3) and pic.dtype == np.uint8
    assert pic[0, 0].tolist() == [0, 0, 0] and pic[0, 1].tolist() == [128, 0, 0]
    assert pic[1, 0].tolist() == [0, 128, 0]
    assert isinstance(alexnet_seg.colorize(torch.from_numpy(labels)), torch.Tensor)
    with pytest.raises(ValueError, match="labels must lie"):
        alexnet_seg.colorize(np.array([[300]], np.int32))
    with pytest.raises(TypeError, match="integer"):
        alexnet_seg.colorize(np.zeros((2, 2), np.float32))


def test_attributes_and_default_names(alexnet_seg):
    assert alexnet_seg.arch == "fcn_alexnet" and alexnet_seg.num_classes == 6
    assert alexnet_seg.classes == [f"class_{i}" for i in range(6)]
    assert alexnet_seg.device == torch.device("cpu")
    voc = fcnfast.Segmenter(Tiny(21), device="cpu")
    assert voc.classes[0] == "background" and voc.classes[15] == "person"


def test_backend_and_device_errors():
    m = Tiny(3)
    with pytest.raises(ValueError, match="backend must be one of"):
        fcnfast.Segmenter(m, backend="fastest", device="cpu")
    for named in ("triton", "cuda", "cpp"):
        with pytest.raises(RuntimeError, match=named):
            fcnfast.Segmenter(m, backend=named, device="cpu")
    with pytest.raises(TypeError, match="dtype"):
        fcnfast.Segmenter(m, dtype=torch.int8, device="cpu")
    with pytest.raises(TypeError, match="reference model"):
        fcnfast.Segmenter(nn.Conv2d(3, 3, 1), device="cpu")
    with pytest.raises(ValueError, match="class names"):
        fcnfast.Segmenter(m, class_names=["a"], device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the refusal on a machine without CUDA")
def test_cuda_device_refused_without_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fcnfast.Segmenter(Tiny(3), device="cuda")


@pytest.mark.needs_cuda
def test_cuda_device_used_with_cuda():
    seg = fcnfast.Segmenter(Tiny(3), device="cuda")
    assert seg.device.type == "cuda"
    labels = seg.segment(frame(17, 19))
    assert labels.shape == (17, 19) and labels.dtype == np.uint8


def test_torchvision_convention_used_for_resnet():
    model = randomise_scores(build_model("fcn_resnet50", 4)).eval()
    seg = fcnfast.Segmenter(model, device="cpu")
    assert seg.input_convention == TORCHVISION_RGB
    img = frame(17, 19)
    x = torch.from_numpy(img).permute(2, 0, 1).double()[None] / 255
    x = (x - torch.tensor(TORCHVISION_RGB.mean, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(TORCHVISION_RGB.std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model(x.float())[0]
    np.testing.assert_allclose(seg.logits(img), want.numpy(), rtol=1e-4, atol=1e-4)


def test_load_pytorch_fcn_checkpoint_and_save_native(tmp_path, alexnet_seg):
    # A pytorch-fcn trainer checkpoint wraps the state dict; DDP adds module. prefixes.
    sd = {f"module.{k}": v for k, v in alexnet_seg.model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": sd}, tmp_path / "ckpt.pth.tar")
    seg = fcnfast.load(tmp_path / "ckpt.pth.tar", device="cpu")
    assert seg.arch == "fcn_alexnet" and seg.num_classes == 6
    img = frame(29, 33)
    np.testing.assert_array_equal(seg.segment(img), alexnet_seg.segment(img))

    names = [f"thing{i}" for i in range(6)]
    custom = fcnfast.Segmenter(seg.model, class_names=names, device="cpu")
    fcnfast.save(custom, tmp_path / "native.safetensors")
    back = fcnfast.load(tmp_path / "native.safetensors", device="cpu")
    assert back.classes == names and back.input_convention == CAFFE_BGR
    np.testing.assert_array_equal(back.palette[:6], custom.palette[:6])
    np.testing.assert_array_equal(back.segment(img), alexnet_seg.segment(img))
    fcnfast.save(seg.model, tmp_path / "model.safetensors")
    assert fcnfast.load(tmp_path / "model.safetensors", device="cpu").arch == "fcn_alexnet"
    with pytest.raises(TypeError, match="Segmenter or an fcnfast model"):
        fcnfast.save({"a": 1}, tmp_path / "x.safetensors")


def test_load_errors(tmp_path):
    with pytest.raises(fcnfast.CheckpointError, match="missing.pt"):
        fcnfast.load(tmp_path / "missing.pt", device="cpu")
    with pytest.raises(TypeError, match="file path"):
        fcnfast.load(12)


@pytest.mark.needs_cuda
def test_cuda_input_returns_cuda_output(alexnet_seg):
    seg = fcnfast.Segmenter(copy.deepcopy(alexnet_seg.model), device="cuda")
    img = frame(21, 27)
    out = seg.segment(torch.from_numpy(img).cuda())
    assert out.is_cuda
    assert (out.cpu().numpy() == alexnet_seg.segment(img)).mean() > 0.999


def test_a_path_string_is_not_a_sequence_of_frames(tmp_path):
    seg = fcnfast.Segmenter(build_model("fcn_alexnet", 3), device="cpu")
    for call in (lambda: seg.segment_batch("frames.png"), lambda: list(seg.stream("clip.mp4")),
                 lambda: seg.segment_batch(tmp_path / "x.png")):
        with pytest.raises(TypeError, match="single path"):
            call()
