"""What megatron-core's inference stack needs, beyond `_cpu.SHIMS`, to generate on CPU ranks.

The static-batch path (`StaticInferenceEngine(legacy=True)`, `TextGenerationController`,
`GPTInferenceWrapper`, `StaticInferenceContext`) allocates its prompt, length and log-prob
buffers and its sampling generator on ``torch.cuda.current_device()``, times itself with
``torch.cuda.Event(enable_timing=True)``, and moves one tensor with ``.cuda()``. Three redirections
cover all of it (docs/design/generate.md lists the lines):

* the inference modules see `_cpu`'s CPU ``torch`` (whose `Event` times on the CPU clock);
* ``TextGenerationController.generate_all_output_tokens_static_batch`` runs with
  ``Tensor.cuda()`` answering the tensor itself (``torch.zeros(...).cuda()`` of the generated
  lengths);
* with pipeline parallelism, ``communication_utils._is_cuda`` (asserted before each transfer
  between stages) accepts CPU tensors.

The dynamic engine (megatron's default, and 0.19's `MegatronLLM`) needs CUDA throughout and
flash-attention; nemo_lite uses the static path, which these shims make run. `apply()` installs
them (idempotent) when `llm.generate` computes on the CPU.
"""

from __future__ import annotations

import importlib

import torch

from nemo_lite.lightning._cpu import _TORCH_ON_CPU, _tensor_cuda_is_identity, _within
from nemo_lite.lightning.shims import Shim

INFERENCE_MODULES = (
    # pad_input_prompt_tokens, prompt lengths, generation-done flags and log-prob buffers,
    # the sampling generator, the Event timing of each step
    "megatron.core.inference.text_generation_controllers.text_generation_controller",
    # the EP dummy forward and the PP receive buffers
    "megatron.core.inference.model_inference_wrappers.abstract_model_inference_wrapper",
    # get_attention_mask: torch.ones(..., device=torch.cuda.current_device())
    "megatron.core.inference.utils",
    # PP broadcasts: torch.cuda.synchronize, current_device buffers
    "megatron.core.inference.communication_utils",
)


def _install_inference_device_redirect() -> None:
    for name in INFERENCE_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is torch:
            module.torch = _TORCH_ON_CPU


def _install_static_batch_lengths() -> None:
    module = importlib.import_module(INFERENCE_MODULES[0])
    cls = module.TextGenerationController
    method = cls.generate_all_output_tokens_static_batch
    if not getattr(method, "__nemo_lite_cpu_shim__", False):
        cls.generate_all_output_tokens_static_batch = _within(_tensor_cuda_is_identity, method)


def _is_a_tensor(tensor: torch.Tensor) -> None:
    """`communication_utils._is_cuda` without the `is_cuda` half (CPU tensors are the device's)."""
    assert tensor is not None


def _install_pipeline_broadcast_check() -> None:
    module = importlib.import_module(INFERENCE_MODULES[3])
    module._is_cuda = _is_a_tensor


INFERENCE_SHIMS: tuple[Shim, ...] = (
    Shim(
        "inference_device_redirect",
        "megatron.core.inference's controller, model wrapper, utils and communication helpers "
        "allocate on torch.cuda.current_device() and time steps with torch.cuda.Event; they see "
        "the CPU torch of DEVICE_MODULES",
        _install_inference_device_redirect,
    ),
    Shim(
        "inference_static_batch_lengths",
        "TextGenerationController.generate_all_output_tokens_static_batch makes its generated "
        "lengths with torch.zeros(...).cuda(); .cuda() returns the tensor itself while it runs",
        _install_static_batch_lengths,
    ),
    Shim(
        "inference_pipeline_broadcast_check",
        "communication_utils._is_cuda asserts tensor.is_cuda before every send / receive / "
        "broadcast between pipeline stages; on CPU ranks the check keeps only `is not None`",
        _install_pipeline_broadcast_check,
    ),
)


def apply() -> None:
    """Install the inference shims (idempotent); `_cpu.apply()` must have run."""
    for shim in INFERENCE_SHIMS:
        shim.install()
