"""MegatronMixedPrecision: one precision setting pushed into megatron's model, optimizer and DDP configs.

Megatron does mixed precision itself (bf16/fp16 parameters with fp32 main copies in its
optimizer, a dynamic loss scaler for fp16), so this plugin only writes the matching fields;
Lightning's autocast and gradient scaler are not used. fp8 runs inside transformer-engine's
layers: the fp8 fields (NeMo's names) are checked when the plugin is built and refused on
the rank, at setup, when there is no GPU with TE (`check_fp8_support`).
"""

from typing import Any, Literal, Optional

import torch
from lightning.pytorch.plugins.precision import Precision

from nemo_lite.io.capture import IOMixin

Setting = Literal["bf16-mixed", "16-mixed", "32", "bf16", "16", "32-true"]
_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32-true": "32", 32: "32", 16: "16-mixed"}
_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32": torch.float32}
# megatron-core 0.16.1 TransformerConfig.fp8 / fp8_recipe / fp8_amax_compute_algo values
# ('custom' recipes need a quantizer factory import path: not exposed here).
FP8_FORMATS = ("e4m3", "hybrid")
FP8_RECIPES = ("delayed", "tensorwise", "mxfp8", "blockwise")
FP8_AMAX_ALGOS = ("most_recent", "max")
# Lowest CUDA compute capability with fp8 tensor cores (Ada/Hopper); MXFP8: Blackwell.
_FP8_MIN_CAPABILITY = (8, 9)
_MXFP8_MIN_CAPABILITY = (10, 0)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported: use one of {', '.join(map(repr, allowed))}.")


def _resolve_fp8_param(fp8_param: Optional[bool], fp8_param_gather: Optional[bool],
                       fp8_params: Optional[bool]) -> bool:
    """NeMo spells "keep weights in fp8" three ways; they must agree when several are given."""
    given = {k: v for k, v in (("fp8_param", fp8_param), ("fp8_param_gather", fp8_param_gather),
                               ("fp8_params", fp8_params)) if v is not None}
    if len(set(given.values())) > 1:
        raise ValueError(f"conflicting fp8 parameter settings {given}: give only fp8_param_gather.")
    return bool(next(iter(given.values()), False))


