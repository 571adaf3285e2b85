"""NeMo's "Quickstart with NeMo-Run" (pretraining, run locally with torchrun), ported to nemo_lite.

Source: https://docs.nvidia.com/nemo-framework/user-guide/latest/nemo-2.0/quickstart.html
(and the NeMo-Run README's `llm.llama3_8b.pretrain_recipe(...)` + `run.run(...)`).
What changed from the doc:
  - `from nemo.collections import llm` -> `from nemo_lite import llm`;
  - the recipe that is *run* is `llm.tiny_gpt` (4 layers x 64, TP2 over 2 CPU ranks): the doc's
    model (Nemotron 3 4B in the NeMo docs, Llama 3 8B in the NeMo-Run README) cannot train on
    a CPU. The Llama 3 8B recipe is still built and edited the way the doc edits its recipe
    (`show_llama3_8b_recipe`), to show the same API, but not run;
  - tiny_gpt's recipe takes `devices=` where NeMo's GPU recipes take `num_gpus_per_node=`
    (llm.llama3_8b.pretrain_recipe takes `num_gpus_per_node=` as in NeMo);
  - the NCCL / TransformerEngine environment variables of the doc's executor are left in: they
    do nothing on CPU ranks.
Run it as the doc does: `python nemo_run_quickstart.py`. Checkpoints and logs go under
`./checkpoints/tiny_gpt/` (the recipe's `dir` / `name`); NeMo-Run's own logs under $NEMORUN_HOME.
"""

import nemo_run as run

from nemo_lite import llm  # doc: from nemo.collections import llm


def show_llama3_8b_recipe(nodes: int = 1, gpus_per_node: int = 8) -> run.Partial:
    """The doc's recipe edits, on the real Llama 3 8B recipe (built as data, never run here)."""
    recipe = llm.llama3_8b.pretrain_recipe(
        dir="./checkpoints/llama3",  # Path to store checkpoints
        name="llama3_pretraining",
        num_nodes=nodes,
        num_gpus_per_node=gpus_per_node,
    )
    recipe.trainer.max_steps = 100  # Setting a small value for the quickstart
    recipe.trainer.val_check_interval = 100
    recipe.trainer.strategy.context_parallel_size = 1
    recipe.model.config.num_layers = 8
    return recipe


def configure_recipe(nodes: int = 1, gpus_per_node: int = 2) -> run.Partial:
    recipe = llm.tiny_gpt.pretrain_recipe(  # doc: llm.nemotron3_4b.pretrain_recipe(
        dir="./checkpoints",  # Path to store checkpoints
        name="tiny_gpt",
        num_nodes=nodes,
        devices=gpus_per_node,  # doc: num_gpus_per_node=gpus_per_node
    )
    recipe.trainer.max_steps = 5  # Setting a small value for the quickstart (doc: 100)
    recipe.trainer.val_check_interval = 100
    return recipe


def local_executor_torchrun(nodes: int = 1, devices: int = 2) -> run.LocalExecutor:
    # Env vars for jobs are configured here
    env_vars = {
        "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
        "NCCL_NVLS_ENABLE": "0",
        "NVTE_DP_AMAX_REDUCE_INTERVAL": "0",
        "NVTE_ASYNC_AMAX_REDUCTION": "1",
    }

    executor = run.LocalExecutor(ntasks_per_node=devices, launcher="torchrun", env_vars=env_vars)

    return executor


def run_pretraining():
    llama = show_llama3_8b_recipe()
    print(f"llama3_8b recipe: {llama.model.config.num_layers} layers, "
          f"CP {llama.trainer.strategy.context_parallel_size}, "
          f"{llama.trainer.devices} devices x {llama.trainer.num_nodes} nodes (not run on CPU)")

    recipe = configure_recipe()
    executor = local_executor_torchrun(nodes=recipe.trainer.num_nodes, devices=recipe.trainer.devices)

    run.run(recipe, executor=executor, name="tiny_gpt_pretraining")  # doc: "nemotron3_4b_pretraining"


# This condition is necessary for the script to be compatible with Python's multiprocessing module.
if __name__ == "__main__":
    run_pretraining()
