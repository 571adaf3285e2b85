"""Checkpoints through megatron's dist_checkpointing: sharded, resharded on load, written atomically.

A checkpoint is a directory:

    <name>/weights/        megatron torch_dist checkpoint: every tensor under its global key with
                           its global shape and this rank's offset (so any layout can load it),
                           plus common.pt (trainer state, saved by rank 0)
    <name>/context/        the run's Fiddle config (nemo_lite.io), when it could be written
    <name>/nemo_lite.json  the manifest: step, consumed samples, layout, file sizes and CRCs

Every rank writes into `<name>.incomplete`; only when all ranks are done does rank 0 write the
manifest and rename the directory to `<name>`. A crash or kill during a save therefore leaves an
`.incomplete` directory that is never picked as a checkpoint, and the previous one untouched.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from nemo_lite.lightning.checkpoint_dir import (  # noqa: F401 - re-exported
    CONTEXT_DIR,
    FORMAT,
    INCOMPLETE_SUFFIX,
    MANIFEST,
    WEIGHTS_DIR,
    CheckpointError,
    file_table,
    find_latest_checkpoint,
    fsync_tree,
    is_complete_checkpoint,
    read_manifest,
)
from nemo_lite.lightning.checkpoint_shapes import agreed_mismatches
from nemo_lite.lightning.mcore_compat import async_save_kwargs
from nemo_lite.lightning.model_state import (
    load_model_state,
    model_sharded_state_dict,
    saves_trainable_only,
)
from nemo_lite.lightning.shims import ScopedPatch
from nemo_lite.lightning.threaded_reads import threaded_reads


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _broadcast_object(obj: Any) -> Any:
    if not torch.distributed.is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _restricted_load_bytes(original: Any) -> Any:
    def load_bytes(self, read_item, value):  # noqa: ANN001 - torch's signature
        obj = torch.load(value, weights_only=True)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        buffer.seek(0)
        return original(self, read_item, buffer)

    return load_bytes


def _default_load_planner() -> Any:
    from torch.distributed.checkpoint import default_planner

    return default_planner.DefaultLoadPlanner


WEIGHTS_ONLY_OBJECTS = ScopedPatch(
    "weights_only_objects",
    "torch's DCP planner unpickles a checkpoint's byte objects with weights_only=False (any "
    "pickle, any code); tensors already load with weights_only=True. For one load, byte objects "
    "go through the same restricted unpickler, so a crafted checkpoint cannot run code. (megatron "
    "builds the planner inside its load strategy, so a planner subclass cannot be passed in.)",
    _default_load_planner, "load_bytes", _restricted_load_bytes)


class MegatronCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO on megatron's dist_checkpointing; every call is collective.

    `save_checkpoint` takes a sharded state dict (megatron ShardedTensor / ShardedObject leaves
    for the sharded parts, plain values for the common part) and commits it atomically.
    `load_checkpoint` takes the sharded state dict of the *current* layout and fills it.
    `thread_count` (default 2): files each writing rank writes, threads each rank reads with.
    """

    def __init__(self, save_ckpt_format: str = "torch_dist", parallel_save: bool = True,
                 parallel_load: bool = False, verify_checksums: bool = True,
                 load_strictness: str | None = None, async_save: bool = False,
                 thread_count: int | None = None, assume_constant_structure: bool = False,
                 parallel_save_within_dp: bool = True) -> None:
        if save_ckpt_format != "torch_dist":
            raise ValueError(
                f"save_ckpt_format={save_ckpt_format!r} is not supported: use 'torch_dist' "
                "(megatron's reshardable format)."
            )
        self.save_ckpt_format = save_ckpt_format
        self.parallel_save = parallel_save
        self.parallel_load = parallel_load
        self.verify_checksums = verify_checksums
        self.load_strictness = load_strictness
        self.async_save = async_save
        self.thread_count = thread_count
        self.assume_constant_structure = assume_constant_structure
        self.parallel_save_within_dp = parallel_save_within_dp
        self._save_strategy_cache: Any = None
        self._queue: Any = None
        self._deferred_removals: list[str | Path] = []

    # --- save ----------------------------------------------------------------------------
    def _save_strategy(self) -> Any:
        """megatron's torch_dist save strategy: `thread_count` files per writing rank,
        `assume_constant_structure` reuses the first save's plan (so one strategy object serves
        every later save of the run), and with `parallel_save` the writes are spread over the data-
        parallel replicas (`parallel_save_within_dp`) or over all ranks."""
        if self._save_strategy_cache is not None:
            return self._save_strategy_cache
        from megatron.core import parallel_state
        from megatron.core.dist_checkpointing.strategies.fully_parallel import (
            FullyParallelSaveStrategyWrapper,
        )
        from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

        strategy = TorchDistSaveShardedStrategy(
            self.save_ckpt_format, 1, thread_count=self.thread_count or 2,
            cached_metadata=self.assume_constant_structure)
        if self.parallel_save and parallel_state.model_parallel_is_initialized():
            group = (parallel_state.get_data_parallel_group(with_context_parallel=True)
                     if self.parallel_save_within_dp else None)  # None: every rank
            strategy = FullyParallelSaveStrategyWrapper(strategy, group,
                                                        self.assume_constant_structure)
        if self.assume_constant_structure and parallel_state.model_parallel_is_initialized():
            self._save_strategy_cache = strategy  # its cached plan serves the later saves
        return strategy

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: dict[str, Any] | None = None) -> None:
        """Collective. `storage_options`: `manifest` (dict), `before_commit(tmp_dir)` (rank 0) and
        `sharded_strategy` (a megatron save strategy instead of the configured one, e.g. the
        streaming one of `streaming_save.py`)."""
        from megatron.core import dist_checkpointing

        options = storage_options or {}
        final = Path(path)
        tmp = final.with_name(final.name + INCOMPLETE_SUFFIX)
        if _rank() == 0:
            if tmp.exists():  # left by a save that was killed: never a checkpoint
                shutil.rmtree(tmp)
            (tmp / WEIGHTS_DIR).mkdir(parents=True)
        _barrier()
        extra = async_save_kwargs() if self.async_save else {}
        request = dist_checkpointing.save(checkpoint, str(tmp / WEIGHTS_DIR),
                                          sharded_strategy=options.get("sharded_strategy")
                                          or self._save_strategy(),
                                          async_sharded_save=self.async_save, **extra)
        if request is None:
            self._finalize(tmp, final, options)
            return
        # Async: the tensors are written in the background; the commit (manifest + rename)
        # runs once every rank's writes are done, when `maybe_finalize` finds them done.
        request.add_finalize_fn(lambda: self._finalize(tmp, final, options))
        if self._queue is None:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._queue = AsyncCallsQueue()
        self._queue.schedule_async_request(request)

    def _finalize(self, tmp: Path, final: Path, options: dict[str, Any]) -> None:
        """Collective: once every rank has written, rank 0 commits the checkpoint."""
        _barrier()
        if _rank() == 0:
            before_commit: Callable[[Path], None] | None = options.get("before_commit")
            if before_commit is not None:
                before_commit(tmp)
            self._commit(tmp, final, dict(options.get("manifest") or {}))
        _barrier()

    def maybe_finalize(self, blocking: bool = False) -> None:
        """Collective: commit the async saves that finished (all of them with `blocking`),
        then drop the checkpoints whose removal waited for them."""
        if self._queue is None:
            return
        self._queue.maybe_finalize_async_calls(blocking=blocking)
        if self._queue.get_num_unfinalized_calls() == 0:
            removals, self._deferred_removals = self._deferred_removals, []
            for path in removals:
                self.remove_checkpoint(path)

    def _commit(self, tmp: Path, final: Path, manifest: dict[str, Any]) -> None:
        # the fsyncs wait on the disk while the checksums use the CPU: run them side by side
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            synced = pool.submit(fsync_tree, tmp)
            files = file_table(tmp / WEIGHTS_DIR, self.verify_checksums)
            synced.result()
        manifest.update(format=FORMAT, saved_at=time.time(), files=files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        with (tmp / MANIFEST).open("rb") as f:
            os.fsync(f.fileno())
        if final.is_symlink():
            final.unlink()
        elif final.exists():  # same name saved again (e.g. after a resume): replace it
            old = final.with_name(final.name + ".old" + INCOMPLETE_SUFFIX)
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            return
        tmp.rename(final)

    # --- load ----------------------------------------------------------------------------
    def inspect(self, path: str | Path) -> dict[str, Any]:
        """Check `path` is a complete, intact checkpoint; return its manifest (rank 0 reads)."""
        problem, manifest = None, None
        if _rank() == 0:
            problem, manifest = checkpoint_problem(Path(path), self.verify_checksums)
        problem, manifest = _broadcast_object((problem, manifest))
        if problem:
            raise CheckpointError(problem)
        return manifest

    def load_common(self, path: str | Path) -> dict[str, Any]:
        """The non-sharded part (trainer state, layout); validates the checkpoint first."""
        from megatron.core import dist_checkpointing

        self.inspect(path)
        try:
            return dist_checkpointing.load_common_state_dict(str(Path(path) / WEIGHTS_DIR))
        except Exception as error:
            raise CheckpointError(f"checkpoint {path}: common state unreadable: {error}") from error

    def load_checkpoint(self, path: str | Path, map_location: Any = None,
                        sharded_state_dict: dict[str, Any] | None = None,
                        weights_only: bool | None = None,
                        inspected: bool = False) -> dict[str, Any]:
        """Collective: fill `sharded_state_dict` (the current layout's) from `path`
        (`inspected`: the caller already ran `inspect(path)`)."""
        from megatron.core import dist_checkpointing
        from torch.distributed.checkpoint.api import CheckpointException

        if sharded_state_dict is None:
            raise ValueError("MegatronCheckpointIO.load_checkpoint needs the sharded_state_dict "
                             "of the current model (built by MegatronStrategy).")
        if not inspected:
            self.inspect(path)
        weights = Path(path) / WEIGHTS_DIR
        problems = agreed_mismatches(sharded_state_dict, weights)
        if problems:
            more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise CheckpointError(
                f"cannot load checkpoint {path}: the saved tensors do not fit this model (shape "
                f"mismatch): {problems[0]}{more}. Build the model with the config the checkpoint "
                "was saved with (its context/ holds it).")
        strategy = None
        if self.parallel_load:
            from megatron.core import parallel_state
            from megatron.core.dist_checkpointing.serialization import (
                get_default_load_sharded_strategy,
            )
            from megatron.core.dist_checkpointing.strategies.fully_parallel import (
                FullyParallelLoadStrategyWrapper,
            )

            strategy = FullyParallelLoadStrategyWrapper(
                get_default_load_sharded_strategy(str(weights)),
                parallel_state.get_data_parallel_group(with_context_parallel=True))
        reads = threaded_reads(self.thread_count or 2)
        try:
            with WEIGHTS_ONLY_OBJECTS.applied(), reads.applied(), torch.no_grad():
                return dist_checkpointing.load(sharded_state_dict, str(weights),
                                               sharded_strategy=strategy,
                                               strict=self.load_strictness or "assume_ok_unexpected")
        except CheckpointError:
            raise
        except (Exception, CheckpointException) as error:  # torch's is a BaseException
            raise CheckpointError(_explain_load_error(Path(path), error)) from error

    def remove_checkpoint(self, path: str | Path) -> None:
        """Remove a checkpoint, or, while an async save is uncommitted, remove it after: the
        older checkpoint must survive until the newer one is complete."""
        if self._queue is not None and self._queue.get_num_unfinalized_calls() > 0:
            self._deferred_removals.append(path)
            return
        target = Path(path)
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)


