"""LoRA (low-rank adaptation): NeMo 2.0's `llm.peft.LoRA`, as a model transform.

`llm.finetune(model, data, trainer, peft=LoRA(...))` sets it as the model's `model_transform`,
which `GPTModel.configure_model` applies once the megatron chunks exist: every base parameter
is frozen and each target linear gets a tensor-parallel adapter (`lora_layers.LoRALinear`).
Only the adapters require grad, so megatron's DDP and optimizer hold only them, and the
model's checkpoints keep only them (`checkpoint_trainable_only`): the frozen base weights are
read from the checkpoint they were restored from (RestoreConfig), also on resume.

This module stays free of torch / megatron imports at load time (recipes configure `LoRA`).
"""

import fnmatch
import logging
from typing import Any, Optional

from nemo_lite.io.capture import IOMixin

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


class LoRAConfigError(ValueError):
    """A LoRA setting that cannot work with this model or layout."""


class LoRA(IOMixin):
    """Freeze the model and add `(alpha / dim) * B @ A` beside each target linear.

    `target_modules`: module names (`linear_qkv`) or fnmatch patterns over full names
    (`*.layers.0.*.linear_qkv`). `dim`: the rank. `dropout` applies to the adapter's input
    (`dropout_position="pre"`) or output (`"post"`). `seed` seeds A (B starts at zero).
    """

    def __init__(
        self,
        target_modules: Optional[list[str]] = None,
        dim: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        dropout_position: str = "pre",
        seed: int = 1234,
    ) -> None:
        if dim <= 0:
            raise LoRAConfigError(f"LoRA(dim={dim}): the adapter rank must be a positive integer.")
        if dropout_position not in ("pre", "post"):
            raise LoRAConfigError(
                f"LoRA(dropout_position={dropout_position!r}): use 'pre' or 'post'.")
        self.target_modules = list(target_modules or DEFAULT_TARGETS)
        self.dim = dim
        self.alpha = alpha
        self.dropout = dropout
        self.dropout_position = dropout_position
        self.seed = seed

    def __call__(self, model: Any) -> Any:
        """Apply to a GPTModel (its megatron chunks), a megatron model, or a list of them."""
        for chunk in megatron_chunks(model):
            self._apply(chunk)
        return model

    def _apply(self, chunk: Any) -> None:
        from nemo_lite.llm.peft.lora_layers import LoRALinear

        config = chunk.config
        self.check(config, config.tensor_model_parallel_size or 1,
                   getattr(config, "expert_tensor_parallel_size", None))
        if any(isinstance(m, LoRALinear) for m in chunk.modules()):
            return  # already adapted (configure_model ran the transform before)
        for param in chunk.parameters():
            param.requires_grad_(False)
        wrapped = 0
        for _name, module, parent, attr, layer_name in _targets(chunk, self.target_modules):
            setattr(parent, attr, self._wrap(module, config, layer_name, attr))
            wrapped += 1
        if not wrapped:
            raise LoRAConfigError(
                f"LoRA: no module of the model matches target_modules={self.target_modules}. "
                f"Use names such as {DEFAULT_TARGETS}.")
        from nemo_lite.lightning.model_state import mark_trainable_only

        mark_trainable_only(chunk)
        log.info("LoRA: %d adapters (dim %d, alpha %s)", wrapped, self.dim, self.alpha)

    def _wrap(self, module: Any, config: Any, layer_name: str, attr: str) -> Any:
        from nemo_lite.llm.peft.lora_layers import layer_seed, parallel_mode

        adapter_class, wrapper_class = self.layer_classes()

        mode = parallel_mode(module)
        expert = bool(getattr(module, "is_expert", False))
        tp = config.tensor_model_parallel_size or 1
        if expert:  # expert tensor parallel 1 (`check`)
            tp = 1
        out_local, in_local = module.weight.shape
        in_features = in_local * tp if mode == "row" else in_local
        out_features = out_local * tp if mode == "column" else out_local
        glu = attr == "linear_fc1" and bool(getattr(config, "gated_linear_unit", False))
        adapter = adapter_class(mode, in_features, out_features, self.dim, self.alpha,
                              self.dropout, self.dropout_position, config, glu_output=glu,
                              seed=layer_seed(self.seed, layer_name),
                              input_gathered=hasattr(module, "return_layernorm_output"),
                              expert=expert)
        adapter.to(device=module.weight.device)
        return wrapper_class(module, adapter)

    def check(self, config: Any, tp: int, etp: int | None = None) -> None:
        """The settings this model and layout must allow (pure: the CLI's plan checks them
        before launch, every rank again when it applies the transform)."""
        name = type(self).__name__
        if self.dim % tp:
            raise LoRAConfigError(
                f"{name}(dim={self.dim}) must be divisible by the tensor-parallel size {tp} "
                f"(the adapter is split across TP ranks): pick dim={tp * max(1, self.dim // tp)}.")
        experts_targeted = bool(getattr(config, "num_moe_experts", None)) and any(
            p in ("linear_fc1", "linear_fc2") or ".experts." in p for p in self.target_modules)
        if not experts_targeted:
            return
        if getattr(config, "moe_grouped_gemm", False):
            raise LoRAConfigError(
                f"{name} on MoE experts with moe_grouped_gemm=True (one GEMM over all local "
                "experts): adapters need SequentialMLP experts; set moe_grouped_gemm=False or "
                "leave the experts out of target_modules (e.g. ['linear_qkv', 'linear_proj']).")
        if (etp or tp) > 1:
            raise LoRAConfigError(
                f"{name} on MoE experts with expert_tensor_parallel_size={etp or tp}: adapters "
                "on experts support expert tensor parallel 1; set expert_tensor_parallel_size=1 "
                "or leave the experts out of target_modules (e.g. ['linear_qkv', 'linear_proj']).")

    def layer_classes(self) -> tuple[type, type]:
        """(adapter, wrapper) module classes: LoRA's; DoRA returns its own."""
        from nemo_lite.llm.peft.lora_layers import LoRAAdapter, LoRALinear

        return LoRAAdapter, LoRALinear

    def merge(self, model: Any) -> Any:
        """Fold the adapters into the base weights (see `merge`)."""
        return merge(model)


