"""Each head op of a plan bound once, at load time, to the function of the backend that runs it.

The choice is ``fcnfast.ops``': ``ops.candidates`` gives the backends to try (``"auto"``: the
measured winners usable on the device at the step's geometry, the reference last) and
``ops.implementation`` the function. If ``"auto"``'s choice raises at its first use (a kernel that
does not compile or launch here), the next candidate takes over with one warning. A named backend
never falls back; it is refused at load time when it cannot run on the device. The one exception
is the contract's: a step whose deconvolution is beyond every kernel (k > 2·stride) runs on the
reference op.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List

import torch

from .. import ops


def _candidates(op: str, backend: str, device: torch.device, geometry: Dict[str, int]) -> List[str]:
    if backend == "auto" or not geometry:
        return ops.candidates(op, backend, device, **geometry)
    ops.candidates(op, backend, device)  # the backend itself must run here
    ok, _ = ops.availability(op, backend, device, **geometry)
    return [backend] if ok else ["torch"]


class OpRunner:
    """Calls one head op through the function it was bound to, moving down the candidates on
    first-use failure under ``"auto"``."""

    def __init__(self, op: str, backend: str, device: torch.device, geometry: Dict[str, int] = None):
        self.op = op
        self.auto = backend == "auto"
        self.candidates = _candidates(op, backend, device, geometry or {})
        self.fn: Callable = ops.implementation(op, self.candidates[0])
        self.proven = False  # the current backend has run once

    @property
    def backend(self) -> str:
        return self.candidates[0]

    def __call__(self, *args, **kwargs):
        while True:
            try:
                out = self.fn(*args, **kwargs)
                self.proven = True
                return out
            except (ValueError, TypeError, torch.cuda.OutOfMemoryError):
                raise  # bad input or no memory: another backend would not help
            except Exception as e:  # noqa: BLE001 - any kernel failure at first use
                if not self.auto or self.proven or len(self.candidates) == 1:
                    raise
                failed = self.candidates.pop(0)
                self.fn = ops.implementation(self.op, self.candidates[0])
                warnings.warn(f"fcnfast: {self.op} failed on backend {failed!r} ({type(e).__name__}: "
                              f"{e}); using {self.candidates[0]!r} instead", RuntimeWarning, stacklevel=3)
