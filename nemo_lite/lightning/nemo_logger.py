"""NeMoLogger: one run directory that holds everything a run writes.

    <log_dir>/<name>/[<version>/]
        checkpoints/<step=..-consumed_samples=..>/{weights,context,nemo_lite.json}
        checkpoints/last -> the newest checkpoint
        tb_logs/                 TensorBoard events
        nemo_log_globalrank-<r>_localrank-<l>.txt   this process's log lines
        cmd-args.log             the command line that started the run

With `resume_if_exists` the version sub-directory is left out, so restarting the same command
finds the same directory and its checkpoints.
"""

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from nemo_lite.io.capture import IOMixin

VERSION_ENV = "NEMO_LITE_RUN_VERSION"


def _ranks() -> tuple[int, int]:
    """(global, local) rank from the launcher's environment: known before any process group."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", local)), local


def _launchers_version() -> str | None:
    """The version the launching process picked, in a rank it started (Lightning starts ranks
    1..N-1 as its children, rank 0 being itself). The value names the process that picked it,
    so a process that merely inherits the variable (a later run started from the same shell or
    test) picks its own."""
    picker, _, version = os.environ.get(VERSION_ENV, "").partition(":")
    started_by_picker = picker == str(os.getppid()) and _ranks()[1] > 0
    return (version or None) if started_by_picker else None


def _agreed_version(mine: str) -> str:
    """Under torchrun (also inside Slurm jobs), every rank is started by an elastic agent, none
    by a rank that picked a version, and their clocks may tick between picks: they agree through
    the agent's store, which torch's process group uses too (the first rank's pick wins; ranks
    restarted in the same job get the same one, so they resume in the same run directory)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_PORT" not in os.environ:
        return mine
    from datetime import timedelta

    from torch.distributed import TCPStore

    store = TCPStore(os.environ.get("MASTER_ADDR", "localhost"), int(os.environ["MASTER_PORT"]),
                     is_master=False, timeout=timedelta(seconds=120))
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return store.compare_set(f"nemo_lite/run_version/{run_id}", "", mine).decode()


class NeMoLogger(IOMixin):
    def __init__(
        self,
        name: str = "default",
        log_dir: Optional[str] = None,
        explicit_log_dir: Optional[str] = None,
        version: Optional[str] = None,
        use_datetime_version: bool = True,
        log_local_rank_0_only: bool = False,
        log_global_rank_0_only: bool = False,
        files_to_copy: Optional[list[str]] = None,
        update_logger_directory: bool = True,
        ckpt: Any = None,
        tensorboard: bool = True,
        extra_loggers: Optional[list[Any]] = None,
        wandb: Any = None,
    ) -> None:
        """`tensorboard`: True writes TensorBoard events to `<run>/tb_logs`; a Lightning
        TensorBoardLogger (NeMo's form) is used as given. `wandb`: a Lightning WandbLogger or None."""
        self.name = name
        self.log_dir = log_dir
        self.explicit_log_dir = explicit_log_dir
        self.version = version
        self.use_datetime_version = use_datetime_version
        self.log_local_rank_0_only = log_local_rank_0_only
        self.log_global_rank_0_only = log_global_rank_0_only
        self.files_to_copy = files_to_copy or []
        self.update_logger_directory = update_logger_directory
        self.ckpt = ckpt
        self.tensorboard = tensorboard
        self.extra_loggers = extra_loggers or []
        self.wandb = wandb

    def run_dir(self, resume_if_exists: bool = False) -> Path:
        if self.explicit_log_dir:
            return Path(self.explicit_log_dir)
        root = Path(self.log_dir or os.environ.get("NEMO_LITE_LOG_DIR", "nemo_experiments"))
        version = self.version or _launchers_version()
        if version is None and self.use_datetime_version and not resume_if_exists:
            version = _agreed_version(time.strftime("%Y-%m-%d_%H-%M-%S"))
        if _ranks()[1] == 0:  # the ranks this process starts inherit it
            os.environ[VERSION_ENV] = f"{os.getpid()}:{version or ''}"
        return root / self.name / version if version else root / self.name

    def setup(self, trainer: Any, resume_if_exists: bool = False) -> Path:
        """Create the run directory; wire checkpoints, TensorBoard and the log file into it."""
        from nemo_lite.lightning.model_checkpoint import ModelCheckpoint

        run_dir = self.run_dir(resume_if_exists).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        global_rank, local_rank = _ranks()
        if hasattr(trainer, "use_run_dir"):  # nl.Trainer
            trainer.use_run_dir(str(run_dir))
        else:
            warnings.warn("NeMoLogger: a plain Lightning Trainer keeps its own default_root_dir "
                          f"(not {run_dir}); use nl.Trainer for one run directory.", stacklevel=2)

        ckpt = self.ckpt
        existing = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        if ckpt is None and existing:
            ckpt = existing[0]
        if ckpt is None and getattr(trainer, "default_checkpointing", False):
            ckpt = ModelCheckpoint()  # at the end of training, as NeMo's default checkpointing
        if ckpt is not None:
            if ckpt.dirpath is None:
                ckpt.dirpath = str(run_dir / "checkpoints")
            if ckpt not in trainer.callbacks:
                trainer.callbacks.append(ckpt)
        if self.update_logger_directory:
            from lightning.pytorch.loggers import Logger, TensorBoardLogger

            loggers = [self.wandb, *self.extra_loggers] if self.wandb else list(self.extra_loggers)
            if isinstance(self.tensorboard, Logger):
                loggers.insert(0, self.tensorboard)
            elif self.tensorboard:
                loggers.insert(0, TensorBoardLogger(save_dir=str(run_dir), name="tb_logs",
                                                    version=""))
            if loggers:
                trainer.loggers = loggers
        self._log_to_file(run_dir, global_rank, local_rank)
        if global_rank == 0 and local_rank == 0:
            (run_dir / "cmd-args.log").write_text(" ".join(sys.argv) + "\n")
            for file in self.files_to_copy:
                source = Path(file)
                if source.is_file():
                    (run_dir / source.name).write_bytes(source.read_bytes())
        return run_dir

    def _log_to_file(self, run_dir: Path, global_rank: int, local_rank: int) -> None:
        if self.log_global_rank_0_only and global_rank != 0:
            return
        if self.log_local_rank_0_only and local_rank != 0:
            return
        path = run_dir / f"nemo_log_globalrank-{global_rank}_localrank-{local_rank}.txt"
        root = logging.getLogger()
        if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
            return
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
        for name in ("nemo_lite", "lightning.pytorch"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
