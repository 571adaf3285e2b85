"""`llm.peft.export_lora` / `nemo llm peft export --path LORA_CKPT --output DIR` (NeMo 2.0's
`llm.peft.export_lora`): a LoRA (or DoRA) checkpoint's adapters in Hugging Face PEFT's format.

It writes `adapter_model.safetensors` + `adapter_config.json`, which
`peft.PeftModel.from_pretrained(base, DIR)` loads onto the Hugging Face model that
`export_ckpt` makes of the base checkpoint. Each megatron adapter becomes one PEFT LoRA per
Hugging Face linear, through the family's own conversion rule of the adapted weight:

    delta W = scale * B @ A, and every rule's split acts on the rows of W alone
    (QKV regrouping, [gate; up] halves, GPT-2's transpose), so the split of B gives each
    Hugging Face linear its B, and every part shares A: q_proj = (A, B_q), k_proj = (A, B_k), ...

DoRA's per-row magnitude splits by the same rule (`lora_magnitude_vector`, `use_dora=True`).
GPT-2's Conv1D linears are stored [in, out]; PEFT keeps their A and B in the nn.Linear
orientation (`fan_in_fan_out=True`), so the transposed parts are turned back. Adapters on MoE
experts are refused: transformers keeps Mixtral's experts as fused tensors, not linears PEFT
can wrap (merge them instead: `nemo llm peft merge`, then `nemo llm export`).
"""

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from nemo_lite.llm.peft.saved import (
    LoRACheckpoint,
    PEFTCheckpointError,
    checked_meanwhile,
    load_adapted,
    open_lora_checkpoint,
)

PEFT_PREFIX = "base_model.model."
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


def _family(source: LoRACheckpoint) -> tuple[Any, str]:
    """(family module, architecture) of the checkpoint's Hugging Face counterpart."""
    from nemo_lite.llm.hf.families import architecture_of, family_for
    from nemo_lite.llm.hf.source import HFCheckpointError

    try:
        architecture = (source.manifest.get("architecture")
                        or source.base_manifest.get("architecture")
                        or architecture_of(source.config))
        family = family_for(architecture)
        if hasattr(family, "check_exportable"):
            family.check_exportable(source.config)
    except (HFCheckpointError, ValueError) as error:
        raise PEFTCheckpointError(f"export_lora: {source.path}'s base model has no Hugging Face "
                                  f"form: {error}") from None
    return family, architecture


def _prepare(path: Any, output_path: Any, overwrite: bool) -> tuple[LoRACheckpoint, Any, str]:
    source = open_lora_checkpoint(path, output_path, overwrite, "export_lora")
    return (source, *_family(source))


def check_export(path: Any, output_path: Any, overwrite: bool = False) -> list[str]:
    """What `export_lora` will do, checked without writing: the lines `--dryrun` prints."""
    source, _, architecture = _prepare(path, output_path, overwrite)
    transform = source.transform
    return [f"checkpoint: {source.path} (step {source.manifest.get('step')}, "
            f"{type(transform).__name__} dim {transform.dim}, alpha {transform.alpha})",
            f"base: {architecture} ({_base_source(source) or 'no Hugging Face source'})",
            f"output: {source.output} ({WEIGHTS_NAME} + {CONFIG_NAME})"]


def export_lora(path: str = "", output_path: Optional[str] = None,
                overwrite: bool = False) -> Path:
    """Write LoRA checkpoint `path`'s adapters under `output_path` in PEFT's format; its path."""
    import torch
    from safetensors.torch import save_file

    from nemo_lite.llm.hf.convert import single_rank
    from nemo_lite.llm.peft.lora_layers import LoRALinear

    source, family, _ = _prepare(path, output_path, overwrite)
    ckpt, config, out = source.path, source.config, source.output
    rules = {name: (rule, hf_names) for rule in family.rules(config)
             for name, hf_names in rule.expand(config.num_layers)}
    conv1d = bool(getattr(family, "CONV1D", False))
    tensors: dict[str, torch.Tensor] = {}
    modules: list[str] = []
    with single_rank():
        with checked_meanwhile(ckpt):
            chunk = load_adapted(ckpt, config, source.transform)
        for name, wrapper in chunk.named_modules():
            if not isinstance(wrapper, LoRALinear):
                continue
            if getattr(wrapper.to_wrap, "is_expert", False):
                raise PEFTCheckpointError(
                    f"export_lora: {ckpt} has adapters on MoE experts ({name}), which "
                    "transformers keeps as fused tensors PEFT cannot wrap: merge instead (nemo "
                    "llm peft merge, then nemo llm export), or fine-tune with target_modules "
                    "that leave the experts out.")
            rule, hf_names = rules[f"{name}.weight"]
            dtype = wrapper.to_wrap.weight.dtype
            a = wrapper.adapter.linear_in.weight.detach().float()
            b = wrapper.adapter.linear_out.weight.detach().float()
            parts = rule.split(b, config) if rule.split else (b,)
            magnitudes: tuple = (None,) * len(hf_names)
            if hasattr(wrapper.adapter, "magnitude"):  # DoRA: m per output row
                m = wrapper.adapter.magnitude(wrapper.to_wrap.weight)
                magnitudes = rule.split(m, config) if rule.split else (m,)
            for hf_name, part, m_part in zip(hf_names, parts, magnitudes, strict=True):
                module = hf_name.removesuffix(".weight")
                modules.append(module)
                tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a.to(dtype).clone()
                tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = (
                    part.t() if conv1d else part).to(dtype).contiguous()
                if m_part is not None:
                    tensors[f"{PEFT_PREFIX}{module}.lora_magnitude_vector"] = (
                        m_part.to(dtype).contiguous())
    tmp = out.with_name(out.name + ".incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp / CONFIG_NAME).write_text(json.dumps(
        adapter_config(source.transform, sorted(modules), conv1d, _base_source(source)),
        indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def adapter_config(transform: Any, modules: list[str], conv1d: bool,
                   base: Optional[str]) -> dict[str, Any]:
    """PEFT's LoraConfig of these adapters: the exact module names, PEFT's scale alpha / r."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
            "r": transform.dim, "lora_alpha": transform.alpha,
            "lora_dropout": transform.dropout, "target_modules": modules, "bias": "none",
            "fan_in_fan_out": conv1d, "use_rslora": False,
            "use_dora": type(transform).__name__ == "DoRA",
            "inference_mode": True, "init_lora_weights": True, "modules_to_save": None}


def _base_source(source: LoRACheckpoint) -> Optional[str]:
    """The Hugging Face directory the base checkpoint was imported from, if it was."""
    return source.base_manifest.get("source") or source.manifest.get("source")
