"""How much of an imported checkpoint each rank reads when it loads at TP2 x PP2 (4 CPU ranks).

Writes the Llama-3.2-1B-shaped Hugging Face checkpoint of `hf_convert.py` (bf16, ~2.5 GB),
imports it (`llm.import_ckpt`), then loads it on 4 ranks at TP2 x PP2 as a fine-tuning run's
RestoreConfig does (`load_model_weights`: megatron dist_checkpointing, resharded on load). Each
rank reports what its process read during the load: `rchar` of /proc/self/io (bytes through
read calls, page cache or not) and the bytes of the weights it holds. A rank that reads only
its own shards reads about its share of the checkpoint; one that reads the whole checkpoint
shows about the checkpoint's size.

    python benchmarks/hf_read_volume.py --work /tmp/hf_rv [--layers 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def rank_main(ckpt: str, out_dir: str) -> None:
    """One rank: build its part of the model (no random init), load, report."""
    import torch
    import torch.distributed as dist

    from nemo_lite import lightning as nl
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_io import load_model_weights
    from nemo_lite.lightning.layout import ParallelLayout
    from nemo_lite.lightning.megatron_setup import init_parallel_state, write_model_config
    from nemo_lite.llm.hf.convert import build_without_init

    dist.init_process_group("gloo")
    layout = ParallelLayout(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
    init_parallel_state(layout, seed=1234, on_cuda=False)
    config = load_context(ckpt, subpath="model.config")
    write_model_config(config, layout, nl.MegatronMixedPrecision("bf16-mixed"), on_cuda=False)
    config.params_dtype = torch.bfloat16  # hold the weights as stored (bf16)
    chunk = build_without_init(config)
    held = sum(p.numel() * p.element_size() for p in chunk.parameters())
    dist.barrier()
    before = io_counters()
    load_model_weights([chunk], ckpt)
    after = io_counters()
    rank = dist.get_rank()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "held": held, "rchar": after["rchar"] - before["rchar"],
        "read_bytes": after["read_bytes"] - before["read_bytes"]}))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from hf_convert import write_checkpoint

    if args.work.exists():
        shutil.rmtree(args.work)
    source, ckpt, out = args.work / "hf", args.work / "nemo", args.work / "ranks"
    total, _ = write_checkpoint(source, args.layers)
    subprocess.run([sys.executable, "-c", "import sys; from nemo_lite import llm; "
                    "llm.import_ckpt(source='hf://' + sys.argv[1], output_path=sys.argv[2])",
                    str(source), str(ckpt)], check=True)
    on_disk = sum(p.stat().st_size for p in (ckpt / "weights").rglob("*") if p.is_file())
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4",
                    "--standalone", __file__, "--rank", str(ckpt), str(out)], check=True, env=env)
    print(f"checkpoint weights on disk: {on_disk / 1e9:.2f} GB ({total / 1e9:.2f} GB of HF "
          f"tensors, {args.layers} layers, Llama-3.2-1B shape, bf16); load at TP2 x PP2, 4 ranks")
    for rank in range(4):
        r = json.loads((out / f"rank{rank}.json").read_text())
        print(f"rank {rank}: holds {r['held'] / 1e9:.2f} GB, read {r['rchar'] / 1e9:.2f} GB "
              f"({r['rchar'] / on_disk:.2f} of the checkpoint, {r['rchar'] / r['held']:.2f}x "
              f"what it holds); from disk {r['read_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank":
        rank_main(sys.argv[2], sys.argv[3])
    else:
        main()
