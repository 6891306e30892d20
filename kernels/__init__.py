"""Triton head kernels, installed as ``fcnfast.kernels``: one file per op, each its kernel plus one
validating launcher. Imported only through ``fcnfast._ext.triton_kernels()``."""
