"""MockDataModule: synthetic token sequences, generated per index, with a learnable pattern.

Sample i is an arithmetic progression of token ids (random start and stride, both drawn from
a generator seeded by i), so a model can learn it and the loss falls, unlike uniform noise.
No data is stored: any number of samples costs nothing, and sample i is the same everywhere.
"""

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.resumable import ResumableDataMixin


class MockGPTDataset(Dataset):
    def __init__(self, num_samples: int, seq_length: int, vocab_size: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.seed = seed
        self.position_ids = torch.arange(seq_length, dtype=torch.int64)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.seq_length
        if index == PAD_INDEX:  # padding to a whole global batch: contributes no tokens
            zeros = torch.zeros(s, dtype=torch.int64)
            return {"tokens": zeros, "labels": zeros, "loss_mask": torch.zeros(s),
                    "position_ids": self.position_ids}
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(0, self.vocab_size, (1,), generator=g))
        stride = int(torch.randint(1, 8, (1,), generator=g))
        seq = (start + stride * torch.arange(s + 1, dtype=torch.int64)) % self.vocab_size
        return {"tokens": seq[:-1], "labels": seq[1:], "loss_mask": torch.ones(s),
                "position_ids": self.position_ids}


class MockDataModule(ResumableDataMixin, pl.LightningDataModule, IOMixin):
    """NeMo 2.0's MockDataModule arguments; Megatron's sampler over micro/global batches."""

    def __init__(
        self,
        seq_length: int = 2048,
        tokenizer: Any = None,
        micro_batch_size: int = 4,
        global_batch_size: int = 8,
        rampup_batch_size: Optional[list[int]] = None,
        num_train_samples: int = 10_000_000,
        num_val_samples: int = 10_000,
        num_test_samples: int = 10_000,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        create_attention_mask: bool = False,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        self.init_batching(seq_length=seq_length, tokenizer=tokenizer,
                           micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                           rampup_batch_size=rampup_batch_size, num_workers=num_workers,
                           pin_memory=pin_memory, persistent_workers=persistent_workers)
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.num_test_samples = num_test_samples
        self.create_attention_mask = create_attention_mask
        self.seed = seed

    def _dataset(self, num_samples: int, offset: int) -> MockGPTDataset:
        return MockGPTDataset(num_samples, self.seq_length, self.tokenizer.vocab_size,
                              self.seed + offset)

    def train_dataloader(self) -> DataLoader:
        return self.megatron_loader(self._dataset(self.num_train_samples, 0), self.init_consumed_samples,
                            training=True)

    def val_dataloader(self) -> DataLoader:
        return self.megatron_loader(self._dataset(self.num_val_samples, 1), 0, training=False)

    def test_dataloader(self) -> DataLoader:
        return self.megatron_loader(self._dataset(self.num_test_samples, 2), 0, training=False)
