"""fcnfast.distributed.segment_dataset on a local 2-CPU Ray: outputs equal Segmenter.segment image by
image, bad files recorded, reruns resume without rewriting, a killed worker loses nothing."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

import fcnfast  # noqa: E402
from fcnfast.data.synthetic import synthetic_scene  # noqa: E402
from fcnfast.distributed import segment_dataset  # noqa: E402
from fcnfast.engine.compare import firm_pixels  # noqa: E402
from fcnfast.images import model_scores  # noqa: E402

SIZES = [(37, 53), (64, 64), (97, 131), (1, 1)]
BAD = {"empty.png": "cannot identify", "corrupt.jpg": "cannot read", "text.png": "cannot identify",
       "wide.tif": "32-bit integer image"}


@pytest.fixture(scope="module")
def cluster(request):
    import logging

    if any(item.nodeid.endswith("test_cli_survives_a_killed_worker_and_resumes")
           for item in request.session.items):
        request.getfixturevalue("ray_kill_case")  # its own local Ray is done first

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def make_source(root, n=16):
    """n scenes of several sizes (some in a subfolder, some RGBA or gray), plus the bad files."""
    os.makedirs(root / "sub", exist_ok=True)
    paths = []
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        img = synthetic_scene(i, h, w)[0]
        path = root / ("sub" if i % 3 == 0 else "") / f"scene{i:02d}.png"
        pil = Image.fromarray(img)
        if i % 5 == 1:
            pil = pil.convert("RGBA")
        elif i % 7 == 2:
            pil = pil.convert("L")
        pil.save(path)
        paths.append(str(path))
    (root / "empty.png").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 40)
    (root / "text.png").write_text("not a picture")
    Image.fromarray(np.full((5, 6), -7, np.int32), mode="I").save(root / "wide.tif")
    (root / "notes.txt").write_text("not an image extension: never listed")
    return paths


def label_file(src_root, dest, path):
    rel = os.path.relpath(path, src_root)
    return os.path.join(dest, os.path.splitext(rel)[0] + ".png")


def errors_of(dest):
    with open(os.path.join(dest, "errors.jsonl")) as f:
        return [json.loads(line) for line in f]


def snapshot(dest):
    out = {}
    for root, _, files in os.walk(dest):
        for f in files:
            if f.endswith(".png"):
                st = os.stat(os.path.join(root, f))
                out[os.path.join(root, f)] = (st.st_ino, st.st_mtime_ns)
    return out


def test_outputs_errors_table_and_resume(cluster, tmp_path):
    src, dest = tmp_path / "src", str(tmp_path / "out")
    paths = make_source(src)
    summary = segment_dataset(str(src), dest, "default", batch_size=4, output="png+parquet")
    assert (summary["written"], summary["skipped"], summary["failed"]) == (len(paths), 0, len(BAD))
    assert summary["seconds"] > 0 and summary["images_per_s"] > 0

    # Image by image, the label maps are what Segmenter.segment gives (palette PNG, value = class)
    seg = fcnfast.load("default", device="cpu")
    for path in paths:
        with Image.open(label_file(src, dest, path)) as im:
            assert im.mode == "P" and im.getpalette()[:6] == list(seg.palette[:2].reshape(-1))
            got = np.asarray(im)
        np.testing.assert_array_equal(got, seg.segment(path), err_msg=path)

    errors = errors_of(dest)
    assert sorted(os.path.basename(e["path"]) for e in errors) == sorted(BAD)
    for e in errors:
        assert BAD[os.path.basename(e["path"])] in e["error"], e

    table = pq.read_table(os.path.join(dest, "classes")).to_pandas()
    assert sorted(table["path"]) == sorted(paths)
    row = table.set_index("path").loc[paths[2]]
    labels = seg.segment(paths[2])
    for i, name in enumerate(seg.classes):
        assert row[f"fraction_{name}"] == pytest.approx((labels == i).mean(), abs=1e-6)
    assert row["label_path"] == os.path.relpath(label_file(src, dest, paths[2]), dest)
    assert (row["height"], row["width"]) == labels.shape

    # A rerun skips everything done: no file rewritten, the failures retried and recorded once
    before = snapshot(dest)
    again = segment_dataset(str(src), dest, "default", batch_size=4, output="png+parquet")
    assert (again["written"], again["skipped"], again["failed"]) == (0, len(paths), len(BAD))
    assert snapshot(dest) == before
    assert len(errors_of(dest)) == len(BAD)

    # Lost outputs are redone and a fixed file succeeds; nothing else is touched
    lost = [label_file(src, dest, p) for p in paths[:2]]
    for f in lost:
        os.remove(f)
    Image.fromarray(synthetic_scene(99, 40, 50)[0]).save(src / "corrupt.jpg", format="JPEG")
    third = segment_dataset(str(src), dest, "default", batch_size=4, output="png+parquet")
    assert (third["written"], third["failed"]) == (3, len(BAD) - 1)
    after = snapshot(dest)
    assert {k: v for k, v in after.items() if k in before and k not in lost} == \
        {k: v for k, v in before.items() if k not in lost}
    assert sorted(os.path.basename(e["path"]) for e in errors_of(dest)) == sorted(set(BAD) - {"corrupt.jpg"})
    table = pq.read_table(os.path.join(dest, "classes")).to_pandas()
    assert table["path"].is_unique and len(table) == len(paths) + 1
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(dest, "corrupt.png"))),
                                  seg.segment(str(src / "corrupt.jpg")))


def test_a_ray_dataset_source(cluster, tmp_path):
    src = tmp_path / "src"
    paths = make_source(src, n=6)
    good = [p for p in paths if "sub" not in p]
    ds = ray.data.read_images([str(p) for p in good], include_paths=True, mode="RGB")
    dest = str(tmp_path / "from_ray")
    summary = segment_dataset(ds, dest, "default", output="parquet")
    assert (summary["written"], summary["failed"]) == (len(good), 0)
    assert not [f for f in os.listdir(dest) if f.endswith(".png")]  # parquet only
    table = pq.read_table(os.path.join(dest, "classes")).to_pandas()
    assert len(table) == len(good) and table["label_path"].isna().all()
    seg = fcnfast.load("default", device="cpu")
    # read_images names its paths without the leading slash; the fractions are the image's
    by_name = {os.path.basename(p): p for p in good}
    for _, row in table.iterrows():
        labels = seg.segment(by_name[os.path.basename(row["path"])])
        assert row["fraction_background"] == pytest.approx((labels == 0).mean(), abs=1e-6)


def test_listing_names_outputs_by_relative_path(tmp_path):
    from fcnfast.distributed import _listing

    src = tmp_path / "src"
    make_source(src, n=4)
    paths, names, given = _listing([str(src / "scene01.png"), str(src / "sub" / "scene00.png")],
                                   str(tmp_path / "out"))
    assert names == ["scene01", os.path.join("sub", "scene00")] and given is None
    paths, names, _ = _listing(str(src), str(src / "sub"))  # the output folder is not entered
    assert "notes" not in names and os.path.join("sub", "scene00") not in names
    assert {"scene01", "scene02", "empty", "corrupt", "text", "wide"} <= set(names)


def test_bad_arguments_fail_before_ray_work(tmp_path):
    src = tmp_path / "src"
    make_source(src, n=2)
    with pytest.raises(ValueError, match="batch_size"):
        segment_dataset(str(src), str(tmp_path / "o"), batch_size=0)
    with pytest.raises(ValueError, match="output must be"):
        segment_dataset(str(src), str(tmp_path / "o"), output="jpeg")
    with pytest.raises(fcnfast.CheckpointError, match="no such file"):
        segment_dataset(str(src), str(tmp_path / "o"), model=str(tmp_path / "missing.pt"))
    with pytest.raises(NotADirectoryError):
        segment_dataset(str(src / "scene00.png"), str(tmp_path / "o"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        segment_dataset(str(src), str(tmp_path / "file"))
    Image.fromarray(synthetic_scene(0, 8, 8)[0]).save(src / "scene01.jpg")
    with pytest.raises(ValueError, match="would both write"):
        segment_dataset(str(src), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")


def test_cli_survives_a_killed_worker_and_resumes(ray_kill_case):
    """tests/ray_kill_case.py ran `fcnfast segment-dataset` in the background, killed a worker
    with SIGKILL after three outputs, and ran the command again."""
    if ray_kill_case is None:
        pytest.skip("Ray is not installed")
    with open(os.path.join(ray_kill_case, "result.json")) as f:
        result = json.load(f)
    first, second = result["first"], result["second"]
    assert result["killed"], f"the job ended before a worker could be killed: {first}"
    assert "Traceback" not in first["stderr"], first["stderr"]
    # finished (Ray restarted the actor; 1: the broken file) or stopped cleanly (2)
    assert first["returncode"] in (0, 1, 2), first
    assert not result["unreadable_after_kill"], result["unreadable_after_kill"]
    assert second["returncode"] == 1, second  # the broken file stays recorded
    assert "1 failed" in second["stdout"] and "errors.jsonl" in second["stderr"]
    assert "Traceback" not in second["stderr"]

    src, dest = os.path.join(ray_kill_case, "src"), os.path.join(ray_kill_case, "out")
    assert not [f for f in os.listdir(dest) if ".fcnfast-tmp-" in f]  # the rerun swept them
    frames = sorted(f for f in os.listdir(src) if f.startswith("frame"))
    pngs = sorted(f for f in os.listdir(dest) if f.endswith(".png"))
    assert pngs == frames  # every image once, none lost
    # Against the reference, on firm pixels: a restarted worker meets each image size afresh, so
    # which frames skipped the border (equal up to one bf16 ulp) differs from an unbroken run.
    seg = fcnfast.load("default", device="cpu", backend="torch", dtype=torch.float32)
    for f in frames:
        pixels = np.array(Image.open(os.path.join(src, f)).convert("RGB"))
        with torch.inference_mode():
            ref = model_scores(seg.model, torch.from_numpy(pixels)[None], seg.input_convention)
        got = torch.from_numpy(np.asarray(Image.open(os.path.join(dest, f))).astype(np.int64))
        firm = firm_pixels(ref, torch.bfloat16)[0]
        assert firm.float().mean() > 0.5, f
        assert torch.equal(got[firm], ref.argmax(1)[0][firm]), f
    assert [os.path.basename(e["path"]) for e in errors_of(dest)] == ["broken.png"]
