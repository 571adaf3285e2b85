"""The exact callables and constants a saved nemo_lite context may name, by full name.

A context is a tree of `module.name` references that `load_context` imports and calls, so
what it may name is code it may run. This list holds what nemo_lite itself writes into a
context (tests/unit/test_context_allow_list.py saves a context for every recipe, data module,
tokenizer, precision, callback and LoRA, and checks that every name it writes is here), plus
the few values of megatron's and torch's configs a user may set (activation and init
functions, dtypes, attention enums). Nothing is allowed by module prefix: a prefix such as
`torch` holds callables that run shell commands (`torch.utils.collect_env.run`), unpickle files
or start processes. Anything else must be allowed by the caller (`allow=[...]`).
"""

from __future__ import annotations

# Fiddle's serialization format itself, and the plain data types it writes.
FORMAT = (
    "fiddle._src.config.Config",
    "fiddle._src.config.BuildableTraverserMetadata",
    "fiddle._src.partial.Partial",
    "nemo_run.config.Config",
    "nemo_run.config.Partial",
    *(f"builtins.{name}" for name in (
        "bool", "int", "float", "complex", "str", "bytes", "list", "tuple", "dict", "set",
        "frozenset", "slice", "range")),
    "collections.OrderedDict",
)

STDLIB = (
    "functools.partial",
    "datetime.timedelta",
    *(f"pathlib.{name}" for name in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                     "PurePosixPath", "PureWindowsPath")),
)

# nemo_lite's recorded components (every IOMixin class and captured config dataclass).
NEMO_LITE = (
    "nemo_lite.lightning.trainer.Trainer",
    "nemo_lite.lightning.strategy.MegatronStrategy",
    "nemo_lite.lightning.precision.MegatronMixedPrecision",
    "nemo_lite.lightning.optim.MegatronOptimizerModule",
    "nemo_lite.lightning.optim.CosineAnnealingScheduler",
    "nemo_lite.lightning.optim.WarmupAnnealingScheduler",
    "nemo_lite.lightning.comm_overlap.MegatronCommOverlapCallback",
    "nemo_lite.lightning.model_checkpoint.ModelCheckpoint",
    "nemo_lite.lightning.preemption.PreemptionCallback",
    "nemo_lite.lightning.rank_watchdog.RankWatchdog",
    "nemo_lite.lightning.nemo_logger.NeMoLogger",
    "nemo_lite.lightning.resume.AutoResume",
    "nemo_lite.lightning.resume.RestoreConfig",
    "nemo_lite.llm.gpt.model.GPTModel",
    "nemo_lite.llm.gpt.model_families.LlamaModel",
    "nemo_lite.llm.gpt.model_families.MixtralModel",
    "nemo_lite.llm.gpt.config.GPTConfig",
    "nemo_lite.llm.gpt.config.LlamaConfig",
    "nemo_lite.llm.gpt.config.MixtralConfig",
    "nemo_lite.llm.gpt.gpt3.GPTConfig126M",
    "nemo_lite.llm.gpt.activations.gelu_tanh",
    "nemo_lite.llm.gpt.llama.Llama3Config",
    "nemo_lite.llm.gpt.llama.Llama3Config8B",
    "nemo_lite.llm.gpt.llama.Llama3Config70B",
    "nemo_lite.llm.gpt.mixtral.MixtralConfig8x7B",
    "nemo_lite.llm.gpt.steps.gpt_data_step",
    "nemo_lite.llm.gpt.steps.gpt_forward_step",
    "nemo_lite.llm.gpt.layer_specs.default_layer_spec",
    "nemo_lite.llm.gpt.layer_specs.local_layer_spec",
    "nemo_lite.llm.gpt.layer_specs.transformer_engine_layer_spec",
    "nemo_lite.llm.loss.MaskedTokenLossReduction",
    "nemo_lite.llm.data.mock.MockDataModule",
    "nemo_lite.llm.data.pretraining.PreTrainingDataModule",
    "nemo_lite.llm.data.finetuning.FineTuningDataModule",
    "nemo_lite.llm.tokenizer.ByteTokenizer",
    "nemo_lite.llm.tokenizer.HFTokenizer",
    "nemo_lite.llm.tokenizer.SentencePieceTokenizer",
    "nemo_lite.llm.peft.lora.LoRA",
    "nemo_lite.llm.peft.dora.DoRA",
)

# Recipe factories (they return configs; building one builds nothing else).
RECIPES = (
    *(f"recipes.{name}.{kind}_recipe" for name in (
        "tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b")
      for kind in ("pretrain", "finetune")),
    "recipes.data.mock_data",
    "recipes.data.pretraining_data",
    "recipes.sft_data.finetuning_data",
)

# megatron-core's config dataclasses nemo_lite records, and the enums of its configs.
MEGATRON = (
    "megatron.core.optimizer.optimizer_config.OptimizerConfig",
    "megatron.core.distributed.distributed_data_parallel_config.DistributedDataParallelConfig",
    "megatron.core.transformer.transformer_config.TransformerConfig",
    "megatron.core.model_parallel_config.ModelParallelConfig",
    "megatron.core.activations.squared_relu",
    "megatron.core.activations.quick_gelu",
    "megatron.core.activations.fast_gelu",
    *(f"megatron.core.transformer.enums.AttnBackend.{m}" for m in (
        "flash", "fused", "unfused", "local", "auto")),
    *(f"megatron.core.transformer.enums.AttnMaskType.{m}" for m in (
        "padding", "causal", "no_mask", "padding_causal", "arbitrary", "causal_bottom_right")),
)

# torch values a model or precision config holds: dtypes, the device type, activation and
# initialisation functions.
TORCH = (
    *(f"torch.{name}" for name in (
        "float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
        "uint8", "bool", "float8_e4m3fn", "float8_e5m2", "complex64", "device")),
    *(f"torch.nn.functional.{name}" for name in (
        "gelu", "silu", "relu", "tanh", "sigmoid", "softplus", "mish", "elu", "leaky_relu")),
    "torch.tanh", "torch.sigmoid",
    *(f"torch.nn.init.{name}" for name in (
        "normal_", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_",
        "kaiming_normal_", "kaiming_uniform_", "zeros_", "ones_", "constant_")),
)

ALLOWED: frozenset[str] = frozenset(FORMAT + STDLIB + NEMO_LITE + RECIPES + MEGATRON + TORCH)
