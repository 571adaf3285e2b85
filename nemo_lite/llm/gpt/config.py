"""GPT-family model configs: megatron's TransformerConfig plus what building a GPT needs.

A config is plain data until `configure_model()` runs, which happens inside the strategy
after the process groups exist, once per virtual-pipeline stage.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from megatron.core.transformer import TransformerConfig

from nemo_lite.io.capture import capture_dataclass
from nemo_lite.llm.gpt.layer_specs import default_layer_spec
from nemo_lite.llm.gpt.steps import gpt_data_step, gpt_forward_step
from nemo_lite.llm.gpt.vocab_padding import PrivateStreamInit, padded_vocab_size


@dataclass
class GPTConfig(TransformerConfig):
    """NeMo 2.0's GPTConfig: same field names, so configs and recipes port unchanged."""

    num_layers: int = 4
    hidden_size: int = 64
    num_attention_heads: int = 4
    seq_length: int = 1024
    vocab_size: Optional[int] = None
    make_vocab_size_divisible_by: int = 128
    fp16_lm_cross_entropy: bool = False
    parallel_output: bool = True
    share_embeddings_and_output_weights: bool = True
    position_embedding_type: Literal["learned_absolute", "rope", "none"] = "learned_absolute"
    rotary_base: int = 10000
    rotary_percent: float = 1.0
    rope_scaling: bool = False  # Llama 3.1's frequency scaling (megatron's llama3 formula)
    rope_scaling_factor: float = 8.0
    seq_len_interpolation_factor: Optional[float] = None
    attention_softmax_in_fp32: bool = False
    masked_softmax_fusion: bool = False
    bias_activation_fusion: bool = False
    bias_dropout_fusion: bool = False
    apply_rope_fusion: bool = False
    gradient_accumulation_fusion: bool = False
    persist_layer_norm: bool = False
    deallocate_pipeline_outputs: bool = True
    calculate_per_token_loss: bool = True
    use_cpu_initialization: bool = True
    init_method_std: float = 0.02
    transformer_layer_spec: Callable[..., Any] = default_layer_spec
    forward_step_fn: Callable[..., Any] = gpt_forward_step
    data_step_fn: Callable[..., Any] = gpt_data_step

    def __post_init__(self) -> None:
        capture_dataclass(self)  # the user's arguments, before megatron derives fields
        with warnings.catch_warnings():
            # megatron's own default CUDA-graph scope ("full") warns that it is deprecated
            warnings.filterwarnings("ignore", message="full scope is deprecated")
            super().__post_init__()
        if not isinstance(self.embedding_init_method, PrivateStreamInit):
            # the padded vocabulary size must not shift the init of everything built after
            self.embedding_init_method = PrivateStreamInit(self.embedding_init_method)

    def padded_vocab_size(self, vocab_size: int) -> int:
        """Megatron's padded size at this config's TP; padded ids never get probability and
        checkpoints hold only the real rows (see `vocab_padding`)."""
        return padded_vocab_size(vocab_size, self.make_vocab_size_divisible_by,
                                 self.tensor_model_parallel_size)

    def configure_model(self, tokenizer: Any = None, vp_stage: int | None = None):
        """Build this rank's megatron GPTModel chunk for `vp_stage` (None without VPP)."""
        from megatron.core import parallel_state

        from nemo_lite.llm.gpt.chunk import GPTChunk

        vocab = self.vocab_size or getattr(tokenizer, "vocab_size", None)
        if vocab is None:
            raise ValueError(
                "GPTConfig needs a vocabulary size: set config.vocab_size or pass a tokenizer "
                "(e.g. llm.GPTModel(config, tokenizer=data.tokenizer))."
            )
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        spec = self.transformer_layer_spec
        if callable(spec) and not hasattr(spec, "submodules"):
            spec = spec(self, vp_stage=vp_stage)
        return GPTChunk(
            self,
            transformer_layer_spec=spec,
            vocab_size=vocab,
            padded_vocab_size=self.padded_vocab_size(vocab),
            max_sequence_length=self.seq_length,
            pre_process=pre,
            post_process=post,
            fp16_lm_cross_entropy=self.fp16_lm_cross_entropy,
            parallel_output=self.parallel_output,
            share_embeddings_and_output_weights=self.share_embeddings_and_output_weights,
            position_embedding_type=self.position_embedding_type,
            rotary_percent=self.rotary_percent,
            rotary_base=self.rotary_base,
            rope_scaling=self.rope_scaling,
            rope_scaling_factor=self.rope_scaling_factor,
            seq_len_interpolation_factor=self.seq_len_interpolation_factor,
            vp_stage=vp_stage,
        )


@dataclass
class LlamaConfig(GPTConfig):
    """Llama-style decoder: RoPE, SwiGLU, RMSNorm, grouped-query attention, untied output."""

    normalization: str = "RMSNorm"
    activation_func: Callable = field(default=torch.nn.functional.silu)
    gated_linear_unit: bool = True
    position_embedding_type: Literal["learned_absolute", "rope", "none"] = "rope"
    add_bias_linear: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    share_embeddings_and_output_weights: bool = False
    rotary_base: int = 500_000


@dataclass
class MixtralConfig(LlamaConfig):
    """Mixtral-style sparse MoE decoder: top-2 routing over `num_moe_experts` SwiGLU experts."""

    num_moe_experts: Optional[int] = 8
    moe_router_topk: int = 2
    moe_router_load_balancing_type: str = "aux_loss"
    moe_aux_loss_coeff: float = 1e-2
    moe_token_dispatcher_type: str = "alltoall"
    moe_grouped_gemm: bool = False
    moe_router_pre_softmax: bool = True
    rotary_base: int = 1_000_000
