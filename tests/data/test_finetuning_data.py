"""FineTuningDataModule: loss masks written by hand, the chat template, truncation, shuffled
epochs, and clear errors for bad files and options (real jsonl files, ByteTokenizer)."""

import json
import typing
from types import SimpleNamespace

import pytest
import torch

from nemo_lite.io.capture import captured
from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.finetuning import (
    FineTuningDataError,
    FineTuningDataModule,
    SFTDataset,
    load_examples,
)
from nemo_lite.llm.tokenizer import ByteTokenizer

EOS, PAD = 256, 257  # ByteTokenizer's eos_id and pad_id; other ids are UTF-8 bytes


def write(path, *lines) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def module(path, **kw) -> FineTuningDataModule:
    kw.setdefault("micro_batch_size", 1)
    kw.setdefault("global_batch_size", 1)
    return FineTuningDataModule(train_path=path, **kw)


def test_prompt_answer_mask_by_hand(tmp_path):
    data = module(write(tmp_path / "a.jsonl", {"input": "Q:hi", "output": "ok"}), seq_length=8)
    row = data.rows("train")[0]
    # ids: Q=81 :=58 h=104 i=105 | o=111 k=107 eos | padded to 8 input tokens
    assert row["tokens"].tolist() == [81, 58, 104, 105, 111, 107, PAD, PAD]
    assert row["labels"].tolist() == [58, 104, 105, 111, 107, EOS, PAD, PAD]
    # labels o, k and eos are the answer: trained; the prompt and the padding are not
    assert row["loss_mask"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert row["position_ids"].tolist() == list(range(8))
    assert "cu_seqlens" not in row


def test_prompt_template_and_nemo_style_output_placeholder(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "hi", "output": "ok", "ctx": "C"})
    for template in ("{ctx}|{input}=", "{ctx}|{input}={output}"):
        row = module(path, seq_length=8, prompt_template=template).rows("train")[0]
        # prompt "C|hi=" (67 124 104 105 61), answer "ok" + eos
        assert row["tokens"].tolist() == [67, 124, 104, 105, 61, 111, 107, PAD]
        assert row["loss_mask"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]


def test_answer_only_loss_false_trains_the_prompt_too(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "ab", "output": "c"})
    row = module(path, seq_length=4, answer_only_loss=False).rows("train")[0]
    assert row["labels"].tolist() == [98, 99, EOS, PAD]
    assert row["loss_mask"].tolist() == [1, 1, 1, 0]


def test_chat_template_and_mask(tmp_path):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"},
                {"role": "assistant", "content": "B"}]
    data = module(write(tmp_path / "c.jsonl", {"messages": messages}), seq_length=100)
    row = data.rows("train")[0]
    # The documented template, and which ids are trained (1) - written out here by hand.
    first = list(b"<|system|>\nS\n<|user|>\nU\n<|assistant|>\n")
    second = list(b"<|user|>\nV\n<|assistant|>\n")
    ids = first + [ord("A"), EOS] + second + [ord("B"), EOS]
    trained = [0] * len(first) + [1, 1] + [0] * len(second) + [1, 1]
    n = len(ids) - 1
    assert row["tokens"][:n].tolist() == ids[:-1]
    assert row["labels"][:n].tolist() == ids[1:]
    assert row["loss_mask"].tolist() == trained[1:] + [0] * (100 - n)
    text = ByteTokenizer().ids_to_text(row["tokens"][:n].tolist())  # eos ids print as nothing
    assert text == "<|system|>\nS\n<|user|>\nU\n<|assistant|>\nA<|user|>\nV\n<|assistant|>\nB"


def test_truncation_keeps_the_first_seq_length_plus_one_ids(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "Q:hi", "output": "okay"})
    row = module(path, seq_length=5).rows("train")[0]
    # Q : h i o k a y eos -> first 6 ids: the tail of the answer and its eos are cut
    assert row["tokens"].tolist() == [81, 58, 104, 105, 111]
    assert row["labels"].tolist() == [58, 104, 105, 111, 107]
    assert row["loss_mask"].tolist() == [0, 0, 0, 1, 1]


