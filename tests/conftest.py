import os

import pytest
import torch  # importing torch does not import triton

# Without a GPU, Triton kernels run on CPU tensors through the interpreter; it must be switched on
# before triton is imported. With a GPU they compile (set TRITON_INTERPRET=1 to force the
# interpreter).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.manual_seed(0)


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def torchvision():
    """torchvision for cross-checks, importable beside a CPU-only torch.

    PyPI's torchvision registers fake kernels for its compiled ops (``torchvision::nms``...), which
    fail when those ops did not load; the models need none of them, so those registrations are
    skipped while it imports.
    """
    orig = torch.library.register_fake

    def register_fake(op, *args, **kwargs):
        if str(op).startswith("torchvision::"):
            return lambda fn: fn
        return orig(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        import torchvision as tv
    except Exception as e:  # not installed, or an incompatible build
        pytest.skip(f"torchvision unavailable: {e}")
    finally:
        torch.library.register_fake = orig
    return tv