class MegatronMixedPrecision(Precision, IOMixin):
    def __init__(
        self,
        precision: Setting = "bf16-mixed",
        params_dtype: Optional[torch.dtype] = None,
        pipeline_dtype: Optional[torch.dtype] = None,
        autocast_enabled: bool = False,
        grad_reduce_in_fp32: bool = True,
        fp8: Optional[str] = None,
        fp8_recipe: Optional[str] = None,
        fp8_margin: int = 0,
        fp8_amax_history_len: int = 1,
        fp8_amax_compute_algo: str = "most_recent",
        fp8_wgrad: bool = True,
        fp8_dot_product_attention: bool = False,
        fp8_multi_head_attention: bool = False,
        fp8_param_gather: Optional[bool] = None,
        fp8_param: Optional[bool] = None,
        fp8_params: Optional[bool] = None,
        first_last_layers_bf16: bool = False,
        num_layers_at_start_in_bf16: int = 0,
        num_layers_at_end_in_bf16: int = 0,
        fp16_loss_scale: Optional[float] = None,
        fp16_initial_loss_scale: float = 2.0**32,
        fp16_min_loss_scale: float = 1.0,
        fp16_loss_scale_window: int = 1000,
        fp16_hysteresis: int = 2,
    ) -> None:
        setting = _ALIASES.get(precision, precision)
        if setting not in _DTYPES:
            raise ValueError(
                f"precision={precision!r} is not supported: use 'bf16-mixed', '16-mixed' or '32'."
            )
        self.precision = setting
        dtype = _DTYPES[setting]
        self.params_dtype = params_dtype or dtype
        self.pipeline_dtype = pipeline_dtype or dtype
        self.autocast_enabled = autocast_enabled
        self.grad_reduce_in_fp32 = grad_reduce_in_fp32
        self.fp8 = fp8
        self.fp8_recipe = fp8_recipe
        self.fp8_margin = fp8_margin
        self.fp8_amax_history_len = fp8_amax_history_len
        self.fp8_amax_compute_algo = fp8_amax_compute_algo
        self.fp8_wgrad = fp8_wgrad
        self.fp8_dot_product_attention = fp8_dot_product_attention
        self.fp8_multi_head_attention = fp8_multi_head_attention
        self.fp8_param_gather = _resolve_fp8_param(fp8_param, fp8_param_gather, fp8_params)
        self.first_last_layers_bf16 = first_last_layers_bf16
        self.num_layers_at_start_in_bf16 = num_layers_at_start_in_bf16
        self.num_layers_at_end_in_bf16 = num_layers_at_end_in_bf16
        self._validate_fp8()
        self.fp16_loss_scale = fp16_loss_scale
        self.fp16_initial_loss_scale = fp16_initial_loss_scale
        self.fp16_min_loss_scale = fp16_min_loss_scale
        self.fp16_loss_scale_window = fp16_loss_scale_window
        self.fp16_hysteresis = fp16_hysteresis

    def _validate_fp8(self) -> None:
        """Everything about the fp8 fields that needs no device; `check_fp8_support` the rest."""
        if self.fp8 is None:
            used = [name for name, on in (
                ("fp8_recipe", self.fp8_recipe is not None),
                ("fp8_param_gather", self.fp8_param_gather),
                ("first_last_layers_bf16", self.first_last_layers_bf16)) if on]
            if used:
                raise ValueError(f"{', '.join(used)} set without fp8: add fp8='hybrid' (or "
                                 "'e4m3') to MegatronMixedPrecision, or drop them.")
            return
        _choice("fp8", self.fp8, FP8_FORMATS)
        if self.fp8_recipe is not None:
            _choice("fp8_recipe", self.fp8_recipe, FP8_RECIPES)
        _choice("fp8_amax_compute_algo", self.fp8_amax_compute_algo, FP8_AMAX_ALGOS)
        if not isinstance(self.fp8_margin, int) or self.fp8_margin < 0:
            raise ValueError(f"fp8_margin={self.fp8_margin!r}: use an integer >= 0 (default 0).")
        if not isinstance(self.fp8_amax_history_len, int) or self.fp8_amax_history_len < 1:
            raise ValueError(f"fp8_amax_history_len={self.fp8_amax_history_len!r}: use an "
                             "integer >= 1 (default 1; NeMo recipes use 1024 with 'max').")
        if self.first_last_layers_bf16 and self.fp8_recipe in (None, "delayed"):
            raise ValueError("first_last_layers_bf16 does not work with delayed fp8 scaling "
                             "(megatron): set fp8_recipe='tensorwise' or 'blockwise'.")

    def check_fp8_support(self) -> None:
        """On the rank, before the model is built: fp8 needs a fp8-capable GPU and TE."""
        if self.fp8 is None:
            return
        from nemo_lite.lightning.device import require_transformer_engine

        require_transformer_engine(f"fp8={self.fp8!r}")
        capability = torch.cuda.get_device_capability()
        needed = _MXFP8_MIN_CAPABILITY if self.fp8_recipe == "mxfp8" else _FP8_MIN_CAPABILITY
        if capability < needed:
            what = "fp8_recipe='mxfp8'" if self.fp8_recipe == "mxfp8" else f"fp8={self.fp8!r}"
            raise RuntimeError(
                f"{what} needs a GPU of compute capability {needed[0]}.{needed[1]} or newer; "
                f"{torch.cuda.get_device_name()} is {capability[0]}.{capability[1]}: "
                "use fp8_recipe='delayed'/'tensorwise' on Hopper, or bf16 without fp8.")

    @property
    def is_half(self) -> bool:
        return self.precision != "32"

    def configure_model(self, config: Any) -> Any:
        """Write dtype fields into a megatron TransformerConfig (before the model is built)."""
        config.bf16 = self.precision == "bf16-mixed"
        config.fp16 = self.precision == "16-mixed"
        config.params_dtype = self.params_dtype
        config.pipeline_dtype = self.pipeline_dtype
        config.autocast_dtype = self.params_dtype
        config.enable_autocast = self.autocast_enabled
        if self.fp8 is not None:
            self._configure_fp8(config)
        return config

    def _configure_fp8(self, config: Any) -> None:
        """Set after megatron's __post_init__, so its fp8 checks are repeated here and above."""
        self.check_fp8_support()
        if self.first_last_layers_bf16:
            per_stage = config.num_layers // config.pipeline_model_parallel_size
            for name in ("num_layers_at_start_in_bf16", "num_layers_at_end_in_bf16"):
                if not 0 <= getattr(self, name) <= per_stage:
                    raise ValueError(f"{name}={getattr(self, name)}: use 0..{per_stage} "
                                     "(the layers of one pipeline stage).")
        if self.fp8_param_gather and config.use_cpu_initialization:
            # megatron then builds TE weights on the CPU (device='cpu') and copies a CPU
            # master into them; fp8 weights are made by TE's GPU quantizers.
            raise ValueError("fp8_param_gather needs weights built on the GPU, but the model "
                             "config has use_cpu_initialization=True (GPTConfig's default): "
                             "set use_cpu_initialization=False.")
        config.fp8 = self.fp8
        if self.fp8_recipe is not None:
            config.fp8_recipe = self.fp8_recipe
        config.fp8_margin = self.fp8_margin
        config.fp8_amax_history_len = self.fp8_amax_history_len
        config.fp8_amax_compute_algo = self.fp8_amax_compute_algo
        config.fp8_wgrad = self.fp8_wgrad
        config.fp8_dot_product_attention = self.fp8_dot_product_attention
        config.fp8_multi_head_attention = self.fp8_multi_head_attention
        config.fp8_param = self.fp8_param_gather
        config.first_last_layers_bf16 = self.first_last_layers_bf16
        config.num_layers_at_start_in_bf16 = self.num_layers_at_start_in_bf16
        config.num_layers_at_end_in_bf16 = self.num_layers_at_end_in_bf16

    def configure_optimizer(self, config: Any) -> Any:
        """Write the matching fields into a megatron OptimizerConfig."""
        config.bf16 = self.precision == "bf16-mixed"
        config.fp16 = self.precision == "16-mixed"
        config.params_dtype = self.params_dtype
        if config.fp16:
            config.loss_scale = self.fp16_loss_scale
            config.initial_loss_scale = self.fp16_initial_loss_scale
            config.min_loss_scale = self.fp16_min_loss_scale
            config.loss_scale_window = self.fp16_loss_scale_window
            config.hysteresis = self.fp16_hysteresis
        return config

    def configure_ddp(self, ddp_config: Any) -> Any:
        ddp_config.grad_reduce_in_fp32 = self.grad_reduce_in_fp32 or not self.is_half
        if self.precision == "16-mixed":
            # inf/nan grads are the dynamic loss scaler's signal to skip a step and back off,
            # not an error: megatron's optimizer handles them after the reduction.
            ddp_config.check_for_nan_in_grad = False
        if self.fp8_param_gather and not ddp_config.use_distributed_optimizer:
            raise ValueError("fp8_param_gather all-gathers fp8 weights, which only megatron's "
                             "distributed optimizer does: set OptimizerConfig("
                             "use_distributed_optimizer=True) or drop fp8_param_gather.")
        ddp_config.fp8_param_gather = self.fp8_param_gather
        return ddp_config

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # the strategy wraps chunks in megatron's Float16Module itself

    def optimizer_step(self, optimizer: Any, model: Any, closure: Any, **kwargs: Any) -> Any:
        return optimizer.step(closure=closure, **kwargs)


def as_megatron_precision(plugin: Any) -> "MegatronMixedPrecision":
    """The strategy's precision plugin: MegatronMixedPrecision as given, Lightning's default
    (32-true) as MegatronMixedPrecision("32"); any other plugin is refused."""
    from lightning.pytorch.plugins.precision import Precision

    if isinstance(plugin, MegatronMixedPrecision):
        return plugin
    if type(plugin) is Precision:
        return MegatronMixedPrecision("32")
    raise ValueError(
        f"MegatronStrategy does its own mixed precision; got precision plugin "
        f"{type(plugin).__name__}. Pass plugins=nl.MegatronMixedPrecision(precision="
        "'bf16-mixed' | '16-mixed' | '32') instead of Trainer(precision=...).")
