"""FineTuningDataModule: supervised fine-tuning (SFT) data from jsonl, with answer-only loss masks.

Each non-empty line of a jsonl file is one JSON object, either
  {"input": "...", "output": "..."}   prompt, answer (other keys may feed `prompt_template`)
  {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
The chat form is rendered with this template (`<eos>` is the tokenizer's eos id, not text):
  <|system|>\\n{content}\\n   <|user|>\\n{content}\\n   <|assistant|>\\n{content}<eos>
Loss is taken on exactly the answer tokens and the eos after each answer (every assistant
`content` and its eos), never on prompts, headers or padding (`answer_only_loss=False`: every
token). Each piece is tokenized on its own and the ids are concatenated.

Truncation: an example is cut to its first `seq_length + 1` ids (tokens = ids[:-1], labels =
ids[1:]), so a long answer loses its tail (and its eos). An example with no trained label left
(its prompt alone fills `seq_length`) raises an error naming file:line, or, with
`drop_long_prompts=True`, is skipped and counted in one warning.

Unpacked, each example is padded to `seq_length` (pad tokens masked). Packed
(`packed_sequence=True` or a `packed_sequence_size`, default `seq_length`), examples are packed
into rows by `nemo_lite.llm.data.packing` (one row per micro-batch, THD layout: `micro_batch_size`
must be 1, and `global_batch_size` counts rows). The module's `seq_length` attribute is then the
packed row length, which Megatron's schedule reads (set the model's `seq_length` to it, as in
NeMo); `max_example_length` keeps the truncation length.

Training order is a seeded shuffle per epoch (of examples, or of packed rows); validation and test
keep file order. Sampling uses Megatron's batch sampler and resumes at the checkpoint's consumed
samples, as `MockDataModule` does. Files are read and tokenized in full when first used (on every
rank): meant for SFT-sized data, not for pretraining corpora.
"""

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.chat_format import EOS, Piece, chat_turns, checked_messages
from nemo_lite.llm.data.packing import PackedRows, TokenizedExample
from nemo_lite.llm.data.resumable import ResumableDataMixin

