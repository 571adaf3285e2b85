"""A fine-tuning checkpoint as the model it trained: base weights plus adapters, on one rank.

`merge_lora`, `export_lora` and `export_ckpt` all read a LoRA checkpoint the same way: the
checkpoint's saved context gives the model config and its transform (`model.model_transform`,
the `LoRA` it was fine-tuned with); the model is built at TP = PP = 1 with that transform, so
the adapter weights have somewhere to load, and `load_saved_model` reads a trainable-only
checkpoint's frozen base from the checkpoint its manifest names. The checkpoint's CRC32s are
verified in a thread while its weights are read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PEFTCheckpointError(ValueError):
    """A checkpoint the PEFT tools cannot use: the message names the path and the fix."""


def adapter_transform(ckpt: Path) -> Any:
    """The model transform a checkpoint was fine-tuned with (e.g. `LoRA`), or None."""
    from nemo_lite.io import load_context
    from nemo_lite.io.errors import ContextError

    try:
        return load_context(ckpt, subpath="model.model_transform")
    except ContextError:
        return None


def require_adapters(ckpt: Path, tool: str) -> Any:
    """`ckpt`'s adapter transform (one with `merge`); a clear error for a checkpoint without."""
    transform = adapter_transform(ckpt)
    if transform is None or not hasattr(transform, "merge"):
        raise PEFTCheckpointError(
            f"{tool}: {ckpt} has no adapters (its saved model has no LoRA model_transform): "
            "it is a full checkpoint already; give a checkpoint saved by "
            "llm.finetune(..., peft=LoRA(...)).")
    return transform


@contextlib.contextmanager
def checked_meanwhile(ckpt: Path, error: type[Exception] = PEFTCheckpointError) -> Iterator[None]:
    """Verify `ckpt` (files, sizes, CRC32s) in a thread while the body reads it; a problem it
    finds is the error, whatever the body raised. Nothing is written before this returns."""
    from nemo_lite.lightning.checkpoint_io import checkpoint_problem

    with ThreadPoolExecutor(1, thread_name_prefix="ckpt-verify") as pool:
        check = pool.submit(checkpoint_problem, ckpt, True)
        try:
            yield
        finally:
            problem, _ = check.result()
            if problem:
                raise error(problem) from None


def load_adapted(ckpt: Path, config: Any, transform: Any,
                 error: type[Exception] = PEFTCheckpointError) -> Any:
    """Collective over the (single-rank) parallel state: the checkpoint's model chunk at
    TP = PP = 1, built with `transform` (None: the plain model), its weights loaded."""
    from nemo_lite.lightning.checkpoint_dir import CheckpointError
    from nemo_lite.lightning.saved_model import load_saved_model
    from nemo_lite.llm.hf.convert import build_without_init

    chunk = build_without_init(config)
    if transform is not None:
        transform([chunk])
    try:
        load_saved_model([chunk], ckpt, inspected=True)
    except CheckpointError as problem:
        raise error(str(problem)) from None
    return chunk


def load_merged(ckpt: Path, config: Any, error: type[Exception] = PEFTCheckpointError) -> Any:
    """The checkpoint's model at TP = PP = 1 with every adapter folded into its base weights."""
    transform = adapter_transform(ckpt)
    chunk = load_adapted(ckpt, config, transform, error)
    if transform is not None and hasattr(transform, "merge"):
        transform.merge([chunk])
    return chunk


def check_output(output_path: Any, overwrite: bool, tool: str) -> Path:
    if not output_path:
        raise PEFTCheckpointError(f"{tool} needs an output directory (--output DIR, or "
                                  "output_path=DIR).")
    out = Path(output_path)
    if out.exists() and not overwrite:
        raise PEFTCheckpointError(f"{out} exists: remove it, choose another output, or pass "
                                  "overwrite=True.")
    return out


@dataclass(frozen=True)
class LoRACheckpoint:
    """A readable fine-tuning checkpoint with adapters, and where its tool will write: read
    once, used by the `--dryrun` lines and by the run."""

    path: Path
    manifest: dict
    transform: Any  # the LoRA / DoRA it was fine-tuned with
    config: Any  # its model config
    base_manifest: dict  # the manifest of the checkpoint its frozen base comes from ({} if none)
    output: Path


def open_lora_checkpoint(path: Any, output_path: Any, overwrite: bool,
                         tool: str) -> LoRACheckpoint:
    """Everything `tool` needs from checkpoint `path`, checked, or one error; writes nothing."""
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import read_manifest, resolve_checkpoint_path
    from nemo_lite.lightning.checkpoint_io import checkpoint_problem

    if not path:
        raise PEFTCheckpointError(f"{tool} needs the LoRA checkpoint (--path CKPT, or "
                                  "path=CKPT).")
    ckpt = resolve_checkpoint_path(path)
    problem, manifest = checkpoint_problem(ckpt)
    if problem:
        raise PEFTCheckpointError(problem)
    transform = require_adapters(ckpt, tool)
    output = check_output(output_path, overwrite, tool)
    manifest = manifest or {}
    return LoRACheckpoint(ckpt, manifest, transform, load_context(ckpt, subpath="model.config"),
                          read_manifest(manifest.get("base_weights") or "") or {}, output)
