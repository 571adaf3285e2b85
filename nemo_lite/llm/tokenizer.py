"""Tokenizers that need nothing from the network, all with ByteTokenizer's interface.

`ByteTokenizer` maps UTF-8 bytes to ids 0-255 plus end-of-document and padding ids: it is
what mock data and quick runs use, and the fallback when no trained tokenizer is given.
`HFTokenizer` (HuggingFace `tokenizers`, a local tokenizer.json) and `SentencePieceTokenizer`
(a local .model) wrap the real libraries; `get_tokenizer(spec)` picks one from a string, and
`train_bpe_tokenizer` trains a byte-level BPE on local files.

Each class records its constructor arguments (plain paths/strings) through IOMixin, so a run's
saved config rebuilds it; the libraries are imported when a tokenizer is built, not here
(`import nemo_lite.llm.tokenizer` stays light). Pickling rebuilds from the same arguments,
which is how preprocessing hands a tokenizer to its worker processes.
"""

import json
import os
from typing import Any, Optional, Union

from nemo_lite.io.capture import IOMixin, captured

# End-of-document tokens of common tokenizers, tried in order when none is named.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>", "[SEP]")
PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]")
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]")


class TokenizerError(ValueError):
    """A tokenizer file or spec that cannot be used; the message says how to fix it."""


class TokenizerNotFoundError(FileNotFoundError):
    """A tokenizer path that does not exist."""

    def __str__(self) -> str:  # one line, not FileNotFoundError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class ByteTokenizer(IOMixin):
    """UTF-8 bytes as token ids; `eos_id` ends a document, `pad_id` fills packed rows."""

    def __init__(self) -> None:
        self.eos_id = 256
        self.pad_id = 257
        self.vocab_size = 258

    @property
    def eos(self) -> int:
        return self.eos_id

    def text_to_ids(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def ids_to_text(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _rebuild(cls: type, arguments: dict[str, Any]) -> Any:
    return cls(**arguments)


class _Rebuildable:
    """Pickles as `cls(**recorded arguments)`: the wrapped library objects are not shipped."""

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), dict(captured(self).arguments))

    @property
    def eos(self) -> int:
        return self.eos_id


