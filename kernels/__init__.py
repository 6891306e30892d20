"""Triton head kernels, installed as ``fcnfast.kernels``: one file per op, each its kernel plus one
validating launcher. The library imports them only through ``fcnfast._ext.triton_kernels()``."""
from .preprocess import preprocess
from .overlay import overlay
from .upsample_crop_add import upsample_crop_add
from .upsample_crop_argmax import upsample_crop_argmax
from .interp_argmax import interp_argmax

__all__ = ["preprocess", "overlay", "upsample_crop_add", "upsample_crop_argmax", "interp_argmax"]
