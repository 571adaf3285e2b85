"""count_parameters: published sizes for every recipe, and exact agreement with megatron."""

import json
import subprocess
import sys
from pathlib import Path

import fiddle as fdl
import pytest

import recipes
from nemo_lite import llm

SCRIPT = Path(__file__).with_name("megatron_param_check.py")

# (recipe, published size, relative tolerance). Unpadded vocabularies, as sizes are quoted.
PUBLISHED = [
    ("gpt_126m", 126e6, 0.02),   # GPT-3 Small: 125.2e6 with GPT-2's 50257 tokens
    ("llama3_8b", 8.03e9, 0.01),
    ("llama3_70b", 70.6e9, 0.01),
    ("mixtral_8x7b", 46.7e9, 0.01),
]


def model_config(name: str):
    return fdl.build(recipes.get_recipe(name)().model.config)


@pytest.mark.parametrize(("name", "published", "tolerance"), PUBLISHED)
def test_recipe_models_have_their_published_size(name, published, tolerance):
    count = llm.count_parameters(model_config(name))
    assert abs(count - published) / published < tolerance, f"{name}: {count:,}"


def test_exact_counts_of_the_published_shapes():
    assert llm.count_parameters(model_config("llama3_8b")) == 8_030_261_248
    assert llm.count_parameters(model_config("llama3_70b")) == 70_553_706_496
    assert llm.count_parameters(model_config("mixtral_8x7b")) == 46_702_792_704
    assert llm.count_parameters(model_config("gpt_126m")) == 125_226_240
    # megatron pads GPT-2's vocabulary to 50304 rows at TP=1
    assert llm.count_parameters(model_config("gpt_126m"), pad_vocab=True) == 125_262_336


def test_mixtral_active_parameters_are_two_of_eight_experts():
    active = llm.count_parameters(model_config("mixtral_8x7b"), active_only=True)
    assert abs(active - 12.9e9) / 12.9e9 < 0.01


def test_tiny_gpt_takes_its_vocabulary_from_the_tokenizer():
    config = model_config("tiny_gpt")
    with pytest.raises(ValueError, match="vocab_size"):
        llm.count_parameters(config)
    # byte tokenizer: 258 ids, padded to 384 at TP1 (512 at TP2)
    assert llm.count_parameters(config, vocab_size=258, pad_vocab=True) == 384 * 64 + 64 * 64 + (
        4 * (4 * 64 * 64 + 4 * 64 + 8 * 64 * 64 + 5 * 64 + 4 * 64) + 2 * 64)


def test_breakdown_sums_to_the_total_and_names_the_parts():
    config = model_config("llama3_8b")
    parts = llm.parameter_breakdown(config)
    assert sum(parts.values()) == llm.count_parameters(config)
    assert parts["output_layer"] == parts["embedding"] == 128_256 * 4096  # untied
    assert parts["position_embedding"] == 0  # RoPE


def test_unsupported_features_are_refused_not_miscounted():
    config = llm.GPTConfig(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=256,
                           num_moe_experts=4, moe_layer_freq=2, moe_router_topk=2)
    with pytest.raises(NotImplementedError, match="moe_layer_freq"):
        llm.count_parameters(config)


def test_count_matches_megatron_models_exactly():
    """Builds small GPT / Llama / MoE models with megatron in a fresh process."""
    proc = subprocess.run([sys.executable, "-W", "ignore", str(SCRIPT)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 7, proc.stdout
    for row in rows:
        assert row["counted"] == row["megatron"], row
