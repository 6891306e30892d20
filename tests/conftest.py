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


# Files whose tests run last: their slow setup (ONNX exports, a Ray cluster) proceeds in the
# background meanwhile, on the core the other tests leave idle.
_LAST = ("test_distributed.py", "test_onnx_export.py", "test_ddp.py")
_BACKGROUND = {}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name in _LAST)  # stable: the order within stays
    names = {item.path.name for item in items}
    if "test_onnx_export.py" in names:
        _start_background("onnx", "onnx_cases.py", ("onnx", "onnxscript", "onnxruntime"))
    if any(item.nodeid.endswith("test_cli_survives_a_killed_worker_and_resumes") for item in items):
        _start_background("ray_kill", "ray_kill_case.py", ("ray", "pyarrow"))
    if any(item.nodeid.endswith("test_two_gloo_ranks_hold_identical_weights") for item in items):
        _start_background("ddp", "test_ddp.py", ())
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


def _start_background(name, script, needs):
    """Run tests/<script> OUT_DIR in a background process at the lowest priority (so the other
    tests keep their speed); ``_finished(name)`` waits for it and gives its folder."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    if any(importlib.util.find_spec(m) is None for m in needs):
        return
    out = tempfile.mkdtemp(prefix=f"fcnfast-{name}-")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
    log = open(os.path.join(out, "log.txt"), "w")
    proc = subprocess.Popen([sys.executable, path, out], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.nice(19))
    _BACKGROUND[name] = (proc, out, log)


def pytest_sessionfinish(session, exitstatus):
    import shutil

    for proc, out, log in _BACKGROUND.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def onnx_exports():
    """The folder the background exporter (tests/onnx_cases.py) writes into; None when the ONNX
    modules are not installed."""
    started = _BACKGROUND.get("onnx")
    return None if started is None else started[1]


def _finished(name, timeout=900):
    """The folder of background run ``name`` once it has ended; None if it was not started."""
    started = _BACKGROUND.get(name)
    if started is None:
        return None
    proc, out, log = started
    proc.wait(timeout=timeout)
    return out


@pytest.fixture(scope="session")
def ray_kill_case():
    """The background killed-worker scenario (tests/ray_kill_case.py), once it has finished: its
    folder; None when Ray is not installed."""
    return _finished("ray_kill")


@pytest.fixture(scope="session")
def ddp_case():
    """The background torchrun of tests/test_ddp.py, once it has finished: its folder."""
    return _finished("ddp", timeout=300)


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


@pytest.fixture
def run_main(capsys):
    """``fcnfast ARGS`` in this process (``fcnfast.cli.main``, argparse's exits included): the exit
    status and what it printed. For the many error cases of a command, where a subprocess each
    would spend its time starting Python; each command keeps a subprocess test as a user runs it."""
    import subprocess

    def run(*args):
        from fcnfast.cli import main

        argv = [str(a) for a in args]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, captured.out, captured.err)
    return run
