"""Which backend runs each head op, and falling back when ``"auto"``'s first choice fails.

``"auto"`` starts from the measured winners (``fcnfast.ops.winners``) among the backends usable on
the device; if one raises at its first use (a kernel that does not compile or launch here), the
next one takes over with one warning. A named backend is used for every op and never falls back;
it is refused at load time when it cannot run on the device. The one exception is the contract's:
a deconvolution with k > 2·stride is beyond every kernel backend and runs on the reference op.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List

import torch

from .. import ops
from ..ops import winners

OP_NAMES = ("preprocess", "upsample_crop_add", "upsample_crop_argmax", "interp_argmax", "overlay")


def _usable(backend: str, device: torch.device) -> bool:
    return ops._status(backend, device.type)[0]


def candidates(op: str, backend: str, device: torch.device) -> List[str]:
    """Backends to try for ``op``, in order."""
    if backend == "auto":
        found = [b for b in winners.preference(op, device.type) if _usable(b, device)]
        return found + (["torch"] if "torch" not in found else [])
    if backend not in ops.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(ops.BACKENDS)}")
    ok, why = ops._status(backend, device.type)
    if not ok:
        raise RuntimeError(f"backend {backend!r} cannot run on {device}: {why}")
    return [backend]


class OpRunner:
    """Calls one head op through its chosen backend, moving down the candidates on first-use
    failure under ``"auto"``."""

    def __init__(self, op: str, backend: str, device: torch.device):
        self.op = op
        self.auto = backend == "auto"
        self.candidates = candidates(op, backend, device)
        self.proven = False  # the current backend has run once

    @property
    def backend(self) -> str:
        return self.candidates[0]

    def __call__(self, *args, **kwargs):
        fn: Callable = getattr(ops, self.op)
        while True:
            try:
                out = fn(*args, backend=self.candidates[0], **kwargs)
                self.proven = True
                return out
            except (ValueError, TypeError, torch.cuda.OutOfMemoryError):
                raise  # bad input or no memory: another backend would not help
            except Exception as e:  # noqa: BLE001 - any kernel failure at first use
                if not self.auto or self.proven or len(self.candidates) == 1:
                    raise
                failed = self.candidates.pop(0)
                warnings.warn(f"fcnfast: {self.op} failed on backend {failed!r} ({type(e).__name__}: "
                              f"{e}); using {self.candidates[0]!r} instead", RuntimeWarning, stacklevel=3)


def runners(backend: str, device: torch.device, op_names=OP_NAMES) -> Dict[str, OpRunner]:
    return {op: OpRunner(op, backend, device) for op in op_names}
