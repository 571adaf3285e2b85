"""`nemo-lite data ...`: build a corpus, train a tokenizer, preprocess into megatron's format.

    nemo-lite data corpus --output data/stdlib.jsonl
    nemo-lite data train-tokenizer --input data/stdlib.jsonl --vocab-size 8192 --output tok/
    nemo-lite data preprocess --input data/stdlib.jsonl --output-prefix data/stdlib \\
        --tokenizer tok/ --workers 2

Plain argparse (NeMo-Run's CLI is for runs); the work modules are imported only once a command
runs, so `--help` imports neither torch nor megatron. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys


def _corpus(args: argparse.Namespace) -> None:
    from nemo_lite.llm.data.corpus import build_stdlib_corpus

    print(build_stdlib_corpus(args.output, max_bytes=int(args.max_mb * 1e6),
                              max_file_bytes=int(args.max_file_kb * 1e3)))


def _train_tokenizer(args: argparse.Namespace) -> None:
    import json
    import os

    from nemo_lite.llm.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(args.input, args.vocab_size, args.output,
                                    json_key=args.json_keys, min_frequency=args.min_frequency,
                                    text_mode=args.text_mode)
    with open(os.path.join(args.output, "nemo_lite_tokenizer.json"), encoding="utf-8") as f:
        meta = json.load(f)
    print(f"trained byte-level BPE: vocab {tokenizer.vocab_size:,} (eod id {tokenizer.eos_id}, "
          f"pad id {tokenizer.pad_id}) on {meta['documents']:,} documents "
          f"({meta['bytes'] / 1e6:.2f} MB) in {meta['seconds']:.1f} s -> {args.output}")


def _preprocess(args: argparse.Namespace) -> None:
    from nemo_lite.llm.data.preprocess import preprocess

    summary = preprocess(args.input, args.output_prefix, tokenizer=args.tokenizer,
                         json_key=args.json_keys, workers=args.workers,
                         text_mode=args.text_mode, chunksize=args.chunksize,
                         log_interval=None if args.quiet else args.log_interval)
    print(summary)


def _add_text_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="jsonl / text files or directories of them (.gz is fine), in order")
    p.add_argument("--json-keys", "--json-key", default="text", metavar="KEY",
                   help="the jsonl field holding the text (default: text)")
    p.add_argument("--text-mode", choices=("file", "line"), default="file",
                   help="plain-text files: one document per file (default) or per line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nemo-lite data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("corpus", help="write the offline Python-stdlib corpus as jsonl")
    p.add_argument("--output", required=True, help="the .jsonl file to write")
    p.add_argument("--max-mb", type=float, default=8.0, help="text size cap in MB (default 8)")
    p.add_argument("--max-file-kb", type=float, default=200.0,
                   help="skip modules larger than this (default 200 kB)")
    p.set_defaults(run=_corpus)

    p = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer on local files")
    _add_text_options(p)
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--output", required=True, help="directory for tokenizer.json (+ configs)")
    p.add_argument("--min-frequency", type=int, default=2)
    p.set_defaults(run=_train_tokenizer)

    p = sub.add_parser("preprocess", help="tokenize into a megatron indexed dataset (.bin/.idx)")
    _add_text_options(p)
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.bin, .idx, .meta.json")
    p.add_argument("--tokenizer", default="byte",
                   help="'byte', a tokenizer.json or its directory, or a SentencePiece .model")
    p.add_argument("--workers", type=int, default=1, help="tokenizing processes (default 1)")
    p.add_argument("--chunksize", type=int, default=16, help="documents per task sent to a worker")
    p.add_argument("--log-interval", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_preprocess)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as e:  # our errors: one line saying what to fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
