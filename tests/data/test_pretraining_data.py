"""PreTrainingDataModule on real .bin/.idx files written with megatron's IndexedDatasetBuilder.

Documents use identifying tokens (1 + 100 * document + position), so what a sample holds can
be checked against the documents themselves: consecutive tokens of one document, then the
end-of-document id, then the start of another document.
"""

import math
import struct

import numpy as np
import pytest
import torch

from nemo_lite.lightning.sampler import PAD_INDEX
from nemo_lite.llm.data.pretraining import (
    DataConfigError,
    DataFileNotFoundError,
    IndexedDataError,
    MegatronSamples,
    PreTrainingDataModule,
)
from nemo_lite.llm.tokenizer import ByteTokenizer

EOD, PAD, SEQ = 9999, 9998, 32


class IdTokenizer:
    vocab_size, eos_id, pad_id = 10_000, EOD, PAD


def write(prefix, docs, dtype=np.int32):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def id_docs(n, seed=0):
    """Document d: tokens 1 + 100 d + p for p < its length (5 to 60), then EOD."""
    rng = np.random.default_rng(seed)
    return [[1 + 100 * d + p for p in range(int(rng.integers(5, 61)))] + [EOD] for d in range(n)]


def module(paths, tmp_path, **kw):
    kw = {"seq_length": SEQ, "global_batch_size": 8, "micro_batch_size": 2,
          "tokenizer": IdTokenizer(), "index_mapping_dir": str(tmp_path / "cache"), **kw}
    return PreTrainingDataModule(paths, **kw)


def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def doc_of(token):
    return (int(token) - 1) // 100


def assert_document_stream(sample, docs):
    """tokens + the last label are consecutive tokens of the documents, EOD between them."""
    tokens, labels = sample["tokens"], sample["labels"]
    assert tokens.dtype == labels.dtype == torch.int64 and tokens.shape == (SEQ,)
    assert torch.equal(tokens[1:], labels[:-1])
    stream = tokens.tolist() + [int(labels[-1])]
    for a, b in zip(stream, stream[1:], strict=False):
        if a == EOD:
            assert b != EOD and (b - 1) % 100 == 0, (a, b)  # the start of some document
        else:
            doc = docs[doc_of(a)]
            p = doc.index(a)
            assert b == doc[p + 1], (a, b)


def test_samples_are_the_documents_tokens(tmp_path):
    docs = id_docs(40)
    prefix = write(tmp_path / "ids", docs)
    tokens = sum(len(d) for d in docs)
    epoch = (tokens - 1) // SEQ  # samples in one pass over the documents
    data = module(prefix, tmp_path, split="1", num_train_samples=epoch)
    data.build(0, stage="fit")
    dataset = MegatronSamples(data.datasets["train"])
    assert len(dataset) == epoch
    seen = []
    for sample in samples(dataset):
        assert_document_stream(sample, docs)
        assert sample["loss_mask"].dtype == torch.float32 and bool(sample["loss_mask"].all())
        assert torch.equal(sample["position_ids"], torch.arange(SEQ))
        assert "attention_mask" not in sample
        seen += [t for t in sample["tokens"].tolist() if t != EOD]
    assert len(seen) == len(set(seen))  # one pass: no token twice
    missing = {t for d in docs for t in d if t != EOD} - set(seen)
    assert len(missing) <= SEQ  # only the partial last sequence is dropped


