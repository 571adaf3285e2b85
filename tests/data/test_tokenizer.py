"""Local tokenizers over the real libraries: byte, trained byte-level BPE, SentencePiece."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from nemo_lite.llm.data.corpus import build_stdlib_corpus
from nemo_lite.llm.tokenizer import (
    EOD_TOKEN,
    PAD_TOKEN,
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    TokenizerError,
    TokenizerNotFoundError,
    get_tokenizer,
    train_bpe_tokenizer,
)

# Text none of the training data has: accents, CJK, emoji, tabs, trailing spaces, CRLF.
UNSEEN = "naïve café — 日本語 🙂\tdef f(x):\r\n    return {'ß': x}  \n\n"


def small_corpus(tmp: Path, max_bytes: int = 200_000) -> Path:
    """Real text: the first modules of the Python stdlib corpus."""
    path = tmp / "corpus.jsonl"
    build_stdlib_corpus(path, max_bytes=max_bytes)
    return path


def corpus_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def train_sentencepiece(tmp: Path, texts: list[str], **overrides) -> Path:
    """A tiny SentencePiece model trained here (identity normalization: exact round trips)."""
    import sentencepiece as spm

    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    options = dict(model_prefix=str(tmp / "sp"), vocab_size=400, model_type="bpe",
                   byte_fallback=True, normalization_rule_name="identity",
                   remove_extra_whitespaces=False, add_dummy_prefix=False,
                   character_coverage=1.0, pad_id=3, minloglevel=2, num_threads=1)
    options.update(overrides)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), **options)
    return Path(f"{options['model_prefix']}.model")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def corpus(workdir) -> Path:
    return small_corpus(workdir)


@pytest.fixture(scope="module")
def bpe_dir(workdir, corpus) -> Path:
    out = workdir / "bpe"
    train_bpe_tokenizer([str(corpus)], vocab_size=600, output_dir=str(out))
    return out


def test_byte_tokenizer_is_unchanged():
    tok = ByteTokenizer()
    assert tok.text_to_ids("é!") == list("é!".encode())
    assert (tok.eos_id, tok.eos, tok.pad_id, tok.vocab_size) == (256, 256, 257, 258)
    assert tok.ids_to_text([*tok.text_to_ids(UNSEEN), tok.eos_id]) == UNSEEN
    assert get_tokenizer("byte").vocab_size == tok.vocab_size


def test_trained_bpe_round_trips_and_compresses(bpe_dir, corpus):
    tok = HFTokenizer(str(bpe_dir))
    assert 258 < tok.vocab_size <= 600
    assert tok._tokenizer.id_to_token(tok.eos_id) == EOD_TOKEN
    assert tok._tokenizer.id_to_token(tok.pad_id) == PAD_TOKEN
    assert tok.bos_id is None
    for text in [UNSEEN, *corpus_texts(corpus)[:5]]:
        ids = tok.text_to_ids(text)
        assert tok.ids_to_text(ids) == text
        assert tok.eos_id not in ids  # no special tokens added: preprocessing appends eod
    text = corpus_texts(corpus)[0]
    assert len(tok.text_to_ids(text)) < len(text.encode("utf-8"))  # merges were learnt
    assert tok.ids_to_text([*tok.text_to_ids("a b"), tok.eos_id, tok.pad_id]) == "a b"


def test_bpe_training_writes_hf_config_and_metadata(bpe_dir, corpus, tmp_path):
    config = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    assert (config["eos_token"], config["pad_token"]) == (EOD_TOKEN, PAD_TOKEN)
    meta = json.loads((bpe_dir / "nemo_lite_tokenizer.json").read_text())
    assert meta["documents"] == len(corpus_texts(corpus))
    assert meta["vocab_size"] == HFTokenizer(str(bpe_dir)).vocab_size
    train_bpe_tokenizer([str(corpus)], vocab_size=600, output_dir=str(tmp_path / "again"))
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == \
        (bpe_dir / "tokenizer.json").read_bytes()  # same files -> same tokenizer


def test_bpe_training_reads_plain_text_and_refuses_empty_input(workdir, tmp_path):
    (tmp_path / "a.txt").write_text(UNSEEN * 50, encoding="utf-8")
    tok = train_bpe_tokenizer(str(tmp_path / "a.txt"), vocab_size=300,
                              output_dir=str(tmp_path / "t"))
    assert tok.ids_to_text(tok.text_to_ids(UNSEEN)) == UNSEEN
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="no documents"):
        train_bpe_tokenizer(str(tmp_path / "empty.jsonl"), 300, str(tmp_path / "t2"))
    with pytest.raises(TokenizerError, match="too small"):
        train_bpe_tokenizer(str(tmp_path / "a.txt"), 100, str(tmp_path / "t3"))


def test_get_tokenizer_picks_the_kind(bpe_dir, corpus, tmp_path):
    assert isinstance(get_tokenizer(str(bpe_dir)), HFTokenizer)
    assert isinstance(get_tokenizer(str(bpe_dir / "tokenizer.json")), HFTokenizer)
    model = train_sentencepiece(tmp_path, corpus_texts(corpus)[:20])
    assert isinstance(get_tokenizer(str(model)), SentencePieceTokenizer)
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "tokenizer.model").write_bytes(model.read_bytes())
    assert isinstance(get_tokenizer(tmp_path / "llama"), SentencePieceTokenizer)
    tok = ByteTokenizer()
    assert get_tokenizer(tok) is tok


def test_get_tokenizer_explains_bad_specs(tmp_path):
    with pytest.raises(TokenizerNotFoundError, match="not found.*'byte'") as e:
        get_tokenizer(str(tmp_path / "missing"))
    assert isinstance(e.value, FileNotFoundError) and "\n" not in str(e.value)
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor tokenizer.model"):
        get_tokenizer(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(TokenizerError, match="cannot tell what kind"):
        get_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a HuggingFace tokenizer.json"):
        get_tokenizer(str(tmp_path / "tokenizer.json"))
    (tmp_path / "bad.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        get_tokenizer(str(tmp_path / "bad.model"))


def test_hf_tokenizer_special_token_choices(bpe_dir):
    tok = HFTokenizer(str(bpe_dir), eos_token=PAD_TOKEN, pad_token=EOD_TOKEN)
    assert (tok.eos_id, tok.pad_id) == (HFTokenizer(str(bpe_dir)).pad_id,
                                        HFTokenizer(str(bpe_dir)).eos_id)
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        HFTokenizer(str(bpe_dir), eos_token="<nope>")


def test_sentencepiece_round_trip_and_ids(corpus, tmp_path):
    import sentencepiece as spm

    model = train_sentencepiece(tmp_path, corpus_texts(corpus)[:20])
    tok = SentencePieceTokenizer(str(model))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert (tok.vocab_size, tok.eos_id, tok.pad_id, tok.bos_id) == (
        sp.get_piece_size(), sp.eos_id(), sp.pad_id(), sp.bos_id())
    for text in [UNSEEN, corpus_texts(corpus)[1]]:
        assert tok.ids_to_text(tok.text_to_ids(text)) == text
    no_eos = train_sentencepiece(tmp_path, corpus_texts(corpus)[:5], model_prefix=str(
        tmp_path / "noeos"), eos_id=-1)
    with pytest.raises(TokenizerError, match="no end-of-document piece"):
        SentencePieceTokenizer(str(no_eos))


def test_tokenizers_survive_config_capture_and_pickle(bpe_dir, corpus, tmp_path):
    import fiddle as fdl

    from nemo_lite.io import to_config

    model = train_sentencepiece(tmp_path, corpus_texts(corpus)[:20])
    for tok in (ByteTokenizer(), HFTokenizer(str(bpe_dir)), SentencePieceTokenizer(str(model))):
        config = to_config(tok)
        assert config.__fn_or_cls__ is type(tok)
        rebuilt = fdl.build(config)
        unpickled = pickle.loads(pickle.dumps(tok))
        for other in (rebuilt, unpickled):
            assert type(other) is type(tok)
            assert other.text_to_ids(UNSEEN) == tok.text_to_ids(UNSEEN)
            assert (other.eos_id, other.vocab_size) == (tok.eos_id, tok.vocab_size)


def test_hf_tokenizer_signature_is_cli_parsable():
    """NeMo-Run parses overrides by annotation: no PEP 563 strings, no PEP 604 unions."""
    import inspect
    import typing

    for cls in (HFTokenizer, SentencePieceTokenizer):
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name != "self":
                assert not isinstance(param.annotation, str), (cls, name)
                assert typing.get_origin(param.annotation) in (None, typing.Union), (cls, name)
