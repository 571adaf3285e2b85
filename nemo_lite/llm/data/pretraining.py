"""PreTrainingDataModule: GPT pretraining on Megatron indexed datasets (.bin/.idx prefixes).

Megatron does the work: `GPTDataset`s built by `BlendedMegatronDatasetBuilder` (weighted
blends, train/validation/test split, index caches built on rank 0 first and then loaded by the
others). This module adds what a run needs around it: the number of samples from the trainer,
Megatron's batch sampler resumed at the checkpoint's consumed samples, nemo_lite's batch
contract, and checks of every input before megatron sees it (`indexed_inputs.py`).
"""

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.indexed_inputs import (  # noqa: F401 - errors re-exported
    SPLITS,
    Blend,
    DataConfigError,
    DataFileNotFoundError,
    IndexedDataError,
    check_indexed_dataset,
    parse_blend,
    parse_paths,
    parse_split,
)
from nemo_lite.llm.data.resumable import ResumableDataMixin

STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",),
                "predict": ()}
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask")


class MegatronTokenizerAdapter:
    """What megatron's GPTDataset reads from a tokenizer: `eod` (document boundaries for the
    masks and position resets), `pad` (masked out of the loss), `vocab_size`, and
    `unique_identifiers` (part of the index caches' hash). nemo_lite tokenizers name them
    `eos_id` / `pad_id`."""

    def __init__(self, tokenizer: Any) -> None:
        name = type(tokenizer).__name__
        vocab = getattr(tokenizer, "vocab_size", None)
        eod = next((getattr(tokenizer, a) for a in ("eod", "eos_id", "eos")
                    if isinstance(getattr(tokenizer, a, None), int)), None)
        if not isinstance(vocab, int) or eod is None:
            raise DataConfigError(
                f"tokenizer {name} needs an int vocab_size and an end-of-document id (eos_id or "
                "eod): GPTDataset marks document boundaries with it; pass a nemo_lite tokenizer.")
        pad = getattr(tokenizer, "pad_id", None)
        self.vocab_size, self.eod = vocab, eod
        self._pad = pad if isinstance(pad, int) and pad >= 0 else None
        self.unique_identifiers = OrderedDict(
            [("class", f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"),
             ("vocab_size", vocab), ("eod", eod), ("pad", self._pad)])

    @property
    def eos(self) -> int:
        return self.eod

    @property
    def pad(self) -> int:
        if self._pad is None:  # megatron then uses -1, which no token id matches
            raise AttributeError("this tokenizer has no pad id")
        return self._pad


# --- batches ---------------------------------------------------------------------------------
class MegatronSamples(Dataset):
    """A megatron GPT/Blended dataset in nemo_lite's batch contract: the sampler's PAD_INDEX
    (padding to a whole global batch) becomes a sample with no loss; `dataset_id` is dropped."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        padding = index == PAD_INDEX
        sample = self.dataset[0 if padding else index]
        out = {key: sample[key] for key in BATCH_KEYS if key in sample}
        if padding:
            out["loss_mask"] = torch.zeros_like(out["loss_mask"])
        return out


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """Megatron's builders call torch.distributed (BlendedDataset's cache even when no group
    exists); outside a run, a one-rank gloo group held in memory stands in."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class PreTrainingDataModule(ResumableDataMixin, pl.LightningDataModule, IOMixin):
    """NeMo 2.0's PreTrainingDataModule arguments over megatron's GPTDataset.

    `paths`: a prefix, a list of prefixes, [weight, prefix, ...], or
    {"train": ..., "validation": ..., "test": ...} (then `split` is not used). Sample counts
    come from the trainer (max_steps x global_batch_size; validation from val_check_interval
    and limit_val_batches) unless `num_*_samples` is given.
    """

    def __init__(
        self,
        paths: Union[str, list[Any], dict[str, Any]],
        seq_length: int = 2048,
        tokenizer: Any = None,
        micro_batch_size: int = 4,
        global_batch_size: int = 8,
        rampup_batch_size: Optional[list[int]] = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        reset_position_ids: bool = False,
        create_attention_mask: bool = False,
        reset_attention_mask: bool = False,
        eod_mask_loss: bool = False,
        seed: int = 1234,
        split: str = "900,50,50",
        index_mapping_dir: Optional[str] = None,
        num_dataset_builder_threads: int = 1,
        num_train_samples: Optional[int] = None,
        num_val_samples: Optional[int] = None,
        num_test_samples: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.init_batching(seq_length=seq_length, tokenizer=tokenizer,
                           micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                           rampup_batch_size=rampup_batch_size, num_workers=num_workers,
                           pin_memory=pin_memory, persistent_workers=persistent_workers)
        self.blends = parse_paths(paths)
        self.split = parse_split(split) if "all" in self.blends else None
        if "all" not in self.blends and split != "900,50,50":
            warnings.warn(f"split={split!r} is not used: paths gives each split its own datasets.",
                          stacklevel=2)
        self.paths = paths
        self.reset_position_ids = reset_position_ids
        # Megatron writes the reset mask into the attention mask it creates.
        self.create_attention_mask = create_attention_mask or reset_attention_mask
        self.reset_attention_mask = reset_attention_mask
        self.eod_mask_loss = eod_mask_loss
        self.seed = seed
        self.index_mapping_dir = index_mapping_dir
        self.num_dataset_builder_threads = num_dataset_builder_threads
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.num_test_samples = num_test_samples
        self.datasets: dict[str, Any] = {}
        self._lengths = {p: check_indexed_dataset(p) for p in self._prefixes()}

    def _prefixes(self) -> list[str]:
        return list(dict.fromkeys(p for b in self.blends.values() if b for p in b[0]))

    # --- how many samples each split needs ---------------------------------------------------
    def _eval_samples(self, name: str, limit: Union[int, float], runs: int,
                      override: Optional[int], weighted: bool) -> Optional[int]:
        if override is not None:
            return override
        if isinstance(limit, float) and limit > 0:  # a fraction: one epoch of the split
            if weighted:
                raise DataConfigError(
                    f"limit_{name}_batches={limit} (a fraction) asks for a whole epoch of a "
                    f"weighted blend, which megatron cannot size: set trainer "
                    f"limit_{name}_batches to a number of batches, or num_{name}_samples, or "
                    "give paths per split.")
            return None
        return int(runs * limit * self.global_batch_size)

    def _blend_of(self, split: str) -> Optional[Blend]:
        return self.blends.get("all", self.blends.get(split))

    def num_samples(self, max_steps: int, val_check_interval: Union[int, float, None] = None,
                    limit_val_batches: Union[int, float] = 0,
                    limit_test_batches: Union[int, float] = 0,
                    splits: tuple[str, ...] = SPLITS) -> dict[str, Optional[int]]:
        """Samples to build per needed split (None: one epoch); NeMo's formulas."""
        out: dict[str, Optional[int]] = {}
        gbs = self.global_batch_size
        train_steps = max(int(max_steps or 0), 0)
        if "train" in splits:
            needed = train_steps * gbs
            if self.num_train_samples is not None and self.num_train_samples < needed:
                raise DataConfigError(
                    f"num_train_samples={self.num_train_samples} is fewer than max_steps "
                    f"({train_steps}) x global_batch_size ({gbs}) = {needed}: raise it or leave it "
                    "None.")
            out["train"] = self.num_train_samples or needed
            if not out["train"]:
                raise DataConfigError("no training samples requested: set trainer max_steps (the "
                                      "run takes max_steps x global_batch_size samples) or "
                                      "num_train_samples.")
            train_steps = out["train"] // gbs
        if "validation" in splits:
            vci = val_check_interval
            if isinstance(vci, int) and vci > 0:
                runs = train_steps // vci + 1
            else:  # a fraction of the (max_steps long) epoch, and the sanity check
                runs = int(1 / vci) + 1 if isinstance(vci, float) and vci > 0 else 2
            blend = self._blend_of("validation")
            out["validation"] = self._eval_samples(
                "val", limit_val_batches, runs, self.num_val_samples,
                bool(blend and blend[1]))
        if "test" in splits:
            blend = self._blend_of("test")
            out["test"] = self._eval_samples("test", limit_test_batches, 1, self.num_test_samples,
                                             bool(blend and blend[1]))
        return {k: v for k, v in out.items() if v is None or v > 0}

    # --- building ------------------------------------------------------------------------------
    def setup(self, stage: str = "") -> None:
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError("PreTrainingDataModule.setup needs a trainer; outside one call "
                               "build(max_steps, ...) instead.")
        # in steps: MegatronStrategy keeps the user's values once it has scaled the trainer's
        # to micro-batches (a validate after fit); before its first setup they are the trainer's
        limits = getattr(trainer.strategy, "eval_limits", None)
        val, test = ((limits.val, limits.test) if limits is not None
                     else (trainer.limit_val_batches, trainer.limit_test_batches))
        self.build(trainer.max_steps, trainer.val_check_interval, val, test, stage=stage)

    def build(self, trainer_max_steps: int,
              trainer_val_check_interval: Union[int, float, None] = None,
              trainer_limit_val_batches: Union[int, float] = 0,
              trainer_limit_test_batches: Union[int, float] = 0,
              stage: Optional[str] = None) -> None:
        """Build the splits `stage` needs (all for None) with megatron's builder, on every rank
        that calls it: each nemo_lite rank draws its own micro-batches, so each needs the
        dataset; megatron builds the index caches on rank 0 first, the others then load them."""
        from megatron.core.datasets.blended_megatron_dataset_builder import (
            BlendedMegatronDatasetBuilder,
        )
        from megatron.core.datasets.gpt_dataset import GPTDataset

        wanted = STAGE_SPLITS.get(stage, SPLITS) if stage else SPLITS
        wanted = tuple(s for s in wanted if self._blend_of(s) is not None)
        sizes = self.num_samples(trainer_max_steps, trainer_val_check_interval,
                                 trainer_limit_val_batches, trainer_limit_test_batches, wanted)
        self.datasets = {}
        if not sizes:  # nothing to build (megatron would make mock data of an empty blend)
            return
        config = self._config(set(sizes))
        self._check_split_sizes(config, set(sizes))
        with _process_group():
            built = BlendedMegatronDatasetBuilder(
                GPTDataset, [sizes.get(s, 0) for s in SPLITS], lambda: True, config).build()
        self.datasets = {s: d for s, d in zip(SPLITS, built, strict=True)
                         if s in sizes and d is not None}

    def _config(self, splits: set) -> Any:
        from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

        blends: dict[str, Any] = {}
        if "all" in self.blends:
            blends.update(blend=self.blends["all"], split=self.split)
        else:
            blends["blend_per_split"] = [self.blends[s] if s in splits else None for s in SPLITS]
        config = GPTDatasetConfig(
            random_seed=self.seed, sequence_length=self.seq_length,
            tokenizer=MegatronTokenizerAdapter(self.tokenizer),
            path_to_cache=self.index_mapping_dir, reset_position_ids=self.reset_position_ids,
            reset_attention_mask=self.reset_attention_mask,
            eod_mask_loss=self.eod_mask_loss, create_attention_mask=self.create_attention_mask,
            num_dataset_builder_threads=self.num_dataset_builder_threads, **blends)
        if config.split_matrix is not None:  # splits this stage does not use are not built
            config.split_matrix = [m if s in splits else None
                                   for s, m in zip(SPLITS, config.split_matrix, strict=True)]
        return config

    def _check_split_sizes(self, config: Any, splits: set) -> None:
        """Each dataset's share of a split must hold one whole sample (seq_length + 1 tokens);
        megatron would loop forever on a share without documents."""
        need = self.seq_length + 1
        for i, split in enumerate(SPLITS):
            if split not in splits:
                continue
            if config.split_matrix is not None:
                bounds, prefixes = config.split_matrix[i], self.blends["all"][0]
            else:
                bounds, prefixes = (0.0, 1.0), self.blends[split][0]
            if bounds is None:
                continue
            for prefix in prefixes:
                lengths = self._lengths[prefix]
                beg, end = (int(round(b * float(len(lengths)))) for b in bounds)
                tokens = int(lengths[beg:end].sum())
                if tokens < need:
                    fix = (f"change split={self.split!r}, " if self.split else "") + \
                          "add documents or lower seq_length"
                    raise DataConfigError(
                        f"{prefix}: the {split} split gets sequences [{beg}, {end}) of "
                        f"{len(lengths)} with {tokens} tokens, fewer than one sample needs "
                        f"(seq_length + 1 = {need}): {fix}.")

    # --- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, consumed: int) -> DataLoader:
        return self.megatron_loader(MegatronSamples(self.datasets[split]), consumed,
                                    training=split == "train")

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            raise DataConfigError("no training dataset was built: paths needs a 'train' entry "
                                  "and split a non-zero train weight (setup('fit') builds it).")
        return self._loader("train", self.init_consumed_samples)

    def val_dataloader(self) -> Union[DataLoader, list[Any]]:
        return self._loader("validation", 0) if "validation" in self.datasets else []

    def test_dataloader(self) -> Union[DataLoader, list[Any]]:
        return self._loader("test", 0) if "test" in self.datasets else []
