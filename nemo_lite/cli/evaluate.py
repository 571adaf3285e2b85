"""`nemo llm evaluate path=CKPT tasks='["nemo_lite_stdlib_next_line"]' [limit=N]
[include_path='["DIR"]'] [output_path=OUT.json] [trainer.devices=2
trainer.strategy.tensor_model_parallel_size=2] -y`: lm-eval-harness on a checkpoint.

Prints lm-eval's table and writes its results json (default
`eval_results/<checkpoint>-<UTC time>.json`, never over an existing file). `check_evaluate` runs
before anything loads (`--dryrun` prints it): the checkpoint, its tokenizer, the task names (an
unknown one lists the local tasks) and the output path; each problem one line, exit 2.
"""

import time
from pathlib import Path
from typing import Any, Optional

import nemo_run as run


# (no `from __future__ import annotations`: NeMo-Run's help reads these annotations as types)
def evaluate(path: str = "", tasks: Optional[list[str]] = None, limit: Optional[int] = None,
             num_fewshot: Optional[int] = None, batch_size: int = 8,
             include_path: Optional[list[str]] = None, output_path: Optional[str] = None,
             trainer: Any = None) -> None:
    """Run lm-eval tasks on checkpoint `path`: print the table, write the results json."""
    import torch.distributed as dist
    from lm_eval.utils import make_table

    from nemo_lite import llm

    output = output_path or default_output(path)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    results = llm.evaluate(path=path, tasks=tasks or [], limit=limit, num_fewshot=num_fewshot,
                           batch_size=batch_size, include_path=include_path, output_path=output,
                           trainer=trainer)
    if dist.is_initialized() and dist.get_rank() != 0:  # every rank has them; rank 0 reports
        return
    print(make_table(results))
    print(f"results: {output}")


def evaluate_defaults() -> run.Partial:
    """One rank (the GPU when there is one); `trainer.devices=2
    trainer.strategy.tensor_model_parallel_size=2` spreads the model."""
    from nemo_lite import lightning as nl

    return run.Partial(
        evaluate,
        trainer=run.Config(nl.Trainer, devices=1, accelerator="auto", logger=False,
                           enable_checkpointing=False, strategy=run.Config(nl.MegatronStrategy)))


def default_output(path: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return str(Path("eval_results") / f"{Path(str(path)).name or 'checkpoint'}-{stamp}.json")


def check_evaluate(arguments: dict[str, Any]) -> list[str]:
    """The plan `--dryrun` prints; any problem raises one EvaluateError line."""
    import fiddle as fdl

    from nemo_lite.llm.evaluation.evaluate import (
        EvaluateError,
        check_trainer,
        local_task_manager,
    )
    from nemo_lite.llm.inference.checks import saved_checkpoint

    ckpt, _ = saved_checkpoint(arguments.get("path"), "evaluate", EvaluateError)
    tasks = arguments.get("tasks") or []
    known = set(local_task_manager(arguments.get("include_path")).all_tasks)
    unknown = [task for task in tasks if task not in known] or ([] if tasks else ["(none given)"])
    if unknown:
        raise EvaluateError(f"unknown task {unknown[0]}: the local tasks are "
                            f"{', '.join(sorted(known))} (add yours with include_path='[DIR]').")
    output = arguments.get("output_path")
    if output and Path(output).exists():
        raise EvaluateError(f"output_path={output} exists: remove it or choose another.")
    trainer = arguments.get("trainer")
    check_trainer(fdl.build(trainer) if isinstance(trainer, fdl.Buildable) else trainer)
    return [f"checkpoint: {ckpt}", f"tasks: {', '.join(tasks)}",
            f"limit: {arguments.get('limit') or 'all documents'}",
            f"output: {output or default_output(arguments['path'])}"]
