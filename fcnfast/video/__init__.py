"""Video in and out: decode → segment → overlay → encode as one pipeline (``segment_video``), on
PyAV (files, encoders, streams, cameras) and torchcodec (NVDEC decoding into GPU memory, where it
is installed and the device is CUDA). ``pip install 'fcnfast[video]'`` brings PyAV."""
from .pipeline import MODES, VideoInterrupted, VideoSummary, segment_video
from .sink import VideoSink
from .source import FrameSource, VideoError, VideoFrame, open_source

__all__ = ["segment_video", "open_source", "VideoSink", "FrameSource", "VideoFrame", "VideoError",
           "VideoInterrupted", "VideoSummary", "MODES"]
