"""What nemo_lite's Trainer costs over calling megatron-core directly, measured in one run.

(a) nl.Trainer + MegatronStrategy + GPTModel, (b) a plain loop: megatron's
forward_backward_func, finalize_model_grads and optimizer on the same model, data and layout.
Each is timed step by step (wall time between consecutive step ends, data loading included),
alternating a, b, a, b so machine noise hits both; prints both medians and their ratio.
The plain loop runs megatron's model without nemo_lite's padded-logit mask, so with a
vocabulary that megatron pads (`--vocab 258`: 384 rows) the ratio includes the mask's cost.

    python benchmarks/overhead.py [--steps 40] [--hidden 256] [--layers 4] [--seq 256] [--vocab 512]
"""

from __future__ import annotations

import argparse
import statistics
import time


def build_parts(args):
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    config = llm.GPTConfig(num_layers=args.layers, hidden_size=args.hidden,
                           num_attention_heads=args.hidden // 64, seq_length=args.seq,
                           vocab_size=args.vocab, hidden_dropout=0.0, attention_dropout=0.0)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(lr=1e-3, clip_grad=1.0))
    data = llm.MockDataModule(seq_length=args.seq, global_batch_size=args.gbs,
                              micro_batch_size=args.mbs)
    return config, optim, data


def run_nemo_lite(args) -> list[float]:
    import lightning.pytorch as pl

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    ends: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *a, **k):
            ends.append(time.perf_counter())

    config, optim, data = build_parts(args)
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(), devices=1, accelerator="cpu",
                         max_steps=args.steps, limit_val_batches=0, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Clock()],
                         plugins=nl.MegatronMixedPrecision("32"))
    trainer.fit(llm.GPTModel(config, optim=optim), data)
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][args.warmup:]


def run_plain_megatron(args) -> list[float]:
    import functools

    import torch
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_lite.lightning import _cpu

    parallel_state.initialize_model_parallel(1, 1)
    _cpu.apply()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    config, optim, data = build_parts(args)
    config.batch_p2p_comm = False
    model = config.configure_model()
    model.output_layer._forward_hooks.clear()  # megatron's own model: no padded-logit mask
    ddp = DistributedDataParallel(config, DistributedDataParallelConfig(check_for_nan_in_grad=True),
                                  module=model)
    config.finalize_model_grads_func = finalize_model_grads
    optimizer = get_megatron_optimizer(optim.config, [ddp])
    config.grad_scale_func = optimizer.scale_loss
    loader = iter(data.train_dataloader())
    n_micro = args.gbs // args.mbs

    def loss_func(mask, output):
        losses = output.float().reshape(-1)
        mask = mask.float().reshape(-1)
        loss = torch.dot(losses, mask)
        return loss, mask.sum().to(torch.int), {"lm": torch.stack([loss.detach(), mask.sum()])}

    def step(data_iterator, chunk):
        batch = next(data_iterator)
        out = chunk(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                    attention_mask=None, labels=batch["labels"])
        return out, functools.partial(loss_func, batch["loss_mask"])

    ends = []
    for _ in range(args.steps):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(forward_step_func=step, data_iterator=loader, model=[ddp],
                                    num_microbatches=n_micro, seq_length=args.seq,
                                    micro_batch_size=args.mbs, forward_only=False)
        optimizer.step()
        ends.append(time.perf_counter())
    parallel_state.destroy_model_parallel()
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][args.warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--gbs", type=int, default=8)
    parser.add_argument("--mbs", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    nemo, plain = [], []
    for _ in range(args.rounds):
        nemo += run_nemo_lite(args)
        plain += run_plain_megatron(args)
    a, b = statistics.median(nemo), statistics.median(plain)
    print(f"model: {args.layers} layers, hidden {args.hidden}, seq {args.seq}, vocab {args.vocab}, "
          f"global batch {args.gbs} (micro {args.mbs}), 1 CPU rank, fp32")
    print(f"nemo_lite Trainer   median step {a * 1000:8.2f} ms  ({len(nemo)} steps)")
    print(f"plain megatron loop median step {b * 1000:8.2f} ms  ({len(plain)} steps)")
    print(f"ratio nemo_lite / plain = {a / b:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
