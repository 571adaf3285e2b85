"""Pretrain a small GPT on a real corpus that every machine has: the Python standard library.

    python examples/pretrain_stdlib.py                 # about 5 minutes on a 2-core CPU

1. corpus: the stdlib's own source (`nemo-lite data corpus`), no download;
2. tokenizer: a byte-level BPE trained on it (`nemo-lite data train-tokenizer`);
3. megatron .bin/.idx (`nemo-lite data preprocess`), and the corpus' unigram entropy: the loss
   of a model that knows token frequencies and nothing else, the baseline to beat;
4. pretraining through the tiny_gpt recipe with its data swapped for PreTrainingDataModule
   (98 % train / 2 % validation split of the documents), 2 CPU ranks (DP2);
5. the validation curve against the baseline, and `nemo-lite plot` of the run.

Steps 1-3 are skipped when DATA_DIR already holds their output.
"""

import argparse
import json
import os
from pathlib import Path


def prepare(data_dir: Path, vocab_size: int, workers: int) -> Path:
    from nemo_lite.llm.data.corpus import build_stdlib_corpus
    from nemo_lite.llm.data.preprocess import preprocess
    from nemo_lite.llm.tokenizer import train_bpe_tokenizer

    data_dir.mkdir(parents=True, exist_ok=True)
    corpus, tokenizer, prefix = data_dir / "stdlib.jsonl", data_dir / "tokenizer", data_dir / "stdlib"
    if not corpus.exists():
        build_stdlib_corpus(str(corpus))
    if not (tokenizer / "tokenizer.json").exists():
        train_bpe_tokenizer([str(corpus)], vocab_size, str(tokenizer))
    if not Path(f"{prefix}.idx").exists():
        preprocess([str(corpus)], str(prefix), tokenizer=str(tokenizer), workers=workers)
    return prefix


def recipe_for(prefix: Path, tokenizer_dir: Path, steps: int, log_dir: str, devices: int):
    import nemo_run as run

    from nemo_lite.llm.tokenizer import HFTokenizer
    from recipes import tiny_gpt
    from recipes.data import pretraining_data

    recipe = tiny_gpt.pretrain_recipe(name="stdlib", dir=log_dir, devices=devices)
    recipe.resume.resume_if_exists = False
    config = recipe.model.config
    config.seq_length, config.hidden_size, config.num_attention_heads = 128, 128, 4
    recipe.trainer.strategy.tensor_model_parallel_size = 1  # DP over the CPU ranks
    recipe.trainer.max_steps = steps
    recipe.trainer.val_check_interval = max(steps // 10, 1)
    recipe.trainer.limit_val_batches = 8
    recipe.log.ckpt.every_n_train_steps = steps
    recipe.optim.config.lr = 2e-3
    recipe.optim.lr_scheduler.min_lr = 2e-4
    recipe.optim.lr_scheduler.warmup_steps = max(steps // 20, 1)
    recipe.data = pretraining_data(
        [str(prefix)], seq_length=128, global_batch_size=16, micro_batch_size=4,
        tokenizer=run.Config(HFTokenizer, path=str(tokenizer_dir)), split="98,2,0")
    return recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--log-dir", default="runs")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import fiddle as fdl

    from nemo_lite.cli.plot import plot_run, read_scalars
    from nemo_lite.llm.data.corpus import indexed_unigram_entropy

    data_dir = Path(args.data_dir)
    prefix = prepare(data_dir, args.vocab_size, args.workers)
    baseline = indexed_unigram_entropy(str(prefix))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(f"unigram entropy of the corpus (the baseline): {baseline:.4f} nats/token")

    recipe = recipe_for(prefix, data_dir / "tokenizer", args.steps, args.log_dir, args.devices)
    run_dir = fdl.build(recipe)()
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # Lightning re-runs this script per rank
        return

    val = read_scalars(run_dir)["val_loss"]
    print(f"\nvalidation loss vs the unigram baseline ({baseline:.4f} nats/token):")
    for step, loss in val:
        print(f"  step {step:5d}  val_loss {loss:.4f}  ({loss - baseline:+.4f})")
    png, _ = plot_run(run_dir, baseline=baseline)
    result = {"baseline_nats": baseline, "final_val_loss": val[-1][1], "steps": args.steps,
              "val_curve": val, "run_dir": str(run_dir), "plot": str(png)}
    (Path(run_dir) / "stdlib_result.json").write_text(json.dumps(result, indent=1))
    print(f"final val_loss {val[-1][1]:.4f} = baseline {baseline:.4f} - "
          f"{baseline - val[-1][1]:.4f} nats/token; curves: {png}")


if __name__ == "__main__":
    main()
