"""Build script: the Python package, with `kernels/` installed as `fcnfast.kernels`.

Native modules (`fcnfast._C`, always; `fcnfast._cuda`, where nvcc is found) are added here by the
native-kernels issue; until then the package is pure Python.
"""
from setuptools import setup

setup(
    packages=["fcnfast", "fcnfast.models", "fcnfast.ops", "fcnfast.kernels"],
    # Triton kernels live in the top-level kernels/ folder but install inside the package, so no
    # top-level `kernels` module lands in site-packages.
    package_dir={"fcnfast": "fcnfast", "fcnfast.kernels": "kernels"},
)
