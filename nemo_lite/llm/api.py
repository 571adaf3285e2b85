"""Entry points that build and run a Trainer: `train` / `pretrain` / `finetune` / `validate`.

NeMo 2.0's signatures, so its scripts port by changing imports. Each wires the run directory
(NeMoLogger), picks what to resume (AutoResume) and calls Lightning.
"""


from pathlib import Path
from typing import Any

from nemo_lite.io.capture import record


def _setup(model: Any, trainer: Any, log: Any, resume: Any, optim: Any, tokenizer: Any,
           data: Any) -> Path:
    from nemo_lite.lightning.nemo_logger import NeMoLogger
    from nemo_lite.secrets import load_secrets_file

    load_secrets_file()  # secrets an executor passed through a file (docker)
    if optim is not None:
        model.optim = optim
        record(model, optim=optim)  # the saved context rebuilds it too
    if tokenizer == "data":
        model.tokenizer = model.tokenizer or getattr(data, "tokenizer", None)
    elif tokenizer == "model":
        _check_same_tokenizer(model.tokenizer, getattr(data, "tokenizer", None))
    elif tokenizer is not None:
        model.tokenizer = tokenizer
    log = log or NeMoLogger()
    run_dir = log.setup(trainer, resume_if_exists=bool(resume and resume.resume_if_exists))
    if resume is not None:
        resume.setup(trainer, model)
    return run_dir


def _check_same_tokenizer(ours: Any, data: Any) -> None:
    """Fine-tuning reads the model's tokenizer (e.g. an imported checkpoint's): data tokenized
    another way would train the model on ids that mean something else."""
    if ours is None or data is None:
        return
    if type(ours) is not type(data) or ours.vocab_size != data.vocab_size:
        raise ValueError(
            f"the data's tokenizer ({type(data).__name__}, {data.vocab_size} ids) is not the "
            f"model's ({type(ours).__name__}, {ours.vocab_size} ids): give the data module the "
            "model's tokenizer (e.g. finetuning_data(tokenizer=...)).")


def train(model: Any, data: Any, trainer: Any, log: Any = None, resume: Any = None,
          optim: Any = None, tokenizer: Any = None, model_transform: Any = None) -> Path:
    """Fit `model` on `data`; returns the run directory (logs, checkpoints, config)."""
    if model_transform is not None:
        model.model_transform = model_transform
        record(model, model_transform=model_transform)  # the saved context records it
    run_dir = _setup(model, trainer, log, resume, optim, tokenizer, data)
    trainer.fit(model, data)
    return run_dir


def pretrain(model: Any, data: Any, trainer: Any, log: Any = None, resume: Any = None,
             optim: Any = None) -> Path:
    return train(model, data, trainer, log=log, resume=resume, optim=optim, tokenizer="data")


def finetune(model: Any, data: Any, trainer: Any, log: Any = None, resume: Any = None,
             optim: Any = None, peft: Any = None) -> Path:
    return train(model, data, trainer, log=log, resume=resume, optim=optim, tokenizer="model",
                 model_transform=peft)


def validate(model: Any, data: Any, trainer: Any, log: Any = None, resume: Any = None,
             optim: Any = None, tokenizer: Any = None) -> Path:
    run_dir = _setup(model, trainer, log, resume, optim, tokenizer, data)
    trainer.validate(model, data)
    return run_dir
