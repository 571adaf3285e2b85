"""Training throughput of a Llama-style model on one GPU through nemo_lite: tokens/s, TFLOP/s, MFU.

Runs `--warmup` + `--steps` optimizer steps of nl.Trainer + nl.MegatronStrategy +
llm.GPTModel (megatron-core, transformer-engine layers when TE is installed) on mock data,
synchronising the GPU at each step end, and reports per GPU:
  tokens/s      = global_batch x seq_length / mean timed step time / GPUs
  model TFLOP/s = FLOPs per step (formula below) / mean timed step time / GPUs
  MFU           = model TFLOP/s / the card's dense bf16 peak (table `PEAK_BF16_TFLOPS`, by device
                  name; an unknown card or the CPU: MFU omitted; `--peak-tflops` sets it), and
                  with `--measure-peak` also against the peak measured in the same run (a timed
                  bf16 8192^3 matmul loop: what the card really sustains here)
  memory        = peak allocated on the GPU, against nemo_lite's estimate for the same run
                  (llm.gpt.memory.estimate_memory, what `--dryrun` prints)

FLOPs (Megatron-LM's `num_floating_point_operations` for a dense GQA model; 2 FLOPs per
multiply-add; training = 3 x forward, i.e. backward = 2 x forward, NO activation recomputation):
  per token, per layer, forward:  2h(q + 2kv) + 2qh     QKV and output projections
                                + 2 s q                  QK^T and AV, causal: half of 4sq
                                + 2h f (2 if gated) + 2fh  MLP (SwiGLU: gate + up, down)
  per token, forward, once:       2 h V                  logits (padded vocabulary)
  FLOPs/step = 3 x global_batch x s x (L x per-layer + 2hV)
with h hidden, q = heads x head_dim, kv = KV groups x head_dim, f FFN size, s sequence length,
L layers, V padded vocabulary. The embedding lookup, norms, softmax and optimizer are not counted.

    python benchmarks/gpu_throughput.py                      # 1 GPU: Llama-3.2-1B shape, seq 2048
    python benchmarks/gpu_throughput.py --seq 4096 --mbs 1 --gbs 8
    python benchmarks/gpu_throughput.py --dry                # no GPU needed: shapes, params, FLOPs
    python benchmarks/gpu_throughput.py --device cpu --tiny  # 3 real steps of a tiny model (CPU)
    ... --measure-peak --out figures.json                    # + measured peak, all figures as JSON
"""

import argparse
import json
import statistics
import sys
import time
from typing import Any, Optional

# Dense bf16 tensor-core peak per GPU, TFLOP/s (NVIDIA datasheets; sparsity not counted).
# First match in this order against torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),   # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)
FORMULA = ("FLOPs/step = 3 (fwd+bwd, no recompute) x tokens x [L x (2h(q+2kv) + 2qh + 2sq "
           "(causal) + 2hf(2 if gated)+2fh) + 2hV]  (Megatron-LM num_floating_point_operations)")


def peak_bf16_tflops(device_name: str) -> Optional[float]:
    """The card's dense bf16 peak from the table, None when the name is not in it."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def measure_peak_tflops(device: str, size: int = 8192, seconds: float = 3.0) -> float:
    """Sustained dense bf16 matmul TFLOP/s on `device` ("cuda"; on CPU fp32, small)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = size if device == "cuda" else 256
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        calls += 10
        sync()
    return 2.0 * n**3 * calls / (time.perf_counter() - start) / 1e12


def memory_estimate_gib(args: argparse.Namespace, config: Any, precision: str) -> float:
    """nemo_lite's per-rank memory estimate for this run (what the CLI's --dryrun prints)."""
    from nemo_lite.llm.gpt.memory import estimate_memory

    return estimate_memory(
        config, dp=args.devices, precision=precision,
        distributed_optimizer=args.distributed_optimizer, micro_batch_size=args.mbs,
        seq_length=args.seq, num_microbatches=args.gbs // (args.mbs * args.devices),
        vocab_size=config.vocab_size, flash_attention=args.device == "gpu").total / 2**30


