"""llm.evaluate on 2 CPU ranks (TP2), launched as a user would: `python evaluate_run.py CKPT OUT
TASKS_JSON LIMIT` with nl.Trainer(devices=2); Lightning starts rank 1 by re-running this script.
Global rank 0 writes lm-eval's results to OUT (llm.evaluate's output_path)."""

import json
import sys

from nemo_lite import lightning as nl
from nemo_lite import llm

ckpt, out, tasks, limit = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
trainer = nl.Trainer(devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     strategy=nl.MegatronStrategy(tensor_model_parallel_size=2))
results = llm.evaluate(path=ckpt, tasks=tasks, limit=limit, trainer=trainer, output_path=out)
assert results["results"], "every rank returns the results"
