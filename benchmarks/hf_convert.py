"""Hugging Face import / export speed and memory, against plain reading and writing of the
same bytes, measured in one run.

Writes a randomly initialised Llama-3.2-1B-shaped checkpoint (bf16, tied embeddings, two
safetensors shards + index: ~2.5 GB) to --work, then, each in a fresh process:
  baseline   read every tensor from the safetensors files and torch.save them (same bytes);
             baseline_fsync also fsyncs the file, as nemo_lite's checkpoint commit does
  import     llm.import_ckpt(source="hf://...")   -> a nemo_lite checkpoint
  export     llm.export_ckpt(...)                  -> safetensors again
Prints seconds, GB/s and the ratios baseline_fsync / import and baseline / export (target
>= 0.7),
and each process's peak resident memory above its resident memory before converting, beside
the largest tensor and the whole checkpoint (target for import: <= 1.5 GB).

    python benchmarks/hf_convert.py --work /tmp/hf_bench [--layers 16] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=128256)


def write_checkpoint(directory: Path, layers: int) -> tuple[int, int]:
    """A random Llama-3.2-1B-shaped checkpoint; (total bytes, largest tensor bytes)."""
    import torch
    from safetensors.torch import save_file

    h, f, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    q, kv = SHAPE["num_attention_heads"] * 64, SHAPE["num_key_value_heads"] * 64
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f)})
    directory.mkdir(parents=True)
    names = list(shapes)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map, total, largest = {}, 0, 0
    generator = torch.Generator().manual_seed(0)
    for index, part in enumerate(halves):
        file = f"model-{index + 1:05d}-of-00002.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=generator) * 0.02).to(torch.bfloat16)
                   for n in part}
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        for n, t in tensors.items():
            weight_map[n] = file
            total += t.numel() * 2
            largest = max(largest, t.numel() * 2)
        del tensors
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
        **SHAPE, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "max_position_embeddings": 131072, "hidden_act": "silu", "torch_dtype": "bfloat16",
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
    return total, largest


CHILD = r'''
import json, sys, time
from pathlib import Path
def status_mb(field):  # from /proc/self/status, MB
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
what, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
import torch, safetensors.torch  # noqa: E401 - the heavy imports before the baseline
from nemo_lite import llm
import nemo_lite.llm.hf.convert, nemo_lite.llm.hf.export, nemo_lite.lightning.checkpoint_io
if what in ("import", "export"):  # module imports are start-up, not converting: megatron-core's
    # (~3 s here) and those for the saved context and tokenizer (fiddle, libcst: ~0.5 s)
    import megatron.core.dist_checkpointing, megatron.core.models.gpt  # noqa: E401
    import fiddle, nemo_lite.io, nemo_lite.llm.tokenizer  # noqa: E401
base = status_mb("VmRSS")
start = time.perf_counter()
if what.startswith("baseline"):
    from safetensors import safe_open
    index = json.loads((Path(src) / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for file in sorted(set(index.values())):
        with safe_open(str(Path(src) / file), framework="pt") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name)
    torch.save(out, dst)
    if what == "baseline_fsync":  # what nemo_lite's checkpoint commit does before its rename
        import os
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())
elif what == "import":
    llm.import_ckpt(source=f"hf://{src}", output_path=dst)
else:
    llm.export_ckpt(src, target="hf", output_path=dst)
seconds = time.perf_counter() - start
# VmHWM: this process image's peak (getrusage's ru_maxrss keeps the parent's peak across exec)
peak = status_mb("VmHWM")
print(json.dumps({"seconds": seconds, "base_mb": base, "peak_mb": peak}))
'''


def child(what: str, src: Path, dst: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(src), str(dst)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the files under --work")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    source = args.work / "hf"
    total, largest = write_checkpoint(source, args.layers)
    gb = total / 1e9
    print(f"checkpoint  {gb:.2f} GB bf16 ({args.layers} layers, Llama-3.2-1B shape), largest "
          f"tensor {largest / 1e9:.2f} GB")
    rows = {}
    for what, src, dst in (("baseline", source, args.work / "baseline.pt"),
                           ("baseline_fsync", source, args.work / "baseline_fsync.pt"),
                           ("import", source, args.work / "nemo"),
                           ("export", args.work / "nemo", args.work / "exported")):
        rows[what] = r = child(what, src, dst)
        print(f"{what:<14} {r['seconds']:7.1f} s  {gb / r['seconds']:.2f} GB/s  peak RSS "
              f"{r['peak_mb'] * 2**20 / 1e9:.2f} GB, above start "
              f"{(r['peak_mb'] - r['base_mb']) * 2**20 / 1e9:.2f} GB")
    # import commits its checkpoint durably (fsync, then rename); export writes without fsync
    for what, base in (("import", "baseline_fsync"), ("export", "baseline")):
        print(f"ratio {what}: {base} / {what} time = "
              f"{rows[base]['seconds'] / rows[what]['seconds']:.2f} (target >= 0.7)")
    above = (rows["import"]["peak_mb"] - rows["import"]["base_mb"]) * 2**20  # bytes
    print(f"import memory: peak - start {above / 1e9:.2f} GB = {above / total:.2f} x the "
          f"checkpoint, {above / largest:.1f} x the largest tensor (target <= 1.5 GB)")
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
