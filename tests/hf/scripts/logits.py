"""Logits of an imported checkpoint in a parallel layout, gathered to global rank 0.

Usage: torchrun --nproc-per-node N logits.py TOKENS.pt TP,PP,SP,EP CKPT OUT.pt [CKPT OUT.pt ...]
Each checkpoint's weights load into this layout (resharded by dist_checkpointing); one forward
through megatron's schedule (forward only, so pipeline stages pass activations); the last
stage gathers the vocabulary-parallel logits over TP and its first rank saves [b, s, V].
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.distributed as dist


def main() -> None:
    tokens_path, (tp, pp, sp, ep) = sys.argv[1], map(int, sys.argv[2].split(","))
    pairs = list(zip(sys.argv[3::2], sys.argv[4::2], strict=True))
    dist.init_process_group("gloo")
    for ckpt, out_path in pairs:
        logits(ckpt, tokens_path, out_path, tp, pp, bool(sp), ep)
    dist.barrier()
    dist.destroy_process_group()


def logits(ckpt: str, tokens_path: str, out_path: str, tp: int, pp: int, sp: bool,
           ep: int) -> None:
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_lite import lightning as nl
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_io import load_model_weights
    from nemo_lite.lightning.layout import ParallelLayout
    from nemo_lite.lightning.megatron_setup import init_parallel_state, write_model_config

    layout = ParallelLayout(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                            sequence_parallel=sp, expert_model_parallel_size=ep)
    init_parallel_state(layout, seed=1234, on_cuda=False)
    config = load_context(ckpt, subpath="model.config")
    write_model_config(config, layout, nl.MegatronMixedPrecision("32"), on_cuda=False)
    tokens = torch.load(tokens_path)
    b, s = tokens.shape
    if config.position_embedding_type != "learned_absolute":  # a learned table fixes it
        config.seq_length = s
    chunk = config.configure_model()
    load_model_weights([chunk], ckpt)
    chunk.eval()
    collected = []

    def loss_func(output):
        collected.append(output.detach())
        return output.sum() * 0, torch.tensor(1, dtype=torch.int), {}

    def step(data_iterator, model):
        batch = next(data_iterator)
        positions = torch.arange(s).unsqueeze(0).expand(b, -1)
        out = model(input_ids=batch, position_ids=positions, attention_mask=None)
        return out, functools.partial(loss_func)

    with torch.no_grad():
        get_forward_backward_func()(forward_step_func=step, data_iterator=iter([tokens]),
                                    model=[chunk], num_microbatches=1, seq_length=s,
                                    micro_batch_size=b, forward_only=True)
    if ps.is_pipeline_last_stage():
        logits = collected[0]  # [b, s, V / tp]
        group = ps.get_tensor_model_parallel_group()
        parts = [torch.empty_like(logits) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, logits.contiguous(), group=group)
        if ps.get_tensor_model_parallel_rank() == 0:
            torch.save(torch.cat(parts, dim=-1), out_path)
    ps.destroy_model_parallel()


if __name__ == "__main__":
    main()
