"""NeMo 2.0's "Quickstart" (NeMo 2.0 API, the `llm.train` script), ported to nemo_lite.

Source: https://docs.nvidia.com/nemo-framework/user-guide/latest/nemo-2.0/index.html#quickstart
What changed from the doc, and nothing else:
  - the two NeMo import lines (`from nemo import lightning as nl`,
    `from nemo.collections import llm`) now import from nemo_lite;
  - accelerator "gpu" -> "cpu";
  - sizes shrunk so that it trains in seconds on 2 CPU cores (each change is marked `# doc:`).
Run it as the doc does: `python nemo2_api_quickstart.py` (Lightning starts the second rank).
"""

import torch
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl  # doc: from nemo import lightning as nl
from nemo_lite import llm  # doc: from nemo.collections import llm

if __name__ == "__main__":
    seq_length = 64  # doc: 2048
    global_batch_size = 16

    ## setup the dummy dataset
    data = llm.MockDataModule(seq_length=seq_length, global_batch_size=global_batch_size)

    ## initialize a small GPT model
    gpt_config = llm.GPTConfig(
        num_layers=2,  # doc: 6
        hidden_size=64,  # doc: 384
        ffn_hidden_size=256,  # doc: 1536
        num_attention_heads=4,  # doc: 6
        seq_length=seq_length,
        init_method_std=0.023,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        layernorm_epsilon=1e-5,
        make_vocab_size_divisible_by=128,
    )
    model = llm.GPTModel(gpt_config, tokenizer=data.tokenizer)

    ## initialize the strategy
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        pipeline_dtype=torch.bfloat16,
    )

    ## setup the optimizer
    opt_config = OptimizerConfig(
        optimizer='adam',
        lr=6e-4,
        bf16=True,
    )
    opt = nl.MegatronOptimizerModule(config=opt_config)

    trainer = nl.Trainer(
        devices=2,  # doc: 1 ("you can change the number of devices to suit your setup"): 2 CPU ranks, data parallel
        max_steps=6,  # doc: 50
        accelerator="cpu",  # doc: "gpu"
        strategy=strategy,
        plugins=nl.MegatronMixedPrecision(precision="bf16-mixed"),
    )

    nemo_logger = nl.NeMoLogger(
        log_dir="test_logdir", ## logs and checkpoints will be written here
    )

    llm.train(
        model=model,
        data=data,
        trainer=trainer,
        log=nemo_logger,
        tokenizer='data',
        optim=opt,
    )
