"""The one place that decides which device a rank computes on, and whether transformer-engine
can be used there.

CUDA when the process group runs on NCCL (the strategy picked a GPU), the CPU otherwise.
Reading it from the process group keeps it stateless: no global flag to keep in sync.
Before any process group exists (building a config, a unit test), CUDA's presence decides.
"""

from __future__ import annotations

import importlib.util

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


def transformer_engine_installed() -> bool:
    """Looked up, not imported: on a CPU machine TE's import alone can crash megatron."""
    return importlib.util.find_spec("transformer_engine") is not None


def transformer_engine_available() -> bool:
    """TE is used only when this rank computes on a GPU (NCCL group, or CUDA with no group)."""
    return cuda_in_use() and transformer_engine_installed()


def require_transformer_engine(feature: str) -> None:
    """Raise one clear line when `feature` (fp8, tp_comm_overlap...) cannot run here."""
    if not cuda_in_use():
        raise RuntimeError(
            f"{feature} needs a CUDA GPU with transformer-engine, but this run computes on the "
            "CPU: remove it for CPU runs, or run on GPUs (accelerator='gpu').")
    if not transformer_engine_installed():
        raise RuntimeError(
            f"{feature} needs transformer-engine, which is not installed: "
            "pip install -e '.[gpu]' (or transformer-engine[pytorch]), or remove it.")
