"""Frame sources: a video file, a stream URL or camera PyAV opens, or any iterator of frames.

Each yields ``VideoFrame``s: uint8 RGB pixels (H×W×3 numpy on the host; an H×W×3 CUDA tensor when
torchcodec decodes on the GPU) with the frame's index and timestamp. Files decode with PyAV's frame
threading; live sources (URLs of streaming protocols, v4l2 cameras) open with low-latency options.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, Optional

import numpy as np

from .._ext import av_module, torchcodec_decoder_class


class VideoError(ValueError):
    """A video that cannot be read or written (missing, not a video, no video stream, bad codec)."""


# URL schemes of streams that run in real time: frames not taken in time are stale.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
_DEFAULT_FPS = Fraction(30)


@dataclass
class VideoFrame:
    index: int  # position in the source (drops leave gaps)
    pixels: object  # (H, W, 3) uint8: numpy, or a CUDA tensor from torchcodec
    pts: Optional[int]  # timestamp in ``time_base`` units
    time_base: Fraction

    @property
    def time(self) -> Optional[float]:
        return None if self.pts is None else float(self.pts * self.time_base)


def _scheme(name: str) -> str:
    return name.split("://", 1)[0].lower() if "://" in name else ""


def is_camera(name: str) -> bool:
    return name.startswith("/dev/video")


class FrameSource:
    """Common attributes: ``name``, ``width``, ``height``, ``rate`` (frames/s, Fraction),
    ``time_base``, ``frame_count`` (None when unknown), ``live``, ``audio_path`` (a file whose
    audio a sink may copy, or None). Iterate for ``VideoFrame``s; ``close()`` (or ``with``) ends."""

    name = "frames"
    width = height = 0
    rate: Fraction = _DEFAULT_FPS
    time_base: Fraction = 1 / _DEFAULT_FPS
    frame_count: Optional[int] = None
    live = False
    audio_path: Optional[str] = None
    # Set when decoding ended early (a damaged or truncated file): where, and why.
    stopped_early: Optional[str] = None

    def __iter__(self) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PyAVSource(FrameSource):
    """A file, URL or camera decoded by PyAV (FFmpeg)."""

    def __init__(self, name, *, live: Optional[bool] = None, timeout: float = 10.0,
                 options: Optional[dict] = None):
        av = av_module()
        self.name = name = os.fspath(name)
        scheme = _scheme(name)
        camera = is_camera(name)
        if not scheme and not camera:
            if not os.path.exists(name):
                raise VideoError(f"video file not found: {name}")
            if os.path.isdir(name):
                raise VideoError(f"{name} is a directory, not a video file")
        self.live = bool(scheme in LIVE_SCHEMES or camera) if live is None else bool(live)
        opts = dict(options or {})
        if self.live:  # hand frames over as they arrive instead of buffering for smooth playback
            opts.setdefault("fflags", "nobuffer")
            opts.setdefault("flags", "low_delay")
            if scheme.startswith("rtsp"):
                opts.setdefault("rtsp_transport", "tcp")
        try:
            self._container = av.open(name, options=opts, timeout=timeout,
                                      format="v4l2" if camera else None)
        except av.FFmpegError as e:
            raise VideoError(f"cannot open video {name}: {_ffmpeg_message(e)}") from None
        streams = self._container.streams.video
        if not streams:
            self._container.close()
            raise VideoError(f"{name} has no video stream"
                             + (" (it holds audio only)" if self._container.streams.audio else ""))
        self._stream = stream = streams[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the engine
        ctx = stream.codec_context
        self.width, self.height = int(ctx.width), int(ctx.height)
        if self.width <= 0 or self.height <= 0:
            self._container.close()
            raise VideoError(f"{name}: the video stream has no frame size")
        self.rate = Fraction(stream.average_rate or stream.guessed_rate or _DEFAULT_FPS)
        self.time_base = Fraction(stream.time_base or 1 / self.rate)
        self.frame_count = int(stream.frames) if stream.frames and not self.live else None
        self.audio_path = name if (self._container.streams.audio and not scheme
                                   and not camera) else None
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[VideoFrame]:
        av = av_module()
        index = 0
        last_time = None
        try:
            for frame in self._container.decode(self._stream):
                if self._closed.is_set():
                    return
                yield VideoFrame(index, frame.to_ndarray(format="rgb24"), frame.pts,
                                 Fraction(frame.time_base or self.time_base))
                last_time = frame.time
                index += 1
        except av.FFmpegError as e:
            if index == 0:
                raise VideoError(f"cannot decode video {self.name}: {_ffmpeg_message(e)}") from None
            self.stopped_early = (f"decoding {self.name} stopped after frame {index}"
                                  f"{'' if last_time is None else f' (t={last_time:.3f} s)'}: "
                                  f"{_ffmpeg_message(e)}")
            return
        if self.frame_count is not None and index < self.frame_count:
            self.stopped_early = (f"{self.name} declares {self.frame_count} frames but decoding "
                                  f"stopped after {index}"
                                  f"{'' if last_time is None else f' (t={last_time:.3f} s)'}: "
                                  "the file is truncated or damaged")
        elif index == 0:
            raise VideoError(f"{self.name}: no frame could be decoded")

    def close(self) -> None:
        self._closed.set()
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a broken input must not hide the real error
            pass


class TorchCodecSource(FrameSource):
    """A file decoded by torchcodec into GPU memory (NVDEC): frames never visit the host."""

    def __init__(self, name, device, batch: int = 8):
        cls = torchcodec_decoder_class()
        if cls is None:
            raise RuntimeError("torchcodec is not installed or does not load here")
        self.name = os.fspath(name)
        if not os.path.exists(self.name):
            raise VideoError(f"video file not found: {self.name}")
        try:
            self._decoder = cls(self.name, device=str(device))
        except Exception as e:  # noqa: BLE001 - torchcodec raises plain RuntimeError/ValueError
            raise VideoError(f"cannot open video {self.name}: {e}") from None
        md = self._decoder.metadata
        self.width, self.height = int(md.width), int(md.height)
        fps = md.average_fps or float(_DEFAULT_FPS)
        self.rate = Fraction(fps).limit_denominator(1001000)
        # torchcodec reports seconds; keep microseconds as the time base.
        self.time_base = Fraction(1, 1_000_000)
        self.frame_count = int(md.num_frames) if md.num_frames else None
        self.audio_path = self.name
        self._batch = batch

    def __iter__(self) -> Iterator[VideoFrame]:
        n = self.frame_count or len(self._decoder)
        for start in range(0, n, self._batch):
            frames = self._decoder.get_frames_in_range(start, min(n, start + self._batch))
            for j in range(frames.data.shape[0]):
                pts = round(float(frames.pts_seconds[j]) * 1_000_000)
                yield VideoFrame(start + j, frames.data[j].permute(1, 2, 0), pts, self.time_base)


class IterSource(FrameSource):
    """Frames from any iterable (numpy H×W×3 uint8, torch tensors, PIL images), timed at ``fps``."""

    def __init__(self, frames: Iterable, *, fps=30, live: bool = False):
        if isinstance(frames, (str, bytes, os.PathLike)):
            raise TypeError("a path is opened as a video file, not iterated")
        self._frames = frames
        self.rate = Fraction(fps).limit_denominator(1001000)
        if self.rate <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.time_base = 1 / self.rate
        self.live = live
        try:
            self.frame_count = len(frames)  # type: ignore[arg-type]
        except TypeError:
            self.frame_count = None

    def __iter__(self) -> Iterator[VideoFrame]:
        import torch

        for i, f in enumerate(self._frames):
            if isinstance(f, torch.Tensor):
                pixels = f if f.is_cuda else f.numpy()
            elif isinstance(f, np.ndarray):
                pixels = f
            else:  # PIL and the rest: the image reader's rules
                from ..images import read_image

                pixels = read_image(f, f"frame {i}").pixels.numpy()
            if not self.width:
                self.height, self.width = (int(v) for v in pixels.shape[:2])
            yield VideoFrame(i, pixels, i, self.time_base)


def open_source(source, *, device=None, live: Optional[bool] = None, decoder: str = "auto",
                fps=30) -> FrameSource:
    """A ``FrameSource`` for a path/URL/camera (``decoder``: "auto" = torchcodec on a CUDA device
    where it is installed, else PyAV; "pyav"; "torchcodec") or an iterable of frames."""
    if isinstance(source, FrameSource):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return IterSource(source, fps=fps, live=bool(live))
    if decoder not in ("auto", "pyav", "torchcodec"):
        raise ValueError(f"decoder must be 'auto', 'pyav' or 'torchcodec', got {decoder!r}")
    name = os.fspath(source)
    on_gpu = device is not None and str(device).startswith("cuda")
    is_file = not _scheme(name) and not is_camera(name)
    if decoder == "torchcodec" or (decoder == "auto" and on_gpu and is_file
                                   and torchcodec_decoder_class() is not None):
        if not on_gpu and decoder == "torchcodec":
            return TorchCodecSource(name, "cpu")
        return TorchCodecSource(name, device)
    return PyAVSource(name, live=live)


def _ffmpeg_message(e) -> str:
    """FFmpeg's own words, without PyAV's errno prefix and file name."""
    return getattr(e, "strerror", None) or str(e)
