"""decode → segment → render → encode as one pipeline: a decode thread, the engine on the calling
thread (``Segmenter.stream``: on GPU its upload, compute and download overlap), and a writer thread
that renders, encodes and saves label maps. Bounded queues between them keep memory flat over any length; a
slow encoder holds the others back (files), a live source drops its stale frames instead."""
from __future__ import annotations

import collections
import csv
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..engine.smoothing import check_smoothing
from ..render import class_fractions, label_png, overlay_labels
from .sink import VideoSink
from .source import FrameSource, VideoError, open_source

MODES = ("overlay", "labels", "side-by-side")
_END = object()


@dataclass
class VideoSummary:
    frames: int  # frames segmented and written
    seconds: float
    fps: float
    dropped: int  # stale live frames skipped (newest-frame policy)
    output: Optional[str]
    codec: Optional[str]
    interrupted: bool = False
    warning: Optional[str] = None  # where decoding stopped early, if it did

    def __str__(self) -> str:
        s = f"{self.frames} frames in {self.seconds:.2f} s ({self.fps:.1f} frames/s)"
        if self.dropped:
            s += f", {self.dropped} stale frames dropped"
        if self.output:
            s += f" -> {self.output}" + (f" ({self.codec})" if self.codec else "")
        return s + (" [interrupted]" if self.interrupted else "")


class VideoInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``segment_video``: the output was finished with the frames done so far
    (``summary``)."""

    def __init__(self, summary: VideoSummary):
        super().__init__(str(summary))
        self.summary = summary


class LatestQueue:
    """A bounded queue that, when full, drops its oldest item for the new one and counts it: the
    newest-frame policy of live sources."""

    def __init__(self, maxsize: int):
        self._items = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item, give_up=None) -> None:
        with self._cond:
            if item is not _END and len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self):
        with self._cond:
            while not self._items:
                self._cond.wait(0.1)
            return self._items.popleft()


class _BlockingQueue(queue.Queue):
    """queue.Queue whose ``put`` waits while full (back-pressure) until ``give_up()`` is true (the
    pipeline stops, or the consumer died), so no thread hangs on shutdown."""

    dropped = 0

    def put(self, item, give_up=None) -> None:  # type: ignore[override]
        while True:
            try:
                return super().put(item, timeout=0.1)
            except queue.Full:
                if give_up is not None and give_up():
                    return


class _Worker(threading.Thread):
    """A daemon thread that keeps its exception for the caller."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: Optional[BaseException] = None

    def run(self):
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e


def _check_args(mode, alpha, batch_size, smooth, smooth_reset):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    check_smoothing(smooth, smooth_reset)


class _Renderer:
    """Labels → the output picture, on the labels' device (the fused overlay op)."""

    def __init__(self, segmenter, mode: str, alpha: float, draw_background: bool):
        self.seg, self.mode, self.alpha = segmenter, mode, alpha
        self.draw_background = draw_background
        self.palette = np.ascontiguousarray(segmenter.palette[:max(segmenter.num_classes, 1)])

    def __call__(self, pixels, labels):
        if self.mode == "labels":
            pic = self.seg.colorize(labels)
        else:
            pic = overlay_labels(pixels, labels, self.palette, self.alpha,
                                 draw_background=self.draw_background,
                                 num_classes=self.seg.num_classes)
            if self.mode == "side-by-side":
                pic = _concat_width(pixels, pic)
        return pic


def _concat_width(a, b):
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.cat([torch.as_tensor(a).to(b.device), torch.as_tensor(b)], dim=1)
    return np.concatenate([a, b], axis=1)


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


