"""PreTrainingDataModule: GPT pretraining on Megatron indexed datasets (.bin/.idx prefixes).

Megatron does the work: `GPTDataset`s built by `BlendedMegatronDatasetBuilder` (weighted
blends, train/validation/test split, index caches built on rank 0 first and then loaded by the
others). This module adds what a run needs around it: the number of samples from the trainer,
Megatron's batch sampler resumed at the checkpoint's consumed samples, nemo_lite's batch
contract, and checks of every input before megatron sees it (megatron's own failures on bad
files are bare asserts, and a split without documents makes it loop forever).
"""

import ast
import contextlib
import math
import os
import re
import struct
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Optional, Union

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.resumable import ResumableDataMixin, data_parallel_rank_and_size
from nemo_lite.llm.tokenizer import get_tokenizer

SPLITS = ("train", "validation", "test")
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",),
                "predict": ()}
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask")
Blend = tuple[list[str], Optional[list[float]]]


class DataFileNotFoundError(FileNotFoundError):
    """A dataset prefix without its .bin or .idx file."""


class IndexedDataError(ValueError):
    """A .bin/.idx pair that is truncated, corrupt or inconsistent."""


class DataConfigError(ValueError):
    """Arguments that cannot describe a dataset: paths, weights, split, sizes, tokenizer."""


# --- paths, weights and split ----------------------------------------------------------------
def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def parse_blend(paths: Any, where: str = "paths") -> Blend:
    """A prefix, a list of prefixes, or [weight, prefix, weight, prefix, ...] -> (prefixes,
    weights or None), as megatron's data_path; weights must be positive numbers."""
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    elif isinstance(paths, (list, tuple)):
        items = list(paths)
    else:
        raise DataConfigError(
            f"{where}={paths!r}: give a dataset prefix (the path without .bin/.idx), a list of "
            "prefixes, a list alternating weight and prefix, or a dict of train/validation/test.")
    if not items:
        raise DataConfigError(f"{where} is empty: give at least one dataset prefix.")
    if not any(_is_number(item) for item in items):
        bad = [item for item in items if not isinstance(item, (str, os.PathLike))]
        if bad:
            raise DataConfigError(f"{where}: {bad[0]!r} is not a dataset prefix (a path string).")
        return [os.fspath(item) for item in items], None
    if len(items) % 2:
        raise DataConfigError(
            f"{where} mixes weights and prefixes but has an odd number of entries ({len(items)}): "
            "alternate weight, prefix for every dataset, e.g. [0.3, 'data/a', 0.7, 'data/b'].")
    weights, prefixes = items[0::2], items[1::2]
    example = "alternate weight, prefix, e.g. [0.3, 'data/a', 0.7, 'data/b']"
    for i, (weight, prefix) in enumerate(zip(weights, prefixes, strict=True)):
        if not _is_number(weight):
            raise DataConfigError(f"{where}: entry {2 * i} ({weight!r}) should be a weight: "
                                  f"{example}.")
        value = float(weight)
        if not (math.isfinite(value) and value > 0):
            raise DataConfigError(
                f"{where}: weight {weight!r} of dataset {i} ({prefix!r}) is not a positive number: "
                "give every dataset a weight > 0 (drop a dataset instead of weighting it 0).")
        if _is_number(prefix) or not isinstance(prefix, (str, os.PathLike)):
            raise DataConfigError(f"{where}: entry {2 * i + 1} ({prefix!r}) should be a dataset "
                                  f"prefix: {example}.")
    prefixes = [os.fspath(p) for p in prefixes]
    return prefixes, (None if len(prefixes) == 1 else [float(w) for w in weights])


def _from_text(paths: Any) -> Any:
    """A list or dict that reached us as text (a NeMo-Run override such as
    `data.paths=[0.3,data/a,0.7,data/b]`) -> the list or dict; any other value unchanged."""
    if not isinstance(paths, str) or paths.strip()[:1] not in ("[", "{"):
        return paths
    try:
        return ast.literal_eval(paths.strip())
    except (ValueError, SyntaxError):
        if paths.strip()[0] == "{":
            raise DataConfigError(f"paths={paths!r} does not parse as a dict: quote the prefixes, "
                                  "e.g. {'train': ['data/a'], 'validation': ['data/b']}.") from None
        return [item.strip().strip("'\"") for item in paths.strip()[1:-1].split(",")]


def parse_paths(paths: Any) -> dict[str, Optional[Blend]]:
    """One blend for all splits (key "all") or one per split (keys train/validation/test)."""
    paths = _from_text(paths)
    if not isinstance(paths, dict):
        return {"all": parse_blend(paths)}
    unknown = sorted(set(paths) - set(SPLITS))
    if unknown:
        raise DataConfigError(
            f"paths has unknown split {unknown[0]!r}: the keys are 'train', 'validation', 'test'.")
    return {s: (parse_blend(_from_text(paths[s]), f"paths[{s!r}]") if paths.get(s) else None)
            for s in SPLITS}


def parse_split(split: str) -> str:
    """'900,50,50' -> the same weights as megatron reads them; refuses what megatron would
    misread (its parser keeps only digits and dots) or divide by zero on."""
    parts = [p.strip() for p in re.split(r"[,/]", str(split))]
    number = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")
    if not 1 <= len(parts) <= 3 or not all(number.match(p) for p in parts):
        raise DataConfigError(
            f"split={split!r} does not parse: give up to three comma-separated non-negative "
            "numbers for train, validation, test, e.g. split='900,50,50'.")
    if sum(float(p) for p in parts) <= 0:
        raise DataConfigError(f"split={split!r} gives every split weight 0: "
                              "e.g. split='900,50,50'.")
    return ",".join(parts)


