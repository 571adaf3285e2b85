"""Vocabulary padding that never changes what the model computes.

Megatron pads the vocabulary to a multiple of `make_vocab_size_divisible_by x TP`, so the padded
size depends on the layout (258 byte ids: 384 rows at TP1, 512 at TP2). Left alone, the padded
rows join the softmax and the padded size changes the random initialisation, so each TP would
be a different model and a TP change on resume would bring in fresh rows. Three rules keep the
padding invisible:

1. Initialisation. The word-embedding init runs on a private generator seeded by one draw from
   the main stream, so the rest of the model's init does not depend on the padded size; torch's
   CPU `normal_` fills a tensor front to back, so the first V rows are the same whatever the
   padded size (the output layer is built last on its stage). Padded rows are zero.
2. Logits of padded ids are -inf on the ranks that hold them (a forward hook on the output
   layer): no probability in training, validation or generation, and megatron's vocab-parallel
   cross entropy stays exact.
3. Checkpoints hold the true vocabulary: the embedding and output-layer tensors (and their
   optimizer states) are saved with global shape [V, h] through a ShardedTensorFactory, so a
   checkpoint loads at any TP or padding, and a different V is a shape mismatch, not a silent
   partial load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

VOCAB_TENSOR_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel: int) -> int:
    """Megatron's rule: the next multiple of `divisible_by x tensor_parallel`."""
    multiple = divisible_by * tensor_parallel
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclass(frozen=True)
class PrivateStreamInit:
    """An init method that takes one number from the caller's CPU random stream, whatever the
    tensor's size, and fills the tensor from a generator seeded with it.

    Used for the embeddings: the padded vocabulary size then changes nothing that is initialised
    after them. Tensors on an accelerator (megatron's per-partition GPU init, which has its own
    RNG tracker) are passed through unchanged.
    """

    base: Callable[[torch.Tensor], Any]

    def __call__(self, tensor: torch.Tensor) -> Any:
        if tensor.device.type != "cpu":
            return self.base(tensor)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        state = torch.random.get_rng_state()
        torch.random.default_generator.manual_seed(seed)
        try:
            return self.base(tensor)
        finally:
            torch.random.set_rng_state(state)


@dataclass(frozen=True)
class VocabRows:
    """Which rows of a vocab-sized tensor one tensor-parallel rank holds, and how many are real.

    `start`: the global row of this rank's first row; `rows`: how many it holds.
    """

    vocab_size: int
    start: int
    rows: int

    @property
    def real_rows(self) -> int:
        return min(max(self.vocab_size - self.start, 0), self.rows)

    @property
    def last_shard(self) -> tuple[int, int]:
        """(start, rows) of the real rows held by the rank that holds the last real row."""
        start = ((self.vocab_size - 1) // self.rows) * self.rows
        return start, self.vocab_size - start


class MaskPaddedLogits:
    """Forward hook on the output layer: logits of padded ids become -inf, in place.

    The output is either this rank's vocabulary shard or (gathered for inference, or TP1) the
    whole padded vocabulary; its width says which.
    """

    def __init__(self, vocab_size: int, padded_size: int, shard_start: int) -> None:
        self.vocab_size, self.padded_size, self.shard_start = vocab_size, padded_size, shard_start

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        logits = output[0] if isinstance(output, tuple) else output
        width = logits.size(-1)
        start = 0 if width == self.padded_size else self.shard_start
        first_padded = max(self.vocab_size - start, 0)
        if first_padded < width:
            logits.narrow(-1, first_padded, width - first_padded).fill_(float("-inf"))
        return output


def zero_padded_rows(weight: torch.Tensor, rows: VocabRows) -> None:
    with torch.no_grad():
        weight[rows.real_rows:].zero_()


def unpadded_sharded_tensor(sharded: Any, vocab_size: int) -> Any:
    """Megatron's ShardedTensor of a padded vocab tensor -> a factory saving only the real rows
    under global shape [vocab_size, ...] (and, on load, padding them back with zeros)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory

    if sharded.prepend_axis_num or sharded.flattened_range is not None:
        raise ValueError(f"vocab tensor {sharded.key}: unexpected sharding {sharded}")
    rows = VocabRows(vocab_size, start=sharded.global_offset[0], rows=sharded.local_shape[0])
    local_shape = tuple(sharded.local_shape)

    def build(key: str, data: torch.Tensor, replica_id: Any, flattened_range: Any) -> Any:
        if flattened_range is not None:
            raise ValueError(f"{key}: flattened optimizer states of vocab tensors are not "
                             "supported (use the dp_reshardable or fully_reshardable format)")
        return _real_rows_tensor(key, data, replica_id, rows)

    def merge(loaded: torch.Tensor) -> torch.Tensor:
        if tuple(loaded.shape) == local_shape:  # no padded rows on this rank
            return loaded
        full = torch.zeros(local_shape, dtype=loaded.dtype, device=loaded.device)
        if rows.real_rows:
            full[:rows.real_rows] = loaded
        return full

    return ShardedTensorFactory(sharded.key, sharded.data, build, merge, sharded.replica_id)


def _real_rows_tensor(key: str, data: torch.Tensor, replica_id: Any, rows: VocabRows) -> Any:
    """This rank's real rows under the unpadded global shape. A rank holding only padded rows
    reads (never writes) the last real rows, so that its entry is not empty."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    rest = tuple(data.shape[1:])
    if rows.real_rows:
        start, count, local = rows.start, rows.real_rows, data[:rows.real_rows]
    else:
        start, count = rows.last_shard
        local = data.new_zeros((count, *rest))
        replica_id = (1, *replica_id[1:]) if isinstance(replica_id, tuple) else 1
    return ShardedTensor(
        key=key, data=local, dtype=local.dtype, local_shape=(count, *rest),
        global_shape=(rows.vocab_size, *rest), global_offset=(start, *([0] * len(rest))),
        axis_fragmentations=None, replica_id=replica_id)


def unpad_vocab_entries(state: dict[str, Any], prefix: str, vocab_size: int) -> dict[str, Any]:
    """Replace the vocab tensors of a megatron GPT chunk's sharded state dict (in place)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    for name in VOCAB_TENSOR_KEYS:
        entry = state.get(prefix + name)
        if isinstance(entry, ShardedTensor):
            state[prefix + name] = unpadded_sharded_tensor(entry, vocab_size)
    return state