def segment_video(source, output, segmenter, *, mode: str = "overlay", alpha: float = 0.5,
                  smooth: Optional[float] = None, smooth_reset: Optional[float] = 0.3,
                  batch_size: Optional[int] = None, save_labels=None, stats=None,
                  progress: bool = True, codec: Optional[str] = None, crf: Optional[int] = None,
                  preset: Optional[str] = None,
                  draw_background: bool = False, live: Optional[bool] = None, fps=30,
                  decoder: str = "auto", copy_audio: bool = True) -> VideoSummary:
    """Segment every frame of ``source`` and write the result to ``output``.

    ``source``: a video file, a URL PyAV opens (rtsp://, http(s)://...), a camera (/dev/video0), or
    an iterable of frames (timed at ``fps``). ``output``: a video file (the extension picks the
    container; None writes no video). ``mode``: "overlay" (labels blended over the frame, the
    background class undrawn unless ``draw_background``), "labels" (palette colours) or
    "side-by-side" (frame | overlay). The output keeps the source's frame count, size, rate and
    timestamps, and its audio (copied, not re-encoded). ``codec``: an FFmpeg encoder name (default
    libx264, or h264_nvenc on a CUDA device where it opens); ``crf``/``preset``: its quality and
    speed (libx264: 23, "veryfast"). ``smooth``: see ``Segmenter.stream``.
    ``save_labels=DIR``: a label PNG per frame (``DIR/000000.png``...; pixel value = class id,
    palette attached); ``stats=PATH``: per-frame class pixel fractions as CSV. Live sources (URLs of
    streaming protocols, cameras; ``live=True`` for an iterator) follow the newest-frame policy:
    frames the engine cannot take in time are dropped and counted. Ctrl-C finishes the file with
    the frames done so far (playable) and re-raises KeyboardInterrupt.
    """
    from tqdm.auto import tqdm

    if batch_size is None:
        batch_size = 1 if live else (8 if segmenter.device.type == "cuda" else 2)
    _check_args(mode, alpha, batch_size, smooth, smooth_reset)
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a file path or None, got {type(output).__name__}")
    if isinstance(source, (str, os.PathLike)) and output is not None and \
            os.path.abspath(os.fspath(source)) == os.path.abspath(os.fspath(output)):
        raise VideoError(f"output {os.fspath(output)} is the input file")
    src: FrameSource = open_source(source, device=segmenter.device, live=live, decoder=decoder,
                                   fps=fps)
    if save_labels is not None:
        os.makedirs(save_labels, exist_ok=True)
    stop = threading.Event()
    in_q = LatestQueue(batch_size) if src.live else _BlockingQueue(max(2, 2 * batch_size))
    out_q = _BlockingQueue(max(2, 2 * batch_size))
    renderer = _Renderer(segmenter, mode, alpha, draw_background)
    state = {"sink": None, "codec": None}
    stats_file = open(stats, "w", newline="") if stats is not None else None
    stats_writer = None
    if stats_file is not None:
        stats_writer = csv.writer(stats_file)
        stats_writer.writerow(["frame", "time"] + list(segmenter.classes))

    def decode():
        try:
            for frame in src:
                if stop.is_set():
                    break
                in_q.put(frame, stop.is_set)
        finally:
            in_q.put(_END, stop.is_set)

    def write():
        while True:
            item = out_q.get()
            if item is _END:
                return
            frame, labels = item
            if output is not None:
                # Rendered here, beside the encoder, off the engine's thread.
                picture = renderer(frame.pixels, labels)
                if state["sink"] is None:  # opened at the first picture: its size is the output's
                    h, w = picture.shape[:2]
                    state["sink"] = VideoSink(output, w, h, rate=src.rate, time_base=src.time_base,
                                              codec=codec, crf=crf, preset=preset,
                                              device=segmenter.device,
                                              audio_from=src.audio_path if copy_audio else None)
                    state["codec"] = state["sink"].codec
                state["sink"].write(picture, frame.pts, frame.time_base)
            if save_labels is not None or stats_writer is not None:
                lab = _host(labels)
                if save_labels is not None:
                    label_png(lab, segmenter.palette).save(
                        os.path.join(save_labels, f"{frame.index:06d}.png"))
                if stats_writer is not None:
                    fr = class_fractions(lab, segmenter.num_classes)
                    t = frame.time
                    stats_writer.writerow([frame.index, "" if t is None else f"{t:.6f}"]
                                          + [f"{v:.6f}" for v in fr])

    reader = _Worker(decode, "fcnfast-decode")
    writer = _Worker(write, "fcnfast-encode")

    def writer_gone():
        return not writer.is_alive()

    pending = collections.deque()  # frames handed to the engine, awaiting their labels
    to_device = segmenter.device.type == "cuda"

    def frames_for_engine():
        import torch

        while True:
            frame = in_q.get()
            if frame is _END:
                return
            pending.append(frame)
            pix = frame.pixels
            if to_device and isinstance(pix, np.ndarray):
                # On the GPU the frame, its labels and the overlay then stay there until encoding.
                pix = torch.from_numpy(pix).pin_memory().to(segmenter.device, non_blocking=True)
                frame.pixels = pix
            yield pix

    bar = tqdm(total=src.frame_count, unit="frame", disable=not progress, dynamic_ncols=True,
               desc=os.path.basename(os.fspath(output)) if output is not None else "frames")
    done, interrupted, late_interrupt = 0, False, False
    start = time.perf_counter()
    reader.start()
    writer.start()
    try:
        for labels in segmenter.stream(frames_for_engine(), batch_size=batch_size, smooth=smooth,
                                       smooth_reset=smooth_reset):
            frame = pending.popleft()
            if isinstance(labels, dict):  # a multi-head model: the video shows its first head
                labels = labels[segmenter.heads[0]]
            out_q.put((frame, labels), writer_gone)
            if not writer.is_alive():
                break
            done += 1
            bar.update(1)
            if src.live:
                bar.set_postfix(dropped=in_q.dropped, refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        out_q.put(_END, writer_gone)  # the writer drains what is queued, then finishes the file
        try:
            writer.join()
        except KeyboardInterrupt:  # Ctrl-C while finishing the file: finish it anyway, then say so
            late_interrupt = True
            writer.join()
        if state["sink"] is not None:
            try:
                state["sink"].close(complete=not interrupted and reader.error is None)
            except Exception as e:  # noqa: BLE001
                if writer.error is None:
                    writer.error = e
        if stats_file is not None:
            stats_file.close()
        bar.close()
        # The decoder stops at the next frame; its container is closed only once no thread is
        # inside it (closing under a running decode crashes FFmpeg). A live read blocked on the
        # network is left to its daemon thread.
        reader.join(timeout=5)
        if not reader.is_alive():
            src.close()
    seconds = time.perf_counter() - start
    for worker in (writer, reader):
        if worker.error is not None:
            raise worker.error
    summary = VideoSummary(done, seconds, done / seconds if seconds > 0 else 0.0, in_q.dropped,
                           None if output is None else os.fspath(output), state["codec"],
                           interrupted=interrupted or late_interrupt, warning=src.stopped_early)
    if interrupted or late_interrupt:
        raise VideoInterrupted(summary)
    if done == 0:
        raise VideoError(f"{src.name}: no frames were decoded")
    if src.stopped_early:
        warnings.warn(f"fcnfast: {src.stopped_early}; the {done} decoded frames were processed",
                      RuntimeWarning, stacklevel=2)
    return summary