def _token_name(value: Any) -> Optional[str]:
    """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer(_Rebuildable, IOMixin):
    """A HuggingFace `tokenizers` tokenizer from a local directory or tokenizer.json file.

    Special tokens not named are read from tokenizer_config.json beside the file (HF's format,
    which `train_bpe_tokenizer` writes), else the first of the usual names found in the vocab.
    `text_to_ids` adds no BOS/EOS (like ByteTokenizer): preprocessing appends `eos_id` itself.
    """

    def __init__(
        self,
        path: str,
        eos_token: Optional[str] = None,
        pad_token: Optional[str] = None,
        bos_token: Optional[str] = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.path = str(path)
        file = os.path.join(self.path, "tokenizer.json") if os.path.isdir(self.path) else self.path
        if not os.path.isfile(file):
            raise TokenizerNotFoundError(
                f"no tokenizer.json at {file}: pass a directory holding tokenizer.json or the file "
                "itself (train one with `nemo-lite data train-tokenizer`)"
            )
        try:
            self._tokenizer = Tokenizer.from_file(file)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(
                f"{file} is not a HuggingFace tokenizer.json ({str(e).splitlines()[0]}): "
                "re-save it with tokenizers' Tokenizer.save or retrain it"
            ) from None
        config = _read_config(os.path.join(os.path.dirname(file), "tokenizer_config.json"))
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        eos = self._special(eos_token, config.get("eos_token"), EOS_CANDIDATES)
        if eos is None:
            raise TokenizerError(
                f"{file} has no end-of-document token (none of {', '.join(EOS_CANDIDATES)}): "
                "pass eos_token='<the token>'"
            )
        self.eos_id = eos
        pad = self._special(pad_token, config.get("pad_token"), PAD_CANDIDATES)
        self.pad_id = self.eos_id if pad is None else pad
        self.bos_id = self._special(bos_token, config.get("bos_token"), BOS_CANDIDATES)

    def _special(self, given: Optional[str], configured: Any, candidates: tuple) -> Optional[int]:
        if given is not None:
            token_id = self._tokenizer.token_to_id(given)
            if token_id is None:
                raise TokenizerError(f"token {given!r} is not in the vocabulary of {self.path}")
            return token_id
        for name in (_token_name(configured), *candidates):
            if name is not None and (token_id := self._tokenizer.token_to_id(name)) is not None:
                return token_id
        return None

    def text_to_ids(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def ids_to_text(self, ids: list[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r})"


def _read_config(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path} is not valid JSON ({e}): fix or delete it") from None
    return config if isinstance(config, dict) else {}


class SentencePieceTokenizer(_Rebuildable, IOMixin):
    """A SentencePiece model (.model file); its own eos/pad/bos ids (pad falls back to eos)."""

    def __init__(self, model_path: str) -> None:
        import sentencepiece as spm

        self.model_path = str(model_path)
        if not os.path.isfile(self.model_path):
            raise TokenizerNotFoundError(f"no SentencePiece model at {self.model_path}")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(self.model_path)
        except (OSError, RuntimeError) as e:
            raise TokenizerError(
                f"{self.model_path} is not a SentencePiece model ({str(e).splitlines()[0]})"
            ) from None
        self.vocab_size = self._sp.get_piece_size()
        if self._sp.eos_id() < 0:
            raise TokenizerError(
                f"{self.model_path} has no end-of-document piece (eos_id=-1): retrain it with "
                "eos_id set (SentencePieceTrainer.train(..., eos_id=2))"
            )
        self.eos_id = self._sp.eos_id()
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None

    def text_to_ids(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def ids_to_text(self, ids: list[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.model_path!r})"


Tokenizer = Union[ByteTokenizer, HFTokenizer, SentencePieceTokenizer]

SPEC_HELP = (
    "'byte', a directory holding tokenizer.json (or tokenizer.model), a tokenizer.json file, "
    "or a SentencePiece .model file"
)


def get_tokenizer(spec: Any) -> Any:
    """A tokenizer from `spec` ("byte" or a local path); a tokenizer object (anything that is
    not a str or path) is returned as is."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    spec = os.fspath(spec)
    if spec == "byte":
        return ByteTokenizer()
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "tokenizer.json")):
            return HFTokenizer(spec)
        if os.path.isfile(os.path.join(spec, "tokenizer.model")):
            return SentencePieceTokenizer(os.path.join(spec, "tokenizer.model"))
        raise TokenizerError(
            f"directory {spec} holds neither tokenizer.json nor tokenizer.model: pass {SPEC_HELP}"
        )
    if not os.path.exists(spec):
        raise TokenizerNotFoundError(f"tokenizer {spec!r} not found: pass {SPEC_HELP}")
    if spec.endswith(".json"):
        return HFTokenizer(spec)
    if spec.endswith(".model"):
        return SentencePieceTokenizer(spec)
    raise TokenizerError(f"cannot tell what kind of tokenizer {spec} is: pass {SPEC_HELP}")


EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(
    files: Union[str, list[str]],
    vocab_size: int,
    output_dir: str,
    json_key: str = "text",
    min_frequency: int = 2,
    text_mode: str = "file",
) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2 style) on local .jsonl/.txt files and save it.

    Writes `output_dir/tokenizer.json`, HF's `tokenizer_config.json` (eos/pad tokens, so
    transformers' PreTrainedTokenizerFast loads it too) and `nemo_lite_tokenizer.json` (what it
    was trained on). Any text round-trips exactly: unseen bytes have their own base tokens.
    """
    import time

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from nemo_lite.llm.data.documents import iter_documents, resolve_inputs

    if vocab_size < 256 + 2:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: byte-level BPE needs >= 258")
    paths = resolve_inputs(files)
    start = time.perf_counter()
    stats = {"documents": 0, "bytes": 0}

    def texts() -> Any:
        for doc in iter_documents(paths, json_key=json_key, text_mode=text_mode):
            stats["documents"] += 1
            stats["bytes"] += len(doc.text.encode("utf-8"))
            yield doc.text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[EOD_TOKEN, PAD_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts(), trainer)
    if stats["documents"] == 0:
        raise TokenizerError(f"no documents in {', '.join(paths)}: nothing to train on")
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save(os.path.join(output_dir, "tokenizer.json"))
    hf_config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOD_TOKEN,
                 "pad_token": PAD_TOKEN, "add_prefix_space": False}
    meta = {"kind": "byte-level BPE", "vocab_size": tokenizer.get_vocab_size(),
            "requested_vocab_size": vocab_size, "min_frequency": min_frequency,
            "files": paths, "json_key": json_key, "documents": stats["documents"],
            "bytes": stats["bytes"], "seconds": round(time.perf_counter() - start, 3)}
    for name, data in (("tokenizer_config.json", hf_config), ("nemo_lite_tokenizer.json", meta)):
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    return HFTokenizer(output_dir)
