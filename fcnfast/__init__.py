"""fcnfast: fast, exact inference for FCN semantic segmentation networks."""
from .api import Segmenter, load, save
from .checkpoint import CheckpointError
from .convention import CAFFE_BGR, TORCHVISION_RGB, InputConvention
from .images import ImageError
from . import models
from .training import TrainConfig, train

__version__ = "0.1.0"

__all__ = ["Segmenter", "load", "save", "CheckpointError", "ImageError", "InputConvention",
           "CAFFE_BGR", "TORCHVISION_RGB", "models", "train", "TrainConfig", "__version__"]
