"""`export_ckpt(path, target="hf", output_path=DIR)`: a nemo_lite checkpoint as a Hugging Face
model directory (safetensors shards + index, config.json, the tokenizer files) that
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads.

The checkpoint's saved context gives the model config; its weights load at tensor / pipeline
parallel 1 from whatever layout saved them (LoRA adapters merged into the base weights first);
each family's rules split the fused tensors back (the exact inverse of import). The checkpoint's
CRC32s are verified in a thread while its weights are read (a problem found is the error). Shards
are written as they fill (`max_shard_bytes`), into a temporary directory renamed at the end.
"""

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from nemo_lite.llm.hf.convert import TOKENIZER_DIR, TOKENIZER_FILES, single_rank
from nemo_lite.llm.hf.families import architecture_of, family_for
from nemo_lite.llm.hf.source import HFCheckpointError
from nemo_lite.llm.peft.saved import checked_meanwhile, load_merged

DTYPE_NAMES = {"torch.float32": "float32", "torch.float16": "float16",
               "torch.bfloat16": "bfloat16"}


def export_ckpt(path: str, target: str = "hf", output_path: Optional[str] = None,
                overwrite: bool = False, max_shard_bytes: int = 2 * 1024**3) -> Path:
    """Write checkpoint `path` as a Hugging Face model under `output_path`; its path."""
    import torch

    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import read_manifest, resolve_checkpoint_path

    if target != "hf":
        raise HFCheckpointError(f"target={target!r}: only 'hf' (Hugging Face) is supported.")
    if not output_path:
        raise HFCheckpointError("export_ckpt needs output_path (the directory to write).")
    ckpt, out = resolve_checkpoint_path(path), Path(output_path)
    if out.exists() and not overwrite:
        raise HFCheckpointError(f"{out} exists: remove it, choose another output_path, or pass "
                                "overwrite=True.")
    manifest = read_manifest(ckpt) or {}
    config = load_context(ckpt, subpath="model.config")
    architecture = manifest.get("architecture") or architecture_of(config)
    family = family_for(architecture)
    if hasattr(family, "check_exportable"):
        try:
            family.check_exportable(config)
        except ValueError as error:
            raise HFCheckpointError(f"{ckpt}: {error}") from None
    tmp = out.with_name(out.name + ".incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with single_rank():
        with checked_meanwhile(ckpt, HFCheckpointError):
            chunk = load_merged(ckpt, config, HFCheckpointError)
        params = dict(chunk.named_parameters())
        writer = _ShardWriter(tmp, max_shard_bytes)
        experts = getattr(config, "num_moe_experts", 0) or 0
        with torch.no_grad():
            for rule in family.rules(config):
                for name, hf_names in rule.expand(config.num_layers, experts):
                    value = params[name].data
                    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
                        value = value[:config.vocab_size]  # the real rows, not the padding
                    parts = rule.split(value, config) if rule.split else (value,)
                    for hf_name, part in zip(hf_names, parts, strict=True):
                        writer.add(hf_name, part)
        writer.close()
    dtype = DTYPE_NAMES.get(str(config.params_dtype), "float32")
    (tmp / "config.json").write_text(json.dumps(
        family.config_to_hf(config, architecture, dtype), indent=2))
    tokenizer = _tokenizer_dir(ckpt)
    for file in TOKENIZER_FILES:
        if tokenizer is not None and (tokenizer / file).is_file():
            shutil.copy2(tokenizer / file, tmp / file)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _tokenizer_dir(ckpt: Path) -> Optional[Path]:
    """Where the model's Hugging Face tokenizer files are: in an imported checkpoint, or (for
    a fine-tuned one) wherever its saved model context's HFTokenizer reads them."""
    from nemo_lite.io import load_context
    from nemo_lite.io.errors import ContextError

    if (ckpt / TOKENIZER_DIR / "tokenizer.json").is_file():
        return ckpt / TOKENIZER_DIR
    try:
        tokenizer = load_context(ckpt, subpath="model.tokenizer")
    except ContextError:
        return None
    path = Path(getattr(tokenizer, "path", "") or "")
    return path if (path / "tokenizer.json").is_file() else None


class _ShardWriter:
    """safetensors shards of at most `limit` bytes, written as they fill, plus the index."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory, self.limit = directory, limit
        self.pending: dict[str, Any] = {}
        self.size = 0
        self.shards: list[list[str]] = []

    def add(self, name: str, tensor: Any) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.size + nbytes > self.limit:
            self._flush()
        self.pending[name] = tensor.detach().contiguous()  # the model outlives the shard: no copy
        self.size += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        index = len(self.shards)
        save_file(self.pending, str(self.directory / f"shard-{index:05d}.safetensors"),
                  metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.pending, self.size = {}, 0

    def close(self) -> None:
        if self.pending or not self.shards:
            self._flush()
        if len(self.shards) == 1:
            (self.directory / "shard-00000.safetensors").rename(
                self.directory / "model.safetensors")
            return
        total = len(self.shards)
        weight_map = {}
        for index, names in enumerate(self.shards):
            name = f"model-{index + 1:05d}-of-{total:05d}.safetensors"
            (self.directory / f"shard-{index:05d}.safetensors").rename(self.directory / name)
            weight_map.update(dict.fromkeys(names, name))
        (self.directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