def checkpoint_problem(path: Path, verify_checksums: bool = False) -> tuple[str | None, dict | None]:
    """(what is wrong with checkpoint `path`, or None; its manifest). Reads files only: the CLI
    checks a restore / resume path with it before launching, every load checks again."""
    if path.name.endswith(INCOMPLETE_SUFFIX):
        return (f"checkpoint {path} is incomplete: its save was interrupted. Resume from "
                f"the checkpoint before it (AutoResume(resume_if_exists=True) picks the "
                f"newest complete one)."), None
    if not path.exists():
        return f"no checkpoint at {path}: the path does not exist.", None
    if not path.is_dir():
        return (f"{path} is a file, not a checkpoint directory: nemo_lite checkpoints are "
                f"directories holding '{WEIGHTS_DIR}/' and '{MANIFEST}'."), None
    manifest = read_manifest(path)
    weights = path / WEIGHTS_DIR
    if manifest is None:
        if (path / MANIFEST).exists():
            return f"checkpoint {path}: {MANIFEST} is unreadable (corrupt).", None
        return (f"checkpoint {path} is incomplete or not a nemo_lite checkpoint: "
                f"{MANIFEST} is missing (it is written last, once every rank has saved). "
                "Use an earlier complete checkpoint."), None
    if not weights.is_dir():
        return f"checkpoint {path} has no '{WEIGHTS_DIR}/' directory: it is incomplete.", None
    expected = manifest.get("files") or {}
    for name, entry in expected.items():
        file = weights / name
        if not file.exists():
            return f"checkpoint {path} is missing {WEIGHTS_DIR}/{name}: copy it again.", None
        size = file.stat().st_size
        if size != entry["bytes"]:
            return (f"checkpoint {path}: {WEIGHTS_DIR}/{name} has {size} bytes, the save "
                    f"wrote {entry['bytes']} (truncated or corrupt). Use an earlier "
                    "checkpoint or copy this one again."), None
    if verify_checksums:
        found = file_table(weights, checksums=True)  # one pass over the files
        for name, entry in expected.items():
            if "crc32" in entry and found[name].get("crc32") != entry["crc32"]:
                return (f"checkpoint {path}: {WEIGHTS_DIR}/{name} fails its CRC32 check "
                        "(corrupt). Use an earlier checkpoint or copy this one again."), None
    return None, manifest


