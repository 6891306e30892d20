"""fcnfast: fast, exact inference for FCN semantic segmentation networks."""
from .process import keep_more_kernels

keep_more_kernels()

from .api import Segmenter, load, save
from .checkpoint import CheckpointError
from .convention import CAFFE_BGR, TORCHVISION_RGB, InputConvention
from .hub import HubError
from .images import ImageError
from . import models
from .training import TrainConfig, train

__version__ = "0.1.0"

__all__ = ["Segmenter", "load", "save", "export_onnx", "CheckpointError", "HubError", "ImageError",
           "InputConvention", "CAFFE_BGR", "TORCHVISION_RGB", "models", "train", "TrainConfig",
           "__version__"]


def __getattr__(name):
    # The exporter imports the engine's comparison: loaded on first use, not with the package.
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'fcnfast' has no attribute {name!r}")
