"""`llm.evaluate(path, tasks=[...])`: lm-eval-harness on a checkpoint, in this process.

Tasks come from local YAML only: the ones nemo_lite ships (`tasks/`: `nemo_lite_stdlib_next_line`,
multiple choice; `nemo_lite_stdlib_docs`, perplexity) and the directories given as
`include_path` (lm-eval's task format; point `custom_dataset` or `dataset_kwargs.data_files` at
local files). A task name that is not found is an error listing the local ones, before the model
loads.

Ranks: `trainer` is launched as `llm.generate` launches it; each rank runs lm-eval over every
request (the same order, the same batches), tensor / expert parallel ranks sharing each forward,
and every rank returns the results; global rank 0 writes `output_path`. Pipeline parallelism and
data-parallel replicas (which would only repeat the work) are refused before launch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

TASKS_DIR = Path(__file__).parent / "tasks"


class EvaluateError(ValueError):
    """Bad input to `llm.evaluate`: one line saying what is wrong and how to fix it."""


def local_task_manager(include_path: Optional[Sequence[str]] = None) -> Any:
    """lm-eval's TaskManager over nemo_lite's tasks and the user's directories only."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)]
    for path in include_path or []:
        if not Path(path).is_dir():
            raise EvaluateError(f"include_path={path}: no such directory (a directory of "
                                "lm-eval task YAML files).")
        paths.append(str(path))
    return TaskManager(include_path=paths, include_defaults=False)


def evaluate(path: str, tasks: Sequence[str], limit: Optional[int] = None,
             num_fewshot: Optional[int] = None, batch_size: int = 8,
             include_path: Optional[Sequence[str]] = None, trainer: Any = None,
             output_path: Optional[str] = None, random_seed: int = 1234) -> dict[str, Any]:
    """Run lm-eval `tasks` on checkpoint `path`; lm-eval's results dict (`results[task][metric]`).
    `output_path`: also write it as json (a temporary name renamed at the end)."""
    import lm_eval

    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path
    from nemo_lite.llm.evaluation.lm import NemoLiteLM
    from nemo_lite.llm.inference.checks import saved_tokenizer
    from nemo_lite.llm.inference.generator import load_generator

    tasks = [tasks] if isinstance(tasks, str) else list(tasks or [])
    manager = local_task_manager(include_path)
    known = set(manager.all_tasks)
    if not tasks or any(task not in known for task in tasks):
        unknown = [task for task in tasks if task not in known] or ["(none given)"]
        raise EvaluateError(f"unknown task {unknown[0]}: the local tasks are "
                            f"{', '.join(sorted(known))} (add yours with include_path=DIR).")
    if output_path and Path(output_path).exists():
        raise EvaluateError(f"output_path={output_path} exists: remove it or choose another.")
    check_trainer(trainer)
    ckpt = resolve_checkpoint_path(path)
    tokenizer = saved_tokenizer(ckpt)
    with load_generator(ckpt, trainer, max_batch_size=batch_size) as generator:
        model = NemoLiteLM(generator, tokenizer, generator.max_sequence_length, batch_size)
        results = lm_eval.simple_evaluate(
            model=model, tasks=tasks, task_manager=manager, limit=limit,
            num_fewshot=num_fewshot, random_seed=random_seed, numpy_random_seed=random_seed,
            torch_random_seed=random_seed, fewshot_random_seed=random_seed,
            log_samples=False)
    if output_path and _rank() == 0:
        out = Path(output_path)
        tmp = out.with_name(out.name + ".incomplete")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        tmp.rename(out)
    return results


def check_trainer(trainer: Any) -> None:
    """Every rank scores every request with one full forward: tensor and expert parallel ranks
    share that forward; pipeline stages, and data-parallel replicas that would only repeat it,
    are refused."""
    if trainer is None:
        return
    from nemo_lite.llm.inference.checks import GenerateError, check_layout

    try:
        check_layout(trainer)
    except GenerateError as error:
        raise EvaluateError(str(error)) from None
    strategy, layout = trainer.strategy, trainer.strategy.layout
    if layout.pipeline_model_parallel_size > 1:
        raise EvaluateError(
            f"pipeline_model_parallel_size={layout.pipeline_model_parallel_size}: llm.evaluate "
            "scores with one full forward per rank; use tensor (or expert) parallelism to "
            "spread the model.")
    replicas = layout.data_parallel_size(strategy.num_nodes * strategy.num_processes)
    if replicas > layout.expert_model_parallel_size:
        raise EvaluateError(
            f"{replicas} data-parallel replicas: each would score every request again; use "
            f"devices = tensor_model_parallel_size x expert_model_parallel_size "
            f"({layout.ranks_per_replica * layout.expert_model_parallel_size}).")


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0
