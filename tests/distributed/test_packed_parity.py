"""Packed SFT rows give the same masked loss as the same examples unpacked, on CPU ranks.

One torchrun launch (2 ranks, scripts/packed_parity_run.py) runs a tiny megatron GPT with learned
positions, one with RoPE and a Llama-style one (RoPE, GQA, SwiGLU) over every example of a jsonl
file, unpacked (padded rows) and packed (first-fit-decreasing rows with cu_seqlens), at TP1 (DP2),
TP2 and TP2+SP; then trains the Llama model 3 steps at TP2 both ways (and packed at PP2), each
global batch the whole data set.
"""

import json
import random

import pytest

from nemo_lite.llm.data.finetuning import load_examples
from nemo_lite.llm.tokenizer import ByteTokenizer
from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed

SEQ = 64  # as in the script
MODELS = ("gpt", "gpt_rope", "llama")
LAYOUTS = ("TP1", "TP2", "TP2+SP")
WORDS = "the a cat dog sat on mat ran far quick brown fox jumps over lazy what why how".split()


def write_data(path) -> None:
    """24 examples: prompt/answer and chat lines, short and long (answers cut at SEQ + 1 ids)."""
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with open(path, "w") as f:
        for i in range(24):
            if i % 3 == 2:
                record = {"messages": [
                    {"role": "system", "content": text(1)},
                    {"role": "user", "content": text(rng.randint(1, 3))},
                    {"role": "assistant", "content": text(rng.randint(1, 3))},
                ]}
            else:
                answer = text(rng.randint(1, 6) if i % 5 else 20)  # some longer than SEQ
                record = {"input": text(rng.randint(1, 4)), "output": answer}
            f.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("packed")
    data = work / "sft.jsonl"
    write_data(data)
    out = work / "out.json"
    torchrun(2, "packed_parity_run.py", str(data), str(out), str(work / "init"), timeout=300)
    examples = load_examples(data, ByteTokenizer(), SEQ)
    return json.loads(out.read_text()), examples


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model", MODELS)
def test_packed_loss_equals_unpacked(results, model, layout):
    out, examples = results
    unpacked, packed = out[f"{model} {layout} unpacked"], out[f"{model} {layout} packed"]
    trained = sum(sum(e.loss_mask) for e in examples)
    assert unpacked["tokens"] == packed["tokens"] == trained
    assert packed["micro_batches"] < unpacked["micro_batches"]
    diff = rel(packed["loss_sum"], unpacked["loss_sum"])
    print(f"PACKED {model} {layout}: loss sum {packed['loss_sum']:.6f}, rel diff {diff:.1e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("layout", ["TP2", "TP2+SP"])
@pytest.mark.parametrize("model", MODELS)
def test_packed_tensor_parallel_equals_tp1(results, model, layout):
    out, _ = results
    tp2, tp1 = out[f"{model} {layout} packed"], out[f"{model} TP1 unpacked"]
    assert rel(tp2["loss_sum"], tp1["loss_sum"]) <= 1e-5
    assert tp2["tokens"] == tp1["tokens"]


@pytest.mark.parametrize("model", MODELS)
def test_without_cu_seqlens_documents_leak_and_the_loss_changes(results, model):
    """The control: the same packed rows attended across documents give other token losses
    (compared token by token: over a whole data set the changes can nearly cancel in a sum)."""
    out, _ = results
    leak, packed = out[f"{model} TP1 packed, no cu_seqlens"], out[f"{model} TP1 packed"]
    assert len(leak["token_losses"]) == len(packed["token_losses"]) > 100  # rank 0's tokens
    worst = max(rel(a, b) for a, b in zip(leak["token_losses"], packed["token_losses"],
                                           strict=True))
    assert worst > 1e-3, worst  # 100x the parity tolerance


def test_training_packed_repeats_the_unpacked_losses(results):
    out, _ = results
    unpacked, packed, pp2 = out["train unpacked"], out["train packed"], out["train packed PP2"]
    assert len(unpacked) == len(packed) == len(pp2) == 3
    assert max(rel(a, b) for a, b in zip(packed, unpacked, strict=True)) <= 1e-5
    assert max(rel(a, b) for a, b in zip(pp2, unpacked, strict=True)) <= 1e-5
    assert unpacked[-1] < unpacked[0]
