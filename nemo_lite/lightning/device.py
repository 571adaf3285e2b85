"""The one place that decides which device a rank computes on.

CUDA when the process group runs on NCCL (the strategy picked a GPU), the CPU otherwise.
Reading it from the process group keeps it stateless: no global flag to keep in sync.
Before any process group exists (building a config, a unit test), CUDA's presence decides.
"""

from __future__ import annotations

import torch


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def cuda_in_use() -> bool:
    """True when this process computes on a GPU (NCCL group, or no group yet and CUDA present).

    A run with `accelerator="cpu"` on a GPU machine uses gloo, so it answers False there.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_backend() == "nccl"
    return torch.cuda.is_available()


def compute_device() -> torch.device:
    if cuda_in_use():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