# --- indexed dataset files -------------------------------------------------------------------
_INDEX_HEADER = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 34  # magic 9 + version 8 + dtype code 1 + sequence count 8 + document count 8
_DTYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}  # megatron's DType codes


def check_indexed_dataset(prefix: str) -> np.ndarray:
    """Check a .bin/.idx pair the way megatron will read it; returns the sequence lengths.

    Constant work besides the lengths array: header, sizes implied by the counts, document
    boundaries, and the last sequence's end against the .bin's length.
    """
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    rerun = "re-run the preprocessor to write the pair again"
    for path in (bin_path, idx_path):
        if not os.path.isfile(path):
            hint = ""
            if prefix.endswith((".bin", ".idx")):
                hint = f" (drop the extension: the prefix is {prefix[:-4]!r})"
            raise DataFileNotFoundError(
                f"{path} not found for dataset prefix {prefix!r}{hint}: a prefix names a .bin and "
                ".idx pair written by the preprocessor; check the path or preprocess the data.")
    idx_size, bin_size = os.path.getsize(idx_path), os.path.getsize(bin_path)
    with open(idx_path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if head[:9] != _INDEX_HEADER[: len(head[:9])]:
        raise IndexedDataError(f"{idx_path} is not a Megatron indexed-dataset index (bad header "
                               f"{head[:9]!r}): {rerun}.")
    if len(head) < _HEADER_BYTES:
        raise IndexedDataError(f"{idx_path} is truncated ({idx_size} bytes, header alone is "
                               f"{_HEADER_BYTES}): {rerun}.")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:])
    if version != 1:
        raise IndexedDataError(f"{idx_path} has index version {version}; megatron reads version 1: "
                               f"{rerun}.")
    if code not in _DTYPE_BYTES:
        raise IndexedDataError(f"{idx_path} names unknown token dtype code {code}: {rerun}.")
    expected = _HEADER_BYTES + n_seq * (4 + 8) + n_doc * 8
    if idx_size < expected:
        raise IndexedDataError(f"{idx_path} is truncated: {idx_size} bytes, its counts ({n_seq} "
                               f"sequences, {n_doc - 1} documents) need {expected}: {rerun}.")
    if idx_size not in (expected, expected + n_seq):  # + one mode byte per sequence: multimodal
        raise IndexedDataError(f"{idx_path} is {idx_size} bytes, its counts ({n_seq} sequences, "
                               f"{n_doc - 1} documents) need {expected}: {rerun}.")
    if n_seq == 0 or n_doc < 2:
        raise IndexedDataError(f"{idx_path} holds no documents: preprocess a non-empty input.")
    lengths = np.memmap(idx_path, dtype=np.int32, mode="r", offset=_HEADER_BYTES, shape=(n_seq,))
    pointers = np.memmap(idx_path, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 4 * n_seq,
                         shape=(n_seq,))
    docs = np.memmap(idx_path, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 12 * n_seq,
                     shape=(n_doc,))
    if docs[0] != 0 or docs[-1] != n_seq or pointers[0] != 0 or lengths.min() < 0:
        raise IndexedDataError(f"{idx_path} is corrupt (its document or sequence table is "
                               f"inconsistent): {rerun}.")
    described = int(pointers[-1]) + int(lengths[-1]) * _DTYPE_BYTES[code]
    if bin_size != described:
        state = "truncated" if bin_size < described else "longer than its index says"
        raise IndexedDataError(
            f"{bin_path} is {state}: {bin_size} bytes, {idx_path} describes {described}. The pair "
            f"comes from an interrupted or different preprocessing run: {rerun}.")
    return np.asarray(lengths)


# --- the tokenizer megatron reads ------------------------------------------------------------
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
        if rampup_batch_size is not None:
            raise NotImplementedError("rampup_batch_size is not supported yet: leave it None.")
        self.blends = parse_paths(paths)
        self.split = parse_split(split) if "all" in self.blends else None
        if "all" not in self.blends and split != "900,50,50":
            warnings.warn(f"split={split!r} is not used: paths gives each split its own datasets.",
                          stacklevel=2)
        self.paths = paths
        self.seq_length = seq_length
        self.tokenizer = get_tokenizer(tokenizer or "byte")  # a path or "byte" too
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
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
        limits = [trainer.limit_val_batches, trainer.limit_test_batches]
        if getattr(trainer, "_nemo_lite_limits_scaled", False):  # counted in micro-batches
            micro = self.global_batch_size // (self.micro_batch_size * data_parallel_rank_and_size()[1])
            limits = [x // micro if isinstance(x, int) else x for x in limits]
        self.build(trainer.max_steps, trainer.val_check_interval, *limits, stage=stage)

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
    def _loader(self, split: str, consumed: int, drop_last: bool) -> DataLoader:
        return self.megatron_loader(MegatronSamples(self.datasets[split]), consumed,
                                    training=split == "train")

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            raise DataConfigError("no training dataset was built: paths needs a 'train' entry "
                                  "and split a non-zero train weight (setup('fit') builds it).")
        return self._loader("train", self.init_consumed_samples, drop_last=True)

    def val_dataloader(self) -> Union[DataLoader, list[Any]]:
        return self._loader("validation", 0, False) if "validation" in self.datasets else []

    def test_dataloader(self) -> Union[DataLoader, list[Any]]:
        return self._loader("test", 0, False) if "test" in self.datasets else []