def merge(model: Any) -> Any:
    """Collective over each TP group: replace every LoRALinear by its base linear with
    `W += (alpha / dim) * B @ A` (per TP shard); the model then gives the same outputs
    without adapters and checkpoints whole again. Parameters stay frozen."""
    import torch

    from nemo_lite.lightning.model_state import mark_trainable_only
    from nemo_lite.llm.peft.lora_layers import LoRALinear

    for chunk in megatron_chunks(model):
        found = [(n, m) for n, m in chunk.named_modules() if isinstance(m, LoRALinear)]
        for name, wrapper in found:
            parent_name, _, attr = name.rpartition(".")
            parent = chunk.get_submodule(parent_name) if parent_name else chunk
            with torch.no_grad():
                setattr(parent, attr, wrapper.merged())
        mark_trainable_only(chunk, False)
    return model


def megatron_chunks(model: Any) -> list:
    """The megatron modules inside a GPTModel / DDP / Float16Module wrapper or a list."""
    import torch

    from nemo_lite.lightning.model_state import unwrap

    if isinstance(model, (list, tuple, torch.nn.ModuleList)):
        return [unwrap(m) for m in model]
    inner = getattr(model, "module", None)
    if isinstance(inner, torch.nn.ModuleList):  # nemo_lite's GPTModel (LightningModule)
        return [unwrap(m) for m in inner]
    if inner is None and hasattr(model, "configure_model"):
        raise LoRAConfigError("LoRA needs the built model: apply it after configure_model() "
                              "(GPTModel does so through its model_transform).")
    return [unwrap(model)]


def _targets(chunk: Any, patterns: list[str]):
    """(name, module, parent, attribute, stable layer name) of each linear to adapt.

    The stable name uses the layer's global number (`layer_number`) and an expert's global
    index, so an adapter gets the same seed whatever the pipeline and expert-parallel split.
    Experts: SequentialMLP's per-expert linears (`moe_grouped_gemm=False`) are adapted;
    grouped experts (one GEMM over all experts) are refused.
    """
    from nemo_lite.llm.peft.lora_layers import LoRALinear, parallel_mode

    layer_names: dict[str, str] = {}
    for name, module in chunk.named_modules():
        if hasattr(module, "layer_number") and hasattr(module, "mlp"):  # a TransformerLayer
            layer_names[name] = f"layer{module.layer_number}"
    found = []
    for name, module in list(chunk.named_modules()):
        parent_name, _, attr = name.rpartition(".")
        parent = chunk.get_submodule(parent_name) if parent_name else chunk
        if isinstance(module, LoRALinear) or isinstance(parent, LoRALinear):
            continue
        if hasattr(module, "weight1") and attr == "experts":  # megatron's legacy GroupedMLP
            if any(p in ("linear_fc1", "linear_fc2") for p in patterns):
                raise LoRAConfigError(
                    f"LoRA: {name} holds grouped MoE experts (one GEMM over all local experts), "
                    "which LoRA does not adapt: use moe_grouped_gemm=False (SequentialMLP "
                    "experts) or leave linear_fc1 / linear_fc2 out of target_modules.")
            continue
        if not any(attr == p or fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if parallel_mode(module) is None:
            continue
        if not hasattr(module, "weight"):
            if getattr(module, "is_expert", False) or hasattr(module, "num_gemms"):
                raise LoRAConfigError(
                    f"LoRA: {name} is a grouped MoE expert linear (one GEMM over all local "
                    "experts), which LoRA does not adapt: use moe_grouped_gemm=False "
                    "(SequentialMLP experts) or leave the experts out of target_modules.")
            continue
        owner = max((n for n in layer_names if name.startswith(n + ".")), key=len, default=None)
        stable = name if owner is None else f"{layer_names[owner]}{name[len(owner):]}"
        found.append((name, module, parent, attr, _global_expert_name(chunk, name, stable)))
    return found


def _global_expert_name(chunk: Any, name: str, stable: str) -> str:
    """`...local_experts.<j>...` with j the expert's global index (EP rank x local count + j)."""
    marker = ".local_experts."
    if marker not in name:
        return stable
    from megatron.core import parallel_state

    experts, _, rest = name.partition(marker)
    local, _, tail = rest.partition(".")
    count = len(chunk.get_submodule(experts + ".local_experts"))
    index = parallel_state.get_expert_model_parallel_rank() * count + int(local)
    head = stable.partition(marker)[0]
    return f"{head}{marker}{index}.{tail}"
