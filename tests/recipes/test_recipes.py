"""Every recipe is a lazy Fiddle tree whose pieces are Configs, with a layout that fits its
default devices; tiny_gpt builds into a job that could run. Nothing is trained here."""

import functools

import fiddle as fdl
import nemo_run as run
import pytest

import recipes
from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.lightning.layout import ParallelLayout

CASES = [(name, kind) for name in recipes.list_recipes() for kind in recipes.KINDS]

# path in the recipe -> the class its Config must target
PIECES = {
    "trainer": nl.Trainer,
    "trainer.strategy": nl.MegatronStrategy,
    "trainer.plugins": nl.MegatronMixedPrecision,
    "data": llm.MockDataModule,
    "optim": nl.MegatronOptimizerModule,
    "optim.lr_scheduler": nl.CosineAnnealingScheduler,
    "log": nl.NeMoLogger,
    "log.ckpt": nl.ModelCheckpoint,
    "resume": nl.AutoResume,
}


def piece(recipe, path):
    return functools.reduce(getattr, path.split("."), recipe)


def make(name, kind, **kwargs):
    return recipes.get_recipe(name, kind)(**kwargs)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_recipe_is_a_lazy_partial_of_the_api_function(name, kind):
    recipe = make(name, kind)
    assert isinstance(recipe, run.Partial)
    assert recipe.__fn_or_cls__ is (llm.pretrain if kind == "pretrain" else llm.finetune)
    for path, target in PIECES.items():
        value = piece(recipe, path)
        assert isinstance(value, run.Config), f"{name}.{kind}: {path} is {type(value)}"
        assert value.__fn_or_cls__ is target, path
    assert isinstance(recipe.model, run.Config)
    assert issubclass(recipe.model.__fn_or_cls__, llm.GPTModel)
    assert isinstance(recipe.optim.config, run.Config)
    assert recipe.optim.config.__fn_or_cls__.__name__ == "OptimizerConfig"


@pytest.mark.parametrize("name", recipes.list_recipes())
def test_model_config_builds_alone_as_data(name):
    config = fdl.build(make(name, "pretrain").model.config)
    assert isinstance(config, llm.GPTConfig)
    assert not hasattr(config, "parameters")  # a dataclass, not a torch module


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_default_layout_fits_the_default_devices(name, kind):
    recipe = make(name, kind)
    strategy, trainer = recipe.trainer.strategy, recipe.trainer
    layout = ParallelLayout(
        tensor_model_parallel_size=strategy.tensor_model_parallel_size,
        pipeline_model_parallel_size=strategy.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=strategy.virtual_pipeline_model_parallel_size,
        context_parallel_size=strategy.context_parallel_size,
        sequence_parallel=strategy.sequence_parallel,
        expert_model_parallel_size=strategy.expert_model_parallel_size,
    )
    data = recipe.data  # read by attribute: the Config has the fields the check needs
    layout.validate_run(world_size=trainer.num_nodes * trainer.devices,
                        model_config=fdl.build(recipe.model.config), data=data)


@pytest.mark.parametrize("name", ["gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"])
def test_gpu_recipes_use_bf16_and_the_distributed_optimizer(name):
    recipe = make(name, "pretrain")
    assert recipe.trainer.accelerator == "gpu"
    assert recipe.trainer.plugins.precision == "bf16-mixed"
    assert recipe.optim.config.use_distributed_optimizer is True


def test_published_layouts():
    def sizes(name, kind="pretrain"):
        recipe = make(name, kind)
        s, t = recipe.trainer.strategy, recipe.trainer
        return (s.tensor_model_parallel_size, s.pipeline_model_parallel_size,
                s.virtual_pipeline_model_parallel_size, s.context_parallel_size,
                s.expert_model_parallel_size, t.num_nodes * t.devices)

    assert sizes("tiny_gpt") == (2, 1, None, 1, 1, 2)
    assert sizes("llama3_8b") == (1, 1, None, 2, 1, 8)
    assert sizes("llama3_70b") == (4, 4, 5, 2, 1, 32)
    assert sizes("mixtral_8x7b") == (1, 4, 8, 1, 8, 64)


@pytest.mark.parametrize("name", recipes.list_recipes())
def test_finetune_restores_weights_from_the_checkpoint_argument(name):
    recipe = make(name, "finetune", checkpoint="/ckpts/step=100")
    assert recipe.resume.restore_config.__fn_or_cls__ is nl.RestoreConfig
    assert recipe.resume.restore_config.path == "/ckpts/step=100"
    pretrain = make(name, "pretrain")
    assert recipe.optim.config.lr < pretrain.optim.config.lr
    resume = fdl.build(recipe.resume)
    assert resume.restore_config.path == "/ckpts/step=100"


def test_finetune_without_checkpoint_fails_at_build_naming_the_path():
    recipe = make("llama3_8b", "finetune")
    with pytest.raises(Exception, match="path"):
        fdl.build(recipe.resume)
    recipe.resume.restore_config.path = "/ckpts/last"  # what a CLI override does
    assert fdl.build(recipe.resume).restore_config.path == "/ckpts/last"


def test_pieces_compose_and_overrides_stay_lazy():
    recipe = llm.llama3_8b.pretrain_recipe(name="run1", dir="/tmp/runs")
    recipe.trainer.strategy.tensor_model_parallel_size = 2
    recipe.trainer.strategy.context_parallel_size = 1
    recipe.data.global_batch_size = 64
    assert isinstance(recipe.trainer.strategy, run.Config)
    assert recipe.log.name == "run1" and recipe.log.log_dir == "/tmp/runs"
    # the same pieces, used directly
    from recipes.trainer import trainer

    small = trainer(tp=2, devices=2, accelerator="cpu", precision="32")
    assert small.strategy.tensor_model_parallel_size == 2 and small.strategy.ddp == "megatron"


def test_tiny_gpt_builds_into_a_runnable_job_without_running_it():
    job = fdl.build(make("tiny_gpt", "pretrain"))
    assert isinstance(job, functools.partial) and job.func is llm.pretrain
    kw = job.keywords
    assert isinstance(kw["model"], llm.GPTModel) and kw["model"].module is None  # not built
    assert isinstance(kw["trainer"], nl.Trainer)
    assert isinstance(kw["trainer"].strategy, nl.MegatronStrategy)
    assert isinstance(kw["data"], llm.MockDataModule)
    assert isinstance(kw["optim"], nl.MegatronOptimizerModule)
    assert isinstance(kw["log"], nl.NeMoLogger) and isinstance(kw["resume"], nl.AutoResume)
    # the checks Trainer.fit runs before launching ranks
    kw["trainer"].strategy.validate_run(kw["model"], kw["data"])
    assert kw["trainer"].strategy.world_size_requested == 2
    assert kw["trainer"].strategy.num_microbatches == 4  # global 8 / (micro 2 x DP 1)
