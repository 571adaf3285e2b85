"""Run directory and restart pieces: where a run writes, when it checkpoints, what it resumes."""

from typing import Optional

import nemo_run as run

from nemo_lite import lightning as nl


def log(name: str = "default", dir: Optional[str] = None, every_n_train_steps: Optional[int] = 200,
        save_top_k: int = 2, tensorboard: bool = True) -> run.Config[nl.NeMoLogger]:
    """NeMoLogger writing to `<dir>/<name>/` (dir defaults to $NEMO_LITE_LOG_DIR or
    ./nemo_experiments), keeping the last `save_top_k` checkpoints, one every
    `every_n_train_steps` steps and one at the end of training."""
    checkpoint = run.Config(nl.ModelCheckpoint, every_n_train_steps=every_n_train_steps,
                            save_top_k=save_top_k)
    return run.Config(nl.NeMoLogger, name=name, log_dir=dir, ckpt=checkpoint,
                      tensorboard=tensorboard)


def resume() -> run.Config[nl.AutoResume]:
    """Continue from the run's newest complete checkpoint if there is one, else start fresh:
    running the same command again after a crash picks up where it stopped."""
    return run.Config(nl.AutoResume, resume_if_exists=True, resume_ignore_no_checkpoint=True)


def restore(path: Optional[str] = None) -> run.Config[nl.AutoResume]:
    """Fine-tuning start: the weights of checkpoint `path` (no optimizer or step), unless the
    run already has checkpoints of its own, which it then resumes (as `resume()`).

    Without `path` the RestoreConfig is left missing its path: building the job then fails at
    once, naming `resume.restore_config.path`, instead of fine-tuning random weights.
    """
    restore_config = run.Config(nl.RestoreConfig)
    if path is not None:
        restore_config.path = str(path)
    return run.Config(nl.AutoResume, restore_config=restore_config, resume_if_exists=True,
                      resume_ignore_no_checkpoint=True)
