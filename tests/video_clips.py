"""Video files for the tests, made with PyAV: random content per frame (so a shifted or dropped
frame shows), optional AAC audio."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

av = __import__("pytest").importorskip("av")


def frame_pixels(i: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blocky random colours (they survive lossy coding), different in every frame."""
    rng = np.random.default_rng(seed * 100003 + i)
    blocks = rng.integers(0, 256, ((h + 7) // 8, (w + 7) // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(8, 0).repeat(8, 1)[:h, :w])


def write_noise(container, stream, samples: int, rng, level: float = 0.1) -> None:
    """``samples`` of mono noise at 44.1 kHz through ``stream``'s (AAC) encoder."""
    for t in range(0, samples, 1024):
        af = av.AudioFrame.from_ndarray(
            (rng.standard_normal((1, 1024)) * level).astype(np.float32), format="fltp",
            layout="mono")
        af.sample_rate, af.pts = 44100, t
        for p in stream.encode(af):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def make_clip(path, *, frames: int = 12, width: int = 98, height: int = 62, fps: int = 24,
              codec: str = "libx264", audio: bool = False, seed: int = 0, options=None) -> str:
    out = av.open(str(path), "w", options=options or {})
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    a = None
    if audio:
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
    rng = np.random.default_rng(seed)
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(frame_pixels(i, height, width, seed), format="rgb24")
        f.pts = i
        f.time_base = Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
    if a is not None:
        write_noise(out, a, int(44100 * frames / fps), rng)
    for p in vs.encode():
        out.mux(p)
    out.close()
    return str(path)


def decode_all(path):
    """(RGB frames, timestamps in seconds) of a file's video stream."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(f.time)
    return frames, times


def describe(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rate = Fraction(v.average_rate)
        audio = c.streams.audio
        audio_codec = audio[0].codec_context.name if audio else None
        n_audio = sum(1 for p in c.demux(audio[0]) if p.dts is not None) if audio else 0
    frames, times = decode_all(path)
    return dict(frames=len(frames), width=frames[0].shape[1], height=frames[0].shape[0],
                rate=rate, times=times, audio_codec=audio_codec, audio_packets=n_audio)
