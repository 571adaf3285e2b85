"""llm.generate on 2 CPU ranks, launched as a user would: `python generate_run.py CKPT OUT TP PP
EP PROMPTS_JSON` with nl.Trainer(devices=2); Lightning starts rank 1 by re-running this script.
Two generations in one launch: greedy, and seeded sampling (top_p 0.9, seed 7). Rank 0 writes
each request's prompt ids, generated ids and text to OUT (json)."""

import json
import sys

from megatron.core.inference.sampling_params import SamplingParams

from nemo_lite import lightning as nl
from nemo_lite import llm

ckpt, out = sys.argv[1], sys.argv[2]
tp, pp, ep = (int(a) for a in sys.argv[3:6])
prompts = json.loads(sys.argv[6])
trainer = nl.Trainer(devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     strategy=nl.MegatronStrategy(
                         tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                         expert_model_parallel_size=ep, sequence_parallel=ep > 1 and tp > 1))
runs = {"greedy": (SamplingParams(top_k=1, num_tokens_to_generate=12), None),
        "sampled": (SamplingParams(temperature=1.0, top_p=0.9, num_tokens_to_generate=12), 7)}
written = {}
for name, (params, seed) in runs.items():
    results = llm.generate(path=ckpt, prompts=prompts, trainer=trainer, inference_params=params,
                           random_seed=seed)
    written[name] = [{"prompt": list(r.prompt_tokens), "tokens": r.generated_tokens.tolist(),
                      "text": r.generated_text} for r in results]
if trainer.global_rank == 0:
    with open(out, "w") as f:
        json.dump(written, f)