def test_masks_and_positions_reset_at_document_ends(tmp_path):
    docs = id_docs(30, seed=1)
    prefix = write(tmp_path / "ids", docs)
    data = module(prefix, tmp_path, split="1", num_train_samples=20, eod_mask_loss=True,
                  reset_position_ids=True, reset_attention_mask=True)
    data.build(0, stage="fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"tokens", "labels", "loss_mask", "position_ids", "attention_mask"}
    mask = batch["attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == (2, 1, SEQ, SEQ)
    for row in range(2):
        tokens = batch["tokens"][row].tolist()
        assert batch["loss_mask"][row].tolist() == [0.0 if t == EOD else 1.0 for t in tokens]
        starts = [0] + [i + 1 for i, t in enumerate(tokens) if t == EOD]
        start_of = [max(s for s in starts if s <= i) for i in range(SEQ)]
        assert batch["position_ids"][row].tolist() == [i - start_of[i] for i in range(SEQ)]
        allowed = torch.tensor([[start_of[i] <= j <= i for j in range(SEQ)] for i in range(SEQ)])
        assert torch.equal(mask[row, 0], ~allowed)  # True = masked


def test_blend_weights_are_honoured(tmp_path):
    rng = np.random.default_rng(2)

    def docs(lo, hi):
        return [list(rng.integers(lo, hi, int(rng.integers(10, 60)))) + [256] for _ in range(150)]

    a, b = write(tmp_path / "a", docs(0, 100), np.uint16), write(tmp_path / "b", docs(100, 200),
                                                                   np.uint16)
    data = module(["0.25", a, 0.75, b], tmp_path, tokenizer=ByteTokenizer())
    data.build(250, stage="fit")  # 250 steps x 8 = 2000 samples
    dataset = MegatronSamples(data.datasets["train"])
    assert len(dataset) >= 2000
    from_a = 0
    for i in range(2000):
        ids = set(dataset[i]["tokens"].tolist() + dataset[i]["labels"].tolist()) - {256}
        assert ids and (max(ids) < 100 or min(ids) >= 100), "a sample mixes the two datasets"
        from_a += max(ids) < 100
    assert abs(from_a / 2000 - 0.25) < 0.01, from_a / 2000
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (2, SEQ) and batch["loss_mask"].dtype == torch.float32


def test_split_gives_each_split_its_own_documents(tmp_path):
    docs = id_docs(100, seed=3)
    prefix = write(tmp_path / "ids", docs)
    data = module(prefix, tmp_path, split="80,10,10")
    data.build(4, 2, 1.0, 1.0)  # fractions: one epoch of validation and test
    bounds = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}
    assert set(data.datasets) == set(bounds)
    assert len(data.datasets["train"]) >= 4 * 8
    for split, (lo, hi) in bounds.items():
        ids = {doc_of(t) for s in samples(MegatronSamples(data.datasets[split]))
               for t in s["tokens"].tolist() if t != EOD}
        assert ids <= set(range(lo, hi)), (split, sorted(ids))
        if split != "train":  # a whole epoch of the split reaches (nearly) every document
            assert len(ids) >= hi - lo - 1, (split, sorted(ids))


def test_paths_per_split(tmp_path):
    train = write(tmp_path / "train", id_docs(20, seed=4))
    valid = write(tmp_path / "valid", id_docs(20, seed=5))
    data = module({"train": [train], "validation": valid}, tmp_path)
    data.build(3, 1, 2, 0)
    assert len(data.datasets["train"]) >= 24
    assert len(data.datasets["validation"]) >= (3 // 1 + 1) * 2 * 8
    assert "test" not in data.datasets and data.test_dataloader() == []
    data.build(3, 1, 0, 0, stage="validate")  # nothing asked for: nothing built
    assert data.datasets == {} and data.val_dataloader() == []


def test_sample_counts_follow_the_trainer(tmp_path):
    prefix = write(tmp_path / "ids", id_docs(10))
    data = module(prefix, tmp_path)
    steps, vci, val, test, gbs = 10, 5, 2, 3, 8
    counts = data.num_samples(steps, vci, val, test)
    assert counts == {"train": steps * gbs, "validation": (steps // vci + 1) * val * gbs,
                      "test": test * gbs}
    assert data.num_samples(steps, vci, 0, 0) == {"train": steps * gbs}
    assert data.num_samples(steps, vci, 1.0, 0)["validation"] is None  # one epoch
    bigger = module(prefix, tmp_path, num_train_samples=1000, num_val_samples=7)
    assert bigger.num_samples(steps, vci, val, 0) == {"train": 1000, "validation": 7}
    with pytest.raises(DataConfigError, match="num_train_samples=10 is fewer than"):
        module(prefix, tmp_path, num_train_samples=10).num_samples(steps)
    with pytest.raises(DataConfigError, match="set trainer max_steps"):
        data.num_samples(-1)
    weighted = module([1, prefix, 2, write(tmp_path / "b", id_docs(10, 1))], tmp_path)
    with pytest.raises(DataConfigError, match="limit_val_batches=1.0 .*a whole epoch"):
        weighted.num_samples(steps, vci, 1.0, 0)


def test_resumed_loader_starts_at_the_next_global_batch(tmp_path):
    prefix = write(tmp_path / "ids", id_docs(30))
    data = module(prefix, tmp_path)
    data.build(6, stage="fit")
    fresh = [b["tokens"] for b in data.train_dataloader()]
    steps = len(data.datasets["train"]) // 8  # megatron builds whole epochs: >= 6 x 8 samples
    assert steps >= 6 and len(fresh) == steps * 4  # 4 micro-batches of 2 per global batch
    data.load_state_dict({"consumed_samples": 16, "global_step": 2})
    resumed = [b["tokens"] for b in data.train_dataloader()]
    assert len(resumed) == len(fresh) - 8
    assert all(torch.equal(x, y) for x, y in zip(resumed, fresh[8:], strict=True))
    assert data.state_dict() == {"consumed_samples": 16, "global_step": 2}


def test_worker_processes_load_the_same_batches(tmp_path):
    prefix = write(tmp_path / "ids", id_docs(30))
    inline, workers = module(prefix, tmp_path), module(prefix, tmp_path, num_workers=2)
    inline.build(4, stage="fit")
    workers.build(4, stage="fit")
    pairs = list(zip(inline.train_dataloader(), workers.train_dataloader(), strict=True))
    assert pairs and all(torch.equal(x["tokens"], y["tokens"]) for x, y in pairs)


def test_padding_index_is_a_sample_without_loss(tmp_path):
    prefix = write(tmp_path / "ids", id_docs(30))
    data = module(prefix, tmp_path, split="1")
    data.build(1, stage="fit")
    dataset = MegatronSamples(data.datasets["train"])
    pad = dataset[PAD_INDEX]
    assert pad["tokens"].shape == (SEQ,) and float(pad["loss_mask"].sum()) == 0.0


def test_config_is_recorded_and_rebuilds(tmp_path):
    import fiddle as fdl

    from nemo_lite.io import to_config
    from nemo_lite.io.capture import captured

    a, b = write(tmp_path / "a", id_docs(10)), write(tmp_path / "b", id_docs(10, 1))
    data = module([2, a, 1, b], tmp_path, seed=7, tokenizer=ByteTokenizer())
    args = captured(data).arguments
    assert args["paths"] == [2, a, 1, b] and args["seed"] == 7
    rebuilt = fdl.build(to_config(data))
    assert rebuilt.blends == data.blends == {"all": ([a, b], [2.0, 1.0])}
    assert (rebuilt.seed, rebuilt.seq_length) == (7, SEQ)


def test_recipe_factory_with_paths_as_cli_text(tmp_path):
    import fiddle as fdl

    from recipes.data import pretraining_data

    a, b = write(tmp_path / "a", id_docs(10)), write(tmp_path / "b", id_docs(10, 1))
    config = pretraining_data(f"[0.25,{a},0.75,{b}]", SEQ, 8, 2, split="98,1,1",
                              index_mapping_dir=str(tmp_path / "cache"))
    data = fdl.build(config)
    assert isinstance(data, PreTrainingDataModule) and isinstance(data.tokenizer, ByteTokenizer)
    assert data.blends == {"all": ([a, b], [0.25, 0.75])}
    assert (data.seq_length, data.global_batch_size, data.micro_batch_size) == (SEQ, 8, 2)
    assert data.split == "98,1,1"
    per_split = PreTrainingDataModule(f"{{'train': '[{a}]', 'test': ['{b}']}}", seq_length=SEQ)
    assert per_split.blends == {"train": ([a], None), "validation": None, "test": ([b], None)}


# --- bad input: one clear error, naming the file or argument and the fix -------------------
def corrupt_idx(prefix, offset, data):
    path = f"{prefix}.idx"
    raw = bytearray(open(path, "rb").read())
    raw[offset:offset + len(data)] = data
    open(path, "wb").write(bytes(raw))


def truncate(path, nbytes):
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-nbytes])


def test_missing_files(tmp_path):
    prefix = write(tmp_path / "ids", id_docs(10))
    with pytest.raises(DataFileNotFoundError, match=r"nope\.bin not found .*preprocess"):
        module(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(DataFileNotFoundError, match=r"drop the extension"):
        module(prefix + ".bin", tmp_path)
    (tmp_path / "ids.idx").unlink()
    with pytest.raises(FileNotFoundError, match=r"ids\.idx not found"):
        module(prefix, tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda p: corrupt_idx(p, 0, b"NOTANIDX!"), r"ids\.idx is not a Megatron indexed-dataset"),
    (lambda p: corrupt_idx(p, 9, struct.pack("<Q", 2)), r"ids\.idx has index version 2"),
    (lambda p: corrupt_idx(p, 17, b"\x63"), r"ids\.idx names unknown token dtype code 99"),
    (lambda p: truncate(f"{p}.idx", 8), r"ids\.idx is truncated"),
    (lambda p: open(f"{p}.idx", "wb").write(b"MMIDIDX\x00\x00\x01"), r"ids\.idx is truncated"),
    (lambda p: truncate(f"{p}.bin", 4), r"ids\.bin is truncated: .* bytes, .*ids\.idx describes"),
    (lambda p: open(f"{p}.bin", "ab").write(b"\0" * 8), r"ids\.bin is longer than its index"),
    (lambda p: corrupt_idx(p, 25, struct.pack("<Q", 0)), r"ids\.idx is (truncated|\d+ bytes)"),
])
def test_corrupt_files(tmp_path, damage, message):
    prefix = write(tmp_path / "ids", id_docs(10))
    damage(prefix)
    with pytest.raises(IndexedDataError, match=message) as error:
        module(prefix, tmp_path)
    assert "re-run the preprocessor" in str(error.value)


