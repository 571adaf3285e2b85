"""DDP settings that cannot work with the model's loss or the optimizer are refused up front."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from nemo_lite.lightning.ddp_rules import check_ddp
from nemo_lite.lightning.layout import LayoutError

PER_TOKEN = SimpleNamespace(calculate_per_token_loss=True)
DISTRIBUTED = SimpleNamespace(use_distributed_optimizer=True)
PLAIN = SimpleNamespace(use_distributed_optimizer=False)


def ddp(**fields):
    from megatron.core.distributed import DistributedDataParallelConfig

    return DistributedDataParallelConfig(**fields)


def test_average_in_collective_with_per_token_loss_is_refused_naming_both():
    with pytest.raises(LayoutError, match="average_in_collective=True.*calculate_per_token_loss"):
        check_ddp(ddp(average_in_collective=True), PER_TOKEN, DISTRIBUTED)
    check_ddp(ddp(average_in_collective=True), SimpleNamespace(calculate_per_token_loss=False))
    check_ddp(ddp(average_in_collective=False), PER_TOKEN, DISTRIBUTED)


def test_partial_distributed_optimizer_needs_the_distributed_optimizer():
    with pytest.raises(LayoutError, match="num_distributed_optimizer_instances=2"):
        check_ddp(ddp(num_distributed_optimizer_instances=2), PER_TOKEN, PLAIN)


def test_param_gather_overlap_without_shards_warns():
    with pytest.warns(UserWarning, match="overlap_param_gather=True\\) has no effect"):
        check_ddp(ddp(overlap_param_gather=True), PER_TOKEN, PLAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_ddp(ddp(overlap_param_gather=True), PER_TOKEN, DISTRIBUTED)
        check_ddp("megatron", PER_TOKEN, PLAIN)


def test_the_gpu_recipes_ddp_fits_their_models():
    import fiddle as fdl

    from nemo_lite import llm

    for name in ("gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"):
        recipe = getattr(llm, name).pretrain_recipe()
        check_ddp(fdl.build(recipe.trainer.strategy.ddp), fdl.build(recipe.model.config),
                  fdl.build(recipe.optim.config))
