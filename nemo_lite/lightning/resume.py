"""Starting a run from a checkpoint: resume it (AutoResume) or take its weights only (RestoreConfig)."""

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.checkpoint_dir import (
    INCOMPLETE_SUFFIX,
    CheckpointError,
    find_latest_checkpoint,
    resolve_checkpoint_path,
)
from nemo_lite.lightning.ignored_options import warn_if_set

log = logging.getLogger(__name__)


@dataclass
class RestoreConfig:
    """NeMo 2.0's RestoreConfig: start a new run from a checkpoint's weights.

    `load_optim_state=True` also takes its optimizer state (Adam moments and step, the fp32
    main weights, the loss scaler), not its LR schedule, step count or data position: the new
    run keeps its own. `load_artifacts` (NeMo: tokenizer files) warns: the tokenizer is part
    of the data module's config here.
    """

    path: str  # a checkpoint directory, or nemo://<org>/<name> (an imported model)
    load_model_state: bool = True
    load_optim_state: bool = False
    load_artifacts: bool = False

    def __post_init__(self) -> None:
        self.path = str(resolve_checkpoint_path(self.path))
        warn_if_set("RestoreConfig", "load_artifacts", self.load_artifacts, False,
                    "give the tokenizer to the data module (data.tokenizer=PATH)")
        if self.load_optim_state and not self.load_model_state:
            raise ValueError("RestoreConfig(load_optim_state=True, load_model_state=False): the "
                             "optimizer state holds copies of the weights; load both or neither.")


class AutoResume(IOMixin):
    """Decides which checkpoint, if any, a run continues from (NeMo 2.0's arguments).

    - `resume_from_path`: that checkpoint (an error if it is not a complete checkpoint);
    - `resume_if_exists`: the newest complete checkpoint under `resume_from_directory`
      (default: the run's checkpoint directory, set by NeMoLogger); checkpoints whose save was
      interrupted are never picked. With none there, the run starts fresh if
      `resume_ignore_no_checkpoint`, else it is an error;
    - `restore_config`: when nothing is resumed, start from those weights only (fine-tuning).
    """

    def __init__(
        self,
        restore_config: Optional[RestoreConfig] = None,
        resume_from_directory: Optional[str] = None,
        resume_from_path: Optional[str] = None,
        resume_if_exists: bool = False,
        resume_past_end: bool = False,
        resume_ignore_no_checkpoint: bool = False,
    ) -> None:
        self.restore_config = restore_config
        self.resume_from_directory = resume_from_directory
        self.resume_from_path = resume_from_path
        self.resume_if_exists = resume_if_exists
        self.resume_past_end = resume_past_end
        self.resume_ignore_no_checkpoint = resume_ignore_no_checkpoint
        warn_if_set("AutoResume", "resume_past_end", resume_past_end, False,
                    "a run resumed from its final checkpoint stops at once, as with True")

    def checkpoint_path(self, checkpoint_dir: str | Path | None = None) -> Path | None:
        """The checkpoint to resume, or None to start fresh. Pure filesystem; no process group."""
        if self.resume_from_path:
            path = resolve_checkpoint_path(self.resume_from_path)
            if not path.exists():
                raise CheckpointError(f"resume_from_path={path}: no such checkpoint.")
            return path
        if not self.resume_if_exists:
            return None
        directory = self.resume_from_directory or checkpoint_dir
        if directory is None:
            raise ValueError("AutoResume(resume_if_exists=True) needs resume_from_directory, or "
                             "a NeMoLogger whose checkpoint directory it searches.")
        latest = find_latest_checkpoint(directory)
        if latest is None and not self.resume_ignore_no_checkpoint:
            raise CheckpointError(
                f"AutoResume: no complete checkpoint under {directory}. Set "
                "resume_ignore_no_checkpoint=True to start fresh when there is none.")
        return latest

    def setup(self, trainer: Any, model: Any = None) -> Path | None:
        """Point the trainer at the checkpoint to resume (or the weights to restore)."""
        checkpoint_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
        path = self.checkpoint_path(checkpoint_dir)
        if checkpoint_dir and trainer.is_global_zero:
            remove_incomplete(checkpoint_dir)
        if path is not None:
            log.info("resuming from checkpoint %s", path)
            trainer.ckpt_path = str(path)
        elif self.restore_config is not None:
            restore_from = getattr(trainer.strategy, "restore_from", None)
            if restore_from is None:
                raise TypeError("AutoResume(restore_config=...) needs nl.MegatronStrategy, which "
                                f"loads the weights; the trainer has {type(trainer.strategy).__name__}.")
            restore_from(self.restore_config)
        return path


def remove_incomplete(directory: str | Path) -> None:
    """Delete what interrupted saves left (never a checkpoint; the name is re-saved later)."""
    root = Path(directory)
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.name.endswith(INCOMPLETE_SUFFIX) and child.is_dir() and not child.is_symlink():
            log.warning("removing interrupted checkpoint save %s", child)
            shutil.rmtree(child, ignore_errors=True)
