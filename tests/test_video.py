"""fcnfast.video and ``fcnfast video``: frames, rate, size, timestamps and audio kept; label maps
equal ``segment`` of the decoded frames; modes; bad input; Ctrl-C; live sources; flat memory."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from video_clips import av, decode_all, describe, frame_pixels, make_clip, write_noise

import fcnfast
from fcnfast.render import class_fractions, overlay_labels
from fcnfast.video import VideoError, segment_video
from fcnfast.video.pipeline import LatestQueue
from fcnfast.video.sink import choose_codec

ENV = dict(os.environ, PYTHONWARNINGS="default")


@pytest.fixture(scope="module")
def seg():
    return fcnfast.load("default", device="cpu")


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fcnfast", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.mark.parametrize("codec,width,height,fps,audio", [
    ("libx264", 98, 62, 24, True),
    ("mpeg4", 250, 142, 30, False),
], ids=["h264-98x62-24fps-aac", "mpeg4-250x142-30fps"])
def test_cli_keeps_frames_rate_size_timestamps_audio(tmp_path, seg, codec, width, height, fps, audio):
    src = make_clip(tmp_path / "in.mp4", frames=14, width=width, height=height, fps=fps,
                    codec=codec, audio=audio)
    out, labels_dir, stats = tmp_path / "out.mp4", tmp_path / "labels", tmp_path / "stats.csv"
    r = run_cli("video", src, out, "--save-labels", labels_dir, "--stats", stats, "--batch", 1,
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    want, got = describe(src), describe(out)
    for key in ("frames", "width", "height", "rate", "audio_codec", "audio_packets"):
        assert got[key] == want[key], key
    np.testing.assert_allclose(got["times"], want["times"], atol=1e-3)
    # The saved label maps are segment() of the decoded frames, one per frame, in order.
    frames, _ = decode_all(src)
    names = sorted(os.listdir(labels_dir))
    assert names == [f"{i:06d}.png" for i in range(len(frames))]
    rows = list(csv.reader(open(stats)))
    assert rows[0] == ["frame", "time"] + seg.classes and len(rows) == len(frames) + 1
    for i, frame in enumerate(frames):
        png = Image.open(labels_dir / names[i])
        assert png.mode == "P"
        lab = np.asarray(png)
        np.testing.assert_array_equal(lab, seg.segment(frame))
        np.testing.assert_allclose([float(v) for v in rows[i + 1][2:]],
                                   class_fractions(lab, seg.num_classes), atol=1e-6)


def test_batched_run_agrees_with_per_frame_segment(tmp_path, seg):
    src = make_clip(tmp_path / "in.mkv", frames=9, width=66, height=50, seed=4)
    segment_video(src, None, seg, save_labels=tmp_path / "l", batch_size=4, progress=False)
    frames, _ = decode_all(src)
    for i, f in enumerate(frames):
        lab = np.asarray(Image.open(tmp_path / "l" / f"{i:06d}.png"))
        assert (lab == seg.segment(f)).mean() > 0.999


def test_modes_lossless_output_equals_overlay_and_colours(tmp_path, seg):
    src = make_clip(tmp_path / "in.mp4", frames=5, width=70, height=46, seed=1)
    frames, _ = decode_all(src)
    labels = [seg.segment(f) for f in frames]
    # libx264rgb at crf 0 is lossless RGB: the decoded output is exactly what was rendered.
    for mode in ("overlay", "labels", "side-by-side"):
        out = tmp_path / f"{mode}.mkv"
        s = segment_video(src, out, seg, mode=mode, alpha=0.4, codec="libx264rgb", crf=0,
                          batch_size=1, progress=False)
        assert s.frames == 5 and s.codec == "libx264rgb"
        got, _ = decode_all(out)
        for f, lab, g in zip(frames, labels, got):
            over = overlay_labels(f, lab, seg.palette, 0.4)
            want = {"overlay": over, "labels": seg.colorize(lab),
                    "side-by-side": np.concatenate([f, over], axis=1)}[mode]
            np.testing.assert_array_equal(g, want)
            if mode == "overlay":  # the background class is left undrawn
                np.testing.assert_array_equal(g[lab == 0], f[lab == 0])
    # draw_background blends class 0 too.
    out = tmp_path / "bg.mkv"
    segment_video(src, out, seg, alpha=0.4, codec="libx264rgb", crf=0, draw_background=True,
                  batch_size=1, progress=False)
    got, _ = decode_all(out)
    lab = labels[0]
    assert (lab == 0).any()
    np.testing.assert_array_equal(got[0], overlay_labels(frames[0], lab, seg.palette, 0.4,
                                                         draw_background=True))
    assert (got[0][lab == 0] != frames[0][lab == 0]).any()


def test_smoothing_runs_through_the_pipeline(tmp_path, seg):
    src = make_clip(tmp_path / "in.mp4", frames=6, seed=2)
    frames, _ = decode_all(src)
    segment_video(src, None, seg, smooth=0.7, save_labels=tmp_path / "l", batch_size=2,
                  progress=False)
    want = list(seg.stream(frames, batch_size=3, smooth=0.7))
    for i, w in enumerate(want):
        assert (np.asarray(Image.open(tmp_path / "l" / f"{i:06d}.png")) == w).mean() > 0.999


def test_bad_inputs_name_the_file_and_the_problem(tmp_path, seg):
    with pytest.raises(VideoError, match="not found.*nope.mp4"):
        segment_video(tmp_path / "nope.mp4", tmp_path / "o.mp4", seg, progress=False)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="junk.mp4"):
        segment_video(junk, tmp_path / "o.mp4", seg, progress=False)
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w") as c:  # audio only
        write_noise(c, c.add_stream("aac", rate=44100), 44100, np.random.default_rng(0))
    with pytest.raises(VideoError, match="sound.m4a has no video stream"):
        segment_video(sound, tmp_path / "o.mp4", seg, progress=False)
    src = make_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(VideoError, match="unknown video encoder 'nosuchcodec'"):
        segment_video(src, tmp_path / "o.mp4", seg, codec="nosuchcodec", progress=False)
    with pytest.raises(VideoError, match="cannot write video .*o.qqq"):
        segment_video(src, tmp_path / "o.qqq", seg, progress=False)
    with pytest.raises(VideoError, match="is the input"):
        segment_video(src, src, seg, progress=False)
    with pytest.raises(ValueError, match="mode"):
        segment_video(src, None, seg, mode="blend", progress=False)
    with pytest.raises(ValueError, match="alpha"):
        segment_video(src, None, seg, alpha=3, progress=False)


def test_truncated_file_keeps_the_decodable_frames(tmp_path, seg):
    src = make_clip(tmp_path / "in.mp4", frames=40, width=96, height=64, seed=3,
                    options={"movflags": "faststart"})  # the index first: a cut file still opens
    data = open(src, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.warns(RuntimeWarning, match="cut.mp4.*stopped after"):
        s = segment_video(cut, tmp_path / "o.mp4", seg, progress=False)
    assert 0 < s.frames < 40 and s.warning
    assert describe(tmp_path / "o.mp4")["frames"] == s.frames


def test_cli_errors_without_traceback(tmp_path, run_main):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00garbage" * 1000)
    src = make_clip(tmp_path / "in.mp4", frames=2)
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    cases = ((("video", junk, tmp_path / "o.mp4"), "junk.avi"),
             (("video", tmp_path / "missing.mp4", tmp_path / "o.mp4"), "missing.mp4"),
             (("video", src, tmp_path / "exists.mp4"), "exists"),
             (("video", src, tmp_path / "o.mp4", "--alpha", "3"), "alpha"),
             (("video", src, tmp_path / "o.mp4", "--smooth", "1.5"), "smooth"))
    for args, needle in cases:
        r = run_main(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr)
    # as a user runs it: the message and status, no traceback
    r = run_cli("video", junk, tmp_path / "o.mp4")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "junk.avi" in r.stderr, r.stderr
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"  # never lost output
    r = run_main("video", src, tmp_path / "exists.mp4", "-y", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert describe(tmp_path / "exists.mp4")["frames"] == 2


def test_sigint_leaves_a_playable_partial_file(tmp_path):
    src = make_clip(tmp_path / "long.mp4", frames=400, width=250, height=142, seed=5)
    out, labels = tmp_path / "partial.mp4", tmp_path / "labels"
    # SIGINT at its default in the child: a suite started in the background of a script (`cmd &`
    # without job control) has it ignored, and Python would then keep ignoring it.
    p = subprocess.Popen([sys.executable, "-m", "fcnfast", "video", src, out, "--batch", "1",
                          "--save-labels", labels, "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        if labels.is_dir() and len(os.listdir(labels)) >= 10:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    n = describe(out)["frames"]
    assert 10 <= n < 400


def test_live_source_keeps_the_newest_frames(tmp_path, seg):
    n = 120

    pixels = [frame_pixels(i, 62, 98) for i in range(n)]

    def camera():  # frames arrive far faster than any engine takes them
        yield from pixels

    s = segment_video(camera(), tmp_path / "live.mp4", seg, live=True, batch_size=1,
                      save_labels=tmp_path / "l", progress=False)
    kept = sorted(int(name[:6]) for name in os.listdir(tmp_path / "l"))
    assert s.dropped > 0 and s.frames + s.dropped == n and len(kept) == s.frames
    assert kept[-1] == n - 1  # the newest frame is never the one dropped
    assert describe(tmp_path / "live.mp4")["frames"] == s.frames
    # Not live: every frame, none dropped (back-pressure instead).
    s = segment_video((frame_pixels(i, 62, 98) for i in range(20)), None, seg, progress=False)
    assert s.frames == 20 and s.dropped == 0


def test_latest_queue_drops_oldest():
    q = LatestQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and [q.get(), q.get()] == [3, 4]


def test_memory_stays_flat_over_a_long_clip(tmp_path, seg):
    src = make_clip(tmp_path / "long.mp4", frames=600, width=64, height=48, seed=6)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss())
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    try:
        s = segment_video(src, tmp_path / "o.mp4", seg, progress=False)
    finally:
        done.set()
        t.join()
    assert s.frames == 600
    early = max(samples[:len(samples) // 4])
    assert max(samples) - early < 40 * 2**20, (early, max(samples))


def test_gpu_encoder_only_on_cuda():
    assert choose_codec(None, torch.device("cpu"), 64, 48) == "libx264"
    assert choose_codec("mpeg4", torch.device("cpu"), 64, 48) == "mpeg4"


def test_odd_sizes_encode(tmp_path, seg):
    frames = [frame_pixels(i, 33, 45) for i in range(3)]
    s = segment_video(frames, tmp_path / "odd.mp4", seg, progress=False)
    d = describe(tmp_path / "odd.mp4")
    assert s.frames == 3 and (d["width"], d["height"]) == (45, 33)


_SERVER = """
import sys, time, av
sys.path.insert(0, sys.argv[2])
from video_clips import frame_pixels
with av.open(f"tcp://127.0.0.1:{sys.argv[1]}?listen=1", "w", format="mpegts") as out:
    vs = out.add_stream("mpeg4", rate=24)
    vs.width, vs.height, vs.pix_fmt = 98, 62, "yuv420p"
    for i in range(int(sys.argv[3])):
        f = av.VideoFrame.from_ndarray(frame_pixels(i, 62, 98), format="rgb24")
        f.pts = i
        for p in vs.encode(f):
            out.mux(p)
        time.sleep(1 / 96)  # 4x real time
    for p in vs.encode():
        out.mux(p)