@pytest.mark.parametrize("paths, message", [
    (["0.3", "{a}", "0.7"], "odd number of entries"),
    ([0, "{a}", 1, "{b}"], "weight 0 of dataset 0 .* is not a positive number"),
    ([-1, "{a}", 1, "{b}"], "weight -1 of dataset 0"),
    ([math.nan, "{a}", 1, "{b}"], "weight nan of dataset 0"),
    (["{a}", 0.5, "{b}", 0.5], "entry 0 .* should be a weight: alternate weight, prefix"),
    ([0.5, "{a}", 0.5, 2], "entry 3 .* should be a dataset prefix"),
    ([], "paths is empty"),
    ({"train": "{a}", "valid": "{b}"}, "unknown split 'valid'"),
    (3, "give a dataset prefix"),
])
def test_bad_paths(tmp_path, paths, message):
    a, b = write(tmp_path / "a", id_docs(10)), write(tmp_path / "b", id_docs(10, 1))

    def fill(x):
        return x.format(a=a, b=b) if isinstance(x, str) else x

    if isinstance(paths, list):
        paths = [fill(x) for x in paths]
    elif isinstance(paths, dict):
        paths = {k: fill(v) for k, v in paths.items()}
    with pytest.raises(DataConfigError, match=message):
        module(paths, tmp_path)


