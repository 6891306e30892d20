"""Decoding user images and applying the models' input conventions."""
import numpy as np
import pytest
import torch

import fcnfast
from fcnfast.models import build_model
from PIL import Image as PILImage

from fcnfast.convention import CAFFE_BGR, TORCHVISION_RGB, InputConvention
from fcnfast.images import ImageError, read_image, to_network_input

rng = np.random.default_rng(0)


def rgb(h=5, w=7):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def as_hwc_uint8(image):
    p = image.pixels
    if p.dtype == torch.uint8:
        return p.numpy()
    return (p.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_numpy_uint8_rgb():
    a = rgb()
    im = read_image(a)
    assert im.pixels.dtype == torch.uint8 and im.size == (5, 7) and not im.as_torch
    np.testing.assert_array_equal(im.pixels.numpy(), a)


def test_non_contiguous_views():
    a = rgb(9, 11)
    for view in (a[::2, ::3], a[:, ::-1], a[1:-1, 2:]):
        np.testing.assert_array_equal(read_image(view).pixels.numpy(), view)
    t = torch.from_numpy(a).permute(2, 0, 1).float()[:, ::2, 1:] / 255  # C×H×W float view
    np.testing.assert_allclose(read_image(t).pixels.numpy(), t.numpy())


def test_grayscale_and_single_channel_replicated():
    g = rng.integers(0, 256, size=(4, 6), dtype=np.uint8)
    for a in (g, g[..., None]):
        p = read_image(a).pixels.numpy()
        assert p.shape == (4, 6, 3)
        for c in range(3):
            np.testing.assert_array_equal(p[..., c], g)


def test_rgba_alpha_dropped():
    a = rgb()
    rgba = np.concatenate([a, rng.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)], -1)
    np.testing.assert_array_equal(read_image(rgba).pixels.numpy(), a)
    np.testing.assert_array_equal(read_image(PILImage.fromarray(rgba, "RGBA")).pixels.numpy(), a)


def test_float_in_unit_range_and_uint16():
    a = rng.random((3, 4, 3)).astype(np.float64)
    p = read_image(a).pixels
    assert p.shape == (3, 3, 4) and p.dtype == torch.float32
    np.testing.assert_allclose(p.permute(1, 2, 0).numpy(), a, rtol=1e-6)
    u16 = (a * 65535).astype(np.uint16)
    np.testing.assert_allclose(read_image(u16).pixels.permute(1, 2, 0).numpy(), u16 / 65535, rtol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "F", "1"])
def test_pil_any_mode(mode):
    base = PILImage.fromarray(rgb(6, 8))
    if mode == "I;16":
        im = PILImage.fromarray((rng.random((6, 8)) * 65535).astype(np.uint16))
    elif mode == "F":
        im = PILImage.fromarray(rng.random((6, 8)).astype(np.float32))
    else:
        im = base.convert(mode)
    p = read_image(im)
    assert p.size == (6, 8)
    assert p.pixels.shape in [(6, 8, 3), (3, 6, 8)]


def test_torch_inputs_keep_device_and_layout():
    a = rgb()
    t = torch.from_numpy(a)
    im = read_image(t)
    assert im.as_torch and im.device == t.device
    np.testing.assert_array_equal(im.pixels.numpy(), a)
    chw = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(as_hwc_uint8(read_image(chw)), a)


def test_path_input(tmp_path):
    a = rgb(10, 12)
    f = tmp_path / "x.png"
    PILImage.fromarray(a).save(f)
    np.testing.assert_array_equal(read_image(str(f)).pixels.numpy(), a)
    np.testing.assert_array_equal(read_image(f).pixels.numpy(), a)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((4, 5, 2), np.uint8), "2 channels"),
    (np.zeros((4, 5, 3, 1), np.uint8), "H×W"),
    (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 5, 3), np.inf, np.float32), "infinite"),
    (np.full((4, 5, 3), 200.0, np.float32), r"\[0, 1\]"),
    (np.zeros((4, 5, 3), np.int64), "dtype int64"),
    (np.zeros((4, 5, 3), bool), "boolean"),
    (torch.zeros(5, 4, 4), "5 channels"),
    (torch.zeros(3, 4, 5, dtype=torch.int32), "dtype torch.int32"),
    (torch.zeros(3, 0, 5), "empty"),
])
def test_bad_images_named(bad, match):
    with pytest.raises(ImageError, match=match):
        read_image(bad)


def test_bad_paths_and_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot read"):
        read_image(junk)
    trunc = tmp_path / "trunc.png"
    PILImage.fromarray(rgb(50, 50)).save(tmp_path / "ok.png")
    trunc.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ImageError, match="cannot read"):
        read_image(trunc)
    with pytest.raises(TypeError, match="unsupported type"):
        read_image([[1, 2, 3]])


def test_caffe_convention_matches_pytorch_fcn_transform():
    # pytorch-fcn: img[:, :, ::-1] (RGB→BGR), float64, minus the BGR mean, then HWC→CHW.
    a = rgb(6, 9)
    want = (a[:, :, ::-1].astype(np.float64) - np.array(CAFFE_BGR.mean)).transpose(2, 0, 1)
    got = to_network_input(read_image(a).pixels[None], CAFFE_BGR, "cpu", torch.float32)[0]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)
    # A float image in [0, 1] gives the same input as its uint8 version.
    f = read_image(a.astype(np.float32) / 255).pixels[None]
    np.testing.assert_allclose(to_network_input(f, CAFFE_BGR, "cpu", torch.float32)[0].numpy(), want,
                               atol=1e-3)


