"""MegatronMixedPrecision: one precision setting pushed into megatron's model, optimizer and DDP configs.

Megatron does mixed precision itself (bf16/fp16 parameters with fp32 main copies in its
optimizer, a dynamic loss scaler for fp16), so this plugin only writes the matching fields;
Lightning's autocast and gradient scaler are not used.
"""

from typing import Any, Literal, Optional

import torch
from lightning.pytorch.plugins.precision import Precision

from nemo_lite.io.capture import IOMixin

Setting = Literal["bf16-mixed", "16-mixed", "32", "bf16", "16", "32-true"]
_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32-true": "32", 32: "32", 16: "16-mixed"}
_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32": torch.float32}


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
        self.fp16_loss_scale = fp16_loss_scale
        self.fp16_initial_loss_scale = fp16_initial_loss_scale
        self.fp16_min_loss_scale = fp16_min_loss_scale
        self.fp16_loss_scale_window = fp16_loss_scale_window
        self.fp16_hysteresis = fp16_hysteresis

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
            config.fp8 = self.fp8
            if self.fp8_recipe is not None:
                config.fp8_recipe = self.fp8_recipe
        return config

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
        return ddp_config

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # the strategy wraps chunks in megatron's Float16Module itself

    def optimizer_step(self, optimizer: Any, model: Any, closure: Any, **kwargs: Any) -> Any:
        return optimizer.step(closure=closure, **kwargs)
