"""Triton head kernels, installed as ``fcnfast.kernels``: one file per op, each its kernel plus one
validating launcher. Imported only through ``fcnfast._ext.triton_kernels()``."""
from .preprocess import preprocess  # noqa: F401
from .overlay import overlay  # noqa: F401
from .upsample_crop_add import upsample_crop_add  # noqa: F401
from .upsample_crop_argmax import upsample_crop_argmax  # noqa: F401
from .interp_argmax import interp_argmax  # noqa: F401