@pytest.mark.parametrize("split", ["90,x,5", "1,2,3,4", "0,0,0", "-1,1,1", ""])
def test_bad_split(tmp_path, split):
    prefix = write(tmp_path / "ids", id_docs(10))
    with pytest.raises(DataConfigError, match=f"split={split!r}"):
        module(prefix, tmp_path, split=split)


def test_dataset_too_small_for_one_sequence(tmp_path):
    tiny = write(tmp_path / "tiny", [[1, 2, 3, EOD], [4, 5, EOD]])
    with pytest.raises(DataConfigError, match=r"tiny: the train split .* 7 tokens, fewer than "
                                              r"one sample needs \(seq_length \+ 1 = 33\)"):
        module(tiny, tmp_path, split="1").build(1, stage="fit")
    # 900,50,50 of 5 documents leaves the test split none (megatron would loop forever)
    five = write(tmp_path / "five", id_docs(5))
    beg, end = round(0.95 * 5), round(1.0 * 5)
    message = rf"five: the test split gets sequences \[{beg}, {end}\) of 5 with 0 tokens"
    with pytest.raises(DataConfigError, match=message + ".*change split"):
        module(five, tmp_path).build(1, 1, 0, 1, stage="test")


def test_tokenizer_without_end_of_document_id(tmp_path):
    class NoEos:
        vocab_size = 300

    prefix = write(tmp_path / "ids", id_docs(10))
    with pytest.raises(DataConfigError, match="needs an int vocab_size and an end-of-document"):
        module(prefix, tmp_path, tokenizer=NoEos()).build(1, stage="fit")
