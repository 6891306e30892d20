"""Data-parallel training under torchrun: the process group from the environment, one device per
rank, and which rank writes.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain ``python`` run has
none of them and trains in one process. NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and tear it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, "
                         f"got {os.environ[name]!r}") from None


def init_from_env(device_type: str) -> Dist:
    """The process group torchrun describes (initialised here if nobody did yet)."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def pick_device(requested, local_rank: int) -> torch.device:
    """``requested`` if given; else this rank's GPU when there is one, else the CPU."""
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} but CUDA is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    if not d.enabled:
        return model
    ids = [device.index if device.index is not None else d.local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
