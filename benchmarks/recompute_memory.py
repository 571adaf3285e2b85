"""Activation memory with and without megatron's recompute, measured against the estimate.

One CPU rank, fp32, one micro-batch per step (GPT: 4 layers, hidden 64, 4 heads, seq 1024,
micro-batch 4, the byte vocabulary): a shape where the attention scores dominate, as they do
without flash attention. For each setting a fresh process trains 2 steps; during step 2 torch's
saved-tensor hooks account every tensor autograd keeps for the backward pass (parameters
excluded, each storage once, released when autograd frees it), so the peak is the activation
memory the step held, the backward pass's recompute included. Printed per setting: the measured
peak, the `--dryrun` estimate (`nemo_lite.llm.gpt.memory.estimate_memory`, activations only),
their ratio, and the saving against no recompute. Then the whole estimate (weights, gradients,
Adam state, activations) against the tensors the step held (live parameters, megatron's
gradient buffers and Adam state after step 2, plus the activation peak) and against the
process's peak resident memory above its start (ru_maxrss minus the RSS before the model is
built: allocator caches, the logits and the loss, torch's workspaces are in it, not estimated).

    python benchmarks/recompute_memory.py [--seq 1024] [--micro-batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

SETTINGS = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full uniform (1 layer per unit)": {"recompute_granularity": "full",
                                        "recompute_method": "uniform", "recompute_num_layers": 1},
    "full block (2 of 4 layers)": {"recompute_granularity": "full", "recompute_method": "block",
                                   "recompute_num_layers": 2},
}


def measure(recompute: dict, seq: int, micro_batch: int, run_dir: str) -> dict:
    """In this process: train 2 steps, return the step-2 peak of saved activations (bytes)."""
    import weakref

    import lightning.pytorch as pl
    import psutil
    import torch
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm
    from nemo_lite.llm.gpt.memory import estimate_memory

    class SavedActivations(pl.Callback):
        def __init__(self) -> None:
            self.live = self.peak = 0
            self.counts: dict[int, int] = {}
            self.params: set[int] = set()
            self.hooks = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step != 1:
                return
            self.params = {p.untyped_storage().data_ptr() for p in pl_module.parameters()}
            self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
            self.hooks.__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.hooks is not None:
                self.hooks.__exit__(None, None, None)
                self.hooks = None
                self.held = held_tensors(pl_module, trainer.optimizers[0].mcore)
                self.rss = psutil.Process().memory_info().rss

        def pack(self, tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.params or storage.nbytes() == 0:
                return tensor
            if self.counts.get(key, 0) == 0:
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.counts[key] = self.counts.get(key, 0) + 1
            weakref.finalize(tensor, self.release, key, storage.nbytes())
            return tensor

        def release(self, key: int, nbytes: int) -> None:
            self.counts[key] -= 1
            if self.counts[key] == 0:
                self.live -= nbytes

    config = llm.GPTConfig(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=seq,
                           hidden_dropout=0.0, attention_dropout=0.0, **recompute)
    baseline = psutil.Process().memory_info().rss  # imports done, no model yet
    saved = SavedActivations()
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(), accelerator="cpu", devices=1, max_steps=2,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, logger=False, callbacks=[saved],
                         default_root_dir=run_dir, resilience=False)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(lr=1e-3, optimizer="adam"))
    model = llm.GPTModel(config, optim=optim)
    data = llm.MockDataModule(seq_length=seq, global_batch_size=micro_batch,
                              micro_batch_size=micro_batch)
    trainer.fit(model, data)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    estimate = estimate_memory(config, precision="32", micro_batch_size=micro_batch,
                               seq_length=seq, num_microbatches=1, vocab_size=258,
                               flash_attention=False)
    return {"measured": saved.peak, "estimate": estimate.activations,
            "held": saved.held, "estimate_whole": {
                "weights": estimate.weights, "gradients": estimate.gradients,
                "optimizer": estimate.optimizer, "total": estimate.total},
            "peak_rss_above_baseline": peak_rss - baseline}


def held_tensors(pl_module, optimizer) -> dict[str, int]:
    """Bytes of the live weights, gradient buffers (megatron's main_grad) and Adam state, each
    storage counted once."""
    def total(tensors) -> int:
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())

    params = list(pl_module.parameters())
    grads = [p.main_grad for p in params if getattr(p, "main_grad", None) is not None]
    state = [v for per_param in optimizer.optimizer.state.values()
             for v in per_param.values() if hasattr(v, "untyped_storage") and v.dim() > 0]
    return {"weights": total(params), "gradients": total(grads), "optimizer": total(state)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a setting, in a child process
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as run_dir:
            print(json.dumps(measure(SETTINGS[args.one], args.seq, args.micro_batch, run_dir)))
        return
    results = {}
    for name in SETTINGS:
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--seq", str(args.seq),
                               "--micro-batch", str(args.micro_batch)], capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        if proc.returncode != 0:
            raise SystemExit(f"{name}: failed\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["none"]["measured"]
    mib = 1024**2
    print(f"seq {args.seq}, micro-batch {args.micro_batch}, 1 CPU rank, fp32:")
    for name, r in results.items():
        print(f"  {name:<32} measured {r['measured'] / mib:8.1f} MiB  estimate "
              f"{r['estimate'] / mib:8.1f} MiB  (estimate/measured {r['estimate'] / r['measured']:.2f}; "
              f"saves {1 - r['measured'] / base:5.1%} of no recompute)")
    print("the whole estimate (weights + gradients + Adam state + activations) per setting:")
    for name, r in results.items():
        held, est = r["held"], r["estimate_whole"]
        tensors = sum(held.values()) + r["measured"]
        parts = ", ".join(f"{k} {held[k] / mib:.2f}/{est[k] / mib:.2f}"
                          for k in ("weights", "gradients", "optimizer"))
        print(f"  {name:<32} estimate {est['total'] / mib:8.1f} MiB; held tensors "
              f"{tensors / mib:8.1f} MiB ({est['total'] / tensors:.2f}x; MiB measured/estimate: "
              f"{parts}); process peak above start {r['peak_rss_above_baseline'] / mib:8.1f} MiB "
              f"({est['total'] / r['peak_rss_above_baseline']:.2f}x)")


if __name__ == "__main__":
    main()
