"""The one place that decides which device a rank computes on.

CUDA when the process group runs on NCCL (the strategy picked a GPU), the CPU otherwise.
Reading it from the process group keeps it stateless: no global flag to keep in sync.
"""

from __future__ import annotations

import torch


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def compute_device() -> torch.device:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