def model_config(args: argparse.Namespace) -> Any:
    """Llama 3.2 1B's shape (16 x 2048, SwiGLU 8192, 32 heads / 8 KV groups, 128256 tokens,
    tied embeddings), or a tiny Llama for the CPU proof run."""
    from nemo_lite import llm

    if args.tiny:
        return llm.Llama3Config(num_layers=2, hidden_size=64, ffn_hidden_size=128,
                                num_attention_heads=4, num_query_groups=2, vocab_size=512,
                                seq_length=args.seq, share_embeddings_and_output_weights=True)
    on_gpu = args.device == "gpu"
    fusions = dict(bias_activation_fusion=True, apply_rope_fusion=True) if args.fusions else {}
    return llm.Llama3Config(num_layers=args.layers, hidden_size=args.hidden,
                            ffn_hidden_size=args.ffn, num_attention_heads=args.heads,
                            num_query_groups=args.kv_groups, seq_length=args.seq,
                            share_embeddings_and_output_weights=True,
                            use_cpu_initialization=not on_gpu, **fusions)


def flops_per_token(config: Any, seq_length: int, vocab_size: int) -> dict[str, float]:
    """Training FLOPs per token by part (see the module docstring), and their total."""
    h, heads = config.hidden_size, config.num_attention_heads
    head_dim = config.kv_channels or h // heads
    q = heads * head_dim
    kv = (config.num_query_groups or heads) * head_dim
    f = config.ffn_hidden_size
    layers = config.num_layers
    forward = {
        "attention_projections": layers * (2 * h * (q + 2 * kv) + 2 * q * h),
        "attention_scores": layers * 2 * seq_length * q,
        "mlp": layers * (2 * h * f * (2 if config.gated_linear_unit else 1) + 2 * f * h),
        "logits": 2 * h * vocab_size,
    }
    parts = {name: 3.0 * value for name, value in forward.items()}
    parts["total"] = sum(parts.values())
    return parts


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """Everything known without running: shapes, parameters, FLOPs, batch, device peak."""
    from nemo_lite import llm

    config = model_config(args)
    vocab = config.padded_vocab_size(config.vocab_size)
    params = llm.count_parameters(config)
    parts = llm.parameter_breakdown(config)
    per_token = flops_per_token(config, args.seq, vocab)
    tokens = args.gbs * args.seq
    return {
        "model": {"layers": config.num_layers, "hidden": config.hidden_size,
                  "ffn": config.ffn_hidden_size, "heads": config.num_attention_heads,
                  "kv_groups": config.num_query_groups, "vocab": config.vocab_size,
                  "padded_vocab": vocab, "seq_length": args.seq,
                  "tied_embeddings": config.share_embeddings_and_output_weights},
        "parameters": params,
        "parameters_non_embedding": params - parts["embedding"] - parts["output_layer"],
        "batch": {"global": args.gbs, "micro": args.mbs, "tokens_per_step": tokens,
                  "micro_batches_per_gpu": args.gbs // (args.mbs * args.devices)},
        "flops_per_token": per_token["total"],
        "flops_per_token_parts": {k: v for k, v in per_token.items() if k != "total"},
        "flops_per_step": per_token["total"] * tokens,
        "six_n_per_token": 6.0 * params,
        "formula": FORMULA,
        "precision": "32" if args.device == "cpu" and not args.bf16_on_cpu else "bf16-mixed",
        "fp8": args.fp8,
        "warmup": args.warmup,
        "steps": args.steps,
        "devices": args.devices,
    }


def run(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Train warmup + timed steps through nemo_lite; return the measured figures."""
    import lightning.pytorch as pl
    import torch
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    cuda = args.device == "gpu"
    ends: list[float] = []
    losses: list[float] = []

    class Clock(pl.Callback):
        """Step end = optimizer step done on the device (synchronised on a GPU)."""

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *_: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            ends.append(time.perf_counter())
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    config = model_config(args)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(
        lr=1e-4, clip_grad=1.0, use_distributed_optimizer=args.distributed_optimizer))
    precision = nl.MegatronMixedPrecision(info["precision"], fp8=args.fp8)
    trainer = nl.Trainer(
        strategy=nl.MegatronStrategy(), devices=args.devices,
        accelerator="gpu" if cuda else "cpu", max_steps=args.warmup + args.steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()],
        plugins=precision)
    data = llm.MockDataModule(seq_length=args.seq, global_batch_size=args.gbs,
                              micro_batch_size=args.mbs)
    model = llm.GPTModel(config, optim=optim)
    trainer.fit(model, data)
    if trainer.global_rank != 0:
        return {}
    steps = [b - a for a, b in zip(ends, ends[1:], strict=False)][max(args.warmup - 1, 0):]
    mean = sum(steps) / len(steps)
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or (peak_bf16_tflops(device_name) if cuda else None)
    tflops = info["flops_per_step"] / mean / args.devices / 1e12
    measured = measure_peak_tflops("cuda" if cuda else "cpu") if args.measure_peak else None
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    estimate = memory_estimate_gib(args, config, info["precision"])
    attention = trainer.strategy.megatron_parallel[0]
    while not hasattr(attention, "decoder") and hasattr(attention, "module"):
        attention = attention.module
    core = attention.decoder.layers[0].self_attention.core_attention
    return {
        "device": device_name,
        "devices": args.devices,
        "qkv_layer": qkv_layer_name(trainer.strategy.megatron_parallel[0]),
        "losses": losses,
        "timed_steps": len(steps),
        "step_time_mean_s": mean,
        "step_time_median_s": statistics.median(steps),
        "tokens_per_s_per_gpu": info["batch"]["tokens_per_step"] / mean / args.devices,
        "model_tflops_per_gpu": tflops,
        "peak_bf16_tflops": peak,
        "mfu": tflops / peak if peak else None,
        "measured_peak_tflops": measured,
        "mfu_of_measured_peak": tflops / measured if measured else None,
        "core_attention": type(core).__name__ + (
            " (torch SDPA)" if getattr(core, "uses_sdpa", lambda d: False)(
                torch.device("cuda" if cuda else "cpu")) else ""),
        "max_memory_gib": memory,
        "memory_estimate_gib": estimate,
        "memory_vs_estimate": memory / estimate if memory is not None else None,
    }


def qkv_layer_name(chunk: Any) -> str:
    """Which QKV projection ran (TELayerNormColumnParallelLinear = transformer-engine)."""
    while not hasattr(chunk, "decoder") and hasattr(chunk, "module"):
        chunk = chunk.module  # DDP -> Float16Module -> GPTModel
    return type(chunk.decoder.layers[0].self_attention.linear_qkv).__name__


def report(info: dict[str, Any], result: Optional[dict[str, Any]], dry: bool) -> None:
    m = info["model"]
    print(f"model      Llama-style: {m['layers']} layers, hidden {m['hidden']}, SwiGLU "
          f"{m['ffn']}, {m['heads']} heads / {m['kv_groups']} KV groups, vocab {m['vocab']} "
          f"(padded {m['padded_vocab']}), tied embeddings {m['tied_embeddings']}, seq "
          f"{m['seq_length']}")
    print(f"parameters {info['parameters']:,} (llm.count_parameters; non-embedding "
          f"{info['parameters_non_embedding']:,})")
    b = info["batch"]
    print(f"batch      global {b['global']} x {m['seq_length']} = {b['tokens_per_step']:,} "
          f"tokens/step (micro {b['micro']}, {b['micro_batches_per_gpu']} micro-batches per data-parallel rank)"
          f", precision {info['precision']}" + (f", fp8 {info['fp8']}" if info["fp8"] else ""))
    parts = ", ".join(f"{k} {v:.4g}" for k, v in info["flops_per_token_parts"].items())
    print(f"FLOPs      {info['flops_per_token']:.6g} per token ({parts}); "
          f"{info['flops_per_step']:.6g} per step; 6N = {info['six_n_per_token']:.6g} per token")
    print(f"formula    {info['formula']}")
    if dry:
        table = ", ".join(f"{name} {peak:.0f}" for name, peak in PEAK_BF16_TFLOPS)
        print(f"peaks      dense bf16 TFLOP/s by device name: {table}; other cards: MFU omitted")
        print(f"dry run    would train {info['warmup']} warmup + {info['steps']} timed steps: "
              f"nl.Trainer(accelerator='gpu', devices={info['devices']}) + MegatronStrategy + "
              "GPTModel (TE layers when TE is installed) on MockDataModule; nothing was run")
        return
    if not result:
        return
    print(f"device     {result['device']} x {result['devices']}, QKV layer {result['qkv_layer']}"
          f", core attention {result['core_attention']}")
    if result["max_memory_gib"] is not None:
        print(f"memory     peak {result['max_memory_gib']:.2f} GiB allocated; estimate "
              f"{result['memory_estimate_gib']:.2f} GiB ({result['memory_vs_estimate']:.2f}x)")
    print(f"loss       {' '.join(f'{x:.3f}' for x in result['losses'])} (every step)")
    print(f"steps      {result['timed_steps']} timed: mean {result['step_time_mean_s']*1000:.1f} "
          f"ms, median {result['step_time_median_s']*1000:.1f} ms")
    print(f"tokens/s   {result['tokens_per_s_per_gpu']:,.0f} per device")
    print(f"TFLOP/s    {result['model_tflops_per_gpu']:.4g} per device (model FLOPs, formula "
          "above)")
    if result["mfu"] is None:
        print("MFU        omitted: no dense bf16 peak known for this device (--peak-tflops X)")
    else:
        print(f"MFU        {result['mfu']:.1%} of {result['peak_bf16_tflops']:.0f} TFLOP/s "
              "(dense bf16 peak" + (", fp8 run measured against it" if info["fp8"] else "") + ")")
    if result["measured_peak_tflops"]:
        print(f"measured   {result['measured_peak_tflops']:.4g} TFLOP/s sustained by a matmul loop "
              f"here; MFU against it {result['mfu_of_measured_peak']:.1%}")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="describe only; no GPU needed")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model (with --device cpu)")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (tiny: 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed; default 20 (tiny: 2)")
    parser.add_argument("--seq", type=int, default=None, help="default 2048 (tiny: 64)")
    parser.add_argument("--mbs", type=int, default=None, help="default 2 (tiny: 2)")
    parser.add_argument("--gbs", type=int, default=None, help="default 8 (tiny: 4)")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-groups", type=int, default=8)
    parser.add_argument("--fp8", choices=("hybrid", "e4m3"), default=None)
    parser.add_argument("--fusions", action="store_true",
                        help="bias-SwiGLU and RoPE fusions (GPU; off by default)")
    parser.add_argument("--distributed-optimizer", action="store_true")
    parser.add_argument("--bf16-on-cpu", action="store_true", help="bf16 instead of fp32 on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--measure-peak", action="store_true",
                        help="also time a bf16 matmul loop: MFU against the measured peak")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--out", default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.tiny and args.device != "cpu" and not args.dry:
        parser.error("--tiny is the CPU proof run: add --device cpu")
    small = args.tiny
    args.seq = args.seq or (64 if small else 2048)
    args.mbs = args.mbs or 2
    args.gbs = args.gbs or (4 if small else 8)
    args.warmup = args.warmup or (1 if small else 5)
    args.steps = args.steps or (2 if small else 20)
    if args.gbs % (args.mbs * args.devices):
        parser.error(f"--gbs {args.gbs} is not a multiple of --mbs {args.mbs} x --devices "
                     f"{args.devices}")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the first step starts the clock)")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = describe(args)
    result = None
    if not args.dry:
        if args.device == "gpu":
            import torch

            if not torch.cuda.is_available():
                sys.exit("error: no CUDA GPU here: run with --dry (describe only) or "
                         "--device cpu --tiny (3 real CPU steps).")
        result = run(args, info)
    report(info, result, args.dry)
    out = {"info": info, "result": result}
    if args.json:
        print("RESULT " + json.dumps(out))
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
