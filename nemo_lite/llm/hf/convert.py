"""`import_ckpt` / `export_ckpt`: Hugging Face checkpoints in and out of nemo_lite (NeMo 2.0's names).

Import reads the Hugging Face config and tensor headers, builds the megatron model on the meta
device (tensor / pipeline parallel 1: keys, shapes and shardings, no bytes), checks every name and
shape, then streams: the checkpoint writer asks for one parameter at a time and gets it read
and merged through its family's rules (`lightning/streaming_save.py`), so the model is never
held in memory. It writes an ordinary nemo_lite checkpoint: dist_checkpointing weights (any
layout loads them), `context/` (the model config and tokenizer, what `RestoreConfig` and the
recipes use) and the tokenizer files under `tokenizer/`. Export is the inverse, into
safetensors + config.json + the tokenizer files, which transformers loads. Both write to a
temporary name and rename at the end; bad input is one error naming the file or tensor.
"""

import contextlib
import copy
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from nemo_lite.llm.hf.families import family_for, model_class
from nemo_lite.llm.hf.source import HFCheckpointError, TensorReader, read_config, resolve_source

TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "generation_config.json", "chat_template.jinja")
# tensors a Hugging Face checkpoint may hold that are not weights of the model
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".masked_bias", ".attn.bias")
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def default_output(source: str, directory: Path) -> Path:
    """Where `nemo://<org>/<name>` points: `hf://<org>/<name>` keeps its name, a directory its
    own."""
    from nemo_lite.lightning.checkpoint_dir import NEMO_SCHEME, resolve_checkpoint_path

    name = source[len("hf://"):] if source.startswith("hf://") and not source.startswith(
        "hf:///") else directory.name
    return resolve_checkpoint_path(NEMO_SCHEME + name)


@contextlib.contextmanager
def single_rank() -> Iterator[None]:
    """megatron's parallel state for one CPU rank (TP = PP = 1), in a private gloo group when
    this process has none; torn down after."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_lite.lightning.layout import ParallelLayout
    from nemo_lite.lightning.megatron_setup import init_parallel_state

    created = not dist.is_initialized()
    if not created and dist.get_world_size() != 1:
        raise RuntimeError("import_ckpt / export_ckpt run in one process: call them outside a "
                           "multi-rank job.")
    with tempfile.TemporaryDirectory() as store:
        if created:
            dist.init_process_group("gloo", init_method=f"file://{store}/pg", rank=0,
                                    world_size=1)
        try:
            init_parallel_state(ParallelLayout(), seed=1234, on_cuda=False)
            yield
        finally:
            parallel_state.destroy_model_parallel()
            if created:
                dist.destroy_process_group()


def build_without_init(config: Any) -> Any:
    """The model chunk of `config` (TP = PP = 1) with its weights left uninitialised: every
    one is overwritten from a checkpoint next (megatron's random init of a 1B model costs
    seconds). The caller's config is not changed."""
    build = copy.copy(config)
    build.perform_initialization = False
    return build.configure_model()


def _torch_dtype(name: str | None) -> Any:
    import torch

    return getattr(torch, DTYPES.get(name or "float32", "float32"))


def _vocab_rows(name: str) -> bool:
    return name in ("embedding.word_embeddings.weight", "output_layer.weight")


def import_ckpt(model: Any = None, source: str = "", output_path: Optional[str] = None,
                overwrite: bool = False) -> Path:
    """Convert the Hugging Face checkpoint `source` into a nemo_lite checkpoint; its path.

    `model`: an `llm` model (e.g. `llm.LlamaModel(llm.Llama3Config8B())`) whose config the
    weights must fit; without it, the config comes from config.json."""
    from nemo_lite.lightning.checkpoint_io import MegatronCheckpointIO
    from nemo_lite.lightning.model_state import model_sharded_state_dict
    from nemo_lite.lightning.streaming_save import (
        ProducedTensors,
        in_tensor_parallel_pieces,
        streaming_save_strategy,
        tensor_parallel_axes,
    )

    directory = resolve_source(source)
    hf = read_config(directory)
    architecture = (hf.get("architectures") or ["?"])[0]
    family = family_for(architecture)
    dtype = _torch_dtype(hf.get("torch_dtype") or hf.get("dtype"))
    try:
        config = model.config if model is not None else family.config_from_hf(hf, dtype)
    except (KeyError, ValueError) as error:  # a missing key, or a value with no exact equivalent
        what = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise HFCheckpointError(f"{directory / 'config.json'}: {what}") from None
    out = Path(output_path) if output_path else default_output(source, directory)
    if out.exists() and not overwrite:
        raise HFCheckpointError(f"{out} exists: remove it, choose another output_path, or pass "
                                "overwrite=True.")
    reader = TensorReader(directory)
    with single_rank():
        chunk = build_on_meta(config)
        producers = plan_tensors(family, config, reader, dict(chunk.named_parameters()),
                                 directory)

        def write_context(tmp: Path) -> None:
            import fiddle as fdl

            from nemo_lite.io import save_context, to_config

            saved = fdl.Config(model_class(config), config=to_config(config))
            if _copy_tokenizer(directory, tmp / TOKENIZER_DIR):
                from nemo_lite.llm.tokenizer import HFTokenizer

                saved.tokenizer = fdl.Config(HFTokenizer, str(out / TOKENIZER_DIR))
            save_context(tmp, model=saved)

        if out.exists():
            shutil.rmtree(out)
        # the weights are made one parameter at a time, as the checkpoint writer asks for them,
        # in pieces that a rank at any TP of 1, 2, 4 or 8 reads only its own of
        tensors = ProducedTensors(producers)
        state = in_tensor_parallel_pieces(model_sharded_state_dict([chunk]),
                                          tensor_parallel_axes(chunk), tensors)
        MegatronCheckpointIO().save_checkpoint(state, out, {
            "manifest": {"step": 0, "weights_only": True, "source": str(directory),
                         "architecture": architecture},
            "before_commit": write_context,
            "sharded_strategy": streaming_save_strategy(tensors)})
    return out