def test_torchvision_convention_matches_normalize():
    a = rgb(6, 9)
    x = torch.from_numpy(a).permute(2, 0, 1).double() / 255
    mean = torch.tensor(TORCHVISION_RGB.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(TORCHVISION_RGB.std, dtype=torch.float64).view(3, 1, 1)
    want = (x - mean) / std
    got = to_network_input(read_image(a).pixels[None], TORCHVISION_RGB, "cpu", torch.float32)[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_convention_validation_and_round_trip():
    for c in (CAFFE_BGR, TORCHVISION_RGB):
        assert InputConvention.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="channel_order"):
        InputConvention("GBR", 1.0, (0, 0, 0))
    with pytest.raises(ValueError, match="std"):
        InputConvention("RGB", 1.0, (0, 0, 0), (1, 0, 1))
    with pytest.raises(ValueError, match="invalid input convention"):
        InputConvention.from_dict({"scale": 1})


# --- torchvision's C×H×W uint8, EXIF orientation, decompression bombs ---------------------------

def test_chw_uint8_tensor_is_read_like_hwc():
    from fcnfast.images import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (11, 17, 3), dtype=np.uint8)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # torchvision.io.read_image's layout
    assert torch.equal(read_image(chw).pixels, torch.from_numpy(rgb))
    gray = torch.from_numpy(rgb[..., 0]).unsqueeze(0)
    assert torch.equal(read_image(gray).pixels, torch.from_numpy(rgb[..., :1]).expand(11, 17, 3))
    rgba = torch.cat([chw, torch.full((1, 11, 17), 255, dtype=torch.uint8)])
    assert torch.equal(read_image(rgba).pixels, torch.from_numpy(rgb))
    with pytest.raises(ImageError, match="H×W×C or C×H×W"):
        read_image(torch.zeros(5, 9, 7, dtype=torch.uint8))
    seg = fcnfast.Segmenter(build_model("fcn_alexnet", 5), device="cpu")
    assert torch.equal(seg.segment(chw), torch.from_numpy(seg.segment(rgb)))


def test_exif_orientation_is_applied_to_files(tmp_path):
    from PIL import ImageOps

    from fcnfast.images import read_image

    rgb = np.random.default_rng(1).integers(0, 256, (10, 16, 3), dtype=np.uint8)
    im = PILImage.fromarray(rgb)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.png"
    im.save(path, exif=exif)
    got = read_image(str(path)).pixels.numpy()
    assert got.shape == (16, 10, 3)
    np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(PILImage.open(path))))
    np.testing.assert_array_equal(got, np.rot90(rgb, -1))


def _png_declaring(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def test_decompression_bomb_is_an_image_error_naming_file_and_size(tmp_path):
    from fcnfast.images import read_image

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100000, 100000))
    with pytest.raises(ImageError, match=r"bomb\.png declares 100000x100000 pixels") as e:
        read_image(str(path))
    assert not isinstance(e.value, PILImage.DecompressionBombError)


def test_uint8_tensor_layout_rule_prefers_the_last_axis():
    # (3, 6, 4) could be either layout: a last axis of 1, 3 or 4 is H×W×C, as before C×H×W existed.
    t = torch.arange(72, dtype=torch.uint8).reshape(3, 6, 4)
    assert torch.equal(read_image(t).pixels, t[..., :3])
    with pytest.raises(ImageError, match=r"shape \(2, 9, 7\).*H×W×C or C×H×W"):
        read_image(torch.zeros(2, 9, 7, dtype=torch.uint8))


def test_exif_orientation_not_applied_to_pil_images(tmp_path):
    # A PIL image is taken as the user has it: only files are read as displayed.
    rgb = np.random.default_rng(2).integers(0, 256, (10, 16, 3), dtype=np.uint8)
    exif = PILImage.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    PILImage.fromarray(rgb).save(path, exif=exif)
    with PILImage.open(path) as im:
        assert im.getexif()[0x0112] == 6
        np.testing.assert_array_equal(read_image(im).pixels.numpy(), rgb)
    assert read_image(path).pixels.shape == (16, 10, 3)


def test_decompression_bomb_limit_warning_and_error_on_real_images(tmp_path, monkeypatch):
    # Pillow warns between 1× and 2× MAX_IMAGE_PIXELS and refuses beyond: the warning stays a
    # warning (the image is decoded), the refusal is an ImageError with the declared W×H.
    from PIL import features

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    small = tmp_path / "small.png"
    a = rgb(12, 13)  # 156 pixels
    PILImage.fromarray(a).save(small)
    with pytest.warns(PILImage.DecompressionBombWarning):
        np.testing.assert_array_equal(read_image(small).pixels.numpy(), a)
    # WebP checks the size inside its own header parser, GIF per frame: the W×H is named alike.
    for ext in ["png", "jpg", "gif", "tif"] + (["webp"] if features.check("webp") else []):
        big = tmp_path / f"big.{ext}"
        PILImage.fromarray(rgb(15, 14)).save(big)  # 210 pixels
        with pytest.raises(ImageError, match=rf"big\.{ext} declares 14x15 pixels"):
            read_image(big)


def test_bomb_size_is_read_without_lifting_the_global_limit(tmp_path, monkeypatch):
    # MAX_IMAGE_PIXELS is process-wide: switching it off to read the header would leave other
    # threads' opens unchecked meanwhile.
    limits = []
    real_open = PILImage.open

    def spy(*args, **kwargs):
        limits.append(PILImage.MAX_IMAGE_PIXELS)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PILImage, "open", spy)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100000, 100000))
    with pytest.raises(ImageError, match="100000x100000"):
        read_image(path)
    assert limits and None not in limits