SPLIT_FILES = {"train": "training.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}


class FineTuningDataError(ValueError):
    """A fine-tuning data file or option is unusable; the message says where and how to fix it."""




class _PromptTooLong(Exception):
    """No trained label fits in seq_length + 1 ids."""


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line."""
    if not path.is_file():
        raise FileNotFoundError(
            f"fine-tuning data file {path} does not exist: give an existing jsonl file "
            "(or a dataset_root holding training.jsonl / validation.jsonl / test.jsonl)."
        )
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise FineTuningDataError(f"{path} is not UTF-8 text ({error.reason}).") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FineTuningDataError(
                f"{path}:{lineno}: not valid JSON ({error.msg}, column {error.colno}); each line "
                "must be one JSON object."
            ) from None
        if not isinstance(record, dict):
            raise FineTuningDataError(
                f"{path}:{lineno}: a JSON {type(record).__name__}, expected an object with "
                "'input' and 'output' or 'messages'."
            )
        records.append((lineno, record))
    return records


def _render_chat(messages: Any, where: str) -> list[Piece]:
    """(text, trained) pieces of a conversation, with the eos after each answer."""
    pieces = chat_turns(checked_messages(messages, where, FineTuningDataError))
    if not any(trained for _, trained in pieces):
        raise FineTuningDataError(f"{where}: the conversation has no assistant message to learn.")
    return pieces


def _render_prompt_answer(
    record: dict[str, Any], where: str, template: Optional[str]
) -> list[Piece]:
    missing = [key for key in ("input", "output") if key not in record]
    if missing:
        raise FineTuningDataError(
            f"{where}: missing {' and '.join(repr(k) for k in missing)}; each line needs "
            f"'input' and 'output' (or 'messages'); found keys {sorted(record)}."
        )
    if not isinstance(record["input"], str) or not isinstance(record["output"], str):
        raise FineTuningDataError(f"{where}: 'input' and 'output' must be strings.")
    prompt = record["input"]
    if template is not None:
        try:
            prompt = template.format_map(record)
        except KeyError as error:
            raise FineTuningDataError(
                f"{where}: prompt_template uses {{{error.args[0]}}} but the line has no such key."
            ) from None
    return [(prompt, False), (record["output"], True), (EOS, True)]


def tokenize_example(
    pieces: Sequence[Piece],
    tokenizer: Any,
    seq_length: int,
    answer_only_loss: bool = True,
) -> TokenizedExample:
    """Ids and per-label loss mask of rendered pieces, cut to seq_length + 1 ids."""
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in pieces:
        piece = [tokenizer.eos_id] if text is EOS else tokenizer.text_to_ids(text)
        ids += piece
        trained += [is_trained or not answer_only_loss] * len(piece)
    ids, trained = ids[: seq_length + 1], trained[: seq_length + 1]
    if len(ids) < 2 or not any(trained[1:]):
        raise _PromptTooLong
    return TokenizedExample(tuple(ids), tuple(int(t) for t in trained[1:]))


def load_examples(
    path: Path,
    tokenizer: Any,
    seq_length: int,
    prompt_template: Optional[str] = None,
    answer_only_loss: bool = True,
    drop_long_prompts: bool = False,
) -> list[TokenizedExample]:
    """Every example of a jsonl file, tokenized; clear errors for anything unusable."""
    examples: list[TokenizedExample] = []
    dropped: list[int] = []
    for lineno, record in read_jsonl(path):
        where = f"{path}:{lineno}"
        if "messages" in record:
            pieces = _render_chat(record["messages"], where)
        else:
            pieces = _render_prompt_answer(record, where, prompt_template)
        try:
            examples.append(tokenize_example(pieces, tokenizer, seq_length, answer_only_loss))
        except _PromptTooLong:
            if not drop_long_prompts:
                raise FineTuningDataError(
                    f"{where}: the prompt alone fills seq_length={seq_length} tokens, so no answer "
                    "token is left to train on: raise seq_length, shorten the prompt, or pass "
                    "drop_long_prompts=True to skip such lines."
                ) from None
            dropped.append(lineno)
    if dropped:
        warnings.warn(
            f"{path}: skipped {len(dropped)} example(s) whose prompt fills seq_length="
            f"{seq_length} (lines {', '.join(map(str, dropped[:10]))}"
            f"{', ...' if len(dropped) > 10 else ''}).",
            stacklevel=2,
        )
    if not examples:
        raise FineTuningDataError(f"{path} holds no usable examples: add at least one line.")
    return examples


class PaddedRows:
    """Unpacked rows: one example per row, padded to seq_length (padding masked)."""

    def __init__(self, examples: Sequence[TokenizedExample], seq_length: int, pad_id: int):
        self.examples = examples
        self.seq_length = seq_length
        self.pad_id = pad_id
        self.position_ids = torch.arange(seq_length, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def _row(self, ids: Sequence[int], mask: Sequence[int]) -> dict[str, torch.Tensor]:
        pad = self.seq_length - len(mask)
        tokens = list(ids[:-1]) + [self.pad_id] * pad
        labels = list(ids[1:]) + [self.pad_id] * pad
        return {
            "tokens": torch.tensor(tokens, dtype=torch.int64),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "loss_mask": torch.tensor(list(mask) + [0] * pad, dtype=torch.float32),
            "position_ids": self.position_ids,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        return self._row(example.ids, example.loss_mask)

    def padding_row(self) -> dict[str, torch.Tensor]:
        return self._row([self.pad_id], [])


class SFTDataset(Dataset):
    """`epochs` passes over rows (packed or not), each pass in its own seeded order if shuffled.

    Global sample index i is row perm_e[i mod n] of epoch e = i // n, so Megatron's sampler can
    resume at any consumed-samples count, and PAD_INDEX gives an all-masked row.
    """

    def __init__(self, rows: Any, epochs: int = 1, seed: int = 0, shuffle: bool = False) -> None:
        self.rows = rows
        self.epochs = max(1, epochs)
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.rows) * self.epochs

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.rows), generator=g).tolist()
        return self._orders[epoch]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index == PAD_INDEX:
            return self.rows.padding_row()
        epoch, j = divmod(index, len(self.rows))
        return self.rows[self._order(epoch)[j] if self.shuffle else j]


def _split_paths(dataset_root: Optional[str], paths: dict) -> dict[str, Optional[Path]]:
    """Explicit paths win; otherwise <dataset_root>/training.jsonl, validation.jsonl, test.jsonl."""
    if dataset_root is None and paths["train"] is None:
        raise FineTuningDataError(
            "FineTuningDataModule needs dataset_root (with training.jsonl) or train_path."
        )
    root = Path(dataset_root) if dataset_root is not None else None
    return {
        split: Path(p) if p is not None else (root / SPLIT_FILES[split] if root else None)
        for split, p in paths.items()
    }


class FineTuningDataModule(ResumableDataMixin, pl.LightningDataModule, IOMixin):
    """NeMo 2.0's FineTuningDataModule arguments (jsonl SFT data), packed or padded rows."""

    def __init__(
        self,
        dataset_root: Optional[str] = None,
        seq_length: int = 2048,
        tokenizer: Any = None,
        micro_batch_size: int = 4,
        global_batch_size: int = 8,
        rampup_batch_size: Optional[list[int]] = None,
        seed: int = 1234,
        train_path: Optional[str] = None,
        validation_path: Optional[str] = None,
        test_path: Optional[str] = None,
        prompt_template: Optional[str] = None,
        answer_only_loss: bool = True,
        packed_sequence: bool = False,
        packed_sequence_size: Optional[int] = None,
        drop_long_prompts: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        if seq_length < 1:
            raise FineTuningDataError(f"seq_length must be >= 1, got {seq_length}.")
        self.packed = packed_sequence or (packed_sequence_size or 0) > 0
        self.packed_size = (packed_sequence_size or 0) if self.packed else 0
        self.packed_size = self.packed_size if self.packed_size > 0 else seq_length
        if self.packed and self.packed_size < seq_length:
            raise FineTuningDataError(
                f"packed_sequence_size={self.packed_size} < seq_length={seq_length}: an example "
                "of seq_length tokens must fit one packed row; raise packed_sequence_size."
            )
        if self.packed and micro_batch_size != 1:
            raise FineTuningDataError(
                f"packed sequences need micro_batch_size=1 (one packed row per micro-batch, THD "
                f"layout), got {micro_batch_size}: set micro_batch_size=1 and count "
                "global_batch_size in packed rows."
            )
        if prompt_template is not None and prompt_template.endswith("{output}"):
            prompt_template = prompt_template[: -len("{output}")]  # NeMo's "{input} {output}"
        if prompt_template is not None and "{output}" in prompt_template:
            raise FineTuningDataError(
                "prompt_template may use {output} only at its end: the answer follows the prompt."
            )
        paths = {"train": train_path, "validation": validation_path, "test": test_path}
        self.paths = _split_paths(dataset_root, paths)
        self.explicit = {split for split, p in paths.items() if p is not None}
        self.dataset_root = dataset_root
        self.max_example_length = seq_length  # truncation length of one example
        # seq_length: what Megatron's schedule reads, the length of every row the model sees
        self.init_batching(seq_length=self.packed_size if self.packed else seq_length,
                           tokenizer=tokenizer, micro_batch_size=micro_batch_size,
                           global_batch_size=global_batch_size,
                           rampup_batch_size=rampup_batch_size, num_workers=num_workers,
                           pin_memory=pin_memory, persistent_workers=persistent_workers)
        if getattr(self.tokenizer, "eos_id", None) is None:
            raise FineTuningDataError("the tokenizer has no eos_id: answers must end with eos.")
        pad_id = getattr(self.tokenizer, "pad_id", None)
        self.pad_id = pad_id if pad_id is not None and pad_id >= 0 else self.tokenizer.eos_id
        self.seed = seed
        self.prompt_template = prompt_template
        self.answer_only_loss = answer_only_loss
        self.drop_long_prompts = drop_long_prompts
        self._rows: dict[str, Any] = {}

    def rows(self, split: str) -> Any:
        """The split's rows (packed or padded), built on first use; None if it has no file."""
        if split not in self._rows:
            path = self.paths[split]
            if path is None or (split not in self.explicit and split != "train"
                                and not path.is_file()):
                self._rows[split] = None
            else:
                examples = load_examples(path, self.tokenizer, self.max_example_length,
                                         self.prompt_template, self.answer_only_loss,
                                         self.drop_long_prompts)
                self._rows[split] = (PackedRows(examples, self.packed_size, self.pad_id)
                                     if self.packed else
                                     PaddedRows(examples, self.max_example_length, self.pad_id))
        return self._rows[split]

    def setup(self, stage: str = "") -> None:
        splits = {"fit": ("train", "validation"), "validate": ("validation",),
                  "test": ("test",)}.get(stage, ("train", "validation", "test"))
        for split in splits:
            self.rows(split)

    def _epochs(self, num_rows: int) -> int:
        """Passes needed for trainer.max_steps global batches (1 without a step limit)."""
        trainer = getattr(self, "trainer", None)
        max_steps = getattr(trainer, "max_steps", -1) if trainer is not None else -1
        if max_steps is None or max_steps <= 0:
            return 1
        return max(1, math.ceil(max_steps * self.global_batch_size / num_rows))

    def train_dataloader(self) -> DataLoader:
        rows = self.rows("train")
        if len(rows) < self.global_batch_size:
            warnings.warn(
                f"{self.paths['train']} gives {len(rows)} "
                f"{'packed rows' if self.packed else 'examples'}, fewer than "
                f"global_batch_size={self.global_batch_size}: each global batch repeats some.",
                stacklevel=2,
            )
        dataset = SFTDataset(rows, self._epochs(len(rows)), self.seed, shuffle=True)
        return self.megatron_loader(dataset, self.init_consumed_samples, training=True)

    def _eval_loader(self, split: str) -> Any:
        rows = self.rows(split)
        if rows is None:
            return []  # no such file under dataset_root: nothing to evaluate
        return self.megatron_loader(SFTDataset(rows), 0, training=False)

    def val_dataloader(self) -> Any:
        return self._eval_loader("validation")

    def test_dataloader(self) -> Any:
        return self._eval_loader("test")