def build_on_meta(config: Any) -> Any:
    """The model chunk of `config` (TP = PP = 1) on the meta device: every key, shape and
    sharding of its checkpoint, no bytes."""
    import torch

    with torch.device("meta"):
        return build_without_init(config)


def plan_tensors(family: Any, config: Any, reader: TensorReader, params: dict[str, Any],
                 directory: Path) -> dict[Any, Any]:
    """A producer for every parameter of the meta model, from its family's rules, after every
    name and shape is checked against the checkpoint's headers (so bad input fails before
    anything is written)."""
    producers: dict[Any, Any] = {}
    used: set[str] = set()
    layers, vocab = config.num_layers, config.vocab_size
    for rule in family.rules(config):
        for name, hf_names in rule.expand(layers, getattr(config, "num_moe_experts", 0) or 0):
            used.update(hf_names)
            param = params.pop(name, None)
            if param is None:
                raise HFCheckpointError(f"{hf_names[0]} maps to {name}, which this model does "
                                        "not have (the config and the checkpoint disagree).")
            metas = [reader.meta(n) for n in hf_names]
            _check_shape(rule.merge(metas, config) if rule.merge else metas[0], param, name,
                         hf_names, vocab)
            producers[param] = functools.partial(_value, reader, rule, hf_names, config,
                                                 param, vocab)
    _check_coverage(reader, used, params, directory)
    return producers


def _check_shape(value: Any, param: Any, name: str, hf_names: tuple[str, ...],
                 vocab: int) -> None:
    rows = (vocab, *param.shape[1:]) if _vocab_rows(name) else tuple(param.shape)
    if tuple(value.shape) != rows:
        raise HFCheckpointError(
            f"{', '.join(hf_names)}: shape {tuple(value.shape)} does not fit {name} {rows} "
            "of the model config (check model= or config.json).")


def _value(reader: TensorReader, rule: Any, hf_names: tuple[str, ...], config: Any, param: Any,
           vocab: int) -> Any:
    """A parameter's value, read and merged from its HF tensors, in the model's dtype; padded
    vocabulary rows are zero (never saved by HF, never given probability)."""
    import torch

    tensors = [reader.get(n) for n in hf_names]
    value = (rule.merge(tensors, config) if rule.merge else tensors[0]).to(param.dtype)
    if tuple(value.shape) == tuple(param.shape):
        return value
    padded = torch.zeros(param.shape, dtype=param.dtype)
    padded[:vocab].copy_(value)
    return padded


def _check_coverage(reader: TensorReader, used: set[str], left: dict[str, Any],
                    directory: Path) -> None:
    extra = [n for n in reader.names() if n not in used and not n.endswith(IGNORED_SUFFIXES)
             and n != "lm_head.weight"]
    if extra:
        raise HFCheckpointError(f"{directory}: tensor {extra[0]} has no place in the model"
                                f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: "
                                "its config and weights disagree.")
    if left:
        raise HFCheckpointError(f"{directory}: no tensor for the model's {next(iter(left))}.")


def _copy_tokenizer(source: Path, target: Path) -> bool:
    """Copy the tokenizer files; whether there is a tokenizer.json (checked readable here,
    before the checkpoint is committed)."""
    from nemo_lite.llm.tokenizer import HFTokenizer

    files = [source / f for f in TOKENIZER_FILES if (source / f).is_file()]
    if not files:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, target / file.name)
    if not (target / "tokenizer.json").is_file():
        return False
    HFTokenizer(str(target))
    return True