"""


def test_live_stream_over_loopback(tmp_path, seg):
    """A real network source: an MPEG-TS stream FFmpeg serves on 127.0.0.1 (another process: PyAV
    holds the GIL while it waits for the connection), read as a live source."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sent = 48
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port),
                               os.path.dirname(os.path.abspath(__file__)), str(sent)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while True:  # the server listens once it has started
            try:
                s = segment_video(f"tcp://127.0.0.1:{port}", tmp_path / "live.mp4", seg,
                                  progress=False)
                break
            except VideoError as e:
                if "refused" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(0.1)
        assert server.wait(timeout=20) == 0, server.stderr.read()
    finally:
        server.kill()
    assert 0 < s.frames and s.frames + s.dropped <= sent
    assert describe(tmp_path / "live.mp4")["frames"] == s.frames


def test_open_source_yields_rgb_frames_with_timestamps(tmp_path):
    from fcnfast.video import open_source

    src = make_clip(tmp_path / "in.mp4", frames=5, fps=25)
    frames, times = decode_all(src)
    with open_source(src) as s:
        assert (s.width, s.height, s.rate, s.frame_count, s.live) == (98, 62, 25, 5, False)
        got = list(s)
    assert [f.index for f in got] == list(range(5))
    np.testing.assert_allclose([f.time for f in got], times)
    for f, want in zip(got, frames):
        assert f.pixels.dtype == np.uint8 and f.pixels.shape == (62, 98, 3)
        np.testing.assert_array_equal(f.pixels, want)


def test_slow_encoder_holds_decoding_back(tmp_path, seg, monkeypatch):
    """Back-pressure: with an encoder slower than everything else, the frames taken from the
    source stay a bounded number ahead of the frames written (no queue grows)."""
    from fcnfast.video import sink

    pulled, lead = [0], []
    write = sink.VideoSink.write

    def slow_write(self, *args):
        time.sleep(0.01)
        write(self, *args)
        lead.append(pulled[0] - self.frames)

    monkeypatch.setattr(sink.VideoSink, "write", slow_write)

    def frames():
        for i in range(80):
            pulled[0] += 1
            yield frame_pixels(i, 30, 40)

    s = segment_video(frames(), tmp_path / "o.mp4", seg, batch_size=2, progress=False)
    assert s.frames == 80 and s.dropped == 0
    # Queues of 4 + 4, a batch being gathered and one in the engine, a frame in the decoder's
    # and one in the writer's hands: at most 16 ahead (an unbounded queue: ~80).
    assert max(lead) <= 16, max(lead)
