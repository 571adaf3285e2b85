"""Saved contexts of every kind of run nemo_lite can save, written as a checkpoint would be.

Each case builds its components the way a run does (a recipe's config built with Fiddle, or
the components directly), records what `llm.pretrain/finetune` record (the optimizer, the
model transform), and writes `save_context(dir, trainer=, model=, data=)` exactly as
MegatronStrategy does at a checkpoint. Nothing is trained: only the configs are saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RECIPES = ["tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]


def references(json_file: Path) -> set[str]:
    """Every `module.name` a saved io.json refers to."""
    found: set[str] = set()
    stack: list[Any] = [json.loads(Path(json_file).read_text())]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "pyref":
                found.add(f"{item['module']}.{item['name']}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _save_task(task: Any, directory: Path) -> Path:
    """`task`: a built recipe (functools.partial of llm.pretrain/finetune)."""
    from nemo_lite.io import save_context
    from nemo_lite.io.capture import record

    kw = task.keywords
    model = kw["model"]
    if kw.get("optim") is not None:  # what llm.train records before fitting
        model.optim = kw["optim"]
        record(model, optim=kw["optim"])
    if kw.get("peft") is not None:
        model.model_transform = kw["peft"]
        record(model, model_transform=kw["peft"])
    save_context(directory, trainer=kw["trainer"], model=model, data=kw["data"])
    return directory


def _on_cpu(recipe: Any) -> Any:
    """Buildable here: CPU accelerator, and a restore path for fine-tuning recipes."""
    recipe.trainer.accelerator = "cpu"
    restore = getattr(getattr(recipe, "resume", None), "restore_config", None)
    if restore is not None and getattr(restore, "path", None) is None:
        restore.path = "/checkpoints/pretrained"
    return recipe


def _recipe_cases() -> Iterator[tuple[str, Callable[[Path], Path]]]:
    import fiddle as fdl

    from recipes import get_recipe

    for name in RECIPES:
        for kind in ("pretrain", "finetune"):
            def save(d: Path, name=name, kind=kind) -> Path:
                return _save_task(fdl.build(_on_cpu(get_recipe(name, kind)())), d)
            yield f"{name} {kind}", save


def _tiny(d: Path, **changes: Any) -> Path:
    """tiny_gpt's pretrain recipe with `changes` applied (dotted keys, values as configs)."""
    import fiddle as fdl

    from recipes import tiny_gpt

    recipe = tiny_gpt.pretrain_recipe()
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = recipe
        for part in parents:
            node = getattr(node, part)
        setattr(node, last, value)
    return _save_task(fdl.build(recipe), d)


def _component_cases(work: Path) -> Iterator[tuple[str, Callable[[Path], Path]]]:
    import nemo_run as run

    from nemo_lite import lightning as nl
    from nemo_lite import llm
    from tests._support.data import bpe_tokenizer_dir, sentencepiece_model, sft_dir, tiny_indexed

    yield "precision bf16-mixed", lambda d: _tiny(
        d, **{"trainer.plugins": run.Config(nl.MegatronMixedPrecision, precision="bf16-mixed")})
    yield "precision 16-mixed", lambda d: _tiny(
        d, **{"trainer.plugins": run.Config(nl.MegatronMixedPrecision, precision="16-mixed",
                                            fp16_initial_loss_scale=1024.0)})
    yield "precision bf16 + fp8 fields", lambda d: _tiny(
        d, **{"trainer.plugins": run.Config(nl.MegatronMixedPrecision, precision="bf16-mixed",
                                            fp8="hybrid", fp8_recipe="delayed",
                                            fp8_amax_history_len=16)})
    yield "callbacks", lambda d: _tiny(d, **{"trainer.callbacks": [
        run.Config(nl.ModelCheckpoint, every_n_train_steps=5, monitor="val_loss", mode="min"),
        run.Config(nl.MegatronCommOverlapCallback, overlap_grad_reduce=True)]})
    yield "strategy options", lambda d: _tiny(d, **{
        "trainer.strategy.pipeline_dtype": __import__("torch").bfloat16,
        "trainer.strategy.timeout": run.Config(__import__("datetime").timedelta, minutes=5)})
    yield "pretraining data + BPE tokenizer", lambda d: _tiny(d, data=run.Config(
        llm.PreTrainingDataModule, paths=[str(tiny_indexed(work))], seq_length=64,
        global_batch_size=8, micro_batch_size=2,
        tokenizer=run.Config(llm.HFTokenizer, str(bpe_tokenizer_dir(work)))))
    yield "finetuning data packed + SentencePiece", lambda d: _tiny(d, data=run.Config(
        llm.FineTuningDataModule, dataset_root=str(sft_dir(work)), seq_length=64,
        global_batch_size=8, micro_batch_size=1, packed_sequence=True,
        tokenizer=run.Config(llm.SentencePieceTokenizer, str(sentencepiece_model(work)))))
    yield "byte tokenizer on the model", lambda d: _tiny(
        d, **{"model.tokenizer": run.Config(llm.ByteTokenizer)})


def every_saved_context(work: Path) -> dict[str, Path]:
    """case -> the io.json it wrote (under `work`)."""
    out = {}
    for case, save in [*_recipe_cases(), *_component_cases(work)]:
        directory = work / "contexts" / "".join(c if c.isalnum() else "_" for c in case)
        save(directory)
        out[case] = directory / "context" / "io.json"
    return out
