"""Packing tokenized fine-tuning examples into fixed-length rows (THD layout).

Why: fine-tuning examples are short and uneven, so padding each one to `seq_length` spends most
of a batch on padding. A packed row holds several examples back to back; `cu_seqlens` marks where
each starts, attention stays inside each example (`ContextParallelDotProductAttention` on CPU,
transformer-engine's THD kernels on GPU) and `position_ids` restart at 0 per example, so a packed
row gives each example exactly the loss it gets alone.

Algorithm: first-fit decreasing. Examples are taken longest first (ties in file order) and each
goes into the first row that still has room; a new row is opened when none has. It is
deterministic, and within a row the examples keep that (longest-first) order.

Row layout (`packed_sequence_size` = S tokens): example i contributes its L_i - 1 input tokens
(`ids[:-1]`, labels `ids[1:]`, as unpacked); what is left at the end of the row is one padding
segment (pad ids, loss_mask 0, position 0) so that `cu_seqlens[-1] == S` (megatron's THD RoPE
splits the row by cu_seqlens and needs them to cover it). `cu_seqlens` is int32, padded with -1 to
`max_segments + 1` entries so rows collate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenizedExample:
    """One example: `ids` (L >= 2 token ids) and `loss_mask` (L - 1 entries, one per label
    `ids[j + 1]`: 1 where that label is trained, i.e. answer tokens and their eos)."""

    ids: tuple[int, ...]
    loss_mask: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.ids) < 2 or len(self.loss_mask) != len(self.ids) - 1:
            raise ValueError(
                f"a tokenized example needs >= 2 ids and one loss_mask entry per label; got "
                f"{len(self.ids)} ids and {len(self.loss_mask)} mask entries."
            )

    @property
    def num_tokens(self) -> int:
        """Tokens it occupies as model input (its labels are the same ids shifted by one)."""
        return len(self.ids) - 1


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows whose lengths sum to at most `capacity`."""
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"example {i} has {lengths[i]} tokens, more than the packed row size {capacity}: "
            "set packed_sequence_size >= seq_length."
        )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def num_segments(row: Sequence[TokenizedExample], size: int) -> int:
    """Documents in a row, plus one padding segment when the row is not full."""
    used = sum(e.num_tokens for e in row)
    return len(row) + (1 if used < size else 0)


def build_packed_row(
    row: Sequence[TokenizedExample], size: int, pad_id: int, max_segments: int
) -> dict[str, torch.Tensor]:
    """The batch item of one packed row (see the module docstring for the layout)."""
    tokens: list[int] = []
    labels: list[int] = []
    loss_mask: list[int] = []
    positions: list[int] = []
    cu = [0]
    for example in row:
        n = example.num_tokens
        tokens.extend(example.ids[:-1])
        labels.extend(example.ids[1:])
        loss_mask.extend(example.loss_mask)
        positions.extend(range(n))
        cu.append(cu[-1] + n)
    if cu[-1] > size:
        raise ValueError(f"a packed row holds {cu[-1]} tokens, more than its size {size}.")
    pad = size - cu[-1]
    if pad:
        tokens.extend([pad_id] * pad)
        labels.extend([pad_id] * pad)
        loss_mask.extend([0] * pad)
        positions.extend([0] * pad)  # < any max_sequence_length (learned positions)
        cu.append(size)
    if len(cu) - 1 > max_segments:
        raise ValueError(f"a packed row has {len(cu) - 1} segments, more than {max_segments}.")
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
    return {
        "tokens": torch.tensor(tokens, dtype=torch.int64),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "loss_mask": torch.tensor(loss_mask, dtype=torch.float32),
        "position_ids": torch.tensor(positions, dtype=torch.int64),
        "cu_seqlens": torch.tensor(cu + [-1] * (max_segments + 1 - len(cu)), dtype=torch.int32),
        "max_seqlen": torch.tensor(max(lengths), dtype=torch.int32),
    }


class PackedRows:
    """Examples packed once (first-fit decreasing); row i is built on demand."""

    def __init__(self, examples: Sequence[TokenizedExample], size: int, pad_id: int) -> None:
        if size < 1:
            raise ValueError(f"packed_sequence_size must be >= 1, got {size}.")
        self.examples = examples
        self.size = size
        self.pad_id = pad_id
        self.rows = first_fit_decreasing([e.num_tokens for e in examples], size)
        self.max_segments = max(
            [1] + [num_segments([examples[i] for i in r], size) for r in self.rows]
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = [self.examples[i] for i in self.rows[index]]
        return build_packed_row(row, self.size, self.pad_id, self.max_segments)

    def padding_row(self) -> dict[str, torch.Tensor]:
        """An all-masked row (one padding segment): fills a last, incomplete global batch."""
        return build_packed_row([], self.size, self.pad_id, self.max_segments)