def _root_cause(error: BaseException) -> str:
    """The innermost error line (torch wraps each rank's failure, traceback included)."""
    lines = [line.strip() for line in f"{type(error).__name__}: {error}".splitlines()]
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)
              and not line.startswith("CheckpointException: CheckpointException ranks")]
    return causes[-1] if causes else lines[0]


def _explain_load_error(path: Path, error: BaseException) -> str:
    text = _root_cause(error)
    if "shape" in text.lower() or "mismatch" in text.lower():
        hint = ("the saved tensors do not fit this model/layout: check the model config "
                "(hidden size, vocab size, layers) matches the one the checkpoint was saved with")
    elif "Weights only load failed" in text or "Unsupported global" in text:
        hint = ("it holds a pickled object that is not plain data; nemo_lite refuses to run "
                "code from a checkpoint")
    elif any(m in text.lower() for m in ("missing", "not in the checkpoint", "not in state dict")):
        hint = "it lacks keys this model needs (a different model or an incomplete copy)"
    else:
        hint = "the files may be corrupt or truncated; use an earlier checkpoint"
    return f"cannot load checkpoint {path}: {hint}. ({text[:600]})"


def save_model_weights(chunks: Sequence[torch.nn.Module], path: str | Path) -> Path:
    """Collective: write only the weights of `chunks` as a checkpoint at `path` (any layout loads it)."""
    MegatronCheckpointIO().save_checkpoint(model_sharded_state_dict(chunks), path,
                                           {"manifest": {"step": 0, "weights_only": True}})
    return Path(path)


def load_model_weights(chunks: Sequence[torch.nn.Module], path: str | Path) -> None:
    """Collective: load weights saved from any layout (a full or weights-only checkpoint).

    A trainable-only model (`saves_trainable_only`) reads only its frozen part: `path` is its
    base checkpoint, which does not hold the parts added for fine-tuning (adapters).
    """
    part = "frozen" if saves_trainable_only(chunks) else "all"
    loaded = MegatronCheckpointIO().load_checkpoint(
        path, sharded_state_dict=model_sharded_state_dict(chunks, part))
    load_model_state(chunks, loaded["model"], part=part)