def test_prompt_of_exactly_seq_length_keeps_one_answer_token(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "abcde", "output": "xy"})
    row = module(path, seq_length=5).rows("train")[0]
    assert row["labels"].tolist() == [98, 99, 100, 101, 120]
    assert row["loss_mask"].tolist() == [0, 0, 0, 0, 1]


def test_prompt_longer_than_seq_length_errors_with_the_line_or_is_skipped(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "ab", "output": "c"}, "",
                 {"input": "abcdef", "output": "x"})
    with pytest.raises(FineTuningDataError, match=r"a\.jsonl:3: the prompt alone fills "
                                                  r"seq_length=5.*drop_long_prompts=True"):
        module(path, seq_length=5).rows("train")
    with pytest.warns(UserWarning, match=r"skipped 1 example\(s\).*lines 3\)"):
        examples = load_examples(tmp_path / "a.jsonl", ByteTokenizer(), 5, drop_long_prompts=True)
    assert [e.ids for e in examples] == [(97, 98, 99, EOS)]


BAD_LINES = [
    ('{"input": "a", "output": ', r"bad\.jsonl:2: not valid JSON"),
    ('["input", "output"]', r"bad\.jsonl:2: a JSON list, expected an object"),
    ({"input": "a", "answer": "b"}, r"bad\.jsonl:2: missing 'output'.*found keys \['answer'"),
    ({"input": 1, "output": "b"}, r"bad\.jsonl:2: 'input' and 'output' must be strings"),
    ({"messages": []}, r"bad\.jsonl:2: 'messages' must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"bad\.jsonl:2: message 0 has role 'bot'"),
    ({"messages": [{"role": "user"}]}, r"bad\.jsonl:2: message 0 needs a string 'content'"),
    ({"messages": [{"role": "user", "content": "x"}]}, r"bad\.jsonl:2: .*no assistant message"),
]


@pytest.mark.parametrize("line,message", BAD_LINES,
                         ids=[m.split(": ")[1][:24] for _, m in BAD_LINES])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", {"input": "ok", "output": "fine"}, line)
    with pytest.raises(FineTuningDataError, match=message):
        module(path, seq_length=16).rows("train")


def test_template_key_missing_from_a_line(tmp_path):
    path = write(tmp_path / "t.jsonl", {"input": "a", "output": "b"})
    with pytest.raises(FineTuningDataError, match=r"t\.jsonl:1: prompt_template uses {ctx}"):
        module(path, seq_length=8, prompt_template="{ctx} {input}").rows("train")


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        module(str(tmp_path / "nope.jsonl"), seq_length=8).rows("train")
    empty = write(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(FineTuningDataError, match="empty.jsonl holds no usable examples"):
        module(empty, seq_length=8).rows("train")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(FineTuningDataError, match="bin.jsonl is not UTF-8"):
        module(str(tmp_path / "bin.jsonl"), seq_length=8).rows("train")


def test_bad_options_are_refused_at_construction(tmp_path):
    path = write(tmp_path / "a.jsonl", {"input": "a", "output": "b"})
    with pytest.raises(FineTuningDataError, match="micro_batch_size=1"):
        module(path, seq_length=8, packed_sequence=True, micro_batch_size=2, global_batch_size=2)
    with pytest.raises(FineTuningDataError, match="packed_sequence_size=4 < seq_length=8"):
        module(path, seq_length=8, packed_sequence_size=4)
    with pytest.raises(FineTuningDataError, match="dataset_root .* or train_path"):
        FineTuningDataModule(seq_length=8)
    with pytest.raises(FineTuningDataError, match="{output} only at its end"):
        module(path, seq_length=8, prompt_template="{output} {input}")


def test_dataset_root_splits_and_optional_validation(tmp_path):
    write(tmp_path / "training.jsonl", {"input": "a", "output": "b"}, {"input": "c", "output": "d"})
    data = FineTuningDataModule(dataset_root=str(tmp_path), seq_length=4, micro_batch_size=1,
                                global_batch_size=1)
    data.setup("fit")
    assert len(data.rows("train")) == 2
    assert data.rows("validation") is None and data.val_dataloader() == []
    # an explicit validation path must exist
    explicit = FineTuningDataModule(dataset_root=str(tmp_path), seq_length=4, micro_batch_size=1,
                                    global_batch_size=1, validation_path=str(tmp_path / "v.jsonl"))
    with pytest.raises(FileNotFoundError, match="v.jsonl"):
        explicit.setup("validate")


def test_packed_module_rows_and_recorded_config(tmp_path):
    lines = [{"input": "x" * n, "output": "y" * n} for n in (1, 2, 3, 4, 5)]
    data = module(write(tmp_path / "a.jsonl", *lines), seq_length=11, packed_sequence_size=20)
    rows = data.rows("train")
    # rows of 20 tokens (what Megatron's schedule reads as seq_length); examples cut at 11
    assert (data.seq_length, data.max_example_length, rows.size) == (20, 11, 20)
    assert max(e.num_tokens for e in rows.examples) == 10  # "xxxxx" + "yyyyy" + eos: 11 ids
    total = sum(int(rows[i]["loss_mask"].sum()) for i in range(len(rows)))
    assert total == sum(n + 1 for n in (1, 2, 3, 4, 5))  # each answer and its eos
    args = captured(data).arguments
    assert args["packed_sequence_size"] == 20 and args["train_path"].endswith("a.jsonl")
    # NeMo-Run parses overrides from real annotations (no PEP 563 strings)
    hints = typing.get_type_hints(FineTuningDataModule.__init__)
    assert hints["packed_sequence_size"] == typing.Optional[int]


def test_epochs_are_seeded_permutations_and_pad_index_is_masked(tmp_path):
    lines = [{"input": str(i), "output": "z"} for i in range(10)]
    rows = module(write(tmp_path / "a.jsonl", *lines), seq_length=4).rows("train")
    ds = SFTDataset(rows, epochs=3, seed=5, shuffle=True)
    assert len(ds) == 30
    key = [tuple(ds[i]["tokens"].tolist()) for i in range(30)]
    every = sorted(tuple(rows[i]["tokens"].tolist()) for i in range(10))
    epochs = [key[e * 10:(e + 1) * 10] for e in range(3)]
    assert all(sorted(e) == every for e in epochs)  # each epoch: every example once
    assert epochs[0] != epochs[1]  # reshuffled per epoch
    again = SFTDataset(rows, epochs=3, seed=5, shuffle=True)
    assert [tuple(again[i]["tokens"].tolist()) for i in range(30)] == key  # resumable order
    assert SFTDataset(rows)[3]["tokens"].tolist() == rows[3]["tokens"].tolist()  # eval: in order
    assert torch.count_nonzero(ds[PAD_INDEX]["loss_mask"]) == 0


def test_epochs_cover_max_steps(tmp_path):
    lines = [{"input": str(i), "output": "z"} for i in range(24)]
    data = module(write(tmp_path / "a.jsonl", *lines), seq_length=4, global_batch_size=8)
    assert data._epochs(24) == 1
    data.trainer = SimpleNamespace(max_steps=10)
    assert data._epochs(24) == 4  # 80 samples over 24 examples


def test_recipe_factory_builds_and_the_saved_context_rebuilds_it(tmp_path):
    import fiddle as fdl

    from nemo_lite.io import load_context, save_context
    from recipes.sft_data import finetuning_data

    path = write(tmp_path / "a.jsonl", {"input": "a", "output": "b"})
    config = finetuning_data(train_path=path, seq_length=8, global_batch_size=2,
                             packed_sequence=True)
    data = fdl.build(config)
    assert isinstance(data, FineTuningDataModule) and data.packed and data.micro_batch_size == 1
    save_context(tmp_path / "ckpt", data=data)
    again = load_context(tmp_path / "ckpt", subpath="data")
    assert isinstance(again, FineTuningDataModule)
    assert (again.packed, again.seq_length, again.paths["train"]) == (True, 8, data.paths["train"])
    assert isinstance(again.tokenizer, ByteTokenizer)
