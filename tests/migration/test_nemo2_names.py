"""NeMo 2.0's names and argument names, as its scripts use them, exist in nemo_lite (no training).

docs/migrating-from-nemo.md lists the mapping; these checks keep it true.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from nemo_lite import lightning as nl
from nemo_lite import llm


def params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def test_entry_points_take_nemo_argument_names() -> None:
    assert {"model", "data", "trainer", "log", "resume", "optim", "tokenizer",
            "model_transform"} <= params(llm.train)
    assert {"model", "data", "trainer", "log", "resume", "optim"} <= params(llm.pretrain)
    assert {"model", "data", "trainer", "log", "resume", "optim", "peft"} <= params(llm.finetune)
    assert {"model", "data", "trainer", "log", "resume", "optim", "tokenizer"} <= params(llm.validate)


def test_component_argument_names() -> None:
    strategy = params(nl.MegatronStrategy.__init__)
    assert {"tensor_model_parallel_size", "pipeline_model_parallel_size",
            "virtual_pipeline_model_parallel_size", "context_parallel_size", "sequence_parallel",
            "expert_model_parallel_size", "expert_tensor_parallel_size", "pipeline_dtype", "ddp",
            "ckpt_async_save", "ckpt_parallel_load", "ckpt_parallel_save", "ckpt_load_optimizer",
            "ckpt_save_optimizer", "ckpt_load_strictness", "ckpt_torch_dist_multiproc",
            "ckpt_assume_constant_structure", "ckpt_parallel_save_optim",
            "ckpt_load_directly_on_device", "ckpt_optim_fully_reshardable",
            "save_ckpt_format", "restore_config"} <= strategy
    assert {"precision", "params_dtype", "pipeline_dtype", "autocast_enabled",
            "grad_reduce_in_fp32", "fp8", "fp8_recipe"} <= params(nl.MegatronMixedPrecision.__init__)
    assert {"config", "lr_scheduler"} <= params(nl.MegatronOptimizerModule.__init__)
    assert {"name", "log_dir", "explicit_log_dir", "version", "use_datetime_version",
            "log_local_rank_0_only", "log_global_rank_0_only", "files_to_copy",
            "update_logger_directory", "ckpt", "tensorboard", "wandb",
            "extra_loggers"} <= params(nl.NeMoLogger.__init__)
    assert {"restore_config", "resume_from_directory", "resume_from_path", "resume_if_exists",
            "resume_past_end", "resume_ignore_no_checkpoint"} <= params(nl.AutoResume.__init__)
    assert {"seq_length", "tokenizer", "micro_batch_size", "global_batch_size",
            "num_train_samples", "num_workers", "pin_memory"} <= params(llm.MockDataModule.__init__)
    assert {"config", "optim", "tokenizer", "model_transform"} <= params(llm.GPTModel.__init__)
    # Lightning's Trainer arguments, visible to Fiddle / NeMo-Run
    assert {"devices", "num_nodes", "accelerator", "strategy", "plugins", "max_steps",
            "val_check_interval", "limit_val_batches", "log_every_n_steps"} <= params(nl.Trainer.__init__)


def test_nemo_module_attributes() -> None:
    cosine = nl.lr_scheduler.CosineAnnealingScheduler(
        max_steps=100, warmup_steps=10, constant_steps=0, min_lr=1e-5, interval="step",
        frequency=1, monitor="val_loss")
    assert isinstance(cosine, nl.CosineAnnealingScheduler)
    assert isinstance(nl.lr_scheduler.WarmupAnnealingScheduler(), nl.WarmupAnnealingScheduler)
    assert nl.io.load_context is not None


def test_model_checkpoint_takes_nemo_only_arguments() -> None:
    ckpt = nl.ModelCheckpoint(save_last=True, monitor="val_loss", save_top_k=2,
                              every_n_train_steps=30, dirpath="my_model_directory",
                              always_save_context=True, save_context_on_train_end=True,
                              save_optim_on_train_end=True)
    assert (ckpt.monitor, ckpt.save_top_k, ckpt.always_save_context) == ("val_loss", 2, True)


def test_data_tokenizer_and_config_fields() -> None:
    data = llm.MockDataModule(seq_length=64, global_batch_size=16, micro_batch_size=2)
    assert data.tokenizer.vocab_size > 0
    config = llm.GPTConfig(num_layers=2, hidden_size=64, ffn_hidden_size=256,
                           num_attention_heads=4, seq_length=64, init_method_std=0.023,
                           hidden_dropout=0.1, attention_dropout=0.1, layernorm_epsilon=1e-5,
                           make_vocab_size_divisible_by=128)
    model = llm.GPTModel(config, tokenizer=data.tokenizer)
    assert model.tokenizer is data.tokenizer


def _trainer(**kwargs) -> nl.Trainer:
    return nl.Trainer(accelerator="cpu", devices=1, max_steps=1,
                      strategy=nl.MegatronStrategy(), enable_progress_bar=False, **kwargs)


def test_nemo_logger_checkpoints_by_default_like_nemo(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = _trainer()
    run_dir = nl.NeMoLogger(log_dir=str(tmp_path), version="v-test", wandb=None).setup(trainer)
    [ckpt] = [cb for cb in trainer.callbacks if isinstance(cb, nl.ModelCheckpoint)]
    assert Path(ckpt.dirpath) == run_dir / "checkpoints"
    assert run_dir == (tmp_path / "default" / "v-test").resolve()  # <log_dir>/<name>/<version>

    off = _trainer(enable_checkpointing=False)
    nl.NeMoLogger(log_dir=str(tmp_path), version="v0").setup(off)
    assert not any(isinstance(cb, nl.ModelCheckpoint) for cb in off.callbacks)

    tb = TensorBoardLogger(save_dir=str(tmp_path / "tb"), name="experiment1")
    given = _trainer()
    nl.NeMoLogger(log_dir=str(tmp_path), version="v1", tensorboard=tb).setup(given)
    assert given.loggers == [tb]


@pytest.mark.parametrize("name", ["llama3_8b", "tiny_gpt"])
def test_recipes_reachable_from_llm_as_in_nemo(name: str) -> None:
    import importlib

    assert getattr(llm, name) is importlib.import_module(f"recipes.{name}")
    recipe = getattr(llm, name).pretrain_recipe(name="x", dir="/tmp/runs", num_nodes=1)
    assert recipe.__fn_or_cls__ is llm.pretrain
    recipe.trainer.strategy.context_parallel_size = 1  # still a Config: edits as in the doc
    recipe.trainer.val_check_interval = 100
    assert recipe.trainer.strategy.context_parallel_size == 1
