"""`llm.peft.merge_lora` / `nemo llm peft merge --path LORA_CKPT --output DIR` (NeMo 2.0's
`llm.peft.merge_lora`): a LoRA fine-tuning checkpoint as one full checkpoint.

A LoRA checkpoint holds only its adapters and names the checkpoint its frozen base came from.
Merging loads both (TP = PP = 1, whatever layout trained them), folds `scale * B @ A` into each
adapted weight and writes an ordinary weights-only checkpoint: dist_checkpointing weights that
any layout loads, and a `context/` whose model is the fine-tuned one without its transform, so
`RestoreConfig(path=DIR)`, `llm.generate`, `export_ckpt` and further fine-tuning take it like
any pretrained checkpoint. It is written under a temporary name and renamed at the end;
everything is checked before anything is written.
"""

from pathlib import Path
from typing import Any, Optional

from nemo_lite.llm.peft.saved import (
    LoRACheckpoint,
    checked_meanwhile,
    load_adapted,
    open_lora_checkpoint,
)


def check_merge(path: Any, output_path: Any, overwrite: bool = False) -> list[str]:
    """What `merge_lora` will do, checked without writing: the lines `--dryrun` prints."""
    return _lines(open_lora_checkpoint(path, output_path, overwrite, "merge_lora"))


def _lines(source: LoRACheckpoint) -> list[str]:
    transform, manifest = source.transform, source.manifest
    return [f"checkpoint: {source.path} (step {manifest.get('step')}, "
            f"{type(transform).__name__} dim {getattr(transform, 'dim', '?')}, "
            f"base {manifest.get('base_weights') or 'in the checkpoint'})",
            f"output: {source.output} (a full checkpoint, adapters merged)"]


def merge_lora(path: str = "", output_path: Optional[str] = None,
               overwrite: bool = False) -> Path:
    """Write LoRA checkpoint `path` with its adapters merged as a full checkpoint at
    `output_path`; its path. Runs in one process (CPU is enough)."""
    import shutil

    from nemo_lite.io import load_context, save_context
    from nemo_lite.lightning.checkpoint_io import MegatronCheckpointIO
    from nemo_lite.lightning.model_state import model_sharded_state_dict
    from nemo_lite.llm.hf.convert import single_rank

    source = open_lora_checkpoint(path, output_path, overwrite, "merge_lora")
    ckpt, manifest, out = source.path, source.manifest, source.output
    model = load_context(ckpt, subpath="model", build=False)
    model.model_transform = None  # the merged model is the plain one
    with single_rank():
        with checked_meanwhile(ckpt):
            chunk = load_adapted(ckpt, source.config, source.transform)
        source.transform.merge([chunk])
        if out.exists():
            shutil.rmtree(out)
        MegatronCheckpointIO().save_checkpoint(model_sharded_state_dict([chunk]), out, {
            "manifest": {"step": manifest.get("step", 0), "weights_only": True,
                         "merged_from": str(ckpt.resolve()),
                         **({"architecture": manifest["architecture"]}
                            if manifest.get("architecture") else {})},
            "before_commit": lambda tmp: save_context(tmp, model=model)})
    return out
