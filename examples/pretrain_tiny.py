"""A tiny GPT pretraining run on CPU: tensor parallel over 2 ranks, loss printed every step.

    python examples/pretrain_tiny.py [--steps 30] [--tp 2] [--devices 2]

Lightning launches the extra ranks itself (gloo on CPU); under torchrun it uses those ranks.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    args = parser.parse_args()

    import lightning.pytorch as pl
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    class PrintLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.is_global_zero:
                optimizer = trainer.optimizers[0]
                print(f"step {trainer.global_step:3d}  loss {float(outputs['loss']):.4f}  "
                      f"lr {optimizer.lr:.2e}  grad_norm {optimizer.last_grad_norm:.3f}", flush=True)

    strategy = nl.MegatronStrategy(tensor_model_parallel_size=args.tp,
                                   pipeline_model_parallel_size=args.pp)
    trainer = nl.Trainer(strategy=strategy, devices=args.devices, accelerator="cpu",
                         max_steps=args.steps, limit_val_batches=0, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[PrintLoss()],
                         plugins=nl.MegatronMixedPrecision(precision=args.precision))
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=3e-3, optimizer="adam", clip_grad=1.0, weight_decay=0.01),
        lr_scheduler=nl.CosineAnnealingScheduler(warmup_steps=3, min_lr=3e-4),
    )
    config = llm.GPTConfig(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=64,
                           hidden_dropout=0.0, attention_dropout=0.0)
    model = llm.GPTModel(config, optim=optim)
    data = llm.MockDataModule(seq_length=64, global_batch_size=8, micro_batch_size=2)
    trainer.fit(model, data)


if __name__ == "__main__":
    main()
