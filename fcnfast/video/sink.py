"""The encoder side: RGB pictures → a video file through PyAV, keeping the source's frame rate and
timestamps, with the source's audio copied packet for packet (no re-encoding)."""
from __future__ import annotations

import os
import warnings
from fractions import Fraction
from typing import Optional

import numpy as np

from .._ext import av_module
from .source import VideoError, _ffmpeg_message

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 23  # libx264's own default quality
# x264/x265 speed preset: "veryfast" (OBS's default) keeps encoding behind the engine on small CPUs
# at the same CRF quality, for a somewhat larger file than FFmpeg's "medium".
DEFAULT_PRESET = "veryfast"
_GPU_CODEC = "h264_nvenc"


def _encoder_opens(av, name: str, width: int, height: int) -> bool:
    """Whether an encoder exists and opens here (NVENC needs a GPU and its driver)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.open()
        return True
    except Exception:  # noqa: BLE001 - missing encoder, no device, driver too old...
        return False


def choose_codec(codec: Optional[str], device, width: int, height: int) -> str:
    av = av_module()
    if codec is not None:
        try:
            av.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError
            raise VideoError(f"unknown video encoder {codec!r} (FFmpeg names, e.g. libx264, "
                             "libx265, mpeg4, libvpx-vp9, h264_nvenc)") from None
        return codec
    if device is not None and str(device).startswith("cuda") and \
            _encoder_opens(av, _GPU_CODEC, width + width % 2, height + height % 2):
        return _GPU_CODEC
    return DEFAULT_CODEC


def _pixel_format(av, codec: str, width: int, height: int) -> str:
    formats = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    odd = width % 2 or height % 2
    if not formats:
        return "yuv420p"
    if "yuv420p" in formats and not odd:
        return "yuv420p"  # what every player plays
    for f in ("yuv444p", "rgb24", "bgr0", "gbrp"):  # no chroma subsampling: odd sizes fit
        if f in formats:
            return f
    if odd:
        raise VideoError(f"encoder {codec} takes only subsampled pixel formats ({', '.join(formats)}), "
                         f"which need even frame sizes; the frames are {width}×{height}: "
                         "choose another codec (e.g. libx264)")
    return formats[0]


class VideoSink:
    """Writes pictures to ``path``. ``audio_from``: a file whose first audio stream is copied into
    the output, interleaved by time with the video."""

    def __init__(self, path, width: int, height: int, *, rate: Fraction, time_base: Fraction,
                 codec: Optional[str] = None, crf: Optional[int] = None,
                 preset: Optional[str] = None, device=None, audio_from: Optional[str] = None):
        av = self._av = av_module()
        self.path = path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise VideoError(f"cannot write {path}: folder {folder} does not exist")
        self.codec = choose_codec(codec, device, width, height)
        pix_fmt = _pixel_format(av, self.codec, width, height)
        try:
            self._out = av.open(path, "w")
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"cannot write video {path}: {_ffmpeg_message(e)} (the extension "
                             "names the container: .mp4, .mkv, .mov, .avi, .webm, .ts)") from None
        try:
            self._video = vs = self._out.add_stream(self.codec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
            vs.codec_context.time_base = time_base  # the source's timestamps pass through as they are
            vs.time_base = time_base
            options = {}
            if crf is not None or self.codec in ("libx264", "libx264rgb", "libx265"):
                options["crf"] = str(DEFAULT_CRF if crf is None else crf)
            if self.codec in ("libx264", "libx264rgb", "libx265"):
                options["preset"] = preset or DEFAULT_PRESET
            elif preset is not None:
                options["preset"] = preset
            vs.options = options
        except Exception as e:  # noqa: BLE001
            self._out.close()
            raise VideoError(f"cannot encode {width}×{height} video with {self.codec} into {path}: "
                             f"{e}") from None
        self._audio_in = self._audio_out = self._audio_packets = None
        self._pending_audio = None
        if audio_from is not None:
            self._open_audio(audio_from)
        self.frames = 0
        self.last_time = None
        self._closed = False

    def _open_audio(self, source: str) -> None:
        av = self._av
        try:
            self._audio_in = av.open(source)
            a = self._audio_in.streams.audio[0]
            self._audio_out = self._out.add_stream_from_template(a)
            self._audio_packets = self._audio_in.demux(a)
        except Exception as e:  # noqa: BLE001 - the container may not hold this audio codec
            warnings.warn(f"fcnfast: the audio of {source} is not copied into {self.path}: {e}",
                          RuntimeWarning, stacklevel=3)
            if self._audio_in is not None:
                self._audio_in.close()
            self._audio_in = self._audio_out = self._audio_packets = None

    def _mux_audio_until(self, t: Optional[float]) -> None:
        """Copy the source's audio packets that start before ``t`` seconds (None: all)."""
        if self._audio_packets is None:
            return
        while True:
            pkt = self._pending_audio
            if pkt is None:
                try:
                    pkt = next(self._audio_packets)
                except (StopIteration, self._av.FFmpegError):
                    self._audio_packets = None
                    return
                if pkt.dts is None:  # the demuxer's flush packet
                    continue
            if t is not None and pkt.pts is not None and float(pkt.pts * pkt.time_base) >= t:
                self._pending_audio = pkt
                return
            self._pending_audio = None
            pkt.stream = self._audio_out
            self._out.mux(pkt)

    def write(self, picture, pts: Optional[int], time_base: Fraction) -> None:
        """One RGB picture (H×W×3 uint8, numpy or a tensor) at timestamp ``pts`` (time_base units)."""
        av = self._av
        if not isinstance(picture, np.ndarray):
            picture = picture.cpu().numpy()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        try:
            for packet in self._video.encode(frame):
                self._out.mux(packet)
        except av.FFmpegError as e:
            raise VideoError(f"encoding {self.path} failed at frame {self.frames}: "
                             f"{_ffmpeg_message(e)}") from None
        self.frames += 1
        if pts is not None:
            self.last_time = float(pts * time_base)
            self._mux_audio_until(self.last_time)

    def close(self, complete: bool = True) -> None:
        """Flush the encoder and finish the file (playable even after an interruption). Audio past
        the last video frame is copied only when the video is ``complete``."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._video.encode(None):
                self._out.mux(packet)
            if complete:
                self._mux_audio_until(None)
            elif self.last_time is not None:
                self._mux_audio_until(self.last_time + float(1 / (self._video.average_rate or 30)))
        finally:
            self._out.close()
            if self._audio_in is not None:
                self._audio_in.close()
